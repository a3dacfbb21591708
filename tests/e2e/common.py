"""Shared pieces of ember's end-to-end tests: the host kind, running ember, and the tally that ends
each test's output with 'N passed, N failed'."""
import faulthandler
import os
import pathlib
import signal
import subprocess
import sys
import threading
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


# The kinds of host of ../shared/HOSTS.md, as every e2e test and benchmark names them.
HARDWARE = "hardware KVM"
LAB = "lab (nested KVM under QEMU TCG)"
EMULATING = "emulating KVM (kvm_pvm)"
NO_KVM = "no KVM (no /dev/kvm)"
LAB_TOOL = SOURCE_ROOT / "tools" / "lab"


def in_lab():
    """True inside tools/lab's VM (its kernel command line carries ember.lab=1)."""
    try:
        with open("/proc/cmdline") as cmdline:
            return "ember.lab=1" in cmdline.read().split()
    except OSError:
        return False


def host_kind():
    if not os.path.exists("/dev/kvm"):
        return NO_KVM
    if os.path.exists("/sys/module/kvm_pvm"):
        return EMULATING
    if in_lab():
        return LAB
    with open("/proc/cpuinfo") as cpuinfo:
        flags = cpuinfo.read()
    if " vmx" in flags or " svm" in flags:
        return HARDWARE
    return "KVM of unknown kind (no kvm_pvm, no vmx/svm flag)"


def is_emulating_host():
    return host_kind() == EMULATING


def has_guest_user_space():
    """Whether a Linux guest's user space runs here: real KVM, on the hardware or in the lab."""
    return host_kind() in (HARDWARE, LAB)


def without_dev_kvm(command):
    """`command` in a private mount namespace whose /dev has no kvm node (and the usual others), as on
    a host without KVM: what ember does there, on any host."""
    script = """set -e
d=$(mktemp -d)
mount -t tmpfs -o mode=0755 tmpfs "$d"
for n in null zero full random urandom tty ptmx kmsg fuse loop-control; do
  [ -e /dev/$n ] && cp -a /dev/$n "$d/"
done
for n in /dev/loop[0-9]*; do [ -b "$n" ] && cp -a "$n" "$d/"; done
mkdir "$d/net" "$d/pts" "$d/shm"
[ -e /dev/net/tun ] && cp -a /dev/net/tun "$d/net/"
ln -s /proc/self/fd "$d/fd"
ln -s /proc/self/fd/0 "$d/stdin"; ln -s /proc/self/fd/1 "$d/stdout"; ln -s /proc/self/fd/2 "$d/stderr"
mount --move "$d" /dev
rmdir "$d"
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
exec "$@"
"""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *command]


def announce(tier, what):
    """The first line of every e2e test: which tier and which host kind it ran on. Also arms a
    watchdog: with EMBER_TEST_TIMEOUT (set by on_kvm.py) every thread's Python stack is printed
    shortly before the test would be killed, to say where a hung test hangs."""
    print(f"tier {tier} ({what}) on {host_kind()}", flush=True)
    timeout = float(os.environ.get("EMBER_TEST_TIMEOUT", "0") or 0)
    if timeout > 60:
        faulthandler.dump_traceback_later(timeout - 30, exit=False, file=sys.stdout)


# Kernel log lines that mean something went wrong, whatever the rest of the boot did.
KERNEL_TROUBLE = ("WARNING:", "Call Trace", "BUG:", "Oops", "ACPI Error", "ACPI BIOS Error",
                  "ACPI Warning", "ACPI BIOS Warning", "FW BUG", "Firmware Bug", "XSAVE consistency",
                  "invalid opcode", "general protection", "Kernel panic", "segfault")


def kernel_warnings(log):
    """The lines of a kernel log that show a warning, an error or a crash."""
    return [line for line in log.splitlines() if any(word in line for word in KERNEL_TROUBLE)]


class Tally:
    """Counts checks; safe to use from several threads."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.lock = threading.Lock()

    def check(self, name, condition, detail=""):
        with self.lock:
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
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # Something outside the process group still holds its pipes: say so, don't hang.
            print(f"common.run: {command[0]}'s pipes still open 30 s after SIGKILL to its group; "
                  f"processes: {subprocess.run(['ps', '-eo', 'pid,pgid,stat,args'], capture_output=True, text=True).stdout}",
                  flush=True)
            process.kill()
            stdout, stderr = b"", b""
    return Result(process.returncode, stdout.decode(errors="replace"),
                  stderr.decode(errors="replace"), time.monotonic() - start, timed_out)
