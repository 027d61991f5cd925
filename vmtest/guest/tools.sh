# The tools boot: fs-verity on a real kernel, for every tool. Files prepared by the harness are
# in /tools/share; everything is written to the scratch disk (ext4 with the verity feature).
. /lib/cfstest/lib.sh
share=/tools/share
scratch=$(disk_labelled cfsscratch) && mount -t ext4 "$scratch" /scratch || exit 1
zeros=0000000000000000000000000000000000000000000000000000000000000000

# The kernel's measurement of a file: "ALGORITHM:HEX".
measured() { fsverity measure "$1" | cut -d' ' -f1; }

# Every file below store $1 has verity enabled, and its digest ($2) is its name (xx/yyyy...).
store_has_verity() {
    count=0
    for object in $(find "$1" -type f -path "$1/??/*"); do
        name=${object#"$1"/}
        [ "$(measured "$object")" = "$2:$(echo "$name" | tr -d /)" ] || { echo "$object: $(measured "$object" 2>&1)"; return 1; }
        count=$((count + 1))
    done
    echo "$count objects"
    [ $count -gt 0 ]
}

# 1. Our userspace digests (computed on the host) equal the kernel's, for many sizes.
for algorithm in sha256 sha512; do
    mkdir -p "/scratch/sizes-$algorithm"
    while read -r expected name; do
        copy=/scratch/sizes-$algorithm/$name
        cp "$share/sizes/$name" "$copy"
        if ! output=$(fsverity enable --hash-alg="$algorithm" "$copy" 2>&1); then
            fail "kernel-digest-$algorithm-$name" "enable: $output"
        elif [ "$(measured "$copy")" = "$algorithm:$expected" ]; then
            pass "kernel-digest-$algorithm-$name"
        else
            fail "kernel-digest-$algorithm-$name" "kernel $(measured "$copy"), ours $expected"
        fi
    done < "$share/sizes/expected-$algorithm"
done

# composefs-info measure-file reports the kernel's measurement of a file that has verity.
check composefs-info-measure-file-is-kernel-digest sh -c \
    "test \"sha256:\$(composefs-info measure-file /scratch/sizes-sha256/size-4097)\" = \"\$(fsverity measure /scratch/sizes-sha256/size-4097 | cut -d' ' -f1)\""

# 2. mkcomposefs --digest-store enables verity on the objects it writes.
mkdir -p /mnt/image /mnt/fuse
check mkcomposefs-digest-store mkcomposefs --digest-store=/scratch/store "$share/tree" /scratch/tree.cfs
check mkcomposefs-objects-have-verity store_has_verity /scratch/store sha256

# 3. mount.composefs: digest= checks the image, verity= every object.
fsverity enable /scratch/tree.cfs
digest=$(measured /scratch/tree.cfs | cut -d: -f2)
check mount-composefs-digest mount.composefs -o "basedir=/scratch/store,digest=$digest" /scratch/tree.cfs /mnt/image
check mount-composefs-files-equal-source diff -r "$share/tree" /mnt/image
check mount-composefs-is-verity-required sh -c "grep ' /mnt/image overlay ' /proc/mounts | grep -q verity=require"
umount /mnt/image
refuses mount-composefs-wrong-digest 'digest|verity' mount.composefs -o "basedir=/scratch/store,digest=$zeros" /scratch/tree.cfs /mnt/image
cp /scratch/tree.cfs /scratch/tree-without-verity.cfs
refuses mount-composefs-image-without-verity 'verity' mount.composefs -o "basedir=/scratch/store,digest=$digest" /scratch/tree-without-verity.cfs /mnt/image

# Stores with one object (usr/big.bin's) replaced: other content with verity enabled, or the right
# content without verity. The other objects keep verity.
victim=$(composefs-info measure-file "$share/tree/usr/big.bin" | cut -d' ' -f1)
victim=$(echo "$victim" | cut -c1-2)/$(echo "$victim" | cut -c3-)
for kind in tampered no-verity; do
    cp -r /scratch/store "/scratch/store-$kind"
    for object in $(find "/scratch/store-$kind" -type f); do
        [ "$object" = "/scratch/store-$kind/$victim" ] || fsverity enable "$object"
    done
done
echo tampered >> "/scratch/store-tampered/$victim"
fsverity enable "/scratch/store-tampered/$victim"
for kind in tampered no-verity; do
    if mount.composefs -o "basedir=/scratch/store-$kind,verity" /scratch/tree.cfs /mnt/image; then
        refuses "mount-composefs-$kind-object-eio" 'Input/output error' cat /mnt/image/usr/big.bin
        check "mount-composefs-$kind-store-other-files-read" cat /mnt/image/usr/medium.bin
        umount /mnt/image
    else
        fail "mount-composefs-$kind-object-eio" "mount failed"
    fi
done

# 4. cfsctl: a repository that is not --insecure enables verity on everything it writes, and
# mounting by id checks the kernel's measurement of the image.
for algorithm in sha256 sha512; do
    repo=/scratch/repo-$algorithm
    check "cfsctl-init-secure-$algorithm" cfsctl --repo "$repo" init --algorithm "fsverity-$algorithm-12"
    check "cfsctl-meta-json-has-verity-$algorithm" measured "$repo/meta.json"
    id=$(cfsctl --repo "$repo" create-image "$share/tree" tree 2>&1)
    id=${id#*:}
    check "cfsctl-create-image-$algorithm" test -L "$repo/images/$id"
    check "cfsctl-objects-have-verity-$algorithm" store_has_verity "$repo/objects" "$algorithm"
    check "cfsctl-fsck-$algorithm" cfsctl --repo "$repo" fsck
    if cfsctl --repo "$repo" mount "$id" /mnt/image; then
        check "cfsctl-mount-files-equal-source-$algorithm" diff -r "$share/tree" /mnt/image
        umount /mnt/image
    else
        fail "cfsctl-mount-files-equal-source-$algorithm" "mount failed"
    fi
    other=$(cfsctl --repo "$repo" create-image "$share/tree2" other 2>&1)
    other=${other#*:}
    ln -sfn "$(readlink "$repo/images/$other")" "$repo/images/$id"
    refuses "cfsctl-mount-swapped-image-$algorithm" 'digest|verity|mismatch' cfsctl --repo "$repo" mount "$id" /mnt/image
done

# 5. OCI: a pull into a secure repository stores the layers' files, the split streams and the
# image with verity; a zero-copy copy into a second one links the same (verity) files.
repo=/scratch/repo-oci
check oci-init-secure cfsctl --repo "$repo" init
check oci-pull cfsctl --repo "$repo" oci pull "oci:$share/oci:test" test
check oci-objects-have-verity store_has_verity "$repo/objects" sha512
check oci-fsck cfsctl --repo "$repo" oci fsck
if cfsctl --repo "$repo" oci mount test /mnt/image; then
    check oci-mount-reads-files cmp /mnt/image/usr/lib/libbig.so /mnt/image/srv/copy-of-big
    umount /mnt/image
else
    fail oci-mount-reads-files "mount failed"
fi
check oci-copy-zerocopy sh -c "cfsctl --repo /scratch/repo-oci-copy init && cfsctl --repo /scratch/repo-oci-copy oci copy test --from $repo --zerocopy"
check oci-copy-objects-have-verity store_has_verity /scratch/repo-oci-copy/objects sha512

# 6. Side by side with composefs-rs 0.9's cfsctl (when the harness brought it): the same ids,
# and each checks and mounts the other's secure repository.
reference=/tools/reference/cfsctl
if [ -x "$reference" ]; then
    ours=/scratch/repo-ours
    theirs=/scratch/repo-theirs
    check reference-init-secure "$reference" --repo "$theirs" init
    cfsctl --repo "$ours" init >/dev/null
    our_id=$(cfsctl --repo "$ours" create-image "$share/tree" tree 2>/dev/null)
    their_id=$("$reference" --repo "$theirs" create-image "$share/tree" tree 2>/dev/null)
    check reference-same-image-id test -n "$our_id" -a "$our_id" = "$their_id"
    check reference-objects-have-verity store_has_verity "$theirs/objects" sha512
    check reference-fsck-of-our-repository "$reference" --repo "$ours" fsck
    check fsck-of-reference-repository cfsctl --repo "$theirs" fsck
    for pair in "cfsctl $theirs reference-repository-mounted-by-ours" "$reference $ours our-repository-mounted-by-reference"; do
        set -- $pair
        if $1 --repo "$2" mount "${our_id#*:}" /mnt/image; then
            check "$3" diff -r "$share/tree" /mnt/image
            umount /mnt/image
        else
            fail "$3" "mount failed"
        fi
    done
fi

# 7. composefs-fuse checks the kernel's measurement where there is one (even without -o verity)
# and, with -o verity, hashes objects that have none.
if composefs-fuse -o basedir=/scratch/store /scratch/tree.cfs /mnt/fuse; then
    check fuse-files-equal-source diff -r "$share/tree" /mnt/fuse
    umount /mnt/fuse
else
    fail fuse-files-equal-source "mount failed"
fi
if composefs-fuse -o basedir=/scratch/store-tampered /scratch/tree.cfs /mnt/fuse; then
    refuses fuse-kernel-measurement-checked 'Input/output error' cat /mnt/fuse/usr/big.bin
    umount /mnt/fuse
else
    fail fuse-kernel-measurement-checked "mount failed"
fi
# Without verity on the victim, and content changed: only -o verity can tell.
cp "/scratch/store-tampered/$victim" /scratch/victim && rm -f "/scratch/store-no-verity/$victim" && cp /scratch/victim "/scratch/store-no-verity/$victim"
if composefs-fuse -o basedir=/scratch/store-no-verity,verity /scratch/tree.cfs /mnt/fuse; then
    refuses fuse-verity-hashes-objects-without-kernel-digest 'Input/output error' cat /mnt/fuse/usr/big.bin
    check fuse-verity-kernel-digest-objects-read cat /mnt/fuse/usr/medium.bin
    umount /mnt/fuse
else
    fail fuse-verity-hashes-objects-without-kernel-digest "mount failed"
fi
sync
