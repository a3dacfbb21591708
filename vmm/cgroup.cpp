#include "vmm/cgroup.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "vmm/error.hpp"

namespace ember::cgroup {
namespace {

constexpr const char* kControllers[] = {"memory", "cpu", "pids"};
// Super options of a v1 cgroup mount that are not controllers.
constexpr std::string_view kNotControllers[] = {"rw", "ro", "xattr", "noprefix", "clone_children",
                                                "cpuset_v2_mode", "favordynmods", "none"};

std::vector<std::string> split(std::string_view text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find(separator, start), text.size());
    parts.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

std::string read_text(const std::string& path) {
  std::ifstream file(path);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

// One value into a control file; the kernel's answer names what it refused.
void write_control(const std::string& directory, const char* file, const std::string& value) {
  const std::string path = directory + "/" + file;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw system_error(path);
  const ssize_t written = ::write(fd, value.data(), value.size());
  const int saved = errno;
  ::close(fd);
  if (written != static_cast<ssize_t>(value.size()))
    throw system_error("writing '" + value + "' to " + path, saved);
}

bool has_all(const std::vector<std::string>& offered) {
  return std::all_of(std::begin(kControllers), std::end(kControllers), [&](const char* wanted) {
    return std::find(offered.begin(), offered.end(), wanted) != offered.end();
  });
}

std::string mebibytes(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// Cgroups of embers that were killed before they could remove theirs ("ember-NAME-PID" with no
// such process any more): empty, so rmdir takes them (one still in use would refuse).
void remove_stale(const std::string& parent) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(parent, error)) {
    const std::string name = entry.path().filename().string();
    const size_t dash = name.rfind('-');
    if (!name.starts_with("ember-") || dash == std::string::npos) continue;
    const long pid = std::strtol(name.c_str() + dash + 1, nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
      ::rmdir(entry.path().c_str());
  }
}

}  // namespace

std::vector<Mount> parse_mounts(std::string_view mountinfo) {
  // "36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory"
  std::vector<Mount> mounts;
  for (const auto& line : split(mountinfo, '\n')) {
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    const auto before = split(line.substr(0, dash), ' ');
    const auto after = split(line.substr(dash + 3), ' ');
    if (before.size() < 5 || after.size() < 3) continue;
    Mount mount;
    mount.root = before[3];
    mount.point = before[4];
    if (after[0] == "cgroup2") {
      mount.v2 = true;
    } else if (after[0] == "cgroup") {
      for (const auto& option : split(after[2], ','))
        if (option.find('=') == std::string::npos && !std::ranges::count(kNotControllers, option))
          mount.controllers.push_back(option);
    } else {
      continue;
    }
    mounts.push_back(std::move(mount));
  }
  return mounts;
}

std::optional<std::string> own_path(std::string_view proc_cgroup, std::string_view controller) {
  // "0::/user.slice/..." (v2) and "4:memory:/docker/..." or "2:cpu,cpuacct:/..." (v1).
  for (const auto& line : split(proc_cgroup, '\n')) {
    const size_t first = line.find(':');
    const size_t second = first == std::string::npos ? first : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string list = line.substr(first + 1, second - first - 1);
    const std::string path = line.substr(second + 1);
    if (controller.empty() ? (line.starts_with("0::")) : std::ranges::count(split(list, ','),
                                                                           std::string(controller)))
      return path;
  }
  return std::nullopt;
}

std::string cpu_max(uint32_t cpus) {
  return std::to_string(uint64_t{cpus} * kCpuPeriodMicroseconds) + " " +
         std::to_string(kCpuPeriodMicroseconds);
}

std::optional<std::string> directory_of(const Mount& mount, const std::string& own) {
  if (mount.root == "/") return own == "/" ? mount.point : mount.point + own;
  if (own == mount.root) return mount.point;
  if (own.starts_with(mount.root + "/")) return mount.point + own.substr(mount.root.size());
  return std::nullopt;
}

std::unique_ptr<Cgroup> Cgroup::create(const std::string& name, const Limits& limits,
                                       std::string& why_not) {
  const auto mounts = parse_mounts(read_text("/proc/self/mountinfo"));
  const std::string proc_cgroup = read_text("/proc/self/cgroup");
  std::unique_ptr<Cgroup> cgroup(new Cgroup);
  const std::string leaf = name.starts_with("ember-") ? name : "ember-" + name;

  // cgroup v2, where ember's own cgroup may hand memory, cpu and pids to a child.
  std::string v2_problem;
  const auto v2_own = own_path(proc_cgroup, "");
  for (const auto& mount : mounts) {
    if (!mount.v2 || !v2_own) continue;
    const auto parent = directory_of(mount, *v2_own);
    if (!parent) continue;
    const auto offered = split(read_text(*parent + "/cgroup.controllers"), ' ');
    std::vector<std::string> trimmed;
    for (auto word : offered) {
      while (!word.empty() && (word.back() == '\n' || word.back() == ' ')) word.pop_back();
      if (!word.empty()) trimmed.push_back(word);
    }
    if (!has_all(trimmed)) {
      v2_problem = "cgroup v2 at " + mount.point + " offers ember's cgroup no memory, cpu and pids "
                   "controllers";
      continue;
    }
    try {
      // Only the root may have processes and hand controllers down; elsewhere this fails (EBUSY).
      write_control(*parent, "cgroup.subtree_control", "+memory +cpu +pids");
    } catch (const Error& error) {
      v2_problem = std::string("cgroup v2: ") + error.what();
      continue;
    }
    remove_stale(*parent);
    const std::string directory = *parent + "/" + leaf;
    if (::mkdir(directory.c_str(), 0755) != 0 && errno != EEXIST) {
      v2_problem = "cgroup v2: " + std::string(system_error(directory).what());
      continue;
    }
    cgroup->v2_ = true;
    cgroup->directories_ = {directory};
    write_control(directory, "memory.max", std::to_string(limits.memory_bytes));
    if (::access((directory + "/memory.swap.max").c_str(), F_OK) == 0)
      write_control(directory, "memory.swap.max", "0");
    write_control(directory, "cpu.max", cpu_max(limits.cpus));
    write_control(directory, "pids.max", std::to_string(limits.pids));
    cgroup->description_ = "cgroup v2 " + directory + ": memory.max " +
                           mebibytes(limits.memory_bytes) + ", cpu.max " + cpu_max(limits.cpus) +
                           ", pids.max " + std::to_string(limits.pids);
    return cgroup;
  }

  // cgroup v1: one hierarchy per controller (or cpu together with cpuacct).
  std::vector<std::string> directories;
  for (const char* controller : kControllers) {
    const auto own = own_path(proc_cgroup, controller);
    std::optional<std::string> parent;
    for (const auto& mount : mounts)
      if (!mount.v2 && own && std::ranges::count(mount.controllers, std::string(controller)))
        if ((parent = directory_of(mount, *own))) break;
    if (!parent) {
      why_not = v2_problem.empty() ? std::string("no cgroup v2 and no cgroup v1 ") + controller +
                                         " hierarchy mounted"
                                   : v2_problem + ", and there is no cgroup v1 " + controller +
                                         " hierarchy";
      return nullptr;
    }
    remove_stale(*parent);
    directories.push_back(*parent + "/" + leaf);
  }
  for (const auto& directory : directories) {
    if (::mkdir(directory.c_str(), 0755) != 0 && errno != EEXIST) {
      why_not = system_error("cgroup v1: " + directory).what();
      return nullptr;
    }
    cgroup->directories_.push_back(directory);
  }
  write_control(directories[0], "memory.limit_in_bytes", std::to_string(limits.memory_bytes));
  write_control(directories[1], "cpu.cfs_period_us", std::to_string(kCpuPeriodMicroseconds));
  write_control(directories[1], "cpu.cfs_quota_us",
                std::to_string(uint64_t{limits.cpus} * kCpuPeriodMicroseconds));
  write_control(directories[2], "pids.max", std::to_string(limits.pids));
  cgroup->description_ = "cgroup v1 " + directories[0] + " (and cpu, pids): memory " +
                         mebibytes(limits.memory_bytes) + ", cpu quota " + cpu_max(limits.cpus) +
                         ", pids.max " + std::to_string(limits.pids);
  return cgroup;
}

Cgroup::~Cgroup() {
  // The VMM is reaped before this runs; its helpers (virtiofsd) leave when its PID namespace ends,
  // which the kernel finishes a moment later.
  for (const auto& directory : directories_) {
    for (int attempt = 0; attempt < 100; ++attempt) {
      if (::rmdir(directory.c_str()) == 0 || errno != EBUSY) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

void Cgroup::add(pid_t pid) const {
  for (const auto& directory : directories_)
    write_control(directory, "cgroup.procs", std::to_string(pid));
}

bool Cgroup::oom_killed() const {
  if (directories_.empty()) return false;
  // v2: memory.events; v1: memory.oom_control. Both have a line "oom_kill N".
  const std::string text =
      read_text(directories_[0] + (v2_ ? "/memory.events" : "/memory.oom_control"));
  const size_t at = text.find("oom_kill ");
  return at != std::string::npos && std::strtoull(text.c_str() + at + 9, nullptr, 10) > 0;
}

}  // namespace ember::cgroup
