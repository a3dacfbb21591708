#include "vmm/terminal.hpp"

#include <unistd.h>

namespace ember {

TerminalMode::TerminalMode(int fd) : fd_(fd) {
  if (!::isatty(fd_) || ::tcgetattr(fd_, &saved_) != 0) return;
  termios raw = saved_;
  raw.c_iflag &= ~static_cast<tcflag_t>(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL |
                                        IXON);
  raw.c_lflag &= ~static_cast<tcflag_t>(ECHO | ECHONL | ICANON | IEXTEN);
  raw.c_lflag |= ISIG;
  raw.c_cc[VMIN] = 1;
  raw.c_cc[VTIME] = 0;
  changed_ = ::tcsetattr(fd_, TCSANOW, &raw) == 0;
}

TerminalMode::~TerminalMode() {
  if (changed_) ::tcsetattr(fd_, TCSANOW, &saved_);
}

}  // namespace ember
