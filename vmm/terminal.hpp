// Puts a terminal into the mode a serial console needs for as long as the object lives: no line
// editing or echo (the guest echoes), but Ctrl-C still raises SIGINT so it stops the VM.
#pragma once

#include <termios.h>

namespace ember {

class TerminalMode {
 public:
  explicit TerminalMode(int fd);  // Does nothing unless fd is a terminal.
  TerminalMode(const TerminalMode&) = delete;
  TerminalMode& operator=(const TerminalMode&) = delete;
  ~TerminalMode();

 private:
  int fd_;
  bool changed_ = false;
  termios saved_{};
};

}  // namespace ember
