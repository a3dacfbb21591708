// One virtiofsd process per shared directory: the vhost-user backend of a virtio-fs device
// (QEMU 7.2's C virtiofsd, Debian's /usr/lib/qemu/virtiofsd).
//
// Start: ember makes a private temp dir (0700), listens on a unix socket in it, starts virtiofsd
// with that listening fd (--fd=N, so there is no race on the socket path), connects, and removes
// the socket and the dir again: nothing else can reach the backend. virtiofsd keeps its default
// namespace sandbox (mount, pid and net namespaces, pivot_root into the directory), so it needs
// root (CAP_SYS_ADMIN), as ember itself does for /dev/kvm here.
//
// Read-only shares: this virtiofsd has no read-only option. ember enforces it on the host: the
// child unshares a mount namespace, bind-mounts the directory onto itself and makes that bind
// mount (and every mount below it) read-only with mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY)
// before it execs virtiofsd. virtiofsd's own sandbox bind-mounts the directory again, which keeps
// the read-only flag, so every write the guest asks for fails with EROFS in the host kernel,
// whatever the guest mounts. The host's own view of the directory stays writable.
//
// Lifetime: virtiofsd runs in its own process group with PR_SET_PDEATHSIG(SIGKILL) (it dies with
// the thread that started it: create shares on the main thread). It exits by itself when the
// vhost-user connection closes; the destructor kills the process group (virtiofsd forks a child
// into its pid namespace) and reaps it. pidfd() becomes readable when it exits; poll_exit() then
// reaps it and says how it ended, for the one line that reports it. In --jail the VMM may not
// signal it (root's process, the VMM's uid is not): the destructor leaves it to the kernel, which
// kills it when the VMM, pid 1 of their PID namespace, exits.
//
// Its stderr is a pipe (stderr_fd()) that the I/O loop turns into log lines: virtiofsd reports the
// end of every connection as an error, which is no news once ember closes it on purpose.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

#include "vmm/unique_fd.hpp"

namespace ember {

inline constexpr const char* kVirtiofsdPath = "/usr/lib/qemu/virtiofsd";

struct VirtiofsdOptions {
  std::string host_dir;
  bool read_only = false;
  std::string binary = kVirtiofsdPath;
};

class Virtiofsd {
 public:
  // Starts it and connects. Throws a one-line Error: not a directory, no virtiofsd binary, the
  // read-only mount or the exec failed.
  explicit Virtiofsd(const VirtiofsdOptions& options);
  Virtiofsd(const Virtiofsd&) = delete;
  Virtiofsd& operator=(const Virtiofsd&) = delete;
  ~Virtiofsd();

  // The connected vhost-user socket (once; then invalid).
  UniqueFd take_connection() { return std::move(connection_); }
  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }
  // virtiofsd's stderr (non-blocking); read_stderr() takes what it has written so far.
  int stderr_fd() const { return stderr_.get(); }
  std::string read_stderr();
  // nullopt while it runs; once it has exited, reaps it (and what is left of its process group)
  // and says how: "exited with status 1", "was killed by signal 9".
  std::optional<std::string> poll_exit();
  // poll_exit() after waiting up to `patience` for the exit (to explain a connection it closed).
  std::optional<std::string> wait_exit(std::chrono::milliseconds patience);
  const std::string& host_dir() const { return host_dir_; }

 private:
  std::string host_dir_;
  pid_t pid_ = -1;
  UniqueFd pidfd_;
  UniqueFd connection_;
  UniqueFd stderr_;
  std::optional<std::string> exit_;
};

}  // namespace ember
