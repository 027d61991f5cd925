#!/usr/bin/env python3
"""Differential fuzzing of SELinux relabelling against composefs-rs 0.9's cfsctl.

  fuzz-file-contexts.py OURS_CFSCTL [--reference CFSCTL] [--seed N] [--trials N]

Each trial makes a small bootable tree (regular files, directories, symlinks, FIFOs, devices,
hard links; names with newlines, non-ASCII and invalid UTF-8) and a random file_contexts (and
sometimes a file_contexts.subs) whose patterns mix what regex-syntax accepts (classes, class
operations, flags, look-arounds, Unicode mode, repetitions, injected `)|(`), what only PCRE2
accepts and what neither does; then runs `cfsctl --no-repo create-dumpfile --bootable` with both
tools. Any difference in exit status, dumpfile or error message is printed with the trial's
file_contexts, and its tree is kept. Run as root (devices). Deterministic: a seed gives the
same trials.
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile

NAME_ATOMS = ["a", "b", "A", ".", "-", "_", "0", " ", "é", "\n", "\r", "ab", "x", "#", "ÿ", "€", "𝄞"]
INVALID_UTF8 = [b"\xe9", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\x80", b"\xff"]
LITERALS = ["a", "b", "A", "/", "-", "_", "0", "é", "x", ",", "}", "]", "&", "~", ":", "<", ">", '"']
ESCAPES = [r"\.", r"\d", r"\D", r"\w", r"\W", r"\s", r"\S", r"\x41", r"\x61", r"\xe9", r"\xc3", r"\x{e9}", r"\u00e9",
           r"\n", r"\r", r"\t", r"\-", r"\/", r"\#", r"\&", r"\~", r"\:", r"\%"]
LOOKS = [r"\b", r"\B", r"\A", r"\z", "^", "$", r"\<", r"\>", r"\b{start}", r"\b{end}", r"\b{start-half}", r"\b{end-half}"]
CLASSES = ["[a-c]", "[^/]", "[^a]", "[[:alpha:]]", "[[:^digit:]]", "[a-z&&[^b]]", "[a-z--b]", "[a~~b]", "[]a]", "[-a]",
           "[a-]", "[^]]", r"[\d]", r"[\w-]", "[.]", r"[\xe9]", "[[:word:]]", "[[a]]", r"[^\x00-\x7f]", "[A-z]", r"[\n]"]
UNICODE = ["(?u:[^a])", "(?u:.)", "(?u:[é-ÿ])", r"(?u:[\x{100}-\x{10ffff}])", "(?u:[[:alpha:]é])", r"(?u:[^\x00-\x7f])",
           r"(?u:[€-𝄞&&[^\x{1d11e}]])", "(?u:[^/])+", "(?us:.)", "(?u:[a-z--c])", r"(?u)\xff", r"(?u:\x{20ac})"]
REPETITIONS = ["*", "+", "?", "*?", "+?", "??", "{2}", "{1,3}", "{2,}", "{0}", "{0,1}", "{1}?"]
# Refused by regex-syntax (and often by PCRE2 too, which makes the whole policy an error).
ODD = ["(?)", "(?-)", "(?ii)", "{,2}", "{99999999999}", "{2,1}", "{", "(?=a)", "(?!a)", "(?<=a)", "(?<!a)", "[]", "[z-a]",
       "(?u:\\b)", r"\b{x}", "**", "(?U)", "(?R)", "[é]", r"\1", r"\Z", r"\G", r"\Q", r"\K", "[ab", "(?q)", "(?>", "{a}",
       "(?#c)", r"\pL", "(?iu)a", "(?x)a#b", r"[\b]", r"(?u)\d"]
TYPES = ["", "", "", "--", "-d", "-l", "-b", "-c", "-p", "-s"]


def pattern(rng, depth=0, odd=0.0):
    parts = []
    for _ in range(rng.randint(1, 4)):
        k = rng.random()
        repeatable = True
        if k < odd:
            parts.append(rng.choice(ODD))
        elif k < 0.35:
            parts.append(rng.choice(LITERALS))
        elif k < 0.5:
            parts.append(rng.choice(ESCAPES))
        elif k < 0.62:
            parts.append(rng.choice(CLASSES))
        elif k < 0.67:
            parts.append(".")
        elif k < 0.72:
            # Unicode mode cannot be case-insensitive here (no Unicode tables), nor can PCRE2 take (?u).
            parts.append("(?-i:" + rng.choice(UNICODE) + ")")
        elif k < 0.78:
            parts.append(rng.choice(LOOKS))
            repeatable = False
        elif k < 0.88 and depth < 3:
            inner = pattern(rng, depth + 1, odd)
            if rng.random() < 0.3:
                inner += "|" + pattern(rng, depth + 1, odd)
            parts.append(rng.choice(["(", "(?:", "(?i:", "(?s:", "(?m:", "(?mR:", "(?-s:"]) + inner + ")")
        elif k < 0.92:
            parts.append(rng.choice(["(?i)", "(?s)", "(?m)", "(?mR)"]))
            repeatable = False
        elif k < 0.95:
            parts.append(")|(")
            repeatable = False
        else:
            parts.append(".*")
            repeatable = False
        if repeatable and rng.random() < 0.3:
            parts.append(rng.choice(REPETITIONS))
    return "".join(parts)


def make_tree(rng, root):
    for directory in [b"usr", b"boot", b"sysroot", b"x", b"etc/selinux/t/contexts/files"]:
        os.makedirs(os.path.join(root, directory))
    with open(os.path.join(root, b"etc/selinux/config"), "w") as f:
        f.write("SELINUXTYPE=t\n")
    paths, directories = [], [b"/usr", b"/x"]
    for _ in range(rng.randint(5, 25)):
        name = "".join(rng.choice(NAME_ATOMS) for _ in range(rng.randint(1, 4))).encode()
        if rng.random() < 0.15:
            name += rng.choice(INVALID_UTF8)
        path = rng.choice(directories) + b"/" + name
        full = root + path
        if name in (b".", b"..") or os.path.lexists(full):
            continue
        kind = rng.choice("ffddlpch")
        if kind == "f":
            open(full, "w").close()
        elif kind == "d":
            os.mkdir(full)
            directories.append(path)
        elif kind == "l":
            os.symlink("t", full)
        elif kind == "p":
            os.mkfifo(full)
        elif kind == "c":
            os.mknod(full, 0o20644, os.makedev(1, 3))
        else:
            files = [p for p in paths if os.path.isfile(root + p) and not os.path.islink(root + p)]
            if not files:
                continue
            os.link(root + rng.choice(files), full)
        paths.append(path)
    return [p.decode("utf-8", "replace") for p in paths]


def file_contexts(rng, paths):
    odd = 0.005 if rng.random() < 0.8 else 0.1
    lines = []
    for i in range(rng.randint(3, 15)):
        if rng.random() < 0.3 and paths:
            # A path of the tree, a few characters loosened.
            text = "".join(c if rng.random() < 0.85 else rng.choice([".", "[^/]", r"\w", c + "?", c + "+"])
                           for c in rng.choice(paths) if c not in "\\[](){}|?*+^$.")
        else:
            prefix = rng.choice(paths) if paths and rng.random() < 0.6 else "/"
            text = prefix[:rng.randint(0, len(prefix))].replace("\\", "\\\\") + pattern(rng, odd=odd)
        text += rng.choice(["", ".*", "(/.*)?", "$"])
        # Fields are separated by white space: it cannot be in a pattern.
        text = text.replace("\n", r"\n").replace("\r", r"\r").replace(" ", r"\x20").replace("\t", r"\t") or "/"
        kind = rng.choice(TYPES)
        context = rng.choice(["u:r:a:s0", "u:r:b:s0", "<<none>>", "ctx%d" % i])
        lines.append(text + "\t" + (kind + "\t" if kind else "") + context)
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ours")
    parser.add_argument("--reference", default=os.path.join(os.path.dirname(__file__),
                                                           "../../shared/reference/composefs-rs-0.9.0/cfsctl"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    mismatches = 0
    outcomes = {"labelled": 0, "refused": 0}
    for trial in range(args.trials):
        rng = random.Random(args.seed * 1_000_000 + trial)
        work = tempfile.mkdtemp(prefix="fuzz-file-contexts-")
        root = os.path.join(work, "root").encode()
        paths = make_tree(rng, root)
        contexts = file_contexts(rng, paths)
        with open(os.path.join(root, b"etc/selinux/t/contexts/files/file_contexts"), "w") as f:
            f.write(contexts)
        if rng.random() < 0.3 and paths:
            aliases = [a + " " + rng.choice(paths + ["/usr", "/x/y/"]) for a in rng.sample(paths, min(2, len(paths)))]
            with open(os.path.join(root, b"etc/selinux/t/contexts/files/file_contexts.subs"), "w") as f:
                f.write("\n".join(a for a in aliases if len(a.split()) == 2) + "\n")
        command = ["--no-repo", "create-dumpfile", "--bootable", root]
        ours = subprocess.run([args.ours] + command, capture_output=True, timeout=120)
        theirs = subprocess.run([args.reference] + command, capture_output=True, timeout=120)
        outcomes["labelled" if theirs.returncode == 0 else "refused"] += 1
        if (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr):
            shutil.rmtree(work)
            continue
        mismatches += 1
        print(f"MISMATCH: seed {args.seed} trial {trial}, tree kept in {work}\n{contexts}")
        for mine, reference in zip(ours.stdout.splitlines(), theirs.stdout.splitlines()):
            if mine != reference:
                print(f"  ours:      {mine[:300]!r}\n  reference: {reference[:300]!r}")
        if ours.stderr != theirs.stderr:
            print(f"  ours:      {ours.stderr[:500]!r}\n  reference: {theirs.stderr[:500]!r}")
    print(f"{args.trials} trials ({outcomes['labelled']} labelled, {outcomes['refused']} refused by both): {mismatches} mismatches")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
