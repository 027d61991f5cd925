# Installs the second version beside the first, then collects garbage: both images stay (each
# has its ref and its boot entry), the unreferenced one goes.
. /lib/cfstest/lib.sh
. /tools/guest/install-common.sh
install_version v2 os2
v1=$(cat /tools/share/expected/id-v1)
v2=$(cat /tools/share/expected/id-v2)
junk=$(cat /tools/share/expected/id-junk)
check both-uki-entries-installed test -f /esp/EFI/Linux/os.efi -a -f /esp/EFI/Linux/os2.efi
check gc cfsctl --repo "$repo" gc
check gc-keeps-first-image test -L "$repo/images/$v1" -a -e "$repo/images/$v1"
check gc-keeps-second-image test -L "$repo/images/$v2" -a -e "$repo/images/$v2"
check gc-removes-unreferenced-image test ! -e "$repo/images/$junk"
finish_install
