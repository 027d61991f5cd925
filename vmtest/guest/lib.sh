# Reporting for the VM tests (busybox sh): the harness reads these lines off the serial console.
# Each check prints "VMCHECK NAME PASS" or "VMCHECK NAME FAIL WHY".

pass() { echo "VMCHECK $1 PASS"; }

fail() {
    name=$1
    shift
    echo "VMCHECK $name FAIL $*"
}

# Last lines of a command's output on one line, for a FAIL message.
one_line() { tail -n 6 | tr '\n' '|'; }

# check NAME COMMAND...: passes when COMMAND succeeds.
check() {
    name=$1
    shift
    if output=$("$@" 2>&1); then pass "$name"; else fail "$name" "exit $?: $(echo "$output" | one_line)"; fi
}

# refuses NAME PATTERN COMMAND...: passes when COMMAND fails with PATTERN (grep -E) in its output.
refuses() {
    name=$1
    pattern=$2
    shift 2
    if output=$("$@" 2>&1); then
        fail "$name" "succeeded: $(echo "$output" | one_line)"
    elif echo "$output" | grep -Eq "$pattern"; then
        pass "$name"
        echo "  $name: $(echo "$output" | one_line)"
    else
        fail "$name" "failed without /$pattern/: $(echo "$output" | one_line)"
    fi
}

# The device of the file system labelled $1 (virtio disks may appear after the module loads;
# 30 s for slow emulation).
disk_labelled() {
    tries=0
    while [ $tries -lt 300 ]; do
        if device=$(findfs "LABEL=$1" 2>/dev/null); then
            echo "$device"
            return 0
        fi
        sleep 0.1
        tries=$((tries + 1))
    done
    echo "CFSTEST no disk labelled $1" >&2
    return 1
}
