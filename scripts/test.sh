#!/usr/bin/env bash
# Runs the whole test suite. Installs the Debian tools the tests compare against
# (fsverity, fsck.erofs, umoci, skopeo, a registry, systemd's EFI stub and objcopy for UKIs)
# and libraries when missing and we can.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fsverity >/dev/null 2>&1 || need+=(fsverity)
command -v fsck.erofs >/dev/null 2>&1 || need+=(erofs-utils)
# composefs-fuse builds against libfuse3; its tests mount with it (fusermount3 when not root).
[ -e /usr/include/fuse3/fuse_lowlevel.h ] || need+=(libfuse3-dev)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
# Split streams are zstd-compressed; gzip layers need zlib.
[ -e /usr/include/zstd.h ] || need+=(libzstd-dev)
[ -e /usr/include/zlib.h ] || need+=(zlib1g-dev)
# fs-verity digests hash with OpenSSL's libcrypto.
[ -e /usr/include/openssl/sha.h ] || need+=(libssl-dev)
# file_contexts patterns regex-syntax refuses go to PCRE2, as in composefs-rs.
[ -e /usr/include/pcre2.h ] || need+=(libpcre2-dev)
# The SELinux tests compile Debian's policy with the semodule of policycoreutils's .deb, which
# needs these libraries (the policy itself is never installed).
[ -e /usr/lib/x86_64-linux-gnu/libsemanage.so.2 ] || need+=(libsemanage2)
# OCI tests: a real registry on loopback, skopeo to fill it, umoci to compare with, zstd layers.
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v curl >/dev/null 2>&1 || need+=(curl)
# Boot tests: real UKIs are systemd's EFI stub with sections added by objcopy.
[ -e /usr/lib/systemd/boot/efi/linuxx64.efi.stub ] || need+=(systemd-boot-efi)
command -v objcopy >/dev/null 2>&1 || need+=(binutils)
# VM tests (vmtest/run.py): qemu with OVMF, sbsign, busybox and the tools that build disks,
# initramfs and UKIs (trixie's kernel, ukify and systemd-boot are downloaded by the harness).
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[ -e /usr/share/OVMF/OVMF_CODE_4M.secboot.fd ] || need+=(ovmf)
command -v sbsign >/dev/null 2>&1 || need+=(sbsigntool)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
/usr/bin/python3 -c 'import pefile' 2>/dev/null || need+=(python3-pefile)
command -v mcopy >/dev/null 2>&1 || need+=(mtools)
command -v mkfs.vfat >/dev/null 2>&1 || need+=(dosfstools)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v modinfo >/dev/null 2>&1 || need+=(kmod)
command -v debugfs >/dev/null 2>&1 || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "Not installing ${need[*]} (not root or no apt-get): tests needing them will skip"
    fi
fi

# OVMF's variable store gets our Secure Boot keys through virt-fw-vars (PyPI's virt-firmware).
if ! command -v virt-fw-vars >/dev/null 2>&1; then
    python3 -m pip install -q virt-firmware 2>/dev/null || echo "Could not install virt-firmware: the VM tests will skip"
fi

# Debian's SELinux policy and the tools compiling it, as .debs the tests extract (kept in
# /var/tmp: downloaded once).
debs=/var/tmp/composefs-test-debs
mkdir -p "$debs"
for package in selinux-policy-default policycoreutils; do
    if ! ls "$debs/${package}"_*.deb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        (cd "$debs" && { apt-get download -qq "$package" 2>/dev/null || { [ "$(id -u)" = 0 ] && apt-get update -qq && apt-get download -qq "$package"; }; }) \
            || echo "Could not download $package: the tests of Debian's SELinux policy will skip"
    fi
done

# The reference vectors and tools live beside the checkout; in CI their absence is an error
# (in a user's clone the tests that need them are skipped, with the reason).
if [ "${CI:-}" = true ] && [ ! -d ../shared/vectors/composefs-assets ]; then
    echo "error: CI=true but ../shared/vectors/composefs-assets is missing" >&2
    exit 1
fi

swift build --build-tests
# The initramfs helper's release build (static, at most 10 MB), checked by SetupRootTests.
swift build -c release --product composefs-setup-root
swift test --skip-build --parallel --num-workers 2
# The boot chain and fs-verity for real: qemu (TCG) boots trixie's kernel under OVMF with Secure
# Boot (about 2 minutes on 2 cores, downloads cached in /var/tmp/composefs-vm).
python3 vmtest/run.py
