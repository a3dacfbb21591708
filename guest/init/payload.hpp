// Starting the container's command (the payload): a child in a new session with the spec's rlimits,
// credentials, working directory and environment, its stdio on pipes or on a pty, and args[0]
// found in the spec's PATH. A failure before the payload's own code runs comes back as a
// LaunchError carrying the status `ember run` exits with (125, 126 or 127).
#pragma once

#include <sys/types.h>

#include <stdexcept>
#include <string>

#include "guest/init/spec.hpp"
#include "vmm/unique_fd.hpp"

namespace ember::init {

class LaunchError : public std::runtime_error {
 public:
  LaunchError(int status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

struct Payload {
  pid_t pid = -1;
  bool tty = false;
  UniqueFd input;   // the payload's stdin (pipe write end; with a tty a dup of the pty master); may
                    // be closed
  UniqueFd output;  // its stdout (pipe read end; with a tty the pty master)
  UniqueFd errors;  // its stderr (pipe read end); closed with a tty
};

// Forks and execs the payload; returns once exec has succeeded. The parent's fds are non-blocking
// and close-on-exec. Must run after the switch into the container's root. Throws LaunchError.
Payload start_payload(const LaunchSpec& spec);

}  // namespace ember::init
