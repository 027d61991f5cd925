#!/usr/bin/env python3
"""An HTTP proxy in front of a registry that breaks blob downloads, for tests.

  flaky-proxy.py LISTEN_PORT UPSTREAM_PORT MODE
MODE "once": the first response to a blob GET is cut off after half its body;
MODE "always": every blob response is cut off.
"""

import http.client
import http.server
import sys

listen, upstream, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cuts = {"done": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        connection = http.client.HTTPConnection("127.0.0.1", upstream)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        connection.request("GET", self.path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        cut = "/blobs/" in self.path and response.status in (200, 206) and len(body) > 1024 and \
            (mode == "always" or cuts["done"] == 0)
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection"):
                self.send_header(key, value)
        self.end_headers()
        if cut:
            cuts["done"] += 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", listen), Handler).serve_forever()
