// test.init_stub=1: the test guest plays ember-init's side of the `ember run` protocol
// (guest/protocol/protocol.hpp) on the first virtio console (virtio-pci), so ember's host side can be
// tested where no Linux user space runs. It sends kHello, reads kStart, takes the command from the
// spec's "args" and runs one of these built-ins, then powers off through ACPI:
//   exit N          kExit exited N
//   echo WORDS...   the words and a newline on stdout
//   cat             stdin to stdout until kStdinEof, then exit 0
//   split N         N bytes of byte i = i % 251 on stdout and N of (i * 13 + 5) & 0xff on stderr
//   waitsig [trap]  waits for a kSignal S: kExit signaled S (with trap: SIGTERM exits 42)
//   ignoresig       ignores every kSignal but SIGKILL, then kExit signaled 9
//   fail N MESSAGE  kError with status N and the message
//   garbage         a frame of an invalid type, then waits (ember must stop the VM)
//   env             the launch spec's JSON text and a newline on stdout
// Anything else: kError 127 "<name>: command not found". Progress lines go to COM1.
// With test.hostile=1 it sends malformed frames instead (test.hostile.frame=<attack>, seeded by test.seed):
// random (random bytes before kHello), before_hello, host_type, flags, reserved, length_4g, hello_short,
// hello_version, truncated_header (then powers off mid-frame); after kHello and kStart: random_after_start,
// over_max_payload, hello_again, exit_short, exit_how, exit_signal_0, error_status_0, truncated_payload (then
// powers off mid-frame), hostile_text (well-formed kLog/kStderr of random bytes and a 64 KiB kError 77).
#pragma once

#include <stdint.h>

#include "bootinfo.hpp"

namespace guest {

[[noreturn]] void run_init_stub(const BootInfo& boot, uint32_t bsp_apic_id);

}  // namespace guest
