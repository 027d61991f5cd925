#!/usr/bin/env python3
"""Seed inputs for the OCI fuzz harnesses (Fuzz/run.sh).

  fuzz-seeds.py layer OUTDIR      small layer tars in every format OCI layers use
  fuzz-seeds.py document OUTDIR   manifests, indexes, configs, auth challenges, references, archives
"""

import io
import json
import os
import sys
import tarfile

MTIME = 1700000000


def info(name, kind=tarfile.REGTYPE, size=0, **extra):
    entry = tarfile.TarInfo(name)
    entry.type = kind
    entry.size = size
    entry.mtime = MTIME
    entry.mode = 0o644 if kind != tarfile.DIRTYPE else 0o755
    for key, value in extra.items():
        setattr(entry, key, value)
    return entry


def layer(fmt, whiteouts=False, long_names=False, xattrs=False):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        tar.addfile(info("etc", tarfile.DIRTYPE))
        small = b"small file\n"
        tar.addfile(info("etc/small", size=len(small)), io.BytesIO(small))
        big = bytes(range(256)) * 4
        tar.addfile(info("etc/big", size=len(big)), io.BytesIO(big))
        tar.addfile(info("etc/hard", tarfile.LNKTYPE, linkname="etc/small"))
        tar.addfile(info("etc/sym", tarfile.SYMTYPE, linkname="../etc/small"))
        tar.addfile(info("dev", tarfile.DIRTYPE))
        tar.addfile(info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3))
        tar.addfile(info("fifo", tarfile.FIFOTYPE))
        if long_names:
            name = "d/" + "n" * 150
            tar.addfile(info("d", tarfile.DIRTYPE))
            tar.addfile(info(name, size=3), io.BytesIO(b"abc"))
            tar.addfile(info("d/long-link", tarfile.SYMTYPE, linkname="t" * 200))
        if whiteouts:
            tar.addfile(info("etc/.wh.small"))
            tar.addfile(info("dev/.wh..wh..opq"))
        if xattrs:
            entry = info("x", size=1, pax_headers={
                "SCHILY.xattr.user.a": "1", "SCHILY.xattr.security.capability": "c", "mtime": "1.5"})
            tar.addfile(entry, io.BytesIO(b"x"))
    return out.getvalue()


def sparse_layer():
    """A pax sparse 0.1 entry, written by hand (tarfile cannot)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entry = info("sparse", size=20, pax_headers={
            "GNU.sparse.size": "9000", "GNU.sparse.map": "0,10,8000,10",
            "GNU.sparse.major": "0", "GNU.sparse.minor": "1"})
        tar.addfile(entry, io.BytesIO(b"a" * 20))
    return out.getvalue()


def write(directory, name, data):
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def layers(directory):
    write(directory, "gnu.tar", layer(tarfile.GNU_FORMAT, long_names=True))
    write(directory, "pax.tar", layer(tarfile.PAX_FORMAT, long_names=True, xattrs=True))
    write(directory, "ustar.tar", layer(tarfile.USTAR_FORMAT, whiteouts=True))
    write(directory, "sparse.tar", sparse_layer())


def documents(directory):
    digest = "sha256:" + "ab" * 32
    descriptor = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": 1234}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 10},
                "layers": [descriptor, dict(descriptor, mediaType="application/vnd.oci.image.layer.v1.tar+zstd")],
                "annotations": {"org.opencontainers.image.ref.name": "latest"}}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 500,
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 500,
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}]}
    config = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
              "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": [digest, digest]},
              "history": [{"created_by": "x", "empty_layer": True}]}
    docker = dict(manifest, mediaType="application/vnd.docker.distribution.manifest.v2+json")
    del docker["annotations"]
    for name, value in [("manifest", manifest), ("index", index), ("config", config), ("docker", docker)]:
        write(directory, name + ".json", json.dumps(value, indent=2))
    write(directory, "challenge.txt",
          'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"')
    write(directory, "reference.txt", "localhost:5000/some/name:tag@" + digest)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, value in [("oci-layout", {"imageLayoutVersion": "1.0.0"}), ("index.json", index),
                            ("blobs/sha256/" + "ab" * 32, manifest),
                            ("manifest.json", [{"Config": "config.json", "RepoTags": ["a:b"], "Layers": ["l.tar"]}])]:
            data = json.dumps(value).encode()
            tar.addfile(info(name, size=len(data)), io.BytesIO(data))
    write(directory, "archive.tar", archive.getvalue())


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("layer", "document"):
        sys.exit(__doc__)
    os.makedirs(sys.argv[2], exist_ok=True)
    (layers if sys.argv[1] == "layer" else documents)(sys.argv[2])


if __name__ == "__main__":
    main()
