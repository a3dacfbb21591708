#include "vmm/virtiofsd.hpp"

#include <fcntl.h>
#include <linux/mount.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <vector>

#include "vmm/error.hpp"

namespace ember {

namespace {

// What the child reports through its pipe when a step before exec fails.
enum class Step : int { kProcessGroup, kDeathSignal, kUnshare, kPrivate, kBind, kReadOnly, kExec };

const char* step_name(Step step) {
  switch (step) {
    case Step::kProcessGroup:
      return "setpgid";
    case Step::kDeathSignal:
      return "prctl(PR_SET_PDEATHSIG)";
    case Step::kUnshare:
      return "unshare(CLONE_NEWNS) for the read-only mount";
    case Step::kPrivate:
      return "making / private in its mount namespace";
    case Step::kBind:
      return "bind-mounting the directory";
    case Step::kReadOnly:
      return "making the bind mount read-only";
    case Step::kExec:
      return "exec";
  }
  return "start";
}

struct ChildFailure {
  Step step;
  int error_number;
};

// Between fork and exec only async-signal-safe calls: the parent has other threads.
[[noreturn]] void child_fail(int pipe, Step step) {
  const ChildFailure failure{step, errno};
  [[maybe_unused]] auto written = ::write(pipe, &failure, sizeof(failure));
  ::_exit(127);
}

[[noreturn]] void run_child(const std::string& dir, bool read_only, int listen_fd, int error_pipe,
                            int stderr_pipe, pid_t parent, const std::vector<char*>& argv) {
  if (::setpgid(0, 0) != 0) child_fail(error_pipe, Step::kProcessGroup);
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent)
    child_fail(error_pipe, Step::kDeathSignal);
  if (read_only) {
    if (::unshare(CLONE_NEWNS) != 0) child_fail(error_pipe, Step::kUnshare);
    // Nothing of this namespace's mounts may propagate back to the host's.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
      child_fail(error_pipe, Step::kPrivate);
    if (::mount(dir.c_str(), dir.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
      child_fail(error_pipe, Step::kBind);
    mount_attr attributes{};
    attributes.attr_set = MOUNT_ATTR_RDONLY;
    if (::syscall(SYS_mount_setattr, AT_FDCWD, dir.c_str(), AT_RECURSIVE, &attributes,
                  sizeof(attributes)) != 0)
      child_fail(error_pipe, Step::kReadOnly);
  }
  // ember's threads block the signals its signal thread waits for; exec keeps the mask.
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (int signal : {SIGPIPE, SIGCHLD, SIGINT, SIGTERM, SIGHUP})
    ::sigaction(signal, &default_action, nullptr);
  ::fcntl(listen_fd, F_SETFD, 0);  // The one fd virtiofsd inherits on purpose.
  if (::dup2(stderr_pipe, STDERR_FILENO) < 0) child_fail(error_pipe, Step::kExec);
  ::execv(argv[0], argv.data());
  child_fail(error_pipe, Step::kExec);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

// A private temp dir, removed with everything in it when this goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "ember-virtiofsd-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw system_error("virtiofsd: mkdtemp");
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

Virtiofsd::Virtiofsd(const VirtiofsdOptions& options) {
  std::error_code error;
  const auto canonical = std::filesystem::canonical(options.host_dir, error);
  if (error || !std::filesystem::is_directory(canonical, error))
    throw Error("share " + options.host_dir + ": not a directory");
  host_dir_ = canonical.string();
  // virtiofsd splits -o values at commas.
  if (host_dir_.find(',') != std::string::npos)
    throw Error("share " + host_dir_ + ": directories with ',' in their path are not supported");
  if (::access(options.binary.c_str(), X_OK) != 0)
    throw system_error("virtiofsd " + options.binary + " (install qemu-system-x86)");

  TempDir dir;
  const std::string socket_path = dir.path() + "/vhost-user.sock";
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(address.sun_path))
    throw Error("virtiofsd: socket path too long: " + socket_path);
  std::memcpy(address.sun_path, socket_path.c_str(), socket_path.size() + 1);
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener) throw system_error("virtiofsd: socket");
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(listener.get(), 1) != 0)
    throw system_error("virtiofsd: listen on " + socket_path);

  std::vector<std::string> arguments{options.binary, "--fd=" + std::to_string(listener.get()),
                                     "-o",           "source=" + host_dir_,
                                     "-o",           "log_level=err"};
  std::vector<char*> argv;
  for (auto& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);

  std::array<int, 2> pipe{};
  if (::pipe2(pipe.data(), O_CLOEXEC) != 0) throw system_error("virtiofsd: pipe");
  UniqueFd pipe_read(pipe[0]);
  UniqueFd pipe_write(pipe[1]);
  if (::pipe2(pipe.data(), O_CLOEXEC) != 0) throw system_error("virtiofsd: pipe");
  stderr_.reset(pipe[0]);
  UniqueFd stderr_write(pipe[1]);
  ::fcntl(stderr_.get(), F_SETFL, O_NONBLOCK);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) throw system_error("virtiofsd: fork");
  if (pid_ == 0)
    run_child(host_dir_, options.read_only, listener.get(), pipe_write.get(), stderr_write.get(),
              parent, argv);
  pipe_write.reset();
  stderr_write.reset();
  // From here on the destructor would not run: clean up by hand on every throw.
  auto abandon = [this] {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  };

  ChildFailure failure{};
  ssize_t got;
  do {
    got = ::read(pipe_read.get(), &failure, sizeof(failure));
  } while (got < 0 && errno == EINTR);
  if (got != 0) {  // Empty at EOF means exec closed the pipe: virtiofsd is running.
    abandon();
    if (got != sizeof(failure)) throw Error("virtiofsd for " + host_dir_ + ": failed to start");
    throw system_error("virtiofsd for " + host_dir_ + ": " + step_name(failure.step),
                       failure.error_number);
  }
  pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
  if (!pidfd_) {
    const int saved = errno;
    abandon();
    throw system_error("virtiofsd: pidfd_open", saved);
  }
  // Connecting queues on the listener's backlog at once; virtiofsd accepts when it gets there.
  // Our copy of the listener closes with this scope, so if virtiofsd dies first the connection
  // reads as closed instead of waiting.
  connection_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!connection_ ||
      ::connect(connection_.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    const int saved = errno;
    abandon();
    throw system_error("virtiofsd: connect to " + socket_path, saved);
  }
}

Virtiofsd::~Virtiofsd() {
  if (pid_ <= 0 || exit_) return;
  // The group: virtiofsd's sandbox forks the process that serves the connection. In the jail this
  // is not ember's to signal (EPERM): it dies with the jail's PID namespace, and waiting would hang.
  if (::kill(-pid_, SIGKILL) != 0 && errno == EPERM) return;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

std::string Virtiofsd::read_stderr() {
  std::string text;
  char buffer[4096];
  ssize_t count;
  while ((count = ::read(stderr_.get(), buffer, sizeof(buffer))) > 0)
    text.append(buffer, static_cast<size_t>(count));
  return text;
}

std::optional<std::string> Virtiofsd::poll_exit() {
  if (exit_ || pid_ <= 0) return exit_;
  int status = 0;
  siginfo_t info{};
  // Look without reaping first, so the group id cannot be reused before the group is killed.
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
      info.si_pid != pid_)
    return std::nullopt;
  ::kill(-pid_, SIGKILL);
  if (::waitpid(pid_, &status, 0) != pid_) return std::nullopt;
  exit_ = describe_status(status);
  return exit_;
}

std::optional<std::string> Virtiofsd::wait_exit(std::chrono::milliseconds patience) {
  if (!exit_ && pidfd_) {
    pollfd exited{pidfd_.get(), POLLIN, 0};
    ::poll(&exited, 1, static_cast<int>(patience.count()));
  }
  return poll_exit();
}

}  // namespace ember
