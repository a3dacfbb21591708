"""Shared pieces of ember's end-to-end tests: the host kind, running ember, and the tally that ends
each test's output with 'N passed, N failed'."""
import os
import pathlib
import signal
import subprocess
import sys
import time

SOURCE_ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED_GUEST = SOURCE_ROOT.parent / "shared" / "guest"
FIXTURE_VMLINUX = SHARED_GUEST / "vmlinux-6.12-microvm"
FIXTURE_BZIMAGE = SHARED_GUEST / "bzImage-6.12-microvm"
# Debian's stock cloud kernel, unpacked by tools/setup on hardware-KVM hosts.
DEBIAN_KERNEL = pathlib.Path(os.environ.get("EMBER_CACHE", pathlib.Path.home() / ".cache" / "ember")) \
    / "debian-cloud-kernel" / "vmlinuz"
# What the fixture kernel needs on an emulating KVM host (shared/guest/README.md).
FIXTURE_FLAGS = "noxsave nopv clearcpuid=smap,popcnt,movbe,avx,avx2,bmi1,bmi2,erms,fsrm"


def host_kind():
    if os.path.exists("/sys/module/kvm_pvm"):
        return "emulating KVM (kvm_pvm)"
    with open("/proc/cpuinfo") as cpuinfo:
        flags = cpuinfo.read()
    if " vmx" in flags or " svm" in flags:
        return "hardware KVM"
    return "KVM of unknown kind"


def is_emulating_host():
    return os.path.exists("/sys/module/kvm_pvm")


def announce(tier, what):
    """The first line of every e2e test: which tier and which host kind it ran on."""
    print(f"tier {tier} ({what}) on {host_kind()}", flush=True)


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, condition, detail=""):
        if condition:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)
        return condition

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed or not self.passed else 0)


class Result:
    def __init__(self, returncode, stdout, stderr, seconds, timed_out):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.seconds = seconds
        self.timed_out = timed_out

    def describe(self):
        tail = "\n".join((self.stdout + self.stderr).splitlines()[-15:])
        return (f"exit {self.returncode}{' (timed out)' if self.timed_out else ''} after "
                f"{self.seconds:.1f}s; output tail:\n{tail}")


def run(command, timeout, stdin_data=None, env=None):
    """Runs a command with a hard timeout (the whole process group is killed)."""
    start = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.PIPE if stdin_data is not None else
                               subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True, env=env)
    timed_out = False
    try:
        stdout, stderr = process.communicate(stdin_data, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    return Result(process.returncode, stdout.decode(errors="replace"),
                  stderr.decode(errors="replace"), time.monotonic() - start, timed_out)
