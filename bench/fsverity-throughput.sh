#!/usr/bin/env bash
# Single-file fs-verity digest throughput: `fsverity digest` (fsverity-utils) vs ours
# (`composefs-info measure-file`, which falls back to the userspace digest when the file
# has no fs-verity).
#
# Usage: bench/fsverity-throughput.sh [FILE]
#   FILE defaults to a fresh 1 GiB random file in a temporary directory.
#   OURS=path/to/composefs-info (default .build/release/composefs-info)
#   RUNS=N hyperfine runs per command (default 5)
set -euo pipefail

OURS=${OURS:-.build/release/composefs-info}
THEIRS=${THEIRS:-fsverity}
RUNS=${RUNS:-5}

if ! command -v "$THEIRS" >/dev/null; then
    echo "error: '$THEIRS' (Debian package fsverity) not found" >&2
    exit 1
fi

if [[ $# -ge 1 ]]; then
    file=$1
else
    workdir=$(mktemp -d)
    trap 'rm -rf "$workdir"' EXIT
    file=$workdir/random-1GiB
    echo "creating 1 GiB random file $file"
    head -c 1G /dev/urandom >"$file"
fi
size=$(stat -c %s "$file")

# Warm the page cache so both tools measure hashing, not the disk.
cat "$file" >/dev/null

theirs_cmd="$THEIRS digest --hash-alg=sha256 --block-size=4096 '$file'"
ours_cmd="'$OURS' measure-file '$file'"

theirs_digest=$(eval "$theirs_cmd" | cut -d' ' -f1)
have_ours=1
if [[ ! -x $OURS ]]; then
    echo "note: $OURS not found (build with: swift build -c release); timing fsverity only"
    have_ours=0
else
    ours_digest=sha256:$(eval "$ours_cmd")
    if [[ $ours_digest != "$theirs_digest" ]]; then
        echo "error: digest mismatch: fsverity $theirs_digest, ours $ours_digest" >&2
        exit 1
    fi
    echo "digests match: $theirs_digest"
fi

# Prints the mean wall time in seconds of one command.
mean_seconds() {
    if command -v hyperfine >/dev/null; then
        local json
        json=$(mktemp)
        hyperfine --style none --warmup 1 --runs "$RUNS" --export-json "$json" "$1" >/dev/null
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["mean"])' "$json"
        rm -f "$json"
    else
        local start end
        start=$(date +%s.%N)
        for _ in $(seq "$RUNS"); do eval "$1" >/dev/null; done
        end=$(date +%s.%N)
        echo "($end - $start) / $RUNS" | bc -l
    fi
}

report() {  # name seconds
    awk -v n="$1" -v t="$2" -v s="$size" \
        'BEGIN { printf "%-16s %8.3f s  %8.1f MB/s\n", n, t, s / t / 1e6 }'
}

theirs_time=$(mean_seconds "$theirs_cmd")
report "fsverity digest" "$theirs_time"
if [[ $have_ours == 1 ]]; then
    ours_time=$(mean_seconds "$ours_cmd")
    report "composefs-info" "$ours_time"
    awk -v o="$ours_time" -v t="$theirs_time" \
        'BEGIN { printf "ratio ours/theirs (time): %.3f  (throughput: %.0f%% of fsverity)\n", o / t, 100 * t / o }'
fi
