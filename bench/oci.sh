#!/usr/bin/env bash
# Pulling a multi-layer image from a local registry into an empty repository and building
# its composefs image (cfsctl oci pull), against the reference pipeline on the same image:
# skopeo copy to an OCI layout + umoci unpack + mkcomposefs --digest-store (reference C).
# Then a second pull of the same image against the first.
#
# Usage: [REF_BINDIR=DIR] bench/oci.sh [BIG_MIB]
#   REF_BINDIR  directory with the reference mkcomposefs (default: the containers/composefs 1.0.8
#               build in ../shared/reference).
#   BIG_MIB     size of each of the image's three big files (default 200: a ~700 MB image).
#   RUNS        hyperfine runs (default 3).
# The image comes from scripts/make-oci-image.py with umoci-compatible (gzip) layers.
# Needs docker-registry, skopeo, umoci, hyperfine; work goes to /var/tmp (a disk).
set -euo pipefail
cd "$(dirname "$0")/.."

REF=${REF_BINDIR:-../shared/reference/c-composefs-1.0.8}/mkcomposefs
BIG=${1:-200}
RUNS=${RUNS:-3}
THREADS=$(nproc)
PORT=${PORT:-5055}

swift build -c release --product cfsctl >/dev/null
OURS=$PWD/.build/release/cfsctl

work=$(mktemp -d /var/tmp/cfs-oci-bench.XXXXXX)
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$PORT
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry=$!
trap 'kill $registry; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done

python3 scripts/make-oci-image.py "$work/layout" --no-zstd --big-mib "$BIG"
skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout:test" "docker://127.0.0.1:$PORT/bench:v1"
echo "image: $(du -sh "$work/layout/blobs" | cut -f1) compressed"
IMAGE=docker://127.0.0.1:$PORT/bench:v1

echo "== pull + composefs image: cfsctl oci pull vs skopeo copy + umoci unpack + mkcomposefs --digest-store (--threads=$THREADS)"
hyperfine --runs "$RUNS" \
    --prepare "rm -rf $work/repo $work/ref; mkdir -p $work/ref; $OURS --repo $work/repo init --insecure --algorithm fsverity-sha256-12 >/dev/null; sync" \
    -n reference "skopeo copy --quiet --src-tls-verify=false $IMAGE oci:$work/ref/layout:test && umoci unpack --image $work/ref/layout:test $work/ref/bundle >/dev/null && $REF --threads=$THREADS --digest-store=$work/ref/store $work/ref/bundle/rootfs $work/ref/image.cfs" \
    -n ours "$OURS --repo $work/repo oci pull $IMAGE bench >/dev/null"

# hyperfine's --prepare removed the reference's output: unpack once more to compare ids.
rm -rf "$work/ref"; mkdir -p "$work/ref"
skopeo copy --quiet --src-tls-verify=false "$IMAGE" "oci:$work/ref/layout:test"
umoci unpack --image "$work/ref/layout:test" "$work/ref/bundle" >/dev/null
ours_id=$("$OURS" --repo "$work/repo" oci compute-id bench)
ref_id=$("$REF" --print-digest-only "$work/ref/bundle/rootfs")
[ "$ours_id" = "$ref_id" ] && echo "image ids identical: $ref_id" || echo "IMAGE IDS DIFFER: ours $ours_id reference $ref_id"

echo "== memory of one pull (max RSS)"
rm -rf "$work/repo"; "$OURS" --repo "$work/repo" init --insecure --algorithm fsverity-sha256-12 >/dev/null
/usr/bin/time -f "ours: %M KiB max RSS" "$OURS" --repo "$work/repo" oci pull "$IMAGE" bench >/dev/null

echo "== second pull of the same image vs first pull"
hyperfine --runs "$RUNS" \
    --prepare "rm -rf $work/fresh; $OURS --repo $work/fresh init --insecure --algorithm fsverity-sha256-12 >/dev/null" \
    -n first "$OURS --repo $work/fresh oci pull $IMAGE bench >/dev/null" \
    -n second "$OURS --repo $work/repo oci pull $IMAGE bench >/dev/null"
