#!/usr/bin/env python3
"""Builds the OCI test images: an image layout whose layers exercise what composefs must get
right when merging container layers.

  make-oci-image.py OUTDIR [--big-mib N] [--multi-arch] [--no-zstd] [--subject-of LAYOUT]
  make-oci-image.py OUTDIR --layer-tar TAR      (an image of that one layer)

Layers (bottom first):
  1. gzip, pax: a root entry, directories, small/64/65-byte/large files, a hard link, symlinks
     (one with a 200-byte target), 150-byte names, devices, a fifo, setuid, owners, xattrs
     (user.*, trusted.*, security.capability), nanosecond mtimes, /usr, and /boot, /sysroot
     and /run with files (what container and bootable roots empty).
  2. zstd, pax: whiteouts, an opaque directory (the marker right after its directory entry, as
     tools write it, then files of its own), a file replacing a directory, a directory
     replacing a file, a changed file, a hard link to a file of layer 1.
  3. uncompressed, GNU format: GNU long names and long link targets, a file whose content
     duplicates one of layer 1, a big file (--big-mib).
With --multi-arch the layout holds an index with an amd64 and an arm64 image (the arm64 one
has a different config) under the name "test"; otherwise one manifest named "test".
--no-zstd compresses layer 2 with gzip instead (same diff_ids: the same root file system), for
tools without zstd such as umoci 0.4. --subject-of makes the manifest name the image of LAYOUT
as its subject (as a signature or an attestation does). Everything is deterministic: same arguments, same digests.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile

MTIME = 1700000000


def entry(name, kind=tarfile.REGTYPE, mode=0o644, uid=0, gid=0, mtime=MTIME, **extra):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = uid
    info.gid = gid
    info.mtime = mtime
    info.uname = ""
    info.gname = ""
    for key, value in extra.items():
        setattr(info, key, value)
    return info


def add_file(tar, name, data, **kw):
    info = entry(name, **kw)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar, name, mode=0o755, **kw):
    tar.addfile(entry(name, tarfile.DIRTYPE, mode=mode, **kw))


def pseudo_random(seed, size):
    rng = random.Random(seed)
    return rng.randbytes(size)


def layer_one(big):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add_dir(tar, "./", mode=0o755, mtime=MTIME - 100)
        add_dir(tar, "etc/")
        add_file(tar, "etc/hosts", b"127.0.0.1 localhost\n")
        add_file(tar, "etc/os-release", b"ID=composefs-test\n", mode=0o644)
        add_file(tar, "etc/shadow", b"root:*:19000::::::\n", mode=0o640, gid=42)
        add_dir(tar, "usr/")
        add_dir(tar, "usr/bin/")
        add_file(tar, "usr/bin/tool", pseudo_random(1, 200_000), mode=0o755)
        tar.addfile(entry("usr/bin/tool-link", tarfile.LNKTYPE, mode=0o755, linkname="usr/bin/tool"))
        tar.addfile(entry("usr/bin/sh", tarfile.SYMTYPE, mode=0o777, linkname="tool"))
        add_file(tar, "usr/bin/su", pseudo_random(2, 5000), mode=0o4755)
        add_file(tar, "usr/bin/ping", pseudo_random(3, 3000), mode=0o755,
                 pax_headers={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"})
        add_dir(tar, "usr/lib/")
        add_file(tar, "usr/lib/exactly64", b"x" * 64)
        add_file(tar, "usr/lib/exactly65", b"y" * 65)
        add_file(tar, "usr/lib/empty", b"")
        add_file(tar, "usr/lib/libbig.so", pseudo_random(4, big), mode=0o755)
        add_dir(tar, "usr/share/")
        add_dir(tar, "usr/share/doc/")
        for i in range(20):
            add_file(tar, f"usr/share/doc/file{i:02d}.txt", f"document {i}\n".encode() * (i * 7 + 1))
        long_dir = "usr/share/" + "d" * 120 + "/"
        add_dir(tar, long_dir)
        add_file(tar, long_dir + "n" * 150, b"long name\n")
        tar.addfile(entry("usr/share/long-target", tarfile.SYMTYPE, mode=0o777, linkname="/" + "t" * 200))
        add_dir(tar, "home/", mode=0o755)
        add_dir(tar, "home/user/", mode=0o700, uid=1000, gid=1000)
        add_file(tar, "home/user/.profile", b"export PATH=/usr/bin\n", uid=1000, gid=1000,
                 pax_headers={"SCHILY.xattr.user.origin": "layer one", "mtime": "1700000123.456789012"})
        add_dir(tar, "dev/")
        tar.addfile(entry("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3))
        tar.addfile(entry("dev/sda", tarfile.BLKTYPE, mode=0o660, gid=6, devmajor=8, devminor=0))
        tar.addfile(entry("dev/fifo", tarfile.FIFOTYPE, mode=0o644))
        add_dir(tar, "opt/", pax_headers={"SCHILY.xattr.trusted.note": "dir xattr", "SCHILY.xattr.user.empty": ""})
        add_file(tar, "opt/replaced-by-dir", b"a file for now\n")
        add_dir(tar, "opt/replaced-by-file/")
        add_file(tar, "opt/replaced-by-file/child", b"child\n")
        add_dir(tar, "var/")
        add_dir(tar, "var/cache/")
        add_file(tar, "var/cache/old", pseudo_random(5, 10_000))
        add_dir(tar, "boot/")
        add_file(tar, "boot/vmlinuz-test", pseudo_random(8, 4000), mode=0o600)
        add_dir(tar, "sysroot/")
        add_dir(tar, "sysroot/ostree/")
        add_dir(tar, "run/", mtime=MTIME - 50)
        add_file(tar, "run/stale.pid", b"1\n")
    return out.getvalue()


def layer_two():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add_dir(tar, "etc/", mtime=MTIME + 10)
        add_file(tar, "etc/.wh.hosts", b"")
        add_file(tar, "etc/os-release", b"ID=composefs-test\nVERSION=2\n", mtime=MTIME + 10)
        add_dir(tar, "usr/")
        add_dir(tar, "usr/share/")
        add_dir(tar, "usr/share/doc/", mtime=MTIME + 10)
        # The marker first: composefs-rs applies it where it is, umoci to the layers below.
        add_file(tar, "usr/share/doc/.wh..wh..opq", b"")
        add_file(tar, "usr/share/doc/file01.txt", b"rewritten in layer two\n", mtime=MTIME + 10)
        add_file(tar, "usr/share/doc/new.txt", b"new in layer two\n", mtime=MTIME + 10)
        add_dir(tar, "usr/bin/")
        add_file(tar, "usr/bin/tool", pseudo_random(6, 150_000), mode=0o755, mtime=MTIME + 10)
        tar.addfile(entry("usr/bin/su-again", tarfile.LNKTYPE, mode=0o4755, linkname="usr/bin/su"))
        add_dir(tar, "opt/", pax_headers={"SCHILY.xattr.trusted.note": "dir xattr", "SCHILY.xattr.user.empty": ""})
        add_dir(tar, "opt/replaced-by-dir/", mode=0o750)
        add_file(tar, "opt/replaced-by-dir/inside", b"inside\n")
        add_file(tar, "opt/replaced-by-file", b"now a file\n")
        add_dir(tar, "var/")
        add_file(tar, "var/.wh.cache", b"")
    return out.getvalue()


def layer_three(big):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        add_dir(tar, "srv/")
        deep = "srv/" + "/".join(["component-" + str(i) * 20 for i in range(5)]) + "/"
        parts = deep.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            add_dir(tar, "/".join(parts[:i]) + "/")
        add_file(tar, deep + "f" * 120, b"gnu long name\n")
        tar.addfile(entry("srv/long-link", tarfile.SYMTYPE, mode=0o777, linkname="../" + "l" * 180))
        add_file(tar, "srv/copy-of-big", pseudo_random(4, big), mode=0o644)
        add_file(tar, "srv/big-data", pseudo_random(7, big), mode=0o600)
    return out.getvalue()


class Layout:
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)

    def blob(self, data, media_type):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.root, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}


def zstd_compress(data):
    return subprocess.run(["zstd", "-q", "-c", "-3", "--no-check"], input=data, stdout=subprocess.PIPE, check=True).stdout


def image(layout, tars, architecture, variant=None, zstd=True, subject=None):
    second = (zstd_compress(tars[1]), "application/vnd.oci.image.layer.v1.tar+zstd") if zstd else \
        (gzip.compress(tars[1], mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
    compressed = [
        (gzip.compress(tars[0], mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"),
        second,
        (tars[2], "application/vnd.oci.image.layer.v1.tar"),
    ]
    layers = [layout.blob(data, media) for data, media in compressed]
    config = {
        "architecture": architecture,
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/usr/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t in tars]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": f"layer {i}"} for i in range(3)],
    }
    if variant:
        config["variant"] = variant
    config_descriptor = layout.blob(json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": layers,
    }
    if subject:
        manifest["subject"] = subject
    return layout.blob(json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")


def single_layer_image(layout, tar_path):
    """An image of one given (uncompressed) tar, for hostile-layer tests."""
    with open(tar_path, "rb") as f:
        data = f.read()
    layer = layout.blob(gzip.compress(data, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(data).hexdigest()]}}
    config_descriptor = layout.blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_descriptor, "layers": [layer]}
    top = layout.blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    write_index(layout.root, top)


def write_index(root, top):
    top["annotations"] = {"org.opencontainers.image.ref.name": "test"}
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [top]}, f)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


def parse_arguments():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("outdir", help="the image layout directory to write")
    parser.add_argument("--big-mib", type=int, default=4, help="size of the big file of layer 3 (MiB)")
    parser.add_argument("--multi-arch", action="store_true", help="an index with an amd64 and an arm64 image")
    parser.add_argument("--no-zstd", action="store_true", help="compress layer 2 with gzip instead of zstd")
    parser.add_argument("--subject-of", metavar="LAYOUT", help="make the manifest name the image of LAYOUT as its subject")
    parser.add_argument("--layer-tar", metavar="TAR", help="an image of this one layer instead")
    args = parser.parse_args()
    # A directory named like an option is a mistyped option, not a place to write an image.
    if args.outdir.startswith("-"):
        parser.error(f"output directory {args.outdir!r} looks like an option")
    return args


def main():
    args = parse_arguments()
    root = args.outdir
    big = args.big_mib << 20
    layout = Layout(root)
    if args.layer_tar:
        single_layer_image(layout, args.layer_tar)
        return
    tars = [layer_one(big), layer_two(), layer_three(big)]
    subject = None
    if args.subject_of:
        with open(os.path.join(args.subject_of, "index.json")) as f:
            top = json.load(f)["manifests"][0]
        subject = {key: top[key] for key in ("mediaType", "digest", "size")}
    amd64 = image(layout, tars, "amd64", zstd=not args.no_zstd, subject=subject)
    if args.multi_arch:
        arm_tars = [tars[0], tars[1], layer_three(big // 2)]
        arm64 = image(layout, arm_tars, "arm64", "v8")
        amd64["platform"] = {"architecture": "amd64", "os": "linux"}
        arm64["platform"] = {"architecture": "arm64", "os": "linux", "variant": "v8"}
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [amd64, arm64]}
        top = layout.blob(json.dumps(index, sort_keys=True).encode(), "application/vnd.oci.image.index.v1+json")
    else:
        top = amd64
    write_index(root, top)


if __name__ == "__main__":
    main()
