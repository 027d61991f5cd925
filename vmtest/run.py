#!/usr/bin/env python3
"""Boots the composefs chain for real: qemu (TCG), Debian trixie's kernel (fs-verity, EROFS,
overlayfs), OVMF with Secure Boot enforcing our own keys.

Builds everything from the project's own binaries: an initramfs (busybox, kernel modules,
composefs-setup-root), a tools disk (our debug tools and the libraries they need), test roots
with signed UKIs, a physical root (ext4 with verity) and an ESP with signed systemd-boot. Then
runs each boot with a timeout and a console watcher, two at a time, and reports every check by
name. Downloads are cached in $COMPOSEFS_VM_CACHE (default /var/tmp/composefs-vm).

    vmtest/run.py [--only BOOT ...] [--workdir DIR] [--keep]

Exit status 0 when every check passed; 1 when one failed; 0 with "SKIP" when this machine cannot
run them (except with CI=true, where that is a failure).
"""

import argparse
import concurrent.futures
import hashlib
import lzma
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
GUEST = PROJECT / "vmtest" / "guest"
CACHE = Path(os.environ.get("COMPOSEFS_VM_CACHE", "/var/tmp/composefs-vm"))
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Modules the guest loads (their dependencies are added from modinfo), in this order.
MODULES = ["virtio_blk", "crc32c_generic", "ext4", "erofs", "overlay", "efivarfs", "vfat",
           "nls_cp437", "nls_ascii", "nls_utf8"]
OUR_TOOLS = ["cfsctl", "mkcomposefs", "mount.composefs", "composefs-fuse", "composefs-info"]
# composefs-rs 0.9, to boot and check side by side with ours (beside the checkout, as in CI).
REFERENCE = PROJECT.parent / "shared/reference/composefs-rs-0.9.0"
# Whole seconds: ext4's `mkfs -d` keeps no nanoseconds, and the image ids depend on mtimes.
MTIME = {"v1": 1700000000, "v2": 1700100000, "junk": 1700200000}
CHAIN_CMDLINE = "rw console=ttyS0 panic=-1 loglevel=4 cfstest=chain"
DIRECT_CMDLINE = "console=ttyS0 panic=-1 loglevel=4 cfstest="
# Sizes around the Merkle tree's block and level boundaries (128 SHA-256 or 64 SHA-512 digests
# per 4 KiB block). Files of 64 bytes or less are inlined in images, so only SHA-256 (through
# composefs-info measure-file) covers them.
SIZES = [0, 1, 63, 65, 4095, 4096, 4097, 8192, 65537, 262144, 262145, 524288, 524289,
         1048581, 16777217, 67108865]
SECURE_BOOT_OWNER = "e3c2a6f0-9b7a-4c55-9a54-4e1f6c2bd001"


class Skip(Exception):
    """This machine cannot run the VM tests."""


def run(*command, capture=False, **kwargs):
    """Runs a command, failing loudly with its output."""
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
                           f"{result.stdout}{result.stderr}")
    return result.stdout if capture else None


# MARK: host requirements and downloads

def check_host():
    missing = [tool for tool in ["qemu-system-x86_64", "sbsign", "mkfs.ext4", "debugfs", "mkfs.vfat",
                                 "mcopy", "openssl", "cpio", "modinfo", "apt-get", "dpkg-deb",
                                 "virt-fw-vars"] if not shutil.which(tool)]
    missing += [str(path) for path in [OVMF_CODE, OVMF_VARS, Path("/usr/bin/python3"),
                                       Path("/bin/busybox")] if not path.exists()]
    if missing:
        raise Skip("missing " + ", ".join(missing) + " (scripts/test.sh installs them)")
    if subprocess.run(["ldd", "/bin/busybox"], capture_output=True).returncode == 0:
        raise Skip("/bin/busybox is not static (install busybox-static)")
    if subprocess.run(["/usr/bin/python3", "-c", "import pefile"], capture_output=True).returncode != 0:
        raise Skip("ukify needs python3-pefile")


def trixie_packages():
    """Debian trixie's kernel, ukify and systemd-boot, downloaded once through a private apt
    configuration (the system's sources are not touched) and unpacked in the cache."""
    unpacked = CACHE / "trixie"
    if (unpacked / ".complete").exists():
        return unpacked
    apt = CACHE / "apt"
    for directory in [apt / "lists" / "partial", apt / "cache" / "archives" / "partial", CACHE / "debs"]:
        directory.mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main\n")
    options = [f"-o=Dir::Etc::sourcelist={apt / 'sources.list'}", "-o=Dir::Etc::sourceparts=-",
               f"-o=Dir::State::Lists={apt / 'lists'}", f"-o=Dir::Cache={apt / 'cache'}",
               "-o=Dir::State::status=/var/lib/dpkg/status", "-o=APT::Sandbox::User=root"]
    try:
        run("apt-get", *options, "update", "-qq")
    except RuntimeError as error:
        raise Skip(f"cannot reach Debian's trixie archive: {error}")
    depends = run("apt-cache", *options, "depends", "linux-image-amd64", capture=True)
    kernel = re.search(r"Depends: (linux-image-6\S+)", depends)
    if not kernel:
        raise RuntimeError(f"no kernel package in trixie's linux-image-amd64:\n{depends}")
    for stale in (CACHE / "debs").glob("*.deb"):
        stale.unlink()
    run("apt-get", *options, "download", kernel.group(1), "systemd-ukify", "systemd-boot-efi", cwd=CACHE / "debs")
    shutil.rmtree(unpacked, ignore_errors=True)
    for deb in (CACHE / "debs").glob("*.deb"):
        run("dpkg-deb", "-x", deb, unpacked)
    (unpacked / ".complete").touch()
    return unpacked


@dataclass
class Trixie:
    root: Path

    @property
    def kernel_version(self):
        return next((self.root / "usr/lib/modules").iterdir()).name

    @property
    def vmlinuz(self):
        return self.root / "boot" / f"vmlinuz-{self.kernel_version}"

    @property
    def modules(self):
        return self.root / "usr/lib/modules" / self.kernel_version / "kernel"

    @property
    def ukify(self):
        return self.root / "usr/lib/systemd/ukify"

    @property
    def stub(self):
        return self.root / "usr/lib/systemd/boot/efi/linuxx64.efi.stub"

    @property
    def systemd_boot(self):
        return self.root / "usr/lib/systemd/boot/efi/systemd-bootx64.efi"


# MARK: building the artifacts

def module_files(trixie):
    """The modules to load, dependencies first, as (name, path of .ko.xz)."""
    paths = {path.name.split(".ko")[0].replace("-", "_"): path for path in trixie.modules.rglob("*.ko*")}
    ordered = []

    def add(name):
        name = name.replace("-", "_")
        if name in (n for n, _ in ordered) or not name:
            return
        if name not in paths:
            raise RuntimeError(f"kernel module {name} not found in {trixie.modules}")
        for dependency in run("modinfo", "-F", "depends", paths[name], capture=True).strip().split(","):
            add(dependency)
        ordered.append((name, paths[name]))

    for module in MODULES:
        add(module)
    return ordered


def shared_libraries(binary):
    """The libraries ldd resolves for `binary`, and its program interpreter; none for a static one."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if "not a dynamic executable" in result.stdout + result.stderr:
        return []
    if result.returncode != 0:
        raise RuntimeError(f"ldd {binary} failed:\n{result.stdout}{result.stderr}")
    return sorted({Path(match) for match in re.findall(r"(/\S+) \(0x", result.stdout)})


def write_cpio(source, destination):
    files = subprocess.run(["find", "."], cwd=source, capture_output=True, text=True, check=True).stdout
    with open(destination, "wb") as output:
        subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=source,
                       input=files.encode(), stdout=output, check=True)


def build_initramfs(work, trixie, setup_root, name="initramfs"):
    """busybox, /init, the modules and `setup_root` (with the libraries it needs, if any)."""
    tree = work / name
    for directory in ["bin", "lib/modules", "lib/cfstest", "lib64", "usr/bin"]:
        (tree / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", tree / "bin/busybox")
    shutil.copy(GUEST / "init", tree / "init")
    shutil.copy(GUEST / "lib.sh", tree / "lib/cfstest/lib.sh")
    shutil.copy(setup_root, tree / "usr/bin/composefs-setup-root")
    libraries = shared_libraries(setup_root)
    for library in libraries:
        (tree / library.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(library, tree / library.relative_to("/"))
    if not libraries:
        # The tools disk brings the dynamic loader and libraries of the tools it holds.
        os.symlink("/tools/lib/ld-linux-x86-64.so.2", tree / "lib64/ld-linux-x86-64.so.2")
    names = []
    for name, path in module_files(trixie):
        # Decompressed here (busybox insmod reads plain modules); the signature stays appended.
        data = lzma.decompress(path.read_bytes()) if path.name.endswith(".xz") else path.read_bytes()
        (tree / "lib/modules" / f"{name}.ko").write_bytes(data)
        names.append(name)
    (tree / "lib/modules/order").write_text("\n".join(names) + "\n")
    write_cpio(tree, work / f"{name}.cpio")
    return work / f"{name}.cpio"


def pseudo_random(seed, size):
    return random.Random(seed).randbytes(size)


def write_tree(path, seed, names):
    for name, size in names:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(pseudo_random(f"{seed}/{name}", size))


def build_tools_disk(work, binaries, expected_ids):
    tools = work / "tools"
    for directory in ["bin", "lib", "guest", "share/sizes", "share/expected"]:
        (tools / directory).mkdir(parents=True, exist_ok=True)
    programs = [(binaries / name, "bin") for name in OUR_TOOLS] + [(Path(shutil.which("fsverity")), "bin")]
    if REFERENCE.exists():
        programs.append((REFERENCE / "cfsctl", "reference"))
    libraries = set()
    for program, directory in programs:
        (tools / directory).mkdir(exist_ok=True)
        shutil.copy(program, tools / directory / program.name)
        libraries.update(shared_libraries(program))
    for library in libraries:
        shutil.copy(library, tools / "lib" / library.name)
    for script in GUEST.glob("*.sh"):
        shutil.copy(script, tools / "guest" / script.name)
    share = tools / "share"
    # With /usr: cfsctl's images copy /usr's metadata to the root.
    write_tree(share / "tree", "tree", [("usr/big.bin", 300000), ("usr/medium.bin", 50000), ("small.txt", 10),
                                        ("usr/dir/nested.bin", 9000), ("usr/dir/empty", 0)])
    os.symlink("usr/dir/nested.bin", share / "tree/link")
    write_tree(share / "tree2", "tree2", [("usr/other.bin", 70000)])
    run(sys.executable, PROJECT / "scripts/make-oci-image.py", share / "oci", "--big-mib", "1")
    sizes = share / "sizes"
    (sizes / "usr").mkdir()  # cfsctl wants one
    for size in SIZES:
        (sizes / f"size-{size}").write_bytes(pseudo_random(f"size/{size}", size))
    # Our userspace digests: SHA-256 through composefs-info measure-file (this kernel has no
    # fs-verity, so it computes them), SHA-512 through cfsctl's dumpfile (non-inline files).
    lines = []
    for size in SIZES:
        digest = run(binaries / "composefs-info", "measure-file", sizes / f"size-{size}", capture=True).split()[0]
        lines.append(f"{digest} size-{size}")
    (sizes / "expected-sha256").write_text("\n".join(lines) + "\n")
    dump = run(binaries / "cfsctl", "--no-repo", "--hash", "sha512", "create-dumpfile", sizes, capture=True)
    lines = []
    for line in dump.splitlines():
        fields = line.split(" ")
        if fields[0].startswith("/size-") and fields[-1] != "-":
            lines.append(f"{fields[-1]} {fields[0][1:]}")
    (sizes / "expected-sha512").write_text("\n".join(sorted(lines)) + "\n")
    for name, value in expected_ids.items():
        (share / "expected" / f"id-{name}").write_text(value + "\n")
    image = work / "tools.img"
    run("mkfs.ext4", "-q", "-F", "-L", "cfstools", "-d", tools, image, "1G")
    return image


def make_keys(work):
    keys = work / "keys"
    keys.mkdir()
    for name in ["PK", "KEK", "db"]:
        run("openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-sha256",
            "-subj", f"/CN=composefs-swift VM test {name}/", "-keyout", keys / f"{name}.key",
            "-out", keys / f"{name}.crt")
    vars_file = work / "OVMF_VARS.secure-boot.fd"
    run("virt-fw-vars", "--input", OVMF_VARS, "--output", vars_file,
        "--set-pk", SECURE_BOOT_OWNER, keys / "PK.crt", "--add-kek", SECURE_BOOT_OWNER, keys / "KEK.crt",
        "--add-db", SECURE_BOOT_OWNER, keys / "db.crt", "--secure-boot", "--no-microsoft")
    return keys, vars_file


def sign(keys, unsigned, signed):
    run("sbsign", "--key", keys / "db.key", "--cert", keys / "db.crt", "--output", signed, unsigned)


def build_uki(work, trixie, initramfs, cmdline, os_release, name):
    output = work / f"{name}.unsigned.efi"
    run("/usr/bin/python3", trixie.ukify, "build", "--linux", trixie.vmlinuz, "--initrd", initramfs,
        "--cmdline", cmdline, "--os-release", f"@{os_release}", "--stub", trixie.stub, "--output", output)
    return output


def set_mtimes(tree, mtime):
    for directory, subdirectories, files in os.walk(tree):
        for name in subdirectories + files:
            os.utime(Path(directory) / name, (mtime, mtime), follow_symlinks=False)
    os.utime(tree, (mtime, mtime))


def build_root(work, version, busybox_applets):
    """A small bootable root: busybox, /sbin/init checking the chain, a manifest of its files."""
    root = work / "sources" / version
    for directory in ["bin", "sbin", "usr/lib/cfstest", "usr/share/cfstest", "etc", "var", "sysroot",
                      "proc", "sys", "dev", "run", "tmp", "boot/EFI/Linux"]:
        (root / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin/busybox")
    for applet in busybox_applets:
        if applet != "busybox" and not (root / "bin" / applet).exists():
            os.symlink("busybox", root / "bin" / applet)
    shutil.copy(GUEST / "root-init", root / "sbin/init")
    shutil.copy(GUEST / "lib.sh", root / "usr/lib/cfstest/lib.sh")
    (root / "usr/lib/cfstest/version").write_text(version + "\n")
    (root / "usr/lib/os-release").write_text(
        f'ID=cfstest\nNAME="composefs VM test root"\nVERSION_ID={version[1:]}\nPRETTY_NAME="cfstest {version}"\n')
    (root / "etc/hostname").write_text(f"cfstest {version}\n")
    write_tree(root / "usr/share/cfstest", version, [(f"data-{version}.bin", 100000), ("common.bin", 20000)])
    manifest = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(root)
        if relative.parts[0] != "boot":
            manifest.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {relative}")
    (root / "usr/lib/cfstest/manifest").write_text("\n".join(manifest) + "\n")
    set_mtimes(root, MTIME[version])
    return root


def karg_of(binaries, root):
    karg = run(binaries / "cfsctl", "--no-repo", "compute-karg", root, capture=True).strip()
    if not re.fullmatch(r"composefs\.digest=v1-sha512-12:[0-9a-f]{128}", karg):
        raise RuntimeError(f"unexpected kernel argument for {root}: {karg}")
    return karg


def object_path(digest):
    return f"objects/{digest[:2]}/{digest[2:]}"


def debugfs(image, *requests):
    output = subprocess.run(["debugfs", "-w", "-R", " ".join(requests), str(image)],
                            capture_output=True, text=True)
    if output.returncode != 0 or "not found" in output.stderr or "Could not" in output.stderr:
        raise RuntimeError(f"debugfs {' '.join(requests)} on {image}: {output.stdout}{output.stderr}")
    return output.stdout


def copy_sparse(source, destination):
    run("cp", "--sparse=always", source, destination)
    return destination


def mcopy(esp, source, destination):
    run("mcopy", "-o", "-i", esp, source, f"::{destination}")


def set_default_entry(work, esp, entry):
    loader = work / f"loader-{entry}.conf"
    loader.write_text(f"timeout 0\ndefault {entry}\n")
    mcopy(esp, loader, "/loader/loader.conf")


# MARK: boots

@dataclass
class Boot:
    name: str
    purpose: str
    disks: list  # (path, how): how is "rw", "ro" or "snapshot" (writes dropped at exit)
    firmware: bool = True
    mode: str = ""  # for direct kernel boots
    checks: list = field(default_factory=list)  # VMCHECK names that must PASS
    expect: list = field(default_factory=list)  # (label, regex) that must appear on the console
    forbid: list = field(default_factory=list)  # (label, regex) that must not
    stop_on: str = ""  # a regex after which qemu is killed (the firmware waits forever)
    after: list = field(default_factory=list)  # boots that must be done first
    prepare: object = None  # run on the host just before the boot
    finish: object = None  # run on the host just after it
    timeout: int = 300


class Console:
    """Reads qemu's serial output: keeps it (without ANSI escapes), logs it, and watches for
    a pattern after which the boot is over even though qemu is not."""

    ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")

    def __init__(self, stream, log_path, stop_on):
        self.stream = stream
        self.log = open(log_path, "wb")
        self.stop_on = re.compile(stop_on) if stop_on else None
        self.text = ""
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        while True:
            chunk = os.read(self.stream.fileno(), 65536)
            if not chunk:
                break
            self.log.write(chunk)
            self.log.flush()
            self.text += self.ANSI.sub(b"", chunk).decode("utf-8", "replace")
            if self.stop_on and self.stop_on.search(self.text[-4096:]):
                self.stopped.set()
        self.log.close()


@dataclass
class Result:
    boot: str
    check: str
    passed: bool
    detail: str = ""


class Harness:
    def __init__(self, work, trixie, binaries, setup_root):
        self.work = work
        self.trixie = trixie
        self.binaries = binaries
        self.setup_root = setup_root
        self.results = []
        self.lock = threading.Lock()
        self.vm_seconds = 0.0

    # Artifacts

    def build(self):
        started = time.monotonic()
        print(f"vmtest: kernel {self.trixie.kernel_version} (trixie), work directory {self.work}", flush=True)
        self.keys, self.vars = make_keys(self.work)
        self.initramfs = build_initramfs(self.work, self.trixie, self.setup_root)
        applets = run("/bin/busybox", "--list", capture=True).split()

        roots, self.ids = {}, {}
        for version in ["v1", "v2"]:
            root = build_root(self.work, version, applets)
            karg = karg_of(self.binaries, root)
            uki = build_uki(self.work, self.trixie, self.initramfs, f"{karg} {CHAIN_CMDLINE}",
                            root / "usr/lib/os-release", version)
            entry = "os" if version == "v1" else "os2"
            sign(self.keys, uki, root / f"boot/EFI/Linux/{entry}.efi")
            set_mtimes(root, MTIME[version])
            if karg_of(self.binaries, root) != karg:
                raise RuntimeError(f"the UKI changed the id of {root}")
            roots[version], self.ids[version] = root, karg.split(":")[-1]
            if version == "v1":
                self.unsigned_uki = uki
        junk = self.work / "sources/junk"
        write_tree(junk, "junk", [("usr/share/junk.bin", 5000)])
        set_mtimes(junk, MTIME["junk"])
        self.ids["junk"] = run(self.binaries / "cfsctl", "--no-repo", "compute-id", junk, capture=True).strip()
        # The object holding v1's /sbin/init (the tampered-object boot changes it on disk).
        dump = run(self.binaries / "cfsctl", "--no-repo", "create-dumpfile", roots["v1"], capture=True)
        self.init_object = next(line.split(" ")[-1] for line in dump.splitlines() if line.startswith("/sbin/init "))

        # A UKI naming an image that is not in the repository, signed like the others.
        absent = hashlib.sha512(b"not in the repository").hexdigest()
        self.absent_uki = self.work / "absent.efi"
        sign(self.keys, build_uki(self.work, self.trixie, self.initramfs,
                                  f"composefs.digest=v1-sha512-12:{absent} {CHAIN_CMDLINE}",
                                  roots["v1"] / "usr/lib/os-release", "absent"), self.absent_uki)
        # A signed UKI changed afterwards: one byte of its command line (the digest).
        self.modified_uki = self.work / "modified.efi"
        data = bytearray((roots["v1"] / "boot/EFI/Linux/os.efi").read_bytes())
        where = data.find(self.ids["v1"].encode())
        data[where] = ord("0") if data[where] != ord("0") else ord("1")
        self.modified_uki.write_bytes(data)
        # The first version again, booted by composefs-rs 0.9's composefs-setup-root.
        self.reference_uki = None
        if REFERENCE.exists():
            initramfs = build_initramfs(self.work, self.trixie, REFERENCE / "composefs-setup-root", "initramfs-reference")
            self.reference_uki = self.work / "os-ref.efi"
            sign(self.keys, build_uki(self.work, self.trixie, initramfs,
                                      f"composefs.digest=v1-sha512-12:{self.ids['v1']} {CHAIN_CMDLINE}",
                                      roots["v1"] / "usr/lib/os-release", "reference"), self.reference_uki)

        self.tools_disk = build_tools_disk(self.work, self.binaries, self.ids)
        self.scratch_disk = self.work / "scratch.img"
        run("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "verity", "-L", "cfsscratch", self.scratch_disk, "1G")
        self.sysroot_disk = self.work / "sysroot.img"
        physical = self.work / "physical-root"
        (physical / "sources").mkdir(parents=True)
        for name in ["v1", "v2", "junk"]:
            shutil.move(self.work / "sources" / name, physical / "sources" / name)
        run("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "verity", "-L", "cfsroot", "-d", physical,
            self.sysroot_disk, "1G")
        self.esp = self.work / "esp.img"
        run("mkfs.vfat", "-F", "32", "-n", "CFSESP", "-C", self.esp, str(256 * 1024))
        run("mmd", "-i", self.esp, "::/EFI", "::/EFI/BOOT", "::/EFI/Linux", "::/loader")
        signed_systemd_boot = self.work / "systemd-bootx64.signed.efi"
        sign(self.keys, self.trixie.systemd_boot, signed_systemd_boot)
        mcopy(self.esp, signed_systemd_boot, "/EFI/BOOT/BOOTX64.EFI")
        set_default_entry(self.work, self.esp, "os.efi")
        print(f"vmtest: artifacts built in {time.monotonic() - started:.0f} s", flush=True)

    # Boots

    def qemu(self, boot, disks, vars_file):
        command = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "2048",
                   "-nodefaults", "-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none",
                   "-no-reboot", "-nic", "none"]
        if boot.firmware:
            command += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
                        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                        "-drive", f"if=pflash,format=raw,unit=1,file={vars_file}"]
        else:
            command += ["-machine", "q35", "-kernel", str(self.trixie.vmlinuz), "-initrd", str(self.initramfs),
                        "-append", DIRECT_CMDLINE + boot.mode]
        for path, how in disks:
            command += ["-drive", f"if=virtio,format=raw,file={path}" +
                        {"rw": "", "ro": ",readonly=on", "snapshot": ",snapshot=on"}[how]]
        return command

    def boot(self, boot):
        if boot.prepare:
            boot.prepare()
        vars_file = self.work / f"vars-{boot.name}.fd"
        shutil.copy(self.vars, vars_file)
        log_path = self.work / f"{boot.name}.log"
        started = time.monotonic()
        process = subprocess.Popen(self.qemu(boot, boot.disks, vars_file), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        console = Console(process.stdout, log_path, boot.stop_on)
        timed_out, stopped = False, False
        try:
            while process.poll() is None:
                if console.stopped.wait(0.5):
                    time.sleep(2)  # the rest of the message
                    stopped = True
                    break
                if time.monotonic() - started > boot.timeout:
                    timed_out = True
                    break
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        console.thread.join(timeout=10)
        elapsed = time.monotonic() - started
        if boot.finish:
            boot.finish()
        self.evaluate(boot, console.text, process.returncode, timed_out, stopped, elapsed, log_path)
        with self.lock:
            self.vm_seconds += elapsed

    def evaluate(self, boot, text, status, timed_out, stopped, elapsed, log_path):
        results = []
        reported = {}
        for match in re.finditer(r"VMCHECK (\S+) (PASS|FAIL)(.*)$", text, re.MULTILINE):
            reported.setdefault(match.group(1), (match.group(2) == "PASS", match.group(3).strip()))
        for name in boot.checks:
            passed, detail = reported.pop(name, (False, "not reported"))
            results.append(Result(boot.name, name, passed, detail))
        for name, (passed, detail) in reported.items():
            results.append(Result(boot.name, name, passed, detail or "(not listed by the harness)"))
        for label, pattern in boot.expect:
            found = re.search(pattern, text, re.MULTILINE)
            results.append(Result(boot.name, label, bool(found), "" if found else f"no /{pattern}/ on the console"))
        for label, pattern in boot.forbid:
            found = re.search(pattern, text, re.MULTILINE)
            results.append(Result(boot.name, label, not found, f"console has: {found.group(0)}" if found else ""))
        if timed_out:
            results.append(Result(boot.name, "finished", False, f"timed out after {boot.timeout} s"))
        elif not stopped and status != 0:
            results.append(Result(boot.name, "finished", False, f"qemu exit status {status}"))
        with self.lock:
            print(f"\n== {boot.name}: {boot.purpose} ({elapsed:.0f} s, console in {log_path})", flush=True)
            for result in results:
                line = f"  {'ok  ' if result.passed else 'FAIL'} {boot.name}/{result.check}"
                print(line + (f": {result.detail}" if result.detail and not result.passed else ""), flush=True)
            if not all(result.passed for result in results):
                print("  last console lines:\n    " + "\n    ".join(text.strip().splitlines()[-25:]), flush=True)
            self.results += results

    def schedule(self, boots, only):
        by_name = {boot.name: boot for boot in boots}
        wanted = set(only or by_name)
        for name in list(wanted):
            stack = [name]
            while stack:
                for dependency in by_name[stack.pop()].after:
                    if dependency not in wanted:
                        wanted.add(dependency)
                        stack.append(dependency)
        pending = [boot for boot in boots if boot.name in wanted]
        done, running = set(), {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            while pending or running:
                for boot in list(pending):
                    if len(running) < 2 and all(dependency in done for dependency in boot.after):
                        pending.remove(boot)
                        running[pool.submit(self.boot, boot)] = boot
                finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    boot = running.pop(future)
                    try:
                        future.result()
                    except Exception as error:  # a host step failed: the boot's checks cannot run
                        self.results.append(Result(boot.name, "host-steps", False, str(error)))
                        print(f"\n== {boot.name}: FAIL on the host: {error}", flush=True)
                    done.add(boot.name)

    def boots(self):
        work, ids = self.work, self.ids
        tools = (self.tools_disk, "ro")
        installed_root = work / "sysroot-installed.img"
        installed_esp = work / "esp-installed.img"
        digest_checks = [f"kernel-digest-sha256-size-{size}" for size in SIZES] + \
            [f"kernel-digest-sha512-size-{size}" for size in SIZES if size > 64]
        tool_checks = [
            "composefs-info-measure-file-is-kernel-digest", "mkcomposefs-digest-store", "mkcomposefs-objects-have-verity", "mount-composefs-digest",
            "mount-composefs-files-equal-source", "mount-composefs-is-verity-required",
            "mount-composefs-wrong-digest", "mount-composefs-image-without-verity",
            "mount-composefs-tampered-object-eio", "mount-composefs-tampered-store-other-files-read",
            "mount-composefs-no-verity-object-eio", "mount-composefs-no-verity-store-other-files-read",
        ] + [f"{check}-{algorithm}" for algorithm in ["sha256", "sha512"] for check in [
            "cfsctl-init-secure", "cfsctl-meta-json-has-verity", "cfsctl-create-image", "cfsctl-objects-have-verity",
            "cfsctl-fsck", "cfsctl-mount-files-equal-source", "cfsctl-mount-swapped-image"]] + [
            "oci-init-secure", "oci-pull", "oci-objects-have-verity", "oci-fsck", "oci-mount-reads-files",
            "oci-copy-zerocopy", "oci-copy-objects-have-verity",
            "fuse-files-equal-source", "fuse-kernel-measurement-checked",
            "fuse-verity-hashes-objects-without-kernel-digest", "fuse-verity-kernel-digest-objects-read"]
        root_checks = ["secure-boot-enforcing", "root-is-the-named-image", "root-read-only", "files-equal-source",
                       "sysroot-is-physical-root", "only-expected-mounts", "etc-writable", "var-writable",
                       "etc-from-image"]
        no_new_root = [("new-root-not-reached", r"CFSTEST new root init")]
        nothing_left = [("nothing-left-mounted", r"CFSTEST left mounted")]
        refused_by_setup_root = [("setup-root-refuses", r"CFSTEST setup-root refused")]

        def install_checks(version):
            return [f"prepare-boot-{version}-karg-as-computed-on-host", f"uki-{version}-on-esp",
                    f"state-{version}-made", f"image-{version}-has-verity", f"create-image-bootable-{version}-same-id",
                    "fsck"]

        def chain_boot(name, purpose, version, entry, boots_before, after, files=()):
            def prepare():
                for source, destination in files:
                    mcopy(self.esp, source, destination)
                set_default_entry(work, self.esp, entry)
            return Boot(name, purpose, [(self.esp, "rw"), (self.sysroot_disk, "rw")],
                        checks=root_checks, after=after, prepare=prepare,
                        expect=[("booted-" + version, rf"^CFSTEST version {version}$"),
                                ("state-persisted", rf"^CFSTEST earlier boots etc={boots_before} var={boots_before}$"),
                                ("kernel-lockdown", r"^CFSTEST lockdown .*\[integrity\]"),
                                ("powered-off", r"reboot: Power down")])

        def refusal(name, purpose, disks, expect, prepare=None, after=("install-v1",), stop_on="", timeout=240,
                    forbid=no_new_root + nothing_left):
            return Boot(name, purpose, disks, expect=expect, forbid=forbid, prepare=prepare,
                        after=list(after), stop_on=stop_on, timeout=timeout)

        def installed_copy(suffix, edit=None):
            def prepare():
                copy = copy_sparse(installed_root, work / f"sysroot-{suffix}.img")
                if edit:
                    edit(copy)
            return prepare

        def swap_image(disk):
            debugfs(disk, f"unlink /composefs/images/{ids['v1']}")
            debugfs(disk, f"symlink /composefs/images/{ids['v1']} ../{object_path(ids['junk'])}")

        def tamper_object(disk):
            block = int(debugfs(disk, f"bmap /composefs/{object_path(self.init_object)} 0").strip())
            with open(disk, "r+b") as image:
                image.seek(block * 4096 + 100)
                byte = image.read(1)
                image.seek(block * 4096 + 100)
                image.write(bytes([byte[0] ^ 0x20]))

        def remove_state(disk):
            debugfs(disk, f"unlink /state/deploy/{ids['v1']}")

        def esp_with(name, files, default=None):
            def prepare():
                esp = copy_sparse(installed_esp, work / f"esp-{name}.img")
                for source, destination in files:
                    mcopy(esp, source, destination)
                if default:
                    set_default_entry(work, esp, default)
            return prepare

        def snapshot_installed():
            copy_sparse(self.sysroot_disk, installed_root)
            copy_sparse(self.esp, installed_esp)

        def both(*prepares):
            def prepare():
                for step in prepares:
                    step()
            return prepare

        reference_boots = []
        if self.reference_uki:
            reference_entry = [(self.reference_uki, "/EFI/Linux/os-ref.efi")]
            reference_boots = [
                chain_boot("reference-chain-v1", "composefs-rs 0.9's setup-root boots what ours installed",
                           "v1", "os-ref.efi", 3, ["rollback-v1"], files=reference_entry),
                refusal("reference-swapped-image", "composefs-rs 0.9's setup-root also refuses the swapped image",
                        [(work / "esp-ref-swapped.img", "rw"), (work / "sysroot-ref-swapped.img", "rw")],
                        refused_by_setup_root, forbid=no_new_root,
                        prepare=both(esp_with("ref-swapped", reference_entry, "os-ref.efi"),
                                     installed_copy("ref-swapped", swap_image))),
                refusal("reference-missing-state", "composefs-rs 0.9's setup-root and a missing state directory",
                        [(work / "esp-ref-stateless.img", "rw"), (work / "sysroot-ref-stateless.img", "rw")],
                        refused_by_setup_root, forbid=no_new_root,
                        prepare=both(esp_with("ref-stateless", reference_entry, "os-ref.efi"),
                                     installed_copy("ref-stateless", remove_state))),
            ]
            tool_checks += ["reference-init-secure", "reference-same-image-id", "reference-objects-have-verity",
                            "reference-fsck-of-our-repository", "fsck-of-reference-repository",
                            "reference-repository-mounted-by-ours", "our-repository-mounted-by-reference"]

        return [
            Boot("tools", "fs-verity on a real kernel, for every tool", [tools, (self.scratch_disk, "rw")],
                 firmware=False, mode="tools", checks=digest_checks + tool_checks, timeout=900),
            Boot("install-v1", "secure repository, prepare-boot of the first version",
                 [tools, (self.sysroot_disk, "rw"), (self.esp, "rw")], firmware=False, mode="install-v1",
                 checks=["init-secure-repository"] + install_checks("v1") + ["junk-image-id-as-computed-on-host"],
                 finish=snapshot_installed),
            chain_boot("chain-v1", "Secure Boot → systemd-boot → UKI → setup-root → verified root",
                       "v1", "os.efi", 0, ["install-v1"]),
            chain_boot("chain-v1-again", "second boot: /etc and /var writes survived", "v1", "os.efi", 1,
                       ["chain-v1"]),
            Boot("install-v2", "update: second version installed beside the first, gc",
                 [tools, (self.sysroot_disk, "rw"), (self.esp, "rw")], firmware=False, mode="install-v2",
                 checks=install_checks("v2") + ["both-uki-entries-installed", "gc", "gc-keeps-first-image",
                                                "gc-keeps-second-image", "gc-removes-unreferenced-image"],
                 after=["chain-v1-again"]),
            chain_boot("chain-v2", "the update boots", "v2", "os2.efi", 0, ["install-v2"]),
            chain_boot("rollback-v1", "the first version still boots after the update", "v1", "os.efi", 2,
                       ["chain-v2"]),
            refusal("unsigned-uki", "an unsigned UKI is refused by the firmware",
                    [(work / "esp-unsigned.img", "rw")],
                    [("firmware-refuses", r"Access Denied")], stop_on=r"Access Denied",
                    prepare=esp_with("unsigned", [(self.unsigned_uki, "/EFI/BOOT/BOOTX64.EFI")])),
            refusal("modified-uki", "a signed UKI changed afterwards (its command line) is refused",
                    [(work / "esp-modified.img", "rw")],
                    [("firmware-refuses", r"Access Denied")], stop_on=r"Access Denied",
                    prepare=esp_with("modified", [(self.modified_uki, "/EFI/BOOT/BOOTX64.EFI")])),
            refusal("absent-image", "a signed UKI naming an image the repository does not have",
                    [(work / "esp-absent.img", "rw"), (installed_root, "snapshot")],
                    refused_by_setup_root + [("reason", r"^Error: no composefs image found")],
                    prepare=esp_with("absent", [(self.absent_uki, "/EFI/Linux/absent.efi")], "absent.efi")),
            refusal("swapped-image", "the image file in the repository swapped for another image",
                    [(installed_esp, "snapshot"), (work / "sysroot-swapped.img", "rw")],
                    refused_by_setup_root + [("reason", r"^Error: cannot use the image of .*: fs-verity content mismatch")],
                    prepare=installed_copy("swapped", swap_image)),
            refusal("tampered-object", "an object of the image changed on disk: EIO, init cannot run",
                    [(installed_esp, "snapshot"), (work / "sysroot-tampered.img", "rw")],
                    [("init-unreadable", r"Input/output error")],
                    prepare=installed_copy("tampered", tamper_object)),
            refusal("missing-state", "the deployment's state directory is missing",
                    [(installed_esp, "snapshot"), (work / "sysroot-stateless.img", "rw")],
                    refused_by_setup_root + [("reason", r"^Error: the deployment's state directory .* does not exist")],
                    prepare=installed_copy("stateless", remove_state)),
        ] + reference_boots


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="run these boots (and the ones they need) only")
    parser.add_argument("--workdir", type=Path, help="build here (kept) instead of a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    parser.add_argument("--binaries", type=Path, default=PROJECT / ".build/debug")
    parser.add_argument("--setup-root", type=Path, default=PROJECT / ".build/release/composefs-setup-root")
    arguments = parser.parse_args()
    in_ci = os.environ.get("CI") == "true"
    try:
        check_host()
        trixie = Trixie(trixie_packages())
        for program in [arguments.binaries / name for name in OUR_TOOLS] + [arguments.setup_root]:
            if not program.exists():
                raise RuntimeError(f"{program} is missing: build it first (scripts/test.sh does)")
    except Skip as reason:
        print(f"SKIP vmtest: {reason}")
        return 1 if in_ci else 0
    if not REFERENCE.exists():
        print(f"SKIP vmtest's boots and checks with composefs-rs 0.9: {REFERENCE} is missing")
        if in_ci:
            return 1
    if arguments.workdir:
        shutil.rmtree(arguments.workdir, ignore_errors=True)
        arguments.workdir.mkdir(parents=True)
        work = arguments.workdir.resolve()
    else:
        CACHE.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    started = time.monotonic()
    harness = Harness(work, trixie, arguments.binaries.resolve(), arguments.setup_root.resolve())
    try:
        harness.build()
        boots = harness.boots()
        unknown = set(arguments.only or []) - {boot.name for boot in boots}
        if unknown:
            raise RuntimeError(f"no such boot: {', '.join(sorted(unknown))}")
        harness.schedule(boots, arguments.only)
    finally:
        failed = [result for result in harness.results if not result.passed]
        print(f"\nvmtest: {len(harness.results) - len(failed)} of {len(harness.results)} checks passed; "
              f"{harness.vm_seconds:.0f} s of VM time, {time.monotonic() - started:.0f} s in all", flush=True)
        for result in failed:
            print(f"  FAIL {result.boot}/{result.check}: {result.detail}")
        if failed or arguments.keep or arguments.workdir:
            print(f"vmtest: consoles and disks kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed or not harness.results else 0


if __name__ == "__main__":
    sys.exit(main())
