#!/usr/bin/env bash
# cfsctl create-image into an empty repository against composefs-rs 0.9's cfsctl and the C
# `mkcomposefs --digest-store` on the same tree with the same threads, then a re-import
# of the same tree (every object already present) against the first import. The tree is
# imported as it is (--no-propagate-usr-to-root: it need not be a container root).
#
# Usage: [REF_BINDIR=DIR] [RS_BINDIR=DIR] bench/cfsctl.sh [TREE]
#   REF_BINDIR  directory with the reference mkcomposefs (default: the containers/composefs 1.0.8
#               build in ../shared/reference).
#   RS_BINDIR   directory with composefs-rs's cfsctl (default: the 0.9.0 build in ../shared/reference).
#   TREE        default /usr/lib/x86_64-linux-gnu (pass /usr for the full tree; slow: the
#               reference fsyncs every object).
#   RUNS        hyperfine runs (default 3).
# Stores go to /var/tmp (a disk, not tmpfs). Needs hyperfine.
set -euo pipefail
cd "$(dirname "$0")/.."

REF=${REF_BINDIR:-../shared/reference/c-composefs-1.0.8}/mkcomposefs
RS=$(realpath "${RS_BINDIR:-../shared/reference/composefs-rs-0.9.0}")/cfsctl
TREE=${1:-/usr/lib/x86_64-linux-gnu}
RUNS=${RUNS:-3}
THREADS=$(nproc)

swift build -c release --product cfsctl >/dev/null
swift build -c release --product mkcomposefs >/dev/null
OURS=$PWD/.build/release/cfsctl

work=$(mktemp -d /var/tmp/cfs-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

PLAIN=--no-propagate-usr-to-root
echo "== first import of $TREE: cfsctl create-image (SHA-256 repository) vs composefs-rs cfsctl and C mkcomposefs --digest-store (--threads=$THREADS)"
hyperfine --runs "$RUNS" \
    --prepare "rm -rf $work/store $work/repo $work/rs $work/ref.cfs; $OURS --repo $work/repo init --insecure --algorithm fsverity-sha256-12 >/dev/null; $RS --repo $work/rs init --insecure --algorithm fsverity-sha256-12 >/dev/null" \
    -n c-mkcomposefs "$REF --threads=$THREADS --digest-store=$work/store $TREE $work/ref.cfs" \
    -n rs-cfsctl "$RS --repo $work/rs create-image $PLAIN $TREE" \
    -n ours "$OURS --repo $work/repo create-image $PLAIN $TREE"

ours_id=$("$OURS" --repo "$work/repo" create-image $PLAIN "$TREE")
rs_id=$("$RS" --repo "$work/rs" create-image $PLAIN "$TREE")
[ "$ours_id" = "$rs_id" ] && echo "image ids identical to composefs-rs's: $rs_id"

echo "== re-import of $TREE (all objects present) vs first import"
hyperfine --runs "$RUNS" \
    --prepare "rm -rf $work/fresh; $OURS --repo $work/fresh init --insecure --algorithm fsverity-sha256-12 >/dev/null" \
    -n first-import "$OURS --repo $work/fresh create-image $PLAIN $TREE" \
    -n re-import "$OURS --repo $work/repo create-image $PLAIN $TREE"
