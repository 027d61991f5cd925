#!/usr/bin/bash
# dracut module: composefs-setup-root replaces the physical root mounted at /sysroot with the
# composefs image named by composefs= or composefs.digest= on the kernel command line.

check() {
    require_binaries /usr/bin/composefs-setup-root || return 1
    return 0
}

depends() {
    echo systemd
    return 0
}

installkernel() {
    # EROFS holds the image's metadata, overlayfs puts it over the object store; loop devices
    # serve kernels whose EROFS cannot mount a file directly.
    instmods erofs overlay loop
}

install() {
    # A static executable: no libraries to follow.
    inst_simple /usr/bin/composefs-setup-root
    inst_simple "$moddir/composefs-setup-root.service" "$systemdsystemunitdir/composefs-setup-root.service"
    if [ -e /usr/lib/composefs/setup-root-conf.toml ]; then
        inst_simple /usr/lib/composefs/setup-root-conf.toml
    fi
    $SYSTEMCTL -q --root "$initdir" add-wants initrd-root-fs.target composefs-setup-root.service
}
