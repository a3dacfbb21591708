#!/usr/bin/env python3
"""The lab (tools/lab) itself, on any host (QEMU TCG needs no KVM): what a test run inside it relies
on. One boot runs a script that reports the environment (exit status, stdout and stderr apart, the
working directory, the environment, root, /dev/kvm with `ember host` saying "lab", a network
namespace with a tap, cgroup2, the host's files read-only under a writable overlay, --writable
directories written through to the host, 1 MB of output intact); one boot checks -i; one runs into
--timeout (exit 124) and nothing of the lab may be left running afterwards; a usage error exits 2.

usage: lab_test.py EMBER"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common

EMBER = os.path.abspath(sys.argv[1])
LAB = [sys.executable, str(common.LAB_TOOL)]
tally = common.Tally()

SCRIPT = r"""
echo "cwd=$(pwd)"
echo "token=$EMBER_LAB_TEST_TOKEN lab=$EMBER_LAB uid=$(id -u)"
echo "to stderr" >&2
"$EMBER" host | head -n1
[ -c /dev/kvm ] && echo "kvm=yes"
ip netns add lab-test-ns && ip netns exec lab-test-ns ip tuntap add dev labt0 mode tap &&
  echo "netns+tap=yes"
grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts && echo "cgroup2=yes"
echo "changed in the lab" > "$WORK/host-file" && echo "overlay-write=yes"
cat "$WORK/host-file"
echo "from the lab" > "$WRITABLE/result" && echo "writable-write=yes"
head -c 1000000 /dev/urandom > /tmp/big && sha256sum /tmp/big | cut -d' ' -f1 > "$WRITABLE/big.sha256"
cat /tmp/big >&2
exit 7
"""


def lab(arguments, stdin_data=None, env=None, timeout=300):
    return subprocess.run(LAB + arguments, input=stdin_data, capture_output=True, timeout=timeout,
                          env=env)


def leftovers():
    """QEMU or virtiofsd processes started by a lab of this test (they share its temporary dir)."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if ("qemu-system" in line or "virtiofsd" in line) and "ember-lab-" in line]


def main():
    common.announce(1, "the lab: real KVM inside a QEMU TCG VM (tools/lab)")
    work = tempfile.mkdtemp(prefix="ember-lab-test-")
    writable = os.path.join(work, "writable")
    os.makedirs(writable)
    with open(os.path.join(work, "host-file"), "w") as f:
        f.write("as the host wrote it\n")
    try:
        env = dict(os.environ, EMBER_LAB_TEST_TOKEN="b7e1", EMBER=EMBER, WORK=work,
                   WRITABLE=writable)
        result = subprocess.run(LAB + ["--writable", writable, "--", "sh", "-c", SCRIPT],
                                capture_output=True, timeout=300, env=env, cwd=work)
        out = result.stdout.decode(errors="replace")
        err = result.stderr
        tally.check("the command's exit status comes back (7)", result.returncode == 7,
                    f"exit {result.returncode}; {out[-500:]} {err[-500:]!r}")
        tally.check("it ran in the caller's directory", f"cwd={work}\n" in out, out)
        tally.check("with the caller's environment, EMBER_LAB=1, as root",
                    "token=b7e1 lab=1 uid=0\n" in out, out)
        tally.check("stderr comes back apart from stdout",
                    err.startswith(b"to stderr\n") and b"to stderr" not in result.stdout, repr(err[:80]))
        tally.check("ember host inside says it is the lab",
                    "kvm-kind: hardware (nested under QEMU TCG: the lab" in out, out)
        tally.check("/dev/kvm exists inside", "kvm=yes" in out, out)
        tally.check("a network namespace with a tap can be made inside", "netns+tap=yes" in out, out)
        tally.check("cgroup2 is mounted inside", "cgroup2=yes" in out, out)
        with open(os.path.join(work, "host-file")) as f:
            host_file = f.read()
        tally.check("host files are writable inside (overlay) and stay unchanged on the host",
                    "overlay-write=yes" in out and "changed in the lab" in out and
                    host_file == "as the host wrote it\n", f"{out}; host file {host_file!r}")
        result_file = os.path.join(writable, "result")
        tally.check("--writable: the lab's write reaches the host directory",
                    os.path.exists(result_file) and open(result_file).read() == "from the lab\n",
                    out)
        digest_file = os.path.join(writable, "big.sha256")
        expected = open(digest_file).read().strip() if os.path.exists(digest_file) else "none"
        big = err[len(b"to stderr\n"):]
        tally.check("1 MB of output comes back intact (SHA-256)",
                    len(big) == 1_000_000 and hashlib.sha256(big).hexdigest() == expected,
                    f"{len(big)} bytes")

        result = lab(["-i", "--", "sh", "-c", "wc -l; cat /dev/null"], stdin_data=b"a\nb\nc\n")
        tally.check("-i: the caller's stdin reaches the command, then its end",
                    result.returncode == 0 and result.stdout.strip() == b"3", repr(result.stdout))
        result = lab(["--", "sh", "-c", "cat; echo done"])
        tally.check("without -i the command's stdin is empty", result.stdout == b"done\n",
                    repr(result.stdout))

        # A slow reader of tools/lab's stdout: every byte still arrives, the last ones included (the
        # lab's ports are drained while tools/lab's own output waits; the lab powers off only after
        # the host has seen the end of both streams). 20 MB, read 64 KiB at a time with pauses.
        process = subprocess.Popen(LAB + ["--", "sh", "-c", "head -c 20000000 /dev/urandom > /tmp/big; "
                                          "sha256sum < /tmp/big >&2; cat /tmp/big; printf tail"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        data = bytearray()
        while chunk := process.stdout.read(65536):
            data += chunk
            time.sleep(0.005)
        lab_digest = process.stderr.read().decode().split()[:1]
        process.wait()
        tally.check("a slow reader gets every byte, the end included (20 MB, SHA-256)",
                    process.returncode == 0 and len(data) == 20_000_004 and data.endswith(b"tail")
                    and lab_digest == [hashlib.sha256(data[:-4]).hexdigest()],
                    f"exit {process.returncode}, {len(data)} bytes")

        result = lab(["--timeout", "20", "--", "sleep", "600"])
        tally.check("--timeout: exit 124 and one line saying so", result.returncode == 124 and
                    b"timed out" in result.stderr, f"exit {result.returncode} {result.stderr!r}")
        tally.check("nothing of the lab is left running (QEMU, virtiofsd)", leftovers() == [],
                    "\n".join(leftovers()))
        result = lab([])
        tally.check("no command: usage error, exit 2", result.returncode == 2, repr(result.stderr))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tally.finish()


main()
