#include "vmm/seccomp.hpp"

#include <linux/kvm.h>
#include <linux/filter.h>
#include <linux/if_tun.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <time.h>
#include <termios.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>

#include <spdlog/spdlog.h>

#include "vmm/error.hpp"
#include "vmm/kvm_abi.hpp"
#include "vmm/unique_fd.hpp"

namespace ember::seccomp {
namespace {

struct Call {
  const char* name;
  const char* why;
};

struct Ioctl {
  unsigned long request;
  const char* name;
  const char* why;
};

// Every thread, whatever it does: memory, locks, its own end, the kick and the SIGSYS report.
constexpr Call kCommon[] = {
    {"read", "eventfds, pipes, the tap, ember run's streams"},
    {"write", "eventfds (irqfds, the loop's wake-up), the log and console output on stderr/stdout"},
    {"close", "fds of queues and connections that go away while the guest runs"},
    {"futex", "mutexes and condition variables (device state, the exit status, the log)"},
    {"mmap", "malloc's larger blocks"},
    {"munmap", "malloc's larger blocks"},
    {"mprotect", "malloc growing a thread's arena"},
    {"madvise", "malloc returning freed pages (MADV_DONTNEED)"},
    {"brk", "malloc's main heap"},
    {"mremap", "realloc of large blocks"},
    {"rt_sigreturn", "return from the vCPU kick handler and the SIGSYS reporter"},
    {"rt_sigprocmask", "glibc blocks signals around thread exit and in pthread_kill"},
    {"restart_syscall", "a call interrupted by the kick signal restarts"},
    {"getpid", "pthread_kill (kicking a vCPU)"},
    {"gettid", "pthread_kill"},
    {"tgkill", "pthread_kill: kicking a vCPU out of KVM_RUN"},
    {"clock_gettime", "the log's timestamps and timeouts (when the vDSO cannot answer)"},
    {"gettimeofday", "the same, through older glibc paths"},
    {"clock_nanosleep", "short back-offs"},
    {"nanosleep", "short back-offs"},
    {"sched_yield", "spin-waits in libstdc++ and glibc"},
    {"exit", "a thread's end"},
    {"exit_group", "the VMM's end"},
    {"getrandom", "libstdc++'s random_device and malloc's tcache randomisation"},
    {"newfstatat", "stdio's first use of a stream (fstat)"},
    {"fstat", "stdio's first use of a stream"},
    {"lseek", "stdio on regular files"},
};

// The I/O loop and devices (both kinds run device code: a vCPU on port/MMIO exits, the loop on
// ioeventfds), so both need the backends' calls.
constexpr Call kDevices[] = {
    {"pread64", "virtio-blk reads of the disk image"},
    {"pwrite64", "virtio-blk writes to the disk image"},
    {"preadv", "virtio-blk reads into scattered guest buffers"},
    {"pwritev", "virtio-blk writes from scattered guest buffers"},
    {"fdatasync", "virtio-blk flush"},
    {"fsync", "virtio-blk flush"},
    {"fallocate", "virtio-blk discard and write-zeroes"},
    {"io_uring_enter", "virtio-blk submitting to and reaping its ring (locked to the disk file and "
                       "readv/writev/fsync/fallocate: devices/backends/raw_file.cpp)"},
    {"readv", "virtio-net: a frame from the tap into guest buffers"},
    {"writev", "virtio-net: a frame from guest buffers to the tap; stdio"},
    {"sendmsg", "vhost-user messages to virtiofsd (with fds) when the guest sets up queues"},
    {"recvmsg", "vhost-user replies from virtiofsd"},
    {"eventfd2", "ioeventfds and irqfds made when the guest enables a queue or an MSI-X vector"},
    {"epoll_ctl", "devices and connections adding and removing their fds on the I/O loop"},
};

// vCPU threads: KVM_RUN and the exits it returns.
constexpr Call kVcpu[] = {
    {"ioctl", "KVM_RUN and the KVM/tap requests listed below (by request number)"},
};

// The main thread: the I/O loop while the guest runs, then the clean-up once it has stopped.
constexpr Call kMain[] = {
    {"ioctl", "the KVM, tap and terminal requests listed below (by request number)"},
    {"epoll_wait", "the I/O loop"},
    {"epoll_pwait", "the I/O loop (glibc's epoll_wait on some versions)"},
    {"poll", "ember run waiting for its output to drain; virtiofsd's exit"},
    {"ppoll", "the same through glibc's poll"},
    {"timerfd_create", "ember run's --stop-timeout and -p's connect timeouts"},
    {"timerfd_settime", "the same"},
    {"socket", "-p: a connection to the guest; --net tap: the rtnetlink socket that removes the tap"},
    {"connect", "-p: the connection to the guest's port"},
    {"accept4", "-p: a connection from the host"},
    {"setsockopt", "-p: TCP_NODELAY, SO_REUSEADDR"},
    {"getsockopt", "-p: SO_ERROR of a non-blocking connect"},
    {"getsockname", "--net tap: rtnetlink's bound port id"},
    {"bind", "--net tap: binding the rtnetlink socket"},
    {"shutdown", "-p: half-close after one side's EOF"},
    {"sendto", "-p: bytes to a peer; rtnetlink requests"},
    {"recvfrom", "-p: bytes from a peer; rtnetlink answers"},
    {"kill", "clean-up: virtiofsd's process group"},
    {"wait4", "clean-up: reaping virtiofsd"},
    {"waitid", "a virtiofsd that exits while the guest runs (its pidfd fires): looked at unreaped"},
    {"unlink", "clean-up: virtiofsd's socket and the scratch disk's temporary name"},
    {"unlinkat", "clean-up: virtiofsd's socket directory"},
    {"rmdir", "clean-up: virtiofsd's socket directory"},
};

#if defined(__SANITIZE_ADDRESS__)
// Only in ASan/UBSan builds (tools/test runs the boots under them): the sanitizers' runtime.
constexpr Call kSanitizers[] = {
    {"pipe2", "UBSan's vptr check probes whether memory is readable through a pipe"},
    {"sigaltstack", "ASan/UBSan set up and tear down each thread's alternate signal stack"},
};
#endif

// ioctl requests, compared on their low 32 bits (the kernel's `unsigned int cmd`).
constexpr Ioctl kVcpuIoctls[] = {
    {KVM_RUN, "KVM_RUN", "running the guest"},
    {kvm_abi::kSetGsiRouting, "KVM_SET_GSI_ROUTING", "the guest programming an MSI-X vector"},
    {KVM_IRQFD, "KVM_IRQFD", "wiring a queue's interrupt when the guest enables it"},
    {KVM_IOEVENTFD, "KVM_IOEVENTFD", "a queue's notify address when the guest enables or resets it"},
    {KVM_IRQ_LINE, "KVM_IRQ_LINE", "the UART's and virtio-mmio's interrupt lines"},
    {KVM_GET_REGS, "KVM_GET_REGS", "the report of a guest that stops on an unhandled exit"},
    {KVM_GET_SREGS, "KVM_GET_SREGS", "the same"},
    {KVM_TRANSLATE, "KVM_TRANSLATE", "the same: the bytes at the guest's instruction pointer"},
    {TUNSETOFFLOAD, "TUNSETOFFLOAD", "virtio-net: offloads the guest driver accepted"},
};

constexpr Ioctl kMainIoctls[] = {
    {kvm_abi::kSetGsiRouting, "KVM_SET_GSI_ROUTING", "MSI routes changed from the I/O loop"},
    {KVM_IRQFD, "KVM_IRQFD", "the same"},
    {KVM_IOEVENTFD, "KVM_IOEVENTFD", "the same; removing notifiers at clean-up"},
    {KVM_IRQ_LINE, "KVM_IRQ_LINE", "the UART's interrupt when input arrives"},
    {TUNSETOFFLOAD, "TUNSETOFFLOAD", "virtio-net"},
    {TCGETS, "TCGETS", "ember run -t / ember boot: the terminal's mode"},
    {TCSETS, "TCSETS", "restoring the terminal's mode at the end"},
    {TIOCGWINSZ, "TIOCGWINSZ", "ember run -t: the window size after SIGWINCH"},
};

template <size_t N>
void add_calls(std::vector<const Call*>& out, const Call (&calls)[N]) {
  for (const Call& call : calls) out.push_back(&call);
}

std::vector<const Call*> calls_of(ThreadKind kind) {
  std::vector<const Call*> calls;
  add_calls(calls, kCommon);
  add_calls(calls, kDevices);
#if defined(__SANITIZE_ADDRESS__)
  add_calls(calls, kSanitizers);
#endif
  if (kind == ThreadKind::kVcpu) {
    add_calls(calls, kVcpu);
  } else {
    add_calls(calls, kMain);
  }
  return calls;
}

std::span<const Ioctl> ioctls_of(ThreadKind kind) {
  if (kind == ThreadKind::kVcpu) return kVcpuIoctls;
  return kMainIoctls;
}

// The report runs in a signal handler: no allocation, so the names are looked up beforehand.
constexpr int kNamedCalls = 512;
std::array<std::array<char, 32>, kNamedCalls> call_names{};
thread_local std::array<char, 24> thread_name{};

void fill_names() {
  for (int number = 0; number < kNamedCalls; ++number) {
    std::unique_ptr<char, decltype(&std::free)> name(
        seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, number), &std::free);
    if (name) std::strncpy(call_names[number].data(), name.get(), call_names[number].size() - 1);
  }
}

void append(char* line, size_t size, size_t& used, const char* text) {
  while (*text != '\0' && used + 1 < size) line[used++] = *text++;
  line[used] = '\0';
}

void report_and_die(int, siginfo_t* info, void*) {
  char line[200];
  size_t used = 0;
  char digits[12];
  char* number = digits + sizeof(digits);
  *--number = '\0';
  auto value = static_cast<unsigned>(info->si_syscall);
  do {
    *--number = static_cast<char>('0' + value % 10);
  } while ((value /= 10) > 0);
  const char* name = info->si_syscall >= 0 && info->si_syscall < kNamedCalls &&
                             call_names[info->si_syscall][0] != '\0'
                         ? call_names[info->si_syscall].data()
                         : "unknown";
  append(line, sizeof(line), used, "ember: seccomp: thread ");
  append(line, sizeof(line), used, thread_name[0] != '\0' ? thread_name.data() : "?");
  append(line, sizeof(line), used, " made a forbidden system call: ");
  append(line, sizeof(line), used, name);
  append(line, sizeof(line), used, " (");
  append(line, sizeof(line), used, number);
  append(line, sizeof(line), used, "); the VMM stops\n");
  [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, line, used);
  // SA_RESETHAND put SIGSYS back to its default. A call no filter allows traps again, and the
  // kernel forces that SIGSYS, which ends the whole process even where a re-raised one would be
  // dropped: the jailed VMM is pid 1 of its namespace, immune to the signals it sends itself.
  ::syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
}

void install_reporter() {
  struct sigaction action {};
  action.sa_sigaction = report_and_die;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_SIGINFO | SA_RESETHAND;
  if (::sigaction(SIGSYS, &action, nullptr) != 0) throw system_error("seccomp: sigaction(SIGSYS)");
}

int resolve(const char* name) {
  const int number = seccomp_syscall_resolve_name(name);
  if (number == __NR_SCMP_ERROR) throw Error(std::string("seccomp: unknown system call ") + name);
  return number;
}

// The filter of `kind` as BPF, built with libseccomp once: each thread then loads it with one call.
std::vector<sock_filter> compile(ThreadKind kind) {
  std::unique_ptr<void, decltype(&seccomp_release)> filter(seccomp_init(SCMP_ACT_TRAP),
                                                           &seccomp_release);
  if (!filter) throw Error("seccomp: seccomp_init failed");
  // (Rules spell scmp_arg_cmp out: libseccomp's SCMP_A0..A5 are compound literals, which clang's
  // -Wpedantic refuses in C++.)
  // A binary search on the call number instead of a linear list: KVM_RUN comes back through the
  // filter at every exit.
  if (const int status = seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2); status != 0)
    throw system_error("seccomp: binary-tree filter", -status);
  for (const Call* call : calls_of(kind)) {
    // The SIGSYS reporter ends the VMM with this call (report_and_die).
    if (std::strcmp(call->name, "ptrace") == 0) throw Error("seccomp: ptrace may not be allowed");
    const int number = resolve(call->name);
    if (std::strcmp(call->name, "ioctl") == 0) {
      for (const Ioctl& request : ioctls_of(kind)) {
        const int status = seccomp_rule_add(
            filter.get(), SCMP_ACT_ALLOW, number, 1,
            scmp_arg_cmp{1, SCMP_CMP_MASKED_EQ, 0xffffffffUL, request.request & 0xffffffffUL});
        if (status != 0) throw system_error(std::string("seccomp: rule for ") + request.name, -status);
      }
      continue;
    }
    if (std::strcmp(call->name, "tgkill") == 0) {
      // Signals to this process's own threads only.
      const int status = seccomp_rule_add(filter.get(), SCMP_ACT_ALLOW, number, 1,
                                          scmp_arg_cmp{0, SCMP_CMP_EQ,
                                                       static_cast<uint64_t>(::getpid()), 0});
      if (status != 0) throw system_error("seccomp: rule for tgkill", -status);
      continue;
    }
    const int status = seccomp_rule_add(filter.get(), SCMP_ACT_ALLOW, number, 0);
    if (status != 0) throw system_error(std::string("seccomp: rule for ") + call->name, -status);
  }
  // libseccomp 2.5 exports only to an fd.
  UniqueFd memory(::memfd_create("ember-seccomp", MFD_CLOEXEC));
  if (!memory) throw system_error("seccomp: memfd_create");
  if (const int status = seccomp_export_bpf(filter.get(), memory.get()); status != 0)
    throw system_error("seccomp: exporting the filter", -status);
  const off_t bytes = ::lseek(memory.get(), 0, SEEK_END);
  if (bytes <= 0 || bytes % static_cast<off_t>(sizeof(sock_filter)) != 0 ||
      bytes / static_cast<off_t>(sizeof(sock_filter)) > BPF_MAXINSNS)
    throw Error("seccomp: the exported filter has an unexpected size");
  std::vector<sock_filter> program(static_cast<size_t>(bytes) / sizeof(sock_filter));
  if (::pread(memory.get(), program.data(), static_cast<size_t>(bytes), 0) != bytes)
    throw system_error("seccomp: reading the exported filter");
  return program;
}

std::once_flag prepared_once;
std::array<std::vector<sock_filter>, 2> programs;

}  // namespace

bool wanted(const std::string& option) {
  if (option == "on") return true;
  spdlog::warn("--seccomp off: the VMM's threads are not confined; a guest that takes over device "
               "emulation could make any system call ember can");
  return false;
}

std::vector<std::string> allowed_calls(ThreadKind kind) {
  std::vector<std::string> names;
  for (const Call* call : calls_of(kind)) names.emplace_back(call->name);
  return names;
}

void prepare() {
  std::call_once(prepared_once, [] {
    fill_names();
    // A log pattern with a timestamp (spdlog's default; not ember's) calls localtime_r, whose
    // first call reads /etc/localtime: read it now.
    ::tzset();
    install_reporter();
    programs[static_cast<size_t>(ThreadKind::kVcpu)] = compile(ThreadKind::kVcpu);
    programs[static_cast<size_t>(ThreadKind::kMain)] = compile(ThreadKind::kMain);
  });
}

void confine_this_thread(ThreadKind kind, const std::string& name) {
  prepare();
  std::strncpy(thread_name.data(), name.c_str(), thread_name.size() - 1);
  auto& program = programs[static_cast<size_t>(kind)];
  sock_fprog filter{static_cast<unsigned short>(program.size()), program.data()};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throw system_error("seccomp: PR_SET_NO_NEW_PRIVS");
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &filter) != 0)
    throw system_error("seccomp: loading the " + name + " filter");
}

}  // namespace ember::seccomp
