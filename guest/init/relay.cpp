#include "guest/init/relay.hpp"

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <optional>

#include "guest/protocol/protocol.hpp"
#include "vmm/error.hpp"

namespace ember::init {
namespace {

using Clock = std::chrono::steady_clock;

class Relay {
 public:
  Relay(Channel& channel, Payload& payload, int signal_fd)
      : channel_(channel), payload_(payload), signal_fd_(signal_fd) {}

  ExitStatus run();

 private:
  void on_frame(const Frame& frame);
  void on_signal_fd();
  // Reads once from `fd`; sends what came as a `type` frame. Closes `fd` at end of file.
  void forward_output(UniqueFd& fd, uint8_t type);
  void write_stdin();
  void close_stdin();
  // Handles the frames already in the channel's buffer, stopping while stdin is backlogged. poll()
  // only reports new bytes on the fd: frames read together with kStart, or left behind while stdin
  // was backlogged, would otherwise wait for the host's next frame (which may never come).
  void handle_buffered_frames();
  bool stdin_backlogged() const { return pending_stdin_.size() - pending_offset_ >= kMaxPendingStdin; }
  bool done() const { return status_ && !payload_.output && !payload_.errors; }

  Channel& channel_;
  Payload& payload_;
  int signal_fd_;
  std::optional<int> status_;  // waitpid status of the payload once it has exited
  std::optional<Clock::time_point> drain_deadline_;
  bool stdin_eof_ = false;
  std::vector<uint8_t> pending_stdin_;
  size_t pending_offset_ = 0;
};

ExitStatus Relay::run() {
  while (!done()) {
    handle_buffered_frames();
    if (done()) break;
    enum Slot { kChannel, kSignals, kOutput, kErrors, kInput, kSlots };
    std::array<pollfd, kSlots> fds{};
    fds[kChannel] = {stdin_backlogged() ? -1 : channel_.fd(), POLLIN, 0};
    fds[kSignals] = {signal_fd_, POLLIN, 0};
    fds[kOutput] = {payload_.output ? payload_.output.get() : -1, POLLIN, 0};
    fds[kErrors] = {payload_.errors ? payload_.errors.get() : -1, POLLIN, 0};
    const bool want_input = payload_.input && pending_offset_ < pending_stdin_.size();
    fds[kInput] = {want_input ? payload_.input.get() : -1, POLLOUT, 0};

    int timeout = -1;
    if (drain_deadline_) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(*drain_deadline_ - Clock::now());
      timeout = static_cast<int>(std::max<int64_t>(left.count(), 0));
    }
    const int ready = ::poll(fds.data(), fds.size(), timeout);
    if (ready < 0) {
      if (errno == EINTR) continue;
      throw system_error("poll in the relay loop");
    }
    if (ready == 0 && drain_deadline_ && Clock::now() >= *drain_deadline_) {
      // The payload has gone; whatever still holds its stdout/stderr goes too (see relay.hpp).
      kill_all_other_processes();
      drain_deadline_.reset();
      continue;
    }
    if (fds[kSignals].revents) on_signal_fd();
    if (fds[kOutput].revents) forward_output(payload_.output, protocol::kStdout);
    if (fds[kErrors].revents) forward_output(payload_.errors, protocol::kStderr);
    if (fds[kInput].revents) write_stdin();
    if (fds[kChannel].revents && !channel_.fill()) throw Error("the host closed the channel");
  }
  if (WIFSIGNALED(*status_)) return {true, WTERMSIG(*status_)};
  return {false, WEXITSTATUS(*status_)};
}

void Relay::handle_buffered_frames() {
  while (!stdin_backlogged()) {
    auto frame = channel_.next();
    if (!frame) return;
    on_frame(*frame);
  }
}

void Relay::on_frame(const Frame& frame) {
  const auto expect_size = [&](size_t size, const char* name) {
    if (frame.payload.size() != size)
      throw Error(std::string("protocol error: ") + name + " with " +
                  std::to_string(frame.payload.size()) + " payload bytes");
  };
  switch (frame.type) {
    case protocol::kStdin:
      if (stdin_eof_ || !payload_.input) return;  // Too late: the payload's stdin is closed.
      if (pending_offset_ == pending_stdin_.size()) {
        pending_stdin_.clear();
        pending_offset_ = 0;
      }
      pending_stdin_.insert(pending_stdin_.end(), frame.payload.begin(), frame.payload.end());
      write_stdin();
      return;
    case protocol::kStdinEof:
      expect_size(0, "kStdinEof");
      stdin_eof_ = true;
      if (pending_offset_ == pending_stdin_.size()) close_stdin();
      return;
    case protocol::kSignal: {
      expect_size(4, "kSignal");
      const uint32_t number = protocol::get_u32(frame.payload.data());
      if (number < 1 || number > 64)
        throw Error("protocol error: kSignal " + std::to_string(number));
      if (!status_) ::kill(payload_.pid, static_cast<int>(number));
      return;
    }
    case protocol::kResize: {
      expect_size(4, "kResize");
      if (!payload_.tty || !payload_.input) return;
      winsize size{};
      size.ws_row = protocol::get_u16(frame.payload.data());
      size.ws_col = protocol::get_u16(frame.payload.data() + 2);
      ::ioctl(payload_.input.get(), TIOCSWINSZ,
              &size);  // The kernel sends SIGWINCH to the foreground.
      return;
    }
    default:
      char name[8];
      std::snprintf(name, sizeof(name), "0x%02x", frame.type);
      throw Error(std::string("protocol error: frame ") + name + " after kStart");
  }
}

void Relay::on_signal_fd() {
  signalfd_siginfo info;
  while (::read(signal_fd_, &info, sizeof(info)) == sizeof(info)) {
  }
  if (auto status = reap_children(payload_.pid); status && !status_) {
    status_ = status;
    if (payload_.output || payload_.errors) drain_deadline_ = Clock::now() + kDrainAfterExit;
    // Nobody will read what is still pending for stdin.
    pending_stdin_.clear();
    pending_offset_ = 0;
  }
}

void Relay::forward_output(UniqueFd& fd, uint8_t type) {
  static std::vector<uint8_t> buffer(protocol::kMaxPayload);
  const ssize_t got = ::read(fd.get(), buffer.data(), buffer.size());
  if (got > 0) {
    channel_.send(type, std::span(buffer.data(), static_cast<size_t>(got)));
    return;
  }
  if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
  // End of file, or EIO from a pty master whose slave side has been closed by everyone.
  if (payload_.tty && &fd == &payload_.output) payload_.input.reset();
  fd.reset();
}

void Relay::write_stdin() {
  while (payload_.input && pending_offset_ < pending_stdin_.size()) {
    const ssize_t written = ::write(payload_.input.get(), pending_stdin_.data() + pending_offset_,
                                    pending_stdin_.size() - pending_offset_);
    if (written < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;  // Full; poll says when it takes more.
      // EPIPE: the payload closed its stdin; what is left has no reader.
      pending_stdin_.clear();
      pending_offset_ = 0;
      close_stdin();
      return;
    }
    pending_offset_ += static_cast<size_t>(written);
  }
  if (pending_offset_ == pending_stdin_.size()) {
    pending_stdin_.clear();
    pending_offset_ = 0;
    if (stdin_eof_) close_stdin();
  }
}

void Relay::close_stdin() {
  // With a tty, stdin and stdout are one pty: closing it would hang the payload up, so the end of
  // the host's input changes nothing (as with docker run -t without -i).
  if (!payload_.tty) payload_.input.reset();
}

}  // namespace

void kill_all_other_processes() {
  // kill(-1) from anything but PID 1 (of the VM or of a test's PID namespace) would reach the
  // host's.
  if (::getpid() == 1) ::kill(-1, SIGKILL);
}

std::optional<int> reap_children(pid_t payload) {
  std::optional<int> payload_status;
  while (true) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      if (pid < 0 && errno == EINTR) continue;
      return payload_status;
    }
    if (pid == payload) payload_status = status;
  }
}

ExitStatus relay(Channel& channel, Payload& payload, int signal_fd) {
  return Relay(channel, payload, signal_fd).run();
}

}  // namespace ember::init
