#include "vmm/process.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "vmm/error.hpp"
#include "vmm/unique_fd.hpp"

extern char** environ;

namespace ember {

int run_quietly(const std::vector<std::string>& argv, std::string& diagnostics) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw system_error("pipe");
  UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  write_end = UniqueFd();
  if (spawned != 0) {
    diagnostics = argv[0] + ": " + std::strerror(spawned);
    return -1;
  }
  char buffer[4096];
  diagnostics.clear();
  for (ssize_t count; (count = ::read(read_end.get(), buffer, sizeof(buffer))) != 0;) {
    if (count < 0 && errno == EINTR) continue;
    if (count < 0) break;
    diagnostics.append(buffer, static_cast<size_t>(count));
    if (diagnostics.size() > 8192) diagnostics.erase(0, diagnostics.size() - 8192);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  while (!diagnostics.empty() && (diagnostics.back() == '\n' || diagnostics.back() == ' '))
    diagnostics.pop_back();
  if (const size_t newline = diagnostics.rfind('\n'); newline != std::string::npos)
    diagnostics.erase(0, newline + 1);  // The last line says what went wrong.
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace ember
