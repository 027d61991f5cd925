#!/usr/bin/env bash
# composefs-fuse against the reference composefs-fuse: the same image, mounted by each in
# turn, walked and read the same ways. Needs root (mounts, drop_caches).
#
# Usage: [REF_BINDIR=DIR] bench/fuse.sh [TREE]
#   REF_BINDIR  directory holding the reference composefs-fuse and mkcomposefs (default: the
#               containers/composefs 1.0.8 build in ../shared/reference).
#   TREE        directory to make the image of (default /usr/share).
#   RUNS        runs per case and tool (default 5); the tools alternate run by run.
#   SCRATCH     SwiftPM scratch path for building ours (default .build).
#   WORK        where the image and its objects go (default a new directory in /var/tmp).
#
# Cases, each on a fresh mount (so nothing is in the FUSE caches):
#   walk       find MNT -ls > /dev/null             (lookup/readdirplus/getattr/readlink)
#   read       tar -C MNT -cf - . | cat > /dev/null (sequential reads of every file)
#   read-par   4 parallel cat over all files         (the multi-threaded loop)
#   big        cat of one 1 GiB file (its own image), page cache warm: raw read throughput
# "cold" also drops the page cache first (image and objects come from disk);
# "warm" leaves them cached, which isolates the cost of the FUSE servers.
set -euo pipefail
cd "$(dirname "$0")/.."

REF_BINDIR=${REF_BINDIR:-../shared/reference/c-composefs-1.0.8}
REF=$REF_BINDIR/composefs-fuse
REF_MKCOMPOSEFS=$REF_BINDIR/mkcomposefs
TREE=${1:-/usr/share}
RUNS=${RUNS:-5}
SCRATCH=${SCRATCH:-.build}

[ "$(id -u)" = 0 ] || { echo "needs root (mount, drop_caches)" >&2; exit 1; }

swift build -c release --scratch-path "$SCRATCH" --product composefs-fuse >/dev/null
swift build -c release --scratch-path "$SCRATCH" --product mkcomposefs >/dev/null
OURS=$PWD/$SCRATCH/release/composefs-fuse
[ -x "$OURS" ] || OURS=$SCRATCH/release/composefs-fuse
MKCOMPOSEFS=$(dirname "$OURS")/mkcomposefs

if [ -n "${WORK:-}" ]; then
    work=$WORK
    mkdir -p "$work"
else
    work=$(mktemp -d /var/tmp/cfs-fuse-bench.XXXXXX)
    trap 'umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
fi
mnt=$work/mnt
mkdir -p "$mnt"

if [ ! -s "$work/image.cfs" ]; then
    echo "== building the image of $TREE (objects in $work/objects)"
    "$MKCOMPOSEFS" --digest-store="$work/objects" "$TREE" "$work/image.cfs"
    "$REF_MKCOMPOSEFS" "$TREE" "$work/ref-image.cfs" && cmp "$work/image.cfs" "$work/ref-image.cfs" \
        && echo "image identical to the reference mkcomposefs's"
fi
entries=$(find "$TREE" | wc -l)
bytes=$(find "$TREE" -type f -size +64c -printf '%s\n' | awk '{s += $1} END {print s}')
echo "tree: $TREE, $entries entries, $((bytes / 1048576)) MiB in files over 64 bytes"

image=$work/image.cfs
objects=$work/objects
mount_with() {
    umount "$mnt" 2>/dev/null || true
    "$1" -o "source=$image,basedir=$objects" "$mnt"
}

# Same view from both first: a benchmark of different trees would be meaningless.
for label in ref ours; do
    if [ $label = ref ]; then mount_with "$REF"; else mount_with "$OURS"; fi
    (cd "$mnt" && find . -printf '%i %n %M %U:%G %s %T@ %p %l\n' | sort -k7) >"$work/view-$label"
    umount "$mnt"
done
if cmp -s "$work/view-ref" "$work/view-ours"; then
    echo "listings (inode numbers, links, modes, owners, sizes, times, targets) identical"
else
    echo "WARNING: the two mounts list differently"
fi

measure() {  # tool case temperature -> seconds
    local tool=$1 what=$2 temperature=$3
    mount_with "$tool"
    if [ "$temperature" = cold ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
    local start end
    start=$(date +%s.%N)
    case $what in
    walk) find "$mnt" -ls >/dev/null ;;
    read) tar -C "$mnt" -cf - . | cat >/dev/null ;;
    read-par) (cd "$mnt" && find . -type f -print0 | xargs -0 -P 4 -n 64 cat >/dev/null) ;;
    big) cat "$mnt/big" >/dev/null ;;
    esac
    end=$(date +%s.%N)
    umount "$mnt"
    echo "$end - $start" | bc
}

report() {  # name bytes "ref times" "our times"
    python3 -c '
import statistics, sys
name, size = sys.argv[1], int(sys.argv[2])
ref, ours = [float(x) for x in sys.argv[3].split()], [float(x) for x in sys.argv[4].split()]
r, o = statistics.median(ref), statistics.median(ours)
extra = f"  ({size / r / 1e6:.0f} vs {size / o / 1e6:.0f} MB/s)" if not name.startswith("walk") else ""
print(f"{name:<16} {r:8.3f} ±{statistics.pstdev(ref):.2f} {o:7.3f} ±{statistics.pstdev(ours):.2f} {r / o:9.2f}x{extra}")
' "$@"
}

run_case() {  # case temperature
    local ref_times=() our_times=()
    for _ in $(seq "$RUNS"); do
        ref_times+=("$(measure "$REF" "$1" "$2")")
        our_times+=("$(measure "$OURS" "$1" "$2")")
    done
    report "$1-$2" "$bytes" "${ref_times[*]}" "${our_times[*]}"
}

printf '\n%-16s %12s %12s %10s\n' case "reference s" "ours s" "speed"
for what in walk read read-par; do
    for temperature in cold warm; do
        run_case $what $temperature
    done
done

if [ ! -s "$work/big.cfs" ]; then
    mkdir -p "$work/bigtree"
    head -c 1G /dev/urandom >"$work/bigtree/big"
    "$MKCOMPOSEFS" --digest-store="$work/bigobjects" "$work/bigtree" "$work/big.cfs" >/dev/null
fi
image=$work/big.cfs
objects=$work/bigobjects
bytes=$((1 << 30))
cat "$objects"/*/* >/dev/null
run_case big warm
echo "(speed = reference median time / our median time: above 1 means ours is faster)"
