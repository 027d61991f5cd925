#!/usr/bin/env bash
# composefs-setup-root, start to mounted root: ours (the static release build, both ways it can
# build the tree) against composefs-rs 0.9's, side by side in the same run, each run in the same
# private mount namespace over the same physical root (a directory bind-mounted at the sysroot
# with an insecure repository, so no fs-verity is needed). Between runs everything the previous
# run mounted is taken down (not timed). The staged runs go through env(1) to set
# COMPOSEFS_SETUP_ROOT_STAGING, one exec more.
#
# A run takes a few milliseconds, most of it in the kernel, and single runs now and then wait for
# an RCU grace period or another process: so the commands are measured in ROUNDS rounds, their
# order rotated each round, and compared by medians.
#
# Usage (as root): [REF=PATH] [RUNS=N] [ROUNDS=N] bench/setup-root.sh [TREE]
#   TREE    the image's tree (default /usr/share/doc; the setup time hardly depends on its size:
#           only the EROFS superblock is read at mount time)
#   REF     the reference composefs-setup-root (default ../shared/reference/composefs-rs-0.9.0/)
#   RUNS    hyperfine runs per command and round (default 60)
#   ROUNDS  rounds (default 5)
# Needs hyperfine, python3 and unshare (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."

TREE=${1:-/usr/share/doc}
REF=${REF:-$PWD/../shared/reference/composefs-rs-0.9.0/composefs-setup-root}
RUNS=${RUNS:-60}
ROUNDS=${ROUNDS:-5}
command -v hyperfine >/dev/null || { echo "error: hyperfine not found" >&2; exit 1; }
[[ -x $REF ]] || { echo "error: no reference composefs-setup-root at $REF" >&2; exit 1; }

swift build -c release --product composefs-setup-root >/dev/null
swift build -c release --product cfsctl >/dev/null
BIN=$(swift build -c release --show-bin-path)

work=$(mktemp -d /var/tmp/cfs-setup-root-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/physical" "$work/sysroot" "$work/tree"
# The tree as a bootable root: /etc, /var and /sysroot to mount on.
cp -a "$TREE" "$work/tree/usr"
mkdir -p "$work/tree/etc" "$work/tree/var" "$work/tree/sysroot"
echo "NAME=bench" >"$work/tree/etc/os-release"
"$BIN/cfsctl" --repo "$work/physical/composefs" init --insecure >/dev/null
id=$("$BIN/cfsctl" --repo "$work/physical/composefs" create-image "$work/tree")
hex=${id#sha512:}
mkdir -p "$work/physical/state/deploy/$hex/etc" "$work/physical/state/deploy/$hex/var"
echo "image $id of $TREE ($(du -sh "$work/tree" | cut -f1)), $ROUNDS rounds of $RUNS runs"

args="--sysroot $work/sysroot --config $work/no-config.toml --cmdline composefs.digest=?v1-sha512-12:$hex"
# Everything stacked on the sysroot goes, then the physical root is bound there afresh.
reset="sh -c 'while mountpoint -q $work/sysroot; do umount -R $work/sysroot; done; mount --bind $work/physical $work/sysroot'"
names=("ours (detached, Linux 6.15+)" "ours (staged, older kernels)" "composefs-rs 0.9")
commands=("$BIN/composefs-setup-root $args" "env COMPOSEFS_SETUP_ROOT_STAGING=1 $BIN/composefs-setup-root $args" "$REF $args")

for round in $(seq "$ROUNDS"); do
    arguments=()
    for i in 0 1 2; do
        j=$(((i + round) % 3))
        arguments+=(-n "${names[$j]}" "${commands[$j]}")
    done
    unshare -m --propagation private hyperfine -N --style none --warmup 10 --runs "$RUNS" --prepare "$reset" \
        --export-json "$work/round-$round.json" "${arguments[@]}" >/dev/null
done

python3 - "$work" "$ROUNDS" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
times = {}
for round in range(1, rounds + 1):
    for result in json.load(open(f"{work}/round-{round}.json"))["results"]:
        times.setdefault(result["command"], []).append(result["times"])
reference = "composefs-rs 0.9"
print(f"{'':32} {'median':>9} {'mean':>9} {'min':>9}  median per round / reference's")
for name, rounds_times in times.items():
    all_times = [t for round_times in rounds_times for t in round_times]
    ratios = [statistics.median(mine) / statistics.median(theirs) for mine, theirs in zip(rounds_times, times[reference])]
    print(f"{name:32} {statistics.median(all_times) * 1000:7.2f}ms {statistics.mean(all_times) * 1000:7.2f}ms "
          f"{min(all_times) * 1000:7.2f}ms  " + " ".join(f"{r:.2f}" for r in ratios)
          + f"  (overall {statistics.median(all_times) / statistics.median([t for r in times[reference] for t in r]):.2f}x)")
EOF
