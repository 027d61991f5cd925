#!/usr/bin/env python3
"""Authentication for the test registries (docker-registry on loopback).

  registry-auth.py htpasswd USER PASSWORD
      prints an htpasswd line (bcrypt, the only hash docker-registry accepts)
  registry-auth.py token-server PORT DIR ISSUER USER PASSWORD
      a token service (the Docker registry token protocol): DIR/key.pem and DIR/cert.pem are
      made with openssl; the registry trusts DIR/cert.pem. USER:PASSWORD (HTTP basic) gets every
      action asked for; anonymous requests get pull on repositories under "public/" only; wrong
      credentials get 401. Tokens are RS256 JWTs with the certificate in x5c.
"""

import base64
import json
import os
import secrets
import subprocess
import sys
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def htpasswd(user, password):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    salt = "$2b$05$" + base64.b64encode(secrets.token_bytes(16)).decode()[:22].replace("+", ".")
    print(f"{user}:{crypt.crypt(password, salt)}")


def make_certificate(directory):
    key, cert = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    if not os.path.exists(cert):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=composefs test token issuer"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"], check=True, capture_output=True).stdout
    return key, der


def token_server(port, directory, issuer, user, password):
    key, certificate = make_certificate(directory)
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def sign(claims):
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(certificate).decode()]}
        payload = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=payload.encode(),
                                   check=True, capture_output=True).stdout
        return payload + "." + b64url(signature)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlparse(self.path)
            if url.path != "/token":
                self.send_error(404)
                return
            query = parse_qs(url.query)
            authorization = self.headers.get("Authorization")
            if authorization is not None and authorization != expected:
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"errors":[{"code":"UNAUTHORIZED","message":"wrong user name or password"}]}')
                return
            access = []
            for scope in query.get("scope", []):
                for item in scope.split(" "):
                    kind, _, rest = item.partition(":")
                    name, _, actions = rest.rpartition(":")
                    granted = actions.split(",") if authorization else \
                        (["pull"] if name.startswith("public/") and "pull" in actions.split(",") else [])
                    access.append({"type": kind, "name": name, "actions": granted})
            now = int(time.time())
            claims = {"iss": issuer, "sub": user if authorization else "", "aud": query.get("service", [""])[0],
                      "exp": now + 600, "nbf": now - 60, "iat": now, "jti": secrets.token_hex(8), "access": access}
            token = sign(claims)
            body = json.dumps({"token": token, "access_token": token, "expires_in": 600}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            sys.stderr.write("token: " + (format % args) + "\n")

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "htpasswd":
        htpasswd(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 7 and sys.argv[1] == "token-server":
        token_server(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
