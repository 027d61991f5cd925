#!/usr/bin/env bash
# Builds a libFuzzer harness and fuzzes it.
#   Fuzz/run.sh FuzzDumpfile|FuzzImage|FuzzLayer|FuzzDocument|FuzzBoot [SECONDS] [LIBFUZZER-OPTION...]
# The corpus grows in .build-fuzz/work/TARGET/corpus across runs; crashers go to
# .build-fuzz/work/TARGET/artifacts. Seeds are regenerated on every run from the
# reference vectors (COMPOSEFS_ASSETS, default ../shared/vectors/composefs-assets)
# and the checked-in regression inputs. Image seeds are built with MKCOMPOSEFS
# (default: the reference tool if built in ../ref, else ours); layer and document
# seeds are tars and JSON made by scripts/fuzz-seeds.py.
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: Fuzz/run.sh FuzzDumpfile|FuzzImage|FuzzLayer|FuzzDocument|FuzzBoot [SECONDS] [LIBFUZZER-OPTION...]"
target=${1:?$usage}
seconds=${2:-600}
shift $(($# < 2 ? $# : 2))
case $target in
    FuzzDumpfile) kind=dumpfile max_len=65536 ;;
    FuzzImage) kind=image max_len=131072 ;;
    FuzzLayer) kind=layer max_len=65536 ;;
    FuzzDocument) kind=document max_len=65536 ;;
    FuzzBoot) kind=boot max_len=65536 ;;
    *) echo "$usage" >&2; exit 2 ;;
esac

scratch=.build-fuzz
assets=${COMPOSEFS_ASSETS:-../shared/vectors/composefs-assets}
work=$scratch/work/$target
case $kind in
    layer|document) regressions=Tests/OCITests/FuzzRegressions/$kind ;;
    boot) regressions=Tests/BootTests/FuzzRegressions/$kind ;;
    *) regressions=Tests/ComposeFSTests/FuzzRegressions/$kind ;;
esac
jobs=${FUZZ_BUILD_JOBS:-2}

# Release: optimized code fuzzes several times faster. (Each harness starts
# libFuzzer from its own main, so debug links too.)
swift build --package-path Fuzz --scratch-path "$scratch" -c release -j "$jobs" \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld --product "$target"
binary=$scratch/release/$target

# Dumpfile seeds: the vectors, and the start of the large gzipped ones (whole lines).
dump_seeds=$work/dump-seeds
rm -rf "$dump_seeds"
mkdir -p "$dump_seeds" "$work/corpus" "$work/artifacts"
if [ -d "$assets" ]; then
    cp "$assets"/*.dump "$dump_seeds"/
    for gz in "$assets"/*.dump.gz; do
        gzip -dc "$gz" | head -n 200 >"$dump_seeds/$(basename "$gz" .gz)" || true
    done
else
    echo "note: $assets not present; seeding only from $regressions" >&2
fi

seeds=$dump_seeds
if [ "$kind" = layer ] || [ "$kind" = document ]; then
    seeds=$work/$kind-seeds
    rm -rf "$seeds"
    python3 scripts/fuzz-seeds.py "$kind" "$seeds"
fi
if [ "$kind" = image ]; then
    mkcomposefs=${MKCOMPOSEFS:-}
    if [ -z "$mkcomposefs" ] && [ -x ../ref/build/tools/mkcomposefs ]; then
        mkcomposefs=../ref/build/tools/mkcomposefs
    fi
    if [ -z "$mkcomposefs" ]; then
        # A build without sanitizers, in its own scratch path so the flags do not clash.
        swift build --scratch-path "$scratch-tools" -c release -j "$jobs" --product mkcomposefs
        mkcomposefs=$scratch-tools/release/mkcomposefs
    fi
    seeds=$work/image-seeds
    rm -rf "$seeds"
    mkdir -p "$seeds"
    # Both format versions; dumpfiles that must fail give no image.
    for dump in "$dump_seeds"/*.dump; do
        name=$(basename "$dump" .dump)
        "$mkcomposefs" --from-file "$dump" "$seeds/$name.v0.img" 2>/dev/null || true
        "$mkcomposefs" --min-version=1 --from-file "$dump" "$seeds/$name.v1.img" 2>/dev/null || true
    done
    find "$seeds" -type f -empty -delete
fi

# The Swift runtime's crash backtracer gets in the way of ASan's reports.
export SWIFT_BACKTRACE=enable=no
exec "$binary" "$work/corpus" "$seeds" "$regressions" \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 "$@"
