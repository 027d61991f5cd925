#!/usr/bin/env bash
# Kernel-mount speed: the same image mounted by our mount.composefs and by the reference's,
# side by side in the same run. The kernel does the work once mounted, so this checks that
# our mount sets up EROFS and overlayfs as well as the reference (expected ratio: 1.0).
#
# Usage (as root): [REF_BINDIR=DIR] bench/mount.sh [TREE [READ_SUBDIR]]
#   REF_BINDIR   directory with the reference mkcomposefs and mount.composefs (default: the
#                containers/composefs 1.0.8 build in ../shared/reference).
#   TREE         tree to build the image from (default /usr).
#   READ_SUBDIR  part of TREE read in full for the read benchmark (default lib/x86_64-linux-gnu).
#   RUNS         runs of each side (default 7).
# The object store is made of hard links to TREE's own files (TREE and /var/tmp must be on
# one file system), so no data is copied. Needs python3 and bc.
set -euo pipefail
cd "$(dirname "$0")/.."

REF_BINDIR=${REF_BINDIR:-../shared/reference/c-composefs-1.0.8}
TREE=${1:-/usr}
READ_SUBDIR=${2:-lib/x86_64-linux-gnu}
RUNS=${RUNS:-7}

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

# Runs alternate between the two mounts (reference, ours, reference, …) so that load from
# elsewhere on the machine hits both alike; reports each side's median and the ratio.
compare() {  # compare TITLE PREPARE COMMAND-WITH-@MNT@
    local title=$1 prepare=$2 command=$3 ref_times=() our_times=()
    for _ in $(seq "$RUNS"); do
        for side in ref ours; do
            [ -n "$prepare" ] && eval "$prepare"
            local start end
            start=$(date +%s.%N)
            eval "${command//@MNT@/$work/$side}"
            end=$(date +%s.%N)
            if [ $side = ref ]; then ref_times+=("$(echo "$end - $start" | bc)"); else our_times+=("$(echo "$end - $start" | bc)"); fi
        done
    done
    local ref_median our_median
    ref_median=$(printf '%s\n' "${ref_times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
    our_median=$(printf '%s\n' "${our_times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
    printf '%-45s reference %6.3f s  ours %6.3f s  ratio ours/ref %.2f\n' "$title" "$ref_median" "$our_median" \
        "$(echo "$our_median / $ref_median" | bc -l)"
}

drop_caches='sync; echo 3 > /proc/sys/vm/drop_caches'
echo "== medians of $RUNS alternating runs"
compare "metadata walk (find -ls), warm" "" "find @MNT@ -ls > /dev/null"
compare "metadata walk (find -ls), cold" "$drop_caches" "find @MNT@ -ls > /dev/null"
compare "sequential read of $READ_SUBDIR, cold" "$drop_caches" "tar cf - -C @MNT@/$READ_SUBDIR . | cat > /dev/null"
compare "sequential read of $READ_SUBDIR, warm" "" "tar cf - -C @MNT@/$READ_SUBDIR . | cat > /dev/null"
