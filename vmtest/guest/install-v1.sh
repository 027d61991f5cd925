# Installs the first version of the test root the way the README says: a secure repository on
# the physical root, then `cfsctl prepare-boot` with the signed UKI the tree carries.
. /lib/cfstest/lib.sh
. /tools/guest/install-common.sh
check init-secure-repository cfsctl --repo "$repo" init
install_version v1 os
junk=$(cfsctl --repo "$repo" create-image /sysroot/sources/junk 2>&1)
junk=${junk#*:}
check junk-image-id-as-computed-on-host test "$junk" = "$(cat /tools/share/expected/id-junk)"
finish_install
