#!/usr/bin/env bash
# mkcomposefs speed and memory against the reference C mkcomposefs, same machine, same run.
#
# Usage: [REF_BINDIR=DIR] bench/mkcomposefs.sh [TREE]
#   REF_BINDIR  directory holding the reference mkcomposefs (default: the
#               containers/composefs 1.0.8 build in ../shared/reference).
#   TREE        directory for the tree benchmarks (default /usr).
#   THREADS     --threads for both tools (default: number of CPUs).
#   RUNS        hyperfine runs (default 10).
# Needs hyperfine and GNU time. Builds ours in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."

REF=${REF_BINDIR:-../shared/reference/c-composefs-1.0.8}/mkcomposefs
TREE=${1:-/usr}
THREADS=${THREADS:-$(nproc)}
RUNS=${RUNS:-10}
ASSETS=../shared/vectors/composefs-assets

swift build -c release --product mkcomposefs >/dev/null
OURS=$PWD/.build/release/mkcomposefs

work=$(mktemp -d /var/tmp/cfs-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

peak_rss() {  # median of 5 peak RSS readings (KiB)
    for _ in 1 2 3 4 5; do /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; done | sort -n | sed -n 3p
}

echo "== mkcomposefs --from-file cs9-x86_64-developer.dump (64k entries)"
gzip -dc "$ASSETS/cs9-x86_64-developer.dump.gz" >"$work/dev.dump"
hyperfine -N --warmup 2 --runs "$RUNS" --export-markdown "$work/fromfile.md" \
    -n reference "$REF --from-file $work/dev.dump $work/ref.cfs" \
    -n ours "$OURS --from-file $work/dev.dump $work/ours.cfs"
cmp "$work/ref.cfs" "$work/ours.cfs" && echo "images identical"
ref_rss=$(peak_rss "$REF" --from-file "$work/dev.dump" "$work/ref.cfs")
our_rss=$(peak_rss "$OURS" --from-file "$work/dev.dump" "$work/ours.cfs")
echo "peak RSS: reference ${ref_rss} KiB, ours ${our_rss} KiB, ratio $(echo "scale=2; $our_rss / $ref_rss" | bc)"

echo "== mkcomposefs --print-digest-only $TREE (--threads=$THREADS, warm cache)"
hyperfine -N --warmup 1 --runs "$RUNS" \
    -n reference "$REF --threads=$THREADS --print-digest-only $TREE" \
    -n ours "$OURS --threads=$THREADS --print-digest-only $TREE"

echo "== mkcomposefs --digest-store into an empty store, $TREE (--threads=$THREADS)"
hyperfine -N --warmup 1 --runs "$((RUNS < 5 ? RUNS : 5))" \
    --prepare "rm -rf $work/store-ref $work/store-ours" \
    -n reference "$REF --threads=$THREADS --digest-store=$work/store-ref $TREE $work/tree-ref.cfs" \
    -n ours "$OURS --threads=$THREADS --digest-store=$work/store-ours $TREE $work/tree-ours.cfs"
cmp "$work/tree-ref.cfs" "$work/tree-ours.cfs" && echo "images identical"
