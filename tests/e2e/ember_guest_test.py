#!/usr/bin/env python3
"""Tier 2: the ember test guest (tests/guest) booted by ember, both loaders (PVH ELF and bzImage),
1-4 vCPUs, memory below and above the 32-bit hole, UART input by interrupt, guest panic, and
Ctrl-C (SIGINT) on the host.

usage: ember_guest_test.py EMBER GUEST_ELF GUEST_BZIMAGE"""
import fcntl
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import threading
import time

import common

EMBER, GUEST_ELF, GUEST_BZIMAGE = sys.argv[1:4]
TIMEOUT = 60
tally = common.Tally()


def boot(kernel, cpus, memory_mib, extra="", stdin_data=None):
    cmdline = f"console=ttyS0 expect.cpus={cpus} expect.mem_mib={memory_mib} {extra}".strip()
    command = [EMBER, "boot", "--kernel", kernel, "--cpus", str(cpus), "--memory",
               f"{memory_mib}M", "--cmdline", cmdline]
    return cmdline, common.run(command, TIMEOUT, stdin_data=stdin_data)


def check_guest_run(name, kernel, cpus, memory_mib, entry):
    cmdline, result = boot(kernel, cpus, memory_mib, f"expect.cmdline_token={name}")
    out = result.stdout
    tally.check(f"{name}: ember exits 0 after guest poweroff", result.returncode == 0,
                result.describe())
    tally.check(f"{name}: entered through {entry}", f"entry={entry}" in out, result.describe())
    tally.check(f"{name}: guest saw the exact command line",
                f"ember-test-guest: cmdline: {cmdline}" in out, result.describe())
    tally.check(f"{name}: all {cpus} vCPUs reported", f"CHECK smp ok cpus={cpus}" in out,
                result.describe())
    fails = [line for line in out.splitlines() if " FAIL" in line]
    tally.check(f"{name}: no failed guest checks", not fails, "\n".join(fails))
    match = re.search(r"RESULT pass=(\d+) fail=(\d+)", out)
    tally.check(f"{name}: guest result line, fail=0",
                match is not None and match.group(2) == "0" and int(match.group(1)) > 0,
                result.describe())
    tally.check(f"{name}: nothing on stderr", result.stderr.strip() == "", result.stderr)
    print(f"     {name}: {result.seconds:.2f}s wall", flush=True)


class Interactive:
    """ember with a pipe on stdin and a thread collecting stdout, to talk to the guest's UART."""

    def __init__(self, command):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=True)
        self.output = ""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for chunk in iter(lambda: self.process.stdout.read1(4096), b""):
            with self.lock:
                self.output += chunk.decode(errors="replace")

    def wait_for(self, text, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if text in self.output:
                    return True
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        with self.lock:
            return text in self.output

    def finish(self, timeout):
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.reader.join(5)
        return self.process.returncode, self.process.stderr.read().decode(errors="replace")


def check_uart_input():
    session = Interactive([EMBER, "boot", "--kernel", GUEST_ELF, "--cmdline",
                           "console=ttyS0 expect.cpus=1 test.uart_rx=1"])
    ready = session.wait_for("ready-for-input", TIMEOUT)
    tally.check("uart-rx: guest asks for input", ready, session.output[-2000:])
    session.process.stdin.write(b"hello-from-the-host\n")
    session.process.stdin.flush()
    got = session.wait_for("got-input hello-from-the-host", 20)
    code, stderr = session.finish(TIMEOUT)
    tally.check("uart-rx: host stdin reached the guest through the RX interrupt", got,
                session.output[-2000:])
    tally.check("uart-rx: exit 0", code == 0, f"exit {code}; {stderr}")


def check_sigint():
    session = Interactive([EMBER, "boot", "--kernel", GUEST_ELF, "--cmdline",
                           "console=ttyS0 test.uart_rx=1"])
    ready = session.wait_for("ready-for-input", TIMEOUT)
    tally.check("sigint: guest is running and waiting", ready, session.output[-2000:])
    start = time.monotonic()
    session.process.send_signal(signal.SIGINT)
    code, stderr = session.finish(10)
    tally.check("sigint: ember stops the VM with status 130", code == 130,
                f"exit {code}; {stderr}")
    tally.check("sigint: says it was stopped by SIGINT", "stopped by SIGINT" in stderr, stderr)
    print(f"     sigint: stopped {time.monotonic() - start:.2f}s after the signal", flush=True)


def check_panic():
    _, result = boot(GUEST_ELF, 1, 128, "test.panic=1")
    tally.check("panic: guest panic ends ember with status 3", result.returncode == 3,
                result.describe())
    tally.check("panic: ember says the guest panicked", "guest kernel panicked" in result.stderr,
                result.stderr)


def check_reset(method):
    command = [EMBER, "--log-level", "info", "boot", "--kernel", GUEST_ELF, "--cmdline",
               f"console=ttyS0 test.reset={method}"]
    result = common.run(command, TIMEOUT)
    tally.check(f"reset-{method}: guest reset request ends ember with status 0",
                result.returncode == 0 and "guest requested a reset" in result.stderr and
                "reset failed" not in result.stdout, result.describe())


def check_mmio_on_command_line():
    """--transport mmio-cmdline: the devices are in the kernel command line, not the DSDT."""
    command = [EMBER, "boot", "--kernel", GUEST_ELF, "--transport", "mmio-cmdline", "--cmdline",
               "console=ttyS0 test.virtio=mmio"]
    result = common.run(command, TIMEOUT)
    tally.check("mmio-cmdline: ember appends virtio_mmio.device= for the rng",
                "test.virtio=mmio virtio_mmio.device=0x200@0xfe000000:16" in result.stdout,
                result.describe())
    tally.check("mmio-cmdline: the guest finds and uses the device from the command line",
                "CHECK virtio_mmio ok" in result.stdout and "CHECK rng ok" in result.stdout and
                result.returncode == 0, result.describe())


def check_internal_error():
    """An instruction the emulating KVM cannot run at CPL0: ember must say what and where."""
    _, result = boot(GUEST_ELF, 1, 128, "test.cpl0_popcnt=1")
    if common.is_emulating_host():
        lines = result.stderr.strip().splitlines()
        tally.check("internal-error: KVM emulation failure ends ember with status 1",
                    result.returncode == 1, result.describe())
        tally.check("internal-error: one line with suberror, RIP and the instruction bytes",
                    len(lines) == 1 and "emulation failure (suberror 1)" in lines[0] and
                    "at RIP 0x" in lines[0] and "instruction bytes f3 48 0f b8" in lines[0],
                    result.stderr)
    else:
        tally.check("internal-error: hardware KVM runs popcnt at CPL0",
                    result.returncode == 0 and "CHECK cpl0_popcnt ok" in result.stdout,
                    result.describe())


def check_terminal():
    """ember on a terminal: no echo or line editing by the host (the guest's line arrives once,
    with its carriage return), Ctrl-C still stops the VM, and the terminal is restored after."""
    master, slave = pty.openpty()
    saved = termios.tcgetattr(slave)

    def take_terminal():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen([EMBER, "boot", "--kernel", GUEST_ELF, "--cmdline",
                                "console=ttyS0 test.uart_rx=1"], stdin=slave, stdout=slave,
                               stderr=subprocess.PIPE, preexec_fn=take_terminal)
    output = b""

    def read_until(text, timeout):
        nonlocal output
        deadline = time.monotonic() + timeout
        while text not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    output += os.read(master, 4096)
                except OSError:
                    break
        return text in output

    tally.check("tty: guest asks for input", read_until(b"ready-for-input", TIMEOUT),
                output[-500:])
    os.write(master, b"typed-on-a-tty\r")
    got = read_until(b"got-input typed-on-a-tty", 20)
    tally.check("tty: a line typed with Enter (CR) reaches the guest", got, output[-500:])
    tally.check("tty: the host did not echo it (raw mode)",
                output.count(b"typed-on-a-tty") == 1, output[-500:])
    # The guest powers off after the line; run a second VM to press Ctrl-C in.
    process.wait(TIMEOUT)
    tally.check("tty: terminal settings restored after exit",
                termios.tcgetattr(slave)[3] == saved[3], "local modes differ")
    process = subprocess.Popen([EMBER, "boot", "--kernel", GUEST_ELF, "--cmdline",
                                "console=ttyS0 test.uart_rx=1"], stdin=slave, stdout=slave,
                               stderr=subprocess.PIPE, preexec_fn=take_terminal)
    output = b""
    read_until(b"ready-for-input", TIMEOUT)
    os.write(master, b"\x03")
    try:
        code = process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    tally.check("tty: Ctrl-C stops the VM (status 130)", code == 130, f"exit {code}")
    os.close(master)
    os.close(slave)


common.announce(2, "ember test guest booted by ember")
check_guest_run("pvh-1cpu-256M", GUEST_ELF, 1, 256, "pvh")
check_guest_run("pvh-2cpu-512M", GUEST_ELF, 2, 512, "pvh")
check_guest_run("bzimage-2cpu-256M", GUEST_BZIMAGE, 2, 256, "linux64")
check_guest_run("pvh-4cpu-5G", GUEST_ELF, 4, 5120, "pvh")
check_uart_input()
check_panic()
check_reset("i8042")
check_reset("acpi")
check_internal_error()
check_mmio_on_command_line()
check_sigint()
check_terminal()
tally.finish()
