// A jailed VM's cgroup: memory, CPU and process limits on the VMM and its helpers (virtiofsd).
// cgroup v2 where its memory, cpu and pids controllers are available to ember's own cgroup, else
// the v1 hierarchies of those controllers (hosts still on the hybrid layout), else none: the caller
// says so in one line. The cgroup is made beside nothing: a child of ember's own cgroup, so the
// limits the host put on ember keep holding.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ember::cgroup {

struct Limits {
  uint64_t memory_bytes = 0;  // memory.max (v1: memory.limit_in_bytes)
  uint32_t cpus = 1;          // cpu.max "<cpus * period> <period>" (v1: cfs quota and period)
  uint32_t pids = 0;          // pids.max
};

inline constexpr uint64_t kCpuPeriodMicroseconds = 100000;

// One cgroup mount from /proc/self/mountinfo.
struct Mount {
  std::string point;                     // where it is mounted
  std::string root;                      // which cgroup of the hierarchy is at `point`
  bool v2 = false;
  std::vector<std::string> controllers;  // v1: those bound to this hierarchy
};

// The cgroup mounts in a mountinfo text (v1 hierarchies with their controllers, and cgroup2).
std::vector<Mount> parse_mounts(std::string_view mountinfo);

// From /proc/self/cgroup: the process's v2 path ("0::PATH") or its v1 path for `controller`.
std::optional<std::string> own_path(std::string_view proc_cgroup, std::string_view controller);

// "<quota> <period>" for cpu.max.
std::string cpu_max(uint32_t cpus);

// Where a cgroup of `own` (a path in the hierarchy) is in the file system under `mount`; nullopt if
// the mount does not show it (a mount of a different subtree).
std::optional<std::string> directory_of(const Mount& mount, const std::string& own);

class Cgroup {
 public:
  // Creates the cgroup NAME under ember's own with `limits`. Returns nullptr and sets `why_not`
  // where the host's cgroup tree does not allow it.
  static std::unique_ptr<Cgroup> create(const std::string& name, const Limits& limits,
                                        std::string& why_not);
  Cgroup(const Cgroup&) = delete;
  Cgroup& operator=(const Cgroup&) = delete;
  // Removes the directories (waits briefly for the last processes to leave).
  ~Cgroup();

  // Moves process `pid` in (before it runs anything a guest can reach).
  void add(pid_t pid) const;
  // The cgroup's OOM killer killed a process in it.
  bool oom_killed() const;
  // "cgroup v2 DIR: memory.max 576 MiB, cpu.max 100000 100000, pids.max 96"
  const std::string& description() const { return description_; }

 private:
  Cgroup() = default;
  bool v2_ = false;
  std::vector<std::string> directories_;  // v2: one; v1: memory, cpu, pids
  std::string description_;
};

}  // namespace ember::cgroup
