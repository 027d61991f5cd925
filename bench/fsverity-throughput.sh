#!/usr/bin/env bash
# fs-verity digest throughput of one large file, SHA-256 and SHA-512: `fsverity digest`
# (fsverity-utils, OpenSSL, one thread) against ours, on one thread (`composefs-info
# measure-file`, and `cfsctl` pinned to one CPU with taskset) and on every CPU (`cfsctl --no-repo
# --hash H compute-id` of a directory holding just the file: large files are digested on all
# threads).
#
# Usage: bench/fsverity-throughput.sh [FILE]
#   FILE defaults to a fresh 1 GiB random file in a temporary directory.
#   RUNS=N hyperfine runs per command (default 5)
# Needs hyperfine and fsverity (Debian package fsverity). Builds ours in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
command -v fsverity >/dev/null || { echo "error: fsverity (Debian package fsverity) not found" >&2; exit 1; }
swift build -c release --product composefs-info >/dev/null
swift build -c release --product cfsctl >/dev/null
INFO=$PWD/.build/release/composefs-info
CFSCTL=$PWD/.build/release/cfsctl

work=$(mktemp -d /var/tmp/cfs-verity-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/tree"
if [[ $# -ge 1 ]]; then
    ln "$1" "$work/tree/file" 2>/dev/null || cp "$1" "$work/tree/file"
else
    echo "creating a 1 GiB random file"
    head -c 1G /dev/urandom >"$work/tree/file"
fi
file=$work/tree/file
size=$(stat -c %s "$file")
# Warm the page cache so every tool measures hashing, not the disk.
cat "$file" >/dev/null

# compute-id prints the image id, not the file's digest: check the digest with a dumpfile.
for hash in sha256 sha512; do
    theirs=$(fsverity digest --hash-alg=$hash --block-size=4096 "$file" | cut -d' ' -f1)
    ours=$("$CFSCTL" --no-repo --hash $hash create-dumpfile --no-propagate-usr-to-root "$work/tree" | awk '$1 == "/file" { print $11 }')
    [[ "$hash:$ours" == "$theirs" ]] || { echo "error: $hash digest mismatch: fsverity $theirs, ours $ours" >&2; exit 1; }
done
[[ "sha256:$("$INFO" measure-file "$file")" == "$(fsverity digest --hash-alg=sha256 "$file" | cut -d' ' -f1)" ]]
echo "digests match ($((size / 1048576)) MiB, $(nproc) CPUs)"

hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$work/times.json" \
    -n "fsverity sha256" "fsverity digest --hash-alg=sha256 $file" \
    -n "ours sha256, 1 thread" "$INFO measure-file $file" \
    -n "ours sha256, all CPUs" "$CFSCTL --no-repo --hash sha256 compute-id --no-propagate-usr-to-root $work/tree" \
    -n "fsverity sha512" "fsverity digest --hash-alg=sha512 $file" \
    -n "ours sha512, 1 thread" "taskset -c 0 $CFSCTL --no-repo --hash sha512 compute-id --no-propagate-usr-to-root $work/tree" \
    -n "ours sha512, all CPUs" "$CFSCTL --no-repo --hash sha512 compute-id --no-propagate-usr-to-root $work/tree" >/dev/null
python3 - "$work/times.json" "$size" <<'EOF'
import json, sys
results = {r["command"]: r["mean"] for r in json.load(open(sys.argv[1]))["results"]}
size = int(sys.argv[2])
for name, seconds in results.items():
    reference = results["fsverity " + name.split()[1].rstrip(",")]
    print(f"{name:<24} {seconds:7.3f} s {size / seconds / 1e6:7.0f} MB/s  {reference / seconds:5.2f}x fsverity")
EOF
