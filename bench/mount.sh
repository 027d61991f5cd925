#!/usr/bin/env bash
# Kernel-mount speed: the same image mounted by our mount.composefs and by the reference's,
# side by side in the same run. The kernel does the work once mounted, so this checks that
# our mount sets up EROFS and overlayfs as well as the reference (expected ratio: 1.0).
#
# Usage (as root): REF_BINDIR=/path/to/composefs/build/tools bench/mount.sh [TREE [READ_SUBDIR]]
#   REF_BINDIR   directory with the reference mkcomposefs and mount.composefs, built from
#                github.com/containers/composefs by you (this project does not build it).
#   TREE         tree to build the image from (default /usr).
#   READ_SUBDIR  part of TREE read in full for the read benchmark (default lib/x86_64-linux-gnu).
#   RUNS         hyperfine runs (default 5).
# The object store is made of hard links to TREE's own files (TREE and /var/tmp must be on
# one file system), so no data is copied. Needs hyperfine and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

REF_BINDIR=${REF_BINDIR:?set REF_BINDIR to the directory with the reference tools}
TREE=${1:-/usr}
READ_SUBDIR=${2:-lib/x86_64-linux-gnu}
RUNS=${RUNS:-5}

swift build -c release --product mkcomposefs >/dev/null
swift build -c release --product composefs-info >/dev/null
swift build -c release --product mount.composefs >/dev/null
BIN=$PWD/.build/release

work=$(mktemp -d /var/tmp/cfs-bench.XXXXXX)
cleanup() {
    umount "$work/ours" "$work/ref" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/ours" "$work/ref" "$work/objects"

echo "== building the image of $TREE"
"$BIN/mkcomposefs" "$TREE" "$work/tree.cfs"
# Link each backed file into the store under its object name.
"$BIN/composefs-info" dump "$work/tree.cfs" | python3 -c '
import os, re, sys
tree, store = sys.argv[1], sys.argv[2]
def unescape(field):
    return re.sub(rb"\\x([0-9a-fA-F]{2})|\\(.)",
                  lambda m: bytes([int(m.group(1), 16)]) if m.group(1) else {b"n": b"\n", b"t": b"\t", b"r": b"\r"}.get(m.group(2), m.group(2)),
                  field)
for line in sys.stdin.buffer:
    fields = line.rstrip(b"\n").split(b" ")
    path, payload = unescape(fields[0]), fields[8]
    if payload == b"-" or not fields[2].startswith(b"10"):
        continue
    target = os.path.join(store.encode(), unescape(payload))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if not os.path.exists(target):
        os.link(tree.encode() + path, target)
' "$TREE" "$work/objects"

"$BIN/mount.composefs" -o basedir="$work/objects" "$work/tree.cfs" "$work/ours"
"$REF_BINDIR/mount.composefs" -o basedir="$work/objects" "$work/tree.cfs" "$work/ref"
diff <(cd "$work/ours" && find . -printf '%p %m %s %T@\n' | sort) \
     <(cd "$work/ref" && find . -printf '%p %m %s %T@\n' | sort) >/dev/null && echo "both mounts show the same tree"

drop_caches='sync; echo 3 > /proc/sys/vm/drop_caches'

echo "== metadata walk: find -ls, warm"
hyperfine --warmup 1 --runs "$RUNS" \
    -n reference "find $work/ref -ls > /dev/null" \
    -n ours "find $work/ours -ls > /dev/null"

echo "== metadata walk: find -ls, cold"
hyperfine --runs "$RUNS" --prepare "$drop_caches" \
    -n reference "find $work/ref -ls > /dev/null" \
    -n ours "find $work/ours -ls > /dev/null"

echo "== sequential read of $READ_SUBDIR, cold"
hyperfine --runs "$RUNS" --prepare "$drop_caches" \
    -n reference "tar cf - -C $work/ref/$READ_SUBDIR . | cat > /dev/null" \
    -n ours "tar cf - -C $work/ours/$READ_SUBDIR . | cat > /dev/null"

echo "== sequential read of $READ_SUBDIR, warm"
hyperfine --warmup 1 --runs "$RUNS" \
    -n reference "tar cf - -C $work/ref/$READ_SUBDIR . | cat > /dev/null" \
    -n ours "tar cf - -C $work/ours/$READ_SUBDIR . | cat > /dev/null"
