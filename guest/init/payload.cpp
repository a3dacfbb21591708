#include "guest/init/payload.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <vector>

#include "vmm/error.hpp"

namespace ember::init {
namespace {

// docker's PATH when the environment has none.
constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Pipe {
  UniqueFd read_end, write_end;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw LaunchError(125, std::string("pipe: ") + std::strerror(errno));
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

void set_nonblocking(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// In the child: tells the parent why the payload never ran, then exits with that status.
[[noreturn]] void fail_in_child(int report_fd, int status, const std::string& message) {
  std::string record(4, '\0');
  std::memcpy(record.data(), &status, 4);
  record += message;
  (void)!::write(report_fd, record.data(), record.size());  // One small write on a pipe: atomic.
  ::_exit(status);
}

[[noreturn]] void fail_system_call(int report_fd, const std::string& what) {
  fail_in_child(report_fd, 125, what + ": " + std::strerror(errno));
}

struct Stdio {
  int input = -1, output = -1, errors = -1;  // child ends; input -1: /dev/null
  int terminal = -1;                         // the pty's slave end with a tty
};

[[noreturn]] void run_child(const LaunchSpec& spec, const Stdio& stdio, int report_fd) {
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);  // Ignored in ember-init; the payload gets the default back.

  if (::setsid() < 0) fail_system_call(report_fd, "setsid");
  int input = stdio.input, output = stdio.output, errors = stdio.errors;
  if (stdio.terminal >= 0) {
    if (::ioctl(stdio.terminal, TIOCSCTTY, 0) != 0)
      fail_system_call(report_fd, "TIOCSCTTY on the payload's pty");
    input = output = errors = stdio.terminal;
  } else if (input < 0) {
    input = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (input < 0) fail_system_call(report_fd, "open /dev/null");
  }
  if (::dup2(input, 0) < 0 || ::dup2(output, 1) < 0 || ::dup2(errors, 2) < 0)
    fail_system_call(report_fd, "dup2 of the payload's stdio");

  for (const Rlimit& limit : spec.rlimits) {
    const rlimit value{limit.soft, limit.hard};
    if (::setrlimit(static_cast<__rlimit_resource>(limit.resource), &value) != 0)
      fail_system_call(report_fd, "setrlimit " + std::to_string(limit.resource) + " to " +
                                      std::to_string(limit.soft) + "/" +
                                      std::to_string(limit.hard));
  }
  const std::vector<gid_t> groups(spec.groups.begin(), spec.groups.end());
  if (::setgroups(groups.size(), groups.data()) != 0) fail_system_call(report_fd, "setgroups");
  if (::setgid(spec.gid) != 0) fail_system_call(report_fd, "setgid " + std::to_string(spec.gid));
  if (::setuid(spec.uid) != 0) fail_system_call(report_fd, "setuid " + std::to_string(spec.uid));
  if (::chdir(spec.cwd.c_str()) != 0) fail_system_call(report_fd, "chdir " + spec.cwd);

  const std::string& name = spec.args.front();
  const auto search_path = env_value(spec.env, "PATH");
  const CommandLookup found = find_command(name, search_path.value_or(kDefaultPath));
  if (found.path.empty())
    fail_in_child(report_fd, found.error == ENOENT ? 127 : 126,
                  "exec " + name + ": " + std::strerror(found.error) + " (searched PATH " +
                      search_path.value_or(kDefaultPath) + ")");

  std::vector<char*> argv, envp;
  for (const std::string& arg : spec.args) argv.push_back(const_cast<char*>(arg.c_str()));
  for (const std::string& assignment : spec.env)
    envp.push_back(const_cast<char*>(assignment.c_str()));
  argv.push_back(nullptr);
  envp.push_back(nullptr);
  ::execve(found.path.c_str(), argv.data(), envp.data());
  const int error = errno;
  fail_in_child(report_fd, error == ENOENT || error == ENOTDIR ? 127 : 126,
                "exec " + found.path + ": " + std::strerror(error));
}

// The pty master (close-on-exec, unlocked) and its slave, opened through the master so it is the
// slave of this devpts instance whatever /dev/pts holds.
std::pair<UniqueFd, UniqueFd> open_pty() {
  UniqueFd master(::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master) throw LaunchError(125, std::string("open /dev/ptmx: ") + std::strerror(errno));
  int unlock = 0;
  if (::ioctl(master.get(), TIOCSPTLCK, &unlock) != 0)
    throw LaunchError(125, std::string("unlocking the pty: ") + std::strerror(errno));
  UniqueFd slave(::ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!slave)
    throw LaunchError(125, std::string("opening the pty's slave: ") + std::strerror(errno));
  return {std::move(master), std::move(slave)};
}

}  // namespace

Payload start_payload(const LaunchSpec& spec) {
  Payload payload;
  payload.tty = spec.tty;
  Stdio stdio;
  UniqueFd terminal;
  Pipe input, output, errors;
  if (spec.tty) {
    auto [master, slave] = open_pty();
    terminal = std::move(slave);
    stdio.terminal = terminal.get();
    payload.output = std::move(master);
    payload.input.reset(::fcntl(payload.output.get(), F_DUPFD_CLOEXEC, 3));
    if (!payload.input)
      throw LaunchError(125, std::string("dup of the pty: ") + std::strerror(errno));
  } else {
    if (spec.stdin_open) {
      input = make_pipe();
      stdio.input = input.read_end.get();
    }
    output = make_pipe();
    errors = make_pipe();
    stdio.output = output.write_end.get();
    stdio.errors = errors.write_end.get();
  }
  Pipe report = make_pipe();

  const pid_t pid = ::fork();
  if (pid < 0) throw LaunchError(125, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) run_child(spec, stdio, report.write_end.get());

  report.write_end.reset();
  terminal.reset();
  if (!spec.tty) {
    payload.input = std::move(input.write_end);
    payload.output = std::move(output.read_end);
    payload.errors = std::move(errors.read_end);
  }
  // Until exec succeeds (the report pipe closes without a word) the payload has not started.
  std::string record;
  char buffer[4096];
  ssize_t got;
  while ((got = ::read(report.read_end.get(), buffer, sizeof(buffer))) != 0) {
    if (got < 0) {
      if (errno == EINTR) continue;
      break;
    }
    record.append(buffer, static_cast<size_t>(got));
  }
  if (record.size() >= 4) {
    int status = 125;
    std::memcpy(&status, record.data(), 4);
    ::waitpid(pid, nullptr, 0);
    throw LaunchError(status, record.substr(4));
  }
  payload.pid = pid;
  for (const UniqueFd* fd : {&payload.input, &payload.output, &payload.errors})
    if (*fd) set_nonblocking(fd->get());
  return payload;
}

}  // namespace ember::init
