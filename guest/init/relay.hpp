// The relay loop while the payload runs: its stdout/stderr out as kStdout/kStderr frames, kStdin in
// to its stdin, kSignal/kResize applied, and every child ember-init inherits reaped (PID 1).
//
// When the relay ends: the payload has exited AND its stdout/stderr reached end of file. A
// process the payload left behind may keep those open; so once the payload has exited, the loop
// keeps relaying for at most kDrainAfterExit, then SIGKILLs every other process (kill(-1)) and
// relays what is still buffered until end of file. Every output byte thus precedes kExit.
#pragma once

#include <chrono>
#include <optional>

#include "guest/init/channel.hpp"
#include "guest/init/payload.hpp"

namespace ember::init {

inline constexpr auto kDrainAfterExit = std::chrono::milliseconds(1000);
// Stdin bytes held for a payload that does not read them; beyond this the channel is not read until
// the payload catches up (back-pressure on the host).
inline constexpr size_t kMaxPendingStdin = 8u << 20;

struct ExitStatus {
  bool signaled = false;
  int value = 0;  // exit code or signal number
};

// `signal_fd`: a signalfd for SIGCHLD (blocked). Throws ember::Error for a protocol error or a
// channel failure (the payload is still running then; the caller kills it).
ExitStatus relay(Channel& channel, Payload& payload, int signal_fd);

// SIGKILL to every process but ember-init, when ember-init is PID 1 (else nothing).
void kill_all_other_processes();

// Reaps every exited child without waiting; returns the payload's status if it was among them.
std::optional<int> reap_children(pid_t payload);

}  // namespace ember::init
