#!/usr/bin/env python3
"""Tier 2: the host side of `ember run` against the ember test guest playing ember-init
(`--kernel <test guest ELF> --kernel-args test.init_stub=1`, tests/guest/init_stub.hpp), with a plain
root filesystem directory as IMAGE (a few files, an /etc/passwd with a user), EMBER_CACHE in a
temporary directory.

Checks: stdin with -i (exact bytes back) and without -i (not read); 10 MB each way with SHA-256
(cat; split with stdout and stderr checked apart); exit statuses 0, 7, kError 127 with its message;
signal relay (SIGTERM -> 143; trapped -> 42); a guest ignoring SIGTERM is killed after
--stop-timeout 1 (137); every thread under seccomp while the guest runs (none with --seccomp off);
a virtiofsd killed mid-run is reported and the run goes on; an invalid frame -> 125 "protocol
error"; -e/--env-file/-w/-u/--name in the launch spec; the scratch disk removed after the run and kept with --keep; bad input one-liners.
Then the protocol throughput of ember's host side against the test guest (printed, not asserted).

usage: ember_run_test.py EMBER GUEST_ELF [--bench-mb N]...
Run as root (/dev/kvm)."""
import argparse
import fcntl
import hashlib
import json
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

import common

parser = argparse.ArgumentParser()
parser.add_argument("ember")
parser.add_argument("guest")
parser.add_argument("--bench-mb", type=int, action="append", default=[],
                    help="also time cat and split with N MB (repeatable)")
options = parser.parse_args()
EMBER, GUEST = options.ember, options.guest
TIMEOUT_S = 120
tally = common.Tally()
work = tempfile.mkdtemp(prefix="ember-run-test-")
CACHE = os.path.join(work, "cache")
ENV = dict(os.environ, EMBER_CACHE=CACHE)
ROOTFS = os.path.join(work, "rootfs")


def make_rootfs():
    for directory in ("etc", "bin", "home/alice", "work"):
        os.makedirs(os.path.join(ROOTFS, directory), exist_ok=True)
    files = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n",
        "etc/group": "root:x:0:\nusers:x:100:alice\nalice:x:1000:\n",
        "bin/README": "the test guest runs the commands itself\n",
    }
    for name, text in files.items():
        with open(os.path.join(ROOTFS, name), "w") as f:
            f.write(text)


def command(args, guest_command, log_level=None):
    line = [EMBER, "run", "--kernel", GUEST, "--kernel-args", "test.init_stub=1"]
    if log_level:
        line += ["--log-level", log_level]
    return line + list(args) + [ROOTFS, "--", *guest_command]


def ember_run(args, guest_command, stdin_data=None, timeout=TIMEOUT_S):
    return common.run(command(args, guest_command), timeout, stdin_data=stdin_data, env=ENV)


class Background:
    """ember with stdout and stderr collected by threads, so a test can wait for a log line."""

    def __init__(self, line):
        self.process = subprocess.Popen(line, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=True, env=ENV)
        self.stdout, self.stderr = bytearray(), bytearray()
        self.threads = [threading.Thread(target=self._collect, args=(s, into), daemon=True)
                        for s, into in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))]
        for thread in self.threads:
            thread.start()

    def _collect(self, stream, into):
        while chunk := os.read(stream.fileno(), 1 << 16):
            into.extend(chunk)

    def wait_for(self, marker, timeout=TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if marker.encode() in self.stderr:
                return True
            time.sleep(0.05)
        return marker.encode() in self.stderr

    def finish(self, timeout=TIMEOUT_S):
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            code = None
            self.process.wait()
        for thread in self.threads:
            thread.join(5)
        return code, self.stderr.decode(errors="replace")


def split_patterns(n):
    out = bytes(i % 251 for i in range(251)) * (n // 251 + 1)
    err = bytes((i * 13 + 5) & 0xff for i in range(256)) * (n // 256 + 1)
    return out[:n], err[:n]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def scratch_files():
    directory = os.path.join(CACHE, "scratch")
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def check_streams():
    result = ember_run(["-i"], ["cat"], stdin_data=b"a\nb\n")
    tally.check("printf 'a\\nb\\n' | ember run -i -- cat: exactly a\\nb\\n, exit 0",
                result.returncode == 0 and result.stdout == "a\nb\n" and result.stderr == "", result.describe())
    result = ember_run([], ["cat"], stdin_data=b"not for the container\n")
    tally.check("without -i stdin is not read: cat ends at once with nothing",
                result.returncode == 0 and result.stdout == "" and result.stderr == "", result.describe())
    for code in (0, 7):
        result = ember_run([], ["exit", str(code)])
        tally.check(f"exit {code}", result.returncode == code and result.stdout == "" and result.stderr == "",
                    result.describe())
    result = ember_run([], ["echo", "hello", "from", "the guest"])
    tally.check("echo: its words on stdout", result.returncode == 0 and result.stdout == "hello from the guest\n",
                result.describe())
    result = ember_run([], ["fail", "127", "exec nosuch: No such file or directory"])
    tally.check("kError 127: exit 127, 'ember: <message>' on stderr",
                result.returncode == 127 and result.stderr == "ember: exec nosuch: No such file or directory\n"
                and result.stdout == "", result.describe())
    result = ember_run([], ["garbage"])
    lines = result.stderr.splitlines()
    tally.check("an invalid frame from the guest: exit 125, one line 'protocol error'",
                result.returncode == 125 and len(lines) == 1 and "protocol error" in lines[0], result.describe())


def timed(args, guest_command, stdin_data=None):
    line = command(args, guest_command)
    start = time.monotonic()
    process = subprocess.run(line, input=stdin_data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=ENV, timeout=TIMEOUT_S * 3,
                             stdin=None if stdin_data is not None else subprocess.DEVNULL)
    return process, time.monotonic() - start


def rate(n, seconds, boot_seconds):
    """MB/s over the time beyond a bare run's (boot, protocol set-up, power-off); too little to tell
    when the transfer is within the bare run's spread."""
    transfer = seconds - boot_seconds
    return f"{n / 1e6 / transfer:.0f} MB/s" if transfer > 0.1 else "rate not measurable (within boot noise)"


def check_bulk(megabytes, boot_seconds, report_only=False):
    n = megabytes * 1000 * 1000
    data = os.urandom(n)
    process, seconds = timed(["-i"], ["cat"], stdin_data=data)
    ok = process.returncode == 0 and sha(process.stdout) == sha(data) and process.stderr == b""
    print(f"cat {megabytes} MB (host -> guest -> host): {seconds:.2f} s wall, {rate(n, seconds, boot_seconds)} "
          f"each way", flush=True)
    if not report_only:
        tally.check(f"cat {megabytes} MB through -i: sha256 of stdout equals stdin's", ok,
                    f"exit {process.returncode}, {len(process.stdout)} bytes, stderr {process.stderr[-300:]!r}")
    out, err = split_patterns(n)
    process, seconds = timed([], ["split", str(n)])
    ok = (process.returncode == 0 and sha(process.stdout) == sha(out) and sha(process.stderr) == sha(err))
    print(f"split {megabytes} MB (guest -> host, stdout and stderr each): {seconds:.2f} s wall, "
          f"{rate(2 * n, seconds, boot_seconds)} guest -> host in all", flush=True)
    if not report_only:
        tally.check(f"split {n}: stdout and stderr each {megabytes} MB, sha256 of each as the guest wrote it", ok,
                    f"exit {process.returncode}, stdout {len(process.stdout)} bytes, stderr {len(process.stderr)}")


def check_signals():
    for guest_command, expected, name in ((["waitsig"], 143, "SIGTERM to ember -> guest killed by it: 143"),
                                          (["waitsig", "trap"], 42, "SIGTERM trapped by the payload: exit 42")):
        ember = Background(command([], guest_command, log_level="debug"))
        ready = ember.wait_for("init_stub: running waitsig")
        ember.process.send_signal(signal.SIGTERM)
        code, log = ember.finish()
        tally.check(name, ready and code == expected and "forwarding SIGTERM" in log and not ember.stdout,
                    f"ready {ready}, exit {code}; log tail {log[-600:]}")
    ember = Background(command(["--stop-timeout", "1"], ["ignoresig"], log_level="debug"))
    ready = ember.wait_for("init_stub: running ignoresig")
    start = time.monotonic()
    ember.process.send_signal(signal.SIGTERM)
    code, log = ember.finish()
    tally.check("a guest ignoring SIGTERM gets SIGKILL after --stop-timeout 1: 137",
                ready and code == 137 and "init_stub: signal 15" in log and "init_stub: signal 9" in log,
                f"ready {ready}, exit {code} after {time.monotonic() - start:.1f}s; log tail {log[-600:]}")


def vmm_pid(ember_pid):
    """The process that runs the VM: ember's jailed child (pid 1 of its own namespace) when there
    is a jail (the default as root), else ember itself."""
    for child in children(ember_pid):
        try:
            with open(f"/proc/{child}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except FileNotFoundError:
            continue
        if fields["Name"].strip() == "ember" and fields["NSpid"].split()[-1] == "1":
            return child
    return ember_pid


def seccomp_modes(pid):
    """The Seccomp: field (0 off, 2 filter) of each of the process's threads, by thread name."""
    modes = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except FileNotFoundError:
            continue
        modes[f"{fields['Name'].strip()}/{tid}"] = int(fields["Seccomp"])
    return modes


def check_seccomp():
    """While the guest runs, every ember thread (main and each vCPU; KVM's kvm-nx-lpage-recovery
    worker shows up among them too) is under its seccomp filter; with --seccomp off none is, and
    ember says so."""
    for args, expected, name in (([], 2, "every ember thread runs under a seccomp filter while the guest runs"),
                                 (["--seccomp", "off"], 0, "--seccomp off: no thread is filtered, and ember warns")):
        ember = Background(command(args + ["--cpus", "2"], ["waitsig"], log_level="debug"))
        ready = ember.wait_for("init_stub: running waitsig")
        modes = seccomp_modes(vmm_pid(ember.process.pid)) if ready else {}
        ember.process.send_signal(signal.SIGTERM)
        code, log = ember.finish()
        warned = "--seccomp off" in log
        tally.check(name, ready and code == 143 and sum(n.startswith("ember/") for n in modes) == 3 and
                    all(mode == expected for mode in modes.values()) and warned == (expected == 0),
                    f"ready {ready}, exit {code}, threads {modes}, warned {warned}; log tail {log[-400:]}")


def children(pid):
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as listing:
                found += [int(child) for child in listing.read().split()]
        except FileNotFoundError:
            pass
    return found


def check_virtiofsd_exit():
    """A virtiofsd (-v) that dies while the guest runs: the confined main thread reports it and the
    run goes on (its pidfd fires on the I/O loop, which looks with waitid and reaps)."""
    share = os.path.join(work, "share")
    os.makedirs(share, exist_ok=True)
    ember = Background(command(["-v", f"{share}:/share"], ["waitsig"], log_level="debug"))
    ready = ember.wait_for("init_stub: running waitsig")
    helpers = children(vmm_pid(ember.process.pid)) if ready else []
    for helper in helpers:
        os.killpg(helper, signal.SIGKILL)
    reported = bool(helpers) and ember.wait_for("the guest lost that share", timeout=30)
    ember.process.send_signal(signal.SIGTERM)
    code, log = ember.finish()
    tally.check("virtiofsd killed while the guest runs: reported, ember goes on (143 on SIGTERM)",
                ready and reported and code == 143 and "forbidden system call" not in log,
                f"ready {ready}, helpers {helpers}, reported {reported}, exit {code}; log tail {log[-600:]}")


def status_fields(pid):
    with open(f"/proc/{pid}/status") as status:
        return {key: value.strip() for key, value in (line.split(":", 1) for line in status if ":" in line)}


def cgroup_expected():
    """Whether this host lets ember make a cgroup with memory, cpu and pids limits (vmm/cgroup.hpp):
    cgroup v2 with those controllers where ember is in the root cgroup, or v1 hierarchies of all
    three. Worked out here apart from ember."""
    with open("/proc/self/mountinfo") as mountinfo:
        mounts = [line.split(" - ") for line in mountinfo if " - cgroup" in line]
    v1 = set()
    for before, after in mounts:
        fstype, _, options = after.split()[:3]
        if fstype == "cgroup":
            v1 |= set(options.split(","))
        elif fstype == "cgroup2":
            point = before.split()[4]
            with open("/proc/self/cgroup") as own:
                in_root = "0::/\n" in own.read()
            try:
                with open(os.path.join(point, "cgroup.controllers")) as offered:
                    if in_root and {"memory", "cpu", "pids"} <= set(offered.read().split()):
                        return True
            except OSError:
                pass
    return {"memory", "cpu", "pids"} <= v1


def cgroup_limits(pid):
    """The memory limit (bytes), cpu quota and pids limit of the process's cgroup(s), read from the
    host's cgroup file system; with the cgroup directories."""
    limits, directories = {}, []
    with open(f"/proc/{pid}/cgroup") as listing:
        lines = [line.strip().split(":", 2) for line in listing]
    with open("/proc/self/mountinfo") as mountinfo:
        mounts = [(line.split()[4], line.split(" - ")[1].split()) for line in mountinfo if " - cgroup" in line]
    for _, controllers, path in lines:
        for point, (fstype, _, options) in mounts:
            if (fstype == "cgroup2" and controllers == "") or \
                    (fstype == "cgroup" and controllers and set(controllers.split(",")) <= set(options.split(","))):
                directory = point + path
                if not os.path.basename(directory).startswith("ember-"):
                    continue
                directories.append(directory)
                for name in ("memory.max", "memory.limit_in_bytes", "cpu.max", "cpu.cfs_quota_us", "pids.max"):
                    try:
                        with open(os.path.join(directory, name)) as value:
                            limits[name] = value.read().strip()
                    except OSError:
                        pass
    return limits, directories


def check_jail():
    """The jail (the default as root): the VMM is pid 1 of its own PID namespace, in mount, IPC,
    UTS and network namespaces of its own, its root is empty, it has no capabilities and runs as
    --uid/--gid with no_new_privs; its cgroup limits memory (guest RAM + VMM + per share), CPU and
    processes (read from the host's cgroup files), or ember said in one line why there are none;
    virtiofsd runs in the jail's namespaces and cgroup, under its own seccomp filter. With --jail
    off the VMM is ember itself."""
    share = os.path.join(work, "jail-share")
    os.makedirs(share, exist_ok=True)
    ember = Background(command(["--name", "jailcheck", "--uid", "12345", "--gid", "23456", "--memory", "256M",
                                "--cpus", "2", "-v", f"{share}:/share"], ["waitsig"], log_level="debug"))
    ready = ember.wait_for("init_stub: running waitsig")
    seen, problems = {}, []
    if ready:
        vmm = vmm_pid(ember.process.pid)
        seen["vmm"] = vmm
        fields = status_fields(vmm)
        seen["root"] = os.listdir(f"/proc/{vmm}/root")
        seen["uid"], seen["gid"] = fields["Uid"].split(), fields["Gid"].split()
        seen["caps"] = [fields["CapEff"], fields["CapPrm"], fields["CapBnd"]]
        seen["nnp"] = fields["NoNewPrivs"]
        seen["nspid"] = fields["NSpid"].split()
        seen["own namespaces"] = [kind for kind in ("pid", "mnt", "ipc", "uts", "net")
                                  if os.readlink(f"/proc/{vmm}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")]
        limits, directories = cgroup_limits(vmm)
        seen["cgroup"] = limits
        helpers, pending = [], children(vmm)
        while pending:  # virtiofsd and the process its sandbox forks to serve the share
            helper = pending.pop()
            helpers.append(helper)
            pending += children(helper)
        # Each in the jail's PID namespace (or one inside it) and its cgroup; one of them serves
        # under virtiofsd's own seccomp filter.
        seen["virtiofsd"] = [(status_fields(h)["Seccomp"], len(status_fields(h)["NSpid"].split()) >= 2,
                              cgroup_limits(h)[1] == directories) for h in helpers]
        if vmm == ember.process.pid:
            problems.append("no jailed process")
        if seen["root"] != []:
            problems.append("root not empty")
        if seen["uid"] != ["12345"] * 4 or seen["gid"] != ["23456"] * 4:
            problems.append("ids")
        if seen["caps"] != ["0000000000000000"] * 3 or seen["nnp"] != "1":
            problems.append("capabilities")
        if len(seen["nspid"]) < 2 or seen["nspid"][-1] != "1":
            problems.append("pid namespace")
        if seen["own namespaces"] != ["pid", "mnt", "ipc", "uts", "net"]:
            problems.append("namespaces")
        if not helpers or not all(in_jail and same_cgroup for _, in_jail, same_cgroup in seen["virtiofsd"]) or \
                not any(mode == "2" for mode, _, _ in seen["virtiofsd"]):
            problems.append("virtiofsd")
        if cgroup_expected():
            memory = str((256 + 64 + 64) << 20)
            if limits.get("memory.max", limits.get("memory.limit_in_bytes")) != memory or \
                    limits.get("cpu.max", limits.get("cpu.cfs_quota_us")) not in ("200000 100000", "200000") or \
                    limits.get("pids.max") != str(64 + 2 + 80):
                problems.append("cgroup limits")
    ember.process.send_signal(signal.SIGTERM)
    code, log = ember.finish()
    if not cgroup_expected():
        lines = [line for line in log.splitlines() if "jail: no cgroup limits" in line]
        seen["no-cgroup line"] = lines
        if len(lines) != 1:
            problems.append("no single line saying why there are no cgroup limits")
    leftover = [d for d in cgroup_limits(os.getpid())[1]]
    tally.check("--jail (default as root): own PID/mount/IPC/UTS/net namespaces, empty root, no capabilities, "
                "--uid/--gid, cgroup limits, virtiofsd inside", ready and code == 143 and not problems,
                f"ready {ready}, exit {code}, problems {problems}, seen {seen}; log tail {log[-500:]}")
    gone = not any(os.path.basename(d).startswith("ember-jailcheck") for d in leftover)
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory"):
        for dirpath, dirnames, _ in os.walk(root):
            gone = gone and not any(name.startswith("ember-jailcheck") for name in dirnames)
            if dirpath.count("/") > 6:
                dirnames.clear()
    tally.check("the jail's cgroup is removed after the run", gone, "")

    ember = Background(command(["--jail", "off"], ["waitsig"], log_level="debug"))
    ready = ember.wait_for("init_stub: running waitsig")
    unjailed = ready and vmm_pid(ember.process.pid) == ember.process.pid
    ember.process.send_signal(signal.SIGTERM)
    code, log = ember.finish()
    tally.check("--jail off: the VMM is ember itself", unjailed and code == 143, f"exit {code}; {log[-300:]}")

    # ember killed outright: its VMM goes with it (PDEATHSIG), and the next run clears the cgroup.
    ember = Background(command(["--name", "jailkill"], ["waitsig"], log_level="debug"))
    ready = ember.wait_for("init_stub: running waitsig")
    vmm = vmm_pid(ember.process.pid) if ready else None
    os.kill(ember.process.pid, signal.SIGKILL)
    ember.finish()
    deadline = time.monotonic() + 10
    while vmm and os.path.exists(f"/proc/{vmm}") and time.monotonic() < deadline:
        time.sleep(0.05)
    vmm_gone = vmm is not None and not os.path.exists(f"/proc/{vmm}")
    ember_run([], ["exit", "0"])
    stale = []
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory"):
        for dirpath, dirnames, _ in os.walk(root):
            stale += [name for name in dirnames if name.startswith("ember-jailkill")]
            if dirpath.count("/") > 6:
                dirnames.clear()
    tally.check("SIGKILL to ember (not its group): the jailed VMM dies too; the next run removes the stale cgroup",
                ready and vmm_gone and not stale, f"ready {ready}, vmm {vmm} gone {vmm_gone}, stale {stale}")


def check_tty():
    """-t -i with a terminal as stdin: kResize carries its size, its mode is restored at exit."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    before = termios.tcgetattr(slave)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command(["-t", "-i"], ["waitsig"], log_level="debug"), stdin=slave,
                                   stdout=out, stderr=err, start_new_session=True, env=ENV)
        deadline = time.monotonic() + TIMEOUT_S
        resized = False
        while time.monotonic() < deadline and process.poll() is None and not resized:
            time.sleep(0.05)
            err.seek(0)
            resized = b"init_stub: resize rows=33 cols=101" in err.read()
        raw_while_running = termios.tcgetattr(slave) != before
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            code = process.wait()
        err.seek(0)
        log = err.read().decode(errors="replace")
    after = termios.tcgetattr(slave)
    os.close(master)
    os.close(slave)
    tally.check("-t -i on a terminal: the guest is told its size (kResize 33x101)", resized, log[-600:])
    tally.check("-t -i: the host terminal is raw while ember runs and restored at exit",
                raw_while_running and after == before and code == 143, f"exit {code}")


def check_spec():
    env_file = os.path.join(work, "env-file")
    with open(env_file, "w") as f:
        f.write("# a comment\nC=3\nA=from-file\n")
    shared = os.path.join(work, "shared")
    os.makedirs(shared, exist_ok=True)
    result = ember_run(["-e", "A=1", "-e", "B=two words", "--env-file", env_file, "-w", "/work", "-u", "alice",
                        "--name", "boxy", "-v", f"{shared}:/data", "-v", f"{shared}:/ro:ro",
                        "--ulimit", "nofile=1024:4096", "--ulimit", "core=unlimited"], ["env"])
    try:
        spec = json.loads(result.stdout)
    except ValueError:
        spec = {}
    env = spec.get("env", [])
    tally.check("env/--env-file/-e reach the spec in docker's order (-e wins), HOSTNAME, HOME and PATH added",
                result.returncode == 0 and "A=1" in env and "A=from-file" not in env and "B=two words" in env and "C=3" in env
                and "HOSTNAME=boxy" in env and "HOME=/home/alice" in env
                and any(e.startswith("PATH=") for e in env), result.describe() + f"\nenv {env}")
    tally.check("-w, -u alice (1000:1000, groups from /etc/group), --name: cwd, uid/gid, hostname in the spec",
                spec.get("cwd") == "/work" and spec.get("uid") == 1000 and spec.get("gid") == 1000
                and 100 in spec.get("groups", []) and spec.get("hostname") == "boxy",
                json.dumps({k: spec.get(k) for k in ("cwd", "uid", "gid", "groups", "hostname")}))
    keys = {"version", "args", "env", "cwd", "uid", "gid", "groups", "hostname", "tty", "stdin", "rlimits", "root",
            "scratch", "mounts", "network", "stop_signal"}
    tally.check("the spec has every key of protocol.hpp, args as given, disks by serial",
                set(spec) == keys and spec.get("args") == ["env"] and spec.get("stdin") is False
                and spec.get("root", {}).get("serial") == "ember-root"
                and spec.get("scratch", {}).get("serial") == "ember-scratch" and spec.get("network") is None,
                f"keys {sorted(spec)}")
    mounts = spec.get("mounts", [])
    tally.check("-v: one virtio-fs share per volume (tags ember-v0, ember-v1; :ro kept) in the spec's mounts",
                mounts == [{"type": "virtiofs", "source": "ember-v0", "target": "/data", "readonly": False},
                           {"type": "virtiofs", "source": "ember-v1", "target": "/ro", "readonly": True}],
                json.dumps(mounts))
    tally.check("--ulimit: the spec's rlimits (unlimited = RLIM_INFINITY)",
                spec.get("rlimits") == [{"resource": "nofile", "soft": 1024, "hard": 4096},
                                        {"resource": "core", "soft": 2**64 - 1, "hard": 2**64 - 1}],
                json.dumps(spec.get("rlimits")))
    result = ember_run([], ["env"])
    try:
        spec = json.loads(result.stdout)
    except ValueError:
        spec = {}
    tally.check("defaults: root, cwd /, a generated hostname ember-xxxxxx",
                spec.get("uid") == 0 and spec.get("cwd") == "/" and str(spec.get("hostname", "")).startswith("ember-"),
                result.describe())


def check_scratch():
    tally.check("no scratch disk left behind by the runs so far", scratch_files() == [], f"{scratch_files()}")
    # However ember ends: SIGKILL while the container runs leaves no scratch disk either.
    ember = Background(command([], ["waitsig"], log_level="debug"))
    ready = ember.wait_for("init_stub: running waitsig")
    os.killpg(ember.process.pid, signal.SIGKILL)
    ember.finish()
    tally.check("SIGKILL to ember while the container runs leaves no scratch disk",
                ready and scratch_files() == [], f"ready={ready}, left {scratch_files()}")
    # A host without /dev/kvm: ember says so after preparing everything, and leaves nothing.
    result = common.run(common.without_dev_kvm(command([], ["exit", "0"])), TIMEOUT_S, env=ENV)
    tally.check("no /dev/kvm: exit 125 with one line naming /dev/kvm, no scratch disk left",
                result.returncode == 125 and "/dev/kvm" in result.stderr and
                len(result.stderr.strip().splitlines()) == 1 and scratch_files() == [],
                result.describe() + f"; left {scratch_files()}")
    result = ember_run(["--keep"], ["exit", "0"])
    kept = [line.split(" at ", 1)[1] for line in result.stderr.splitlines() if "scratch disk kept at" in line]
    tally.check("--keep keeps the scratch disk and says where",
                result.returncode == 0 and len(kept) == 1 and os.path.isfile(kept[0]), result.describe())
    for path in kept:
        os.unlink(path)


def check_bad_input():
    missing = os.path.join(work, "no-such-image")
    cases = [
        ("missing image", [], missing, ["exit", "0"], [missing]),
        ("-e without '='", ["-e", "NOEQUALS"], ROOTFS, ["exit", "0"], ["-e", "NOEQUALS"]),
        ("--memory nonsense", ["--memory", "lots"], ROOTFS, ["exit", "0"], ["--memory", "lots"]),
        ("unknown -u user", ["-u", "mallory"], ROOTFS, ["exit", "0"], ["mallory"]),
        ("no command", [], ROOTFS, [], ["command"]),
        ("-v of a missing directory", ["-v", f"{work}/nowhere:/data"], ROOTFS, ["exit", "0"], ["-v", "nowhere"]),
        ("-v with a relative GUESTDIR", ["-v", f"{work}:data"], ROOTFS, ["exit", "0"], ["-v", "absolute"]),
        ("--ulimit unknown resource", ["--ulimit", "bogus=1"], ROOTFS, ["exit", "0"], ["--ulimit", "bogus"]),
        ("relative -w", ["-w", "work"], ROOTFS, ["exit", "0"], ["-w"]),
    ]
    for name, args, image, guest_command, needles in cases:
        line = [EMBER, "run", "--kernel", GUEST, *args, image] + (["--", *guest_command] if guest_command else [])
        result = common.run(line, 60, env=ENV)
        lines = [text for text in result.stderr.splitlines() if text.strip()]
        tally.check(f"bad input, {name}: non-zero exit, one line naming {needles}",
                    result.returncode not in (0, None) and not result.timed_out and len(lines) == 1
                    and all(needle in lines[0] for needle in needles) and result.stdout == "",
                    result.describe())
    tally.check("no scratch disk left behind by the failed runs", scratch_files() == [], f"{scratch_files()}")


def main():
    common.announce(2, "ember run's host side against the test guest playing ember-init")
    make_rootfs()
    try:
        bare = []
        for _ in range(3):
            start = time.monotonic()
            result = ember_run([], ["exit", "0"])
            bare.append(time.monotonic() - start)
        boot_seconds = min(bare)
        print(f"`ember run -- exit 0` (prepare, boot, protocol, power-off): "
              f"{', '.join(f'{s:.2f}' for s in bare)} s", flush=True)
        check_streams()
        check_bulk(10, boot_seconds)
        check_signals()
        check_seccomp()
        check_virtiofsd_exit()
        if os.geteuid() == 0:
            check_jail()
        check_tty()
        check_spec()
        check_scratch()
        check_bad_input()
        for megabytes in options.bench_mb:
            check_bulk(megabytes, boot_seconds, report_only=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tally.finish()


main()
