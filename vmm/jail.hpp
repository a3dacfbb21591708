// The jail (--jail): the VMM process in PID, mount, IPC, UTS and (unless a tap is handed in)
// network namespaces of its own, in a cgroup with memory, CPU and process limits, and, before the
// guest's first instruction, in an empty read-only root, without capabilities, as an unprivileged
// uid and gid, under rlimits and no_new_privs. Firecracker's jailer does this from outside for a
// VMM that opens files later through its API; ember's VMM opens everything while it builds the
// machine, so its jail can be empty: the kernel and initrd are already in guest memory, the disk
// images, /dev/kvm and /dev/net/tun are open fds, virtiofsd runs (sandboxed by itself).
//
// run_jailed() runs in ember's first process, as root: it makes the cgroup, clones the VMM process
// into the namespaces and the cgroup, forwards the signals ember gets to it, waits for it, and
// removes the cgroup. The VMM process runs `body`, which builds the Machine and then calls
// Jail::lock() before Machine::run().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>

namespace ember::jail {

struct Options {
  std::string name;              // hostname in the UTS namespace; the cgroup's name
  uid_t uid = 0;                 // 0: the default, kDefaultIdBase + ember's pid
  gid_t gid = 0;
  bool network_namespace = true;  // false when the VM uses a tap in the host's namespace
  uint64_t memory_bytes = 0;     // guest RAM; the cgroup allows it plus the VMM's overhead
  uint32_t cpus = 1;
  uint32_t shares = 0;           // virtio-fs shares: one virtiofsd each, in the same cgroup
  int failure_status = 1;        // ember's exit status if the VMM process dies by a signal
};

// Default ids: one per running ember, that no user or file on the host has (as systemd's
// DynamicUser range does): no two VMs share a uid, so none can signal or trace another, and the
// process rlimit counts this VM's threads only.
inline constexpr uint32_t kDefaultIdBase = 0x7e000000;

// The memory the cgroup allows beyond guest RAM: the VMM (about 10 MiB with its libraries) and
// room for page cache of its disk I/O, and per virtiofsd (its thread pool and cache).
inline constexpr uint64_t kVmmOverheadBytes = 64ull << 20;
inline constexpr uint64_t kShareOverheadBytes = 64ull << 20;
// Processes and threads: ember's own, its vCPUs, io_uring's workers, and virtiofsd's thread pools.
inline constexpr uint32_t kBasePids = 64;
inline constexpr uint32_t kPidsPerShare = 80;
// rlimits once locked: open files (the VM's fds, -p connections), threads of the jail's uid.
inline constexpr uint64_t kOpenFiles = 1024;
inline constexpr uint64_t kProcesses = 256;

uint64_t memory_limit(const Options& options);
uint32_t pids_limit(const Options& options);

class Jail {
 public:
  explicit Jail(const Options& options) : options_(options) {}
  // Called by `body` once the machine holds every fd it needs, before its vCPUs run: an empty
  // read-only root, rlimits, no capabilities, the jail's uid/gid, no_new_privs. Throws on failure.
  void lock();

 private:
  const Options& options_;
};

// Runs `body` in the jailed VMM process; returns what it returned, or options.failure_status (with
// a line on stderr) if the process died by a signal or the jail could not be made. Needs root and a
// single-threaded caller.
int run_jailed(const Options& options, const std::function<int(Jail&)>& body);

}  // namespace ember::jail
