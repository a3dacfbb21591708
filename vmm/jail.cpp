#include "vmm/jail.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>

#include "vmm/cgroup.hpp"
#include "vmm/error.hpp"
#include "vmm/unique_fd.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

namespace ember::jail {
namespace {

// clone3's arguments (linux/sched.h's struct clone_args; glibc has no wrapper).
struct CloneArgs {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

// The signals ember forwards to the VMM: those Machine::run reads through its signalfd.
constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

// The jail's root is mounted over this directory in the VMM's own mount namespace (any directory
// does; the host never sees the mount).
constexpr const char* kRootMountPoint = "/tmp";

int thread_count() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("Threads:")) return std::atoi(line.c_str() + 8);
  return 0;
}

void check(bool ok, const char* what) {
  if (!ok) throw system_error(std::string("jail: ") + what);
}

// The empty read-only root: a tmpfs of its own, pivoted into, the old root detached.
void enter_empty_root() {
  // A mount namespace apart from virtiofsd's (which shares the VMM's until it sandboxes itself):
  // pivot_root would move every process whose root is the old one.
  check(::unshare(CLONE_NEWNS) == 0, "unshare(CLONE_NEWNS)");
  check(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0, "making / private");
  check(::mount("ember-jail", kRootMountPoint, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "size=4k,nr_inodes=8,mode=0555") == 0,
        "mounting its root (tmpfs)");
  check(::chdir(kRootMountPoint) == 0, "chdir to its root");
  check(::syscall(SYS_pivot_root, ".", ".") == 0, "pivot_root");
  check(::umount2(".", MNT_DETACH) == 0, "detaching the host's root");
  check(::chdir("/") == 0, "chdir /");
  check(::mount(nullptr, "/", nullptr,
                MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) == 0,
        "remounting its root read-only");
}

void set_limit(int resource, uint64_t value, const char* name) {
  const rlimit limit{value, value};
  if (::setrlimit(resource, &limit) != 0) throw system_error(std::string("jail: ") + name);
}

void drop_privileges(uid_t uid, gid_t gid) {
  // The bounding set first (it needs CAP_SETPCAP): no exec could regain anything.
  for (int capability = 0; ::prctl(PR_CAPBSET_READ, capability) >= 0; ++capability)
    check(::prctl(PR_CAPBSET_DROP, capability) == 0, "dropping the capability bounding set");
  check(::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == 0,
        "clearing ambient capabilities");
  check(::setgroups(0, nullptr) == 0, "setgroups");
  check(::setresgid(gid, gid, gid) == 0, "setresgid");
  // From uid 0 to none that is 0, the kernel clears the permitted and effective sets.
  check(::setresuid(uid, uid, uid) == 0, "setresuid");
  check(::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs");
  // No core dump (it would hold guest memory), no ptrace by the jail's uid.
  check(::prctl(PR_SET_DUMPABLE, 0) == 0, "PR_SET_DUMPABLE");
  // The change of uid cleared the parent-death signal: set it again.
  check(::prctl(PR_SET_PDEATHSIG, SIGKILL) == 0, "PR_SET_PDEATHSIG");
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  std::array<__user_cap_data_struct, 2> data{};
  check(::syscall(SYS_capget, &header, data.data()) == 0, "capget");
  for (const auto& word : data)
    if (word.effective || word.permitted || word.inheritable)
      throw Error("jail: capabilities remain after dropping them");
}

std::string signal_name(int number) {
  const char* abbreviation = sigabbrev_np(number);
  return abbreviation ? std::string("SIG") + abbreviation : "signal " + std::to_string(number);
}

// The VMM process: namespaces are made; wait for the cgroup, then run the body.
[[noreturn]] void run_child(const Options& options, int go, const std::function<int(Jail&)>& body) {
  int status = options.failure_status;
  try {
    // Gone with ember: a VMM must not outlive the process its caller waits on.
    check(::prctl(PR_SET_PDEATHSIG, SIGKILL) == 0, "PR_SET_PDEATHSIG");
    char ready = 0;
    if (::read(go, &ready, 1) != 1) ::_exit(options.failure_status);  // ember gave up
    ::close(go);
    check(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0, "making / private");
    // /proc of its own PID namespace, so that /proc/self and /proc/1 are this process while it
    // builds the machine (the scratch disk is /proc/self/fd/N; LeakSanitizer reads /proc/1/task).
    check(::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) == 0,
          "mounting /proc");
    check(::sethostname(options.name.data(), options.name.size()) == 0, "sethostname");
    Jail jail(options);
    status = body(jail);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "ember: %s\n", error.what());
  }
  std::fflush(nullptr);
  ::_exit(status);
}

}  // namespace

uint64_t memory_limit(const Options& options) {
  return options.memory_bytes + kVmmOverheadBytes + options.shares * kShareOverheadBytes;
}

uint32_t pids_limit(const Options& options) {
  return kBasePids + options.cpus + options.shares * kPidsPerShare;
}

void Jail::lock() {
#if defined(__SANITIZE_ADDRESS__)
  // LeakSanitizer's scan reads /proc and ptraces this process from a helper: neither is possible
  // in the locked jail. Its one run happens here (Machine::run's call is then a no-op).
  __lsan_do_leak_check();
#endif
  ::tzset();  // The log's local time: /etc/localtime is not in the jail.
  enter_empty_root();
  set_limit(RLIMIT_NOFILE, kOpenFiles, "RLIMIT_NOFILE");
  set_limit(RLIMIT_NPROC, kProcesses, "RLIMIT_NPROC");
  set_limit(RLIMIT_CORE, 0, "RLIMIT_CORE");
  drop_privileges(options_.uid, options_.gid);
  spdlog::debug("jail: locked: empty root, uid {} gid {}, no capabilities", options_.uid,
                options_.gid);
}

int run_jailed(const Options& requested, const std::function<int(Jail&)>& body) {
  Options options = requested;
  const auto ember_pid = static_cast<uint32_t>(::getpid());
  if (options.uid == 0) options.uid = kDefaultIdBase + ember_pid;
  if (options.gid == 0) options.gid = kDefaultIdBase + ember_pid;
  const int failure = options.failure_status;
  if (::geteuid() != 0) {
    std::fprintf(stderr, "ember: --jail needs root (namespaces, cgroups, a change of uid); run as "
                         "root or with --jail off\n");
    return failure;
  }
  if (thread_count() != 1) {
    std::fprintf(stderr, "ember: jail: ember has more than one thread before the VMM starts\n");
    return failure;
  }

  std::unique_ptr<cgroup::Cgroup> group;
  std::string why_not;
  try {
    group = cgroup::Cgroup::create(
        options.name + "-" + std::to_string(ember_pid),
        {memory_limit(options), options.cpus, pids_limit(options)}, why_not);
  } catch (const Error& error) {
    why_not = error.what();
  }
  if (group) {
    spdlog::debug("jail: {}", group->description());
  } else {
    spdlog::warn("jail: no cgroup limits on memory, CPU and processes: {}", why_not);
  }

  // The VMM reads the forwarded signals through its signalfd: blocked from before it exists.
  sigset_t forwarded;
  sigemptyset(&forwarded);
  for (int number : kForwarded) sigaddset(&forwarded, number);
  // They stay blocked after the VMM is gone: ember exits with its status next.
  pthread_sigmask(SIG_BLOCK, &forwarded, nullptr);
  UniqueFd signals(::signalfd(-1, &forwarded, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals) throw system_error("jail: signalfd");

  std::array<int, 2> pipe{};
  if (::pipe2(pipe.data(), O_CLOEXEC) != 0) throw system_error("jail: pipe");
  UniqueFd go_read(pipe[0]), go_write(pipe[1]);

  int pidfd = -1;
  CloneArgs args{};
  args.flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_PIDFD |
               (options.network_namespace ? CLONE_NEWNET : 0);
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  std::fflush(nullptr);
  const long pid = ::syscall(SYS_clone3, &args, sizeof(args));
  if (pid < 0) throw system_error("jail: clone3 (new PID, mount, IPC, UTS namespaces)");
  if (pid == 0) {
    go_write.reset();
    signals.reset();
    run_child(options, go_read.get(), body);
  }
  go_read.reset();
  UniqueFd process(pidfd);
  try {
    if (group) group->add(static_cast<pid_t>(pid));
  } catch (const Error& error) {
    ::kill(static_cast<pid_t>(pid), SIGKILL);
    ::waitid(P_PIDFD, static_cast<id_t>(process.get()), nullptr, WEXITED);
    throw;
  }
  const char ready = 1;
  if (::write(go_write.get(), &ready, 1) != 1) throw system_error("jail: starting the VMM");
  go_write.reset();
  spdlog::debug("jail: VMM is pid {} (pid 1 of its namespace), uid {} gid {}", pid, options.uid,
                options.gid);

  siginfo_t exit_info{};
  for (;;) {
    std::array<pollfd, 2> waits{{{process.get(), POLLIN, 0}, {signals.get(), POLLIN, 0}}};
    if (::poll(waits.data(), waits.size(), -1) < 0 && errno != EINTR)
      throw system_error("jail: poll");
    signalfd_siginfo info{};
    while (::read(signals.get(), &info, sizeof(info)) == sizeof(info)) {
      // What the terminal sends (Ctrl-C, a resize) reaches the VMM too: it is in ember's process
      // group. Only what was sent to ember itself is passed on.
      if (info.ssi_code == SI_KERNEL) continue;
      ::syscall(SYS_pidfd_send_signal, process.get(), info.ssi_signo, nullptr, 0);
    }
    if (waits[0].revents) {
      if (::waitid(P_PIDFD, static_cast<id_t>(process.get()), &exit_info, WEXITED) != 0) {
        if (errno == EINTR) continue;
        throw system_error("jail: waitid");
      }
      break;
    }
  }
  if (exit_info.si_code == CLD_EXITED) return exit_info.si_status;
  std::string line = "the VMM (pid " + std::to_string(pid) + ", jailed) was killed by " +
                     signal_name(exit_info.si_status);
  if (group && group->oom_killed())
    line += ": out of memory in its cgroup (" + group->description() + ")";
  std::fprintf(stderr, "ember: %s\n", line.c_str());
  return failure;
}

}  // namespace ember::jail
