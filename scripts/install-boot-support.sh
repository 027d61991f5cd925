#!/usr/bin/env bash
# Installs what boots a composefs system into DESTDIR (a root file system or an image being
# built): the static composefs-setup-root, the dracut module, the mkinitcpio hook and the
# kernel-install layout.
#
# Usage: scripts/install-boot-support.sh [--layout bls|uki] [--binary PATH] DESTDIR
#   --layout   kernel-install layout: boot loader entries (bls, the default) or unified kernel
#              images built with ukify (uki)
#   --binary   the composefs-setup-root to install (default: built here with
#              `swift build -c release --product composefs-setup-root`)
set -euo pipefail
cd "$(dirname "$0")/.."

layout=bls
binary=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --layout) layout=${2:?--layout needs bls or uki}; shift 2 ;;
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "error: unknown option $1" >&2; exit 1 ;;
        *) break ;;
    esac
done
[[ $# -eq 1 ]] || { echo "usage: $0 [--layout bls|uki] [--binary PATH] DESTDIR" >&2; exit 1; }
destdir=$1
[[ $layout == bls || $layout == uki ]] || { echo "error: --layout is bls or uki, not $layout" >&2; exit 1; }

if [[ -z $binary ]]; then
    swift build -c release --product composefs-setup-root
    binary=$(swift build -c release --show-bin-path)/composefs-setup-root
fi

install -D -m 0755 "$binary" "$destdir/usr/bin/composefs-setup-root"
install -D -m 0755 packaging/dracut/37composefs/module-setup.sh "$destdir/usr/lib/dracut/modules.d/37composefs/module-setup.sh"
install -D -m 0644 packaging/dracut/37composefs/composefs-setup-root.service \
    "$destdir/usr/lib/dracut/modules.d/37composefs/composefs-setup-root.service"
install -D -m 0644 packaging/mkinitcpio/hooks/composefs "$destdir/usr/lib/initcpio/hooks/composefs"
install -D -m 0644 packaging/mkinitcpio/install/composefs "$destdir/usr/lib/initcpio/install/composefs"
install -D -m 0644 "packaging/kernel-install/$layout/37composefs.conf" "$destdir/usr/lib/kernel/install.conf.d/37composefs.conf"
echo "installed composefs boot support ($layout) into $destdir"
