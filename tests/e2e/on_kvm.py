#!/usr/bin/env python3
"""Runs a test where it can run: on this host when it has what the test needs, in the lab
(tools/lab: real KVM inside a QEMU TCG VM, ../shared/HOSTS.md) otherwise. Prints one line saying
where and why, then the test's own output; exits with the test's status.

  on_kvm.py kvm|user-space TIMEOUT_S -- COMMAND [ARG...]

kvm: the test needs a /dev/kvm (any kind: hardware, the emulating kvm_pvm, the lab).
user-space: the test runs a Linux guest's user space, which needs real KVM (hardware or the lab);
the emulating kvm_pvm cannot run it (guest system calls fail there).
TIMEOUT_S bounds the lab (boot included); keep it under meson's timeout for the test."""
import os
import sys

import common


def main():
    need, timeout, separator, *command = sys.argv[1:]
    if need not in ("kvm", "user-space") or separator != "--" or not command:
        sys.exit(__doc__)
    # The test's watchdog (common.announce) prints its stacks before this limit.
    os.environ["EMBER_TEST_TIMEOUT"] = timeout
    kind = common.host_kind()
    here = kind != common.NO_KVM if need == "kvm" else common.has_guest_user_space()
    if here:
        print(f"placement: on this host ({kind})", flush=True)
        os.execvp(command[0], command)
    why = ("no /dev/kvm" if kind == common.NO_KVM
           else "no guest user space on the emulating kvm_pvm")
    print(f"placement: in the lab (this host: {kind}; {why})", flush=True)
    os.execv(sys.executable, [sys.executable, str(common.LAB_TOOL), "--timeout", timeout, "--",
                              *command])


main()
