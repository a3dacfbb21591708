// seccomp filters for the VMM's threads (libseccomp): once set-up is done and before the guest runs,
// each thread confines itself to the system calls its kind needs while the guest runs, and the main
// thread to those of the clean-up after it. Anything else stops the whole VMM with SIGSYS, after one
// line on stderr naming the thread and the call. The allowlists, with why each call is there, are the
// tables in seccomp.cpp.
#pragma once

#include <string>
#include <vector>

namespace ember::seccomp {

enum class ThreadKind {
  kVcpu,  // KVM_RUN and the device emulation of port I/O and MMIO exits.
  kMain,  // The I/O loop (virtqueues on ioeventfds, backends, ember run's streams), then clean-up.
};

// --seccomp on|off: whether to confine; "off" is logged as a warning (debugging only).
bool wanted(const std::string& option);

// The system call names a thread kind may make (for the README's counts and the tests).
std::vector<std::string> allowed_calls(ThreadKind kind);

// Builds both filters (BPF) and the SIGSYS reporter once; confine_this_thread() calls it too.
void prepare();

// Installs the filter of `kind` on the calling thread only. `name` ("vcpu0", "main") is what the
// report says when the thread makes a forbidden call. Throws Error if the filter cannot be loaded.
void confine_this_thread(ThreadKind kind, const std::string& name);

}  // namespace ember::seccomp
