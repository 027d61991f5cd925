# Shared by install-v1.sh and install-v2.sh: the physical root at /sysroot, the ESP at /esp.
root=$(disk_labelled cfsroot) && mount -t ext4 "$root" /sysroot || exit 1
esp=$(disk_labelled CFSESP) && mount -t vfat "$esp" /esp || exit 1
repo=/sysroot/composefs

# install_version VERSION REF: prepare-boot stores /sysroot/sources/VERSION (the UKI in it must
# name the image the guest computes), copies the UKI to the ESP and makes the state directory.
install_version() {
    karg=$(cfsctl --repo "$repo" prepare-boot --bootdir /esp "/sysroot/sources/$1" "$2" 2>&1)
    echo "CFSTEST karg $1 $karg"
    id=$(cat "/tools/share/expected/id-$1")
    check "prepare-boot-$1-karg-as-computed-on-host" test "$karg" = "composefs.digest=v1-sha512-12:$id"
    check "uki-$1-on-esp" test -f "/esp/EFI/Linux/$2.efi"
    check "state-$1-made" test -d "/sysroot/state/deploy/$id/etc/upper" -a -d "/sysroot/state/deploy/$id/var"
    check "image-$1-has-verity" fsverity measure "$repo/images/$id"
    check "create-image-bootable-$1-same-id" test "$(cfsctl --repo "$repo" create-image --bootable "/sysroot/sources/$1" 2>/dev/null)" = "sha512:$id"
}

finish_install() {
    check fsck cfsctl --repo "$repo" fsck
    umount /esp
    umount /sysroot
}
