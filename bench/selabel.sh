#!/usr/bin/env bash
# SELinux relabelling of a bootable tree: `cfsctl --no-repo compute-id --bootable ROOT` against
# composefs-rs 0.9's cfsctl on the same ROOT, where ROOT has /usr bind-mounted from the host's
# /usr (about 130k entries), Debian's real policy (selinux-policy-default, compiled by
# semodule from the .debs, never installed) under etc/selinux, and empty boot/ and sysroot/.
# Both print the image id; the ids are compared. A second comparison without the policy shows
# what the labelling itself costs each tool.
#
# Usage: [RS_BINDIR=DIR] [RUNS=N] bench/selabel.sh
#   RS_BINDIR  directory with composefs-rs's cfsctl (default: the 0.9.0 build in ../shared/reference).
#   RUNS       hyperfine runs (default 5).
# Needs root (bind mount), hyperfine, dpkg-deb and apt-get (or the .debs in
# /var/tmp/composefs-test-debs, where the compiled policy is kept for the tests too).
set -euo pipefail
cd "$(dirname "$0")/.."

RS=$(realpath "${RS_BINDIR:-../shared/reference/composefs-rs-0.9.0}")/cfsctl
RUNS=${RUNS:-5}
DEBS=/var/tmp/composefs-test-debs

swift build -c release --product cfsctl >/dev/null
OURS=$PWD/.build/release/cfsctl

# The compiled policy: built once from the .debs, kept where the tests keep it.
mkdir -p "$DEBS"
for package in selinux-policy-default policycoreutils; do
    ls "$DEBS/${package}"_*.deb >/dev/null 2>&1 || (cd "$DEBS" && apt-get download -qq "$package")
done
policy_deb=$(ls "$DEBS"/selinux-policy-default_*.deb | tail -1)
tools_deb=$(ls "$DEBS"/policycoreutils_*.deb | tail -1)
cache=$DEBS/compiled-$(basename "$policy_deb" .deb)
if [[ ! -e $cache/etc/selinux/default/contexts/files/file_contexts ]]; then
    echo "compiling Debian's policy with semodule (once, a minute or two)"
    build=$(mktemp -d "$DEBS/build-XXXXXX")
    dpkg-deb -x "$policy_deb" "$build/policy"
    dpkg-deb -x "$tools_deb" "$build/tools"
    mkdir -p "$build/root/etc/selinux" "$build/root/var/lib/selinux"
    cp -a "$build/policy/etc/selinux/default" "$build/root/etc/selinux/"
    cat >"$build/root/etc/selinux/semanage.conf" <<EOF
module-store = direct
expand-check=0
compiler-directory = $build/tools/usr/libexec/selinux/hll
[setfiles]
path = $build/tools/sbin/setfiles
args = -q -c \$@ \$<
[end]
[sefcontext_compile]
path = /bin/true
args = \$@
[end]
EOF
    printf 'SELINUX=permissive\nSELINUXTYPE=default\n' >"$build/root/etc/selinux/config"
    modules=()
    for module in $(cat "$build/policy/usr/share/selinux/default/.modules"); do
        modules+=("-i$build/policy/usr/share/selinux/default/$module.pp.bz2")
    done
    "$build/tools/usr/sbin/semodule" -p "$build/root" -X 100 -n -s default "${modules[@]}" 2>/dev/null
    rm "$build/root/etc/selinux/semanage.conf"
    mkdir -p "$build/cache"
    mv "$build/root/etc" "$build/cache/etc"
    mv -T "$build/cache" "$cache" 2>/dev/null || true
    rm -rf "$build"
fi

work=$(mktemp -d /var/tmp/cfs-selabel-bench.XXXXXX)
root=$work/root
cleanup() {
    umount "$root/usr" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$root/usr" "$root/boot" "$root/sysroot" "$root/etc"
mount --bind /usr "$root/usr"
cp -a "$cache/etc/selinux" "$root/etc/"
entries=$(find "$root" 2>/dev/null | wc -l)
echo "== ROOT: $entries entries, $(wc -l <"$root/etc/selinux/default/contexts/files/file_contexts") file_contexts lines"

# Warm the page cache so both tools measure the same thing.
"$RS" --no-repo compute-id --bootable "$root" >/dev/null

ours_id=$("$OURS" --no-repo compute-id --bootable "$root")
rs_id=$("$RS" --no-repo compute-id --bootable "$root")
echo "ours: $ours_id"
echo "rs:   $rs_id"
if [[ $ours_id != "$rs_id" ]]; then
    echo "error: the image ids differ" >&2
    exit 1
fi

echo "== compute-id --bootable with Debian's policy"
hyperfine --runs "$RUNS" --warmup 1 --export-json "$work/with.json" \
    -n rs-cfsctl "$RS --no-repo compute-id --bootable $root" \
    -n ours "$OURS --no-repo compute-id --bootable $root"

echo "== compute-id --bootable without a policy (the labels' own cost is the difference)"
mv "$root/etc/selinux" "$work/selinux"
hyperfine --runs "$RUNS" --warmup 1 --export-json "$work/without.json" \
    -n rs-cfsctl "$RS --no-repo compute-id --bootable $root" \
    -n ours "$OURS --no-repo compute-id --bootable $root"

python3 - "$work/with.json" "$work/without.json" <<'EOF'
import json, sys
def means(path):
    return {r["command"]: r["mean"] for r in json.load(open(path))["results"]}
with_policy, without = means(sys.argv[1]), means(sys.argv[2])
print(f"ours / rs-cfsctl with the policy:    {with_policy['ours'] / with_policy['rs-cfsctl']:.2f}")
print(f"ours / rs-cfsctl without a policy:   {without['ours'] / without['rs-cfsctl']:.2f}")
for tool in ("ours", "rs-cfsctl"):
    print(f"labelling cost, {tool}: {with_policy[tool] - without[tool]:+.3f} s")
EOF
