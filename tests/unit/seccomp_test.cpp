// The threads' seccomp filters (vmm/seccomp.hpp), loaded for real in forked children (gtest death
// tests): what a confined thread may still do, and that anything else ends the process with SIGSYS
// after one line naming the thread and the call.
#include "vmm/seccomp.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <linux/kvm.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <set>
#include <thread>

namespace ember::seccomp {
namespace {

class SeccompTest : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

// Runs `body` on a new thread confined as `kind`, then exits the child 0 if the body returned.
template <typename Body>
[[noreturn]] void in_confined_thread(ThreadKind kind, const std::string& name, Body body) {
  std::thread thread([&] {
    confine_this_thread(kind, name);
    body();
  });
  thread.join();
  std::_Exit(0);
}

TEST_F(SeccompTest, AForbiddenCallOnAVcpuThreadEndsTheProcessWithSigsysAndNamesIt) {
  EXPECT_EXIT(in_confined_thread(ThreadKind::kVcpu, "vcpu7",
                                 [] { ::socket(AF_INET, SOCK_STREAM, 0); }),
              ::testing::KilledBySignal(SIGSYS),
              "ember: seccomp: thread vcpu7 made a forbidden system call: socket \\(41\\)");
}

TEST_F(SeccompTest, TheMainThreadMayNotExecOrOpenFiles) {
  EXPECT_EXIT(in_confined_thread(ThreadKind::kMain, "main",
                                 [] {
                                   char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
                                   ::execve("/bin/true", argv, nullptr);
                                 }),
              ::testing::KilledBySignal(SIGSYS), "thread main made a forbidden system call: execve");
  EXPECT_EXIT(in_confined_thread(ThreadKind::kMain, "main",
                                 [] { ::open("/etc/passwd", O_RDONLY); }),
              ::testing::KilledBySignal(SIGSYS), "thread main made a forbidden system call: openat");
}

TEST_F(SeccompTest, AVcpuThreadRunsItsAllowedCallsAndOnlyTheListedIoctls) {
  // Allowed: eventfds (read, write, close), memory, locks, an allowed ioctl on a bad fd (EBADF).
  EXPECT_EXIT(in_confined_thread(ThreadKind::kVcpu, "vcpu0",
                                 [] {
                                   const int fd = ::eventfd(0, EFD_CLOEXEC);
                                   uint64_t one = 1;
                                   if (fd < 0 || ::write(fd, &one, 8) != 8 || ::read(fd, &one, 8) != 8)
                                     std::_Exit(3);
                                   ::close(fd);
                                   void* block = std::malloc(1 << 22);
                                   std::free(block);
                                   if (::ioctl(-1, KVM_RUN, 0) != -1 || errno != EBADF) std::_Exit(4);
                                 }),
              ::testing::ExitedWithCode(0), "");
  // Not listed for a vCPU: creating a VM (or any other request on an allowed call).
  EXPECT_EXIT(in_confined_thread(ThreadKind::kVcpu, "vcpu1", [] { ::ioctl(-1, KVM_CREATE_VM, 0); }),
              ::testing::KilledBySignal(SIGSYS), "thread vcpu1 made a forbidden system call: ioctl");
}

TEST_F(SeccompTest, AConfinedThreadCanLogAndThrow) {
  // A fresh process (threadsafe death tests re-run the binary) with its logger made first, as
  // ember's main does: the first timestamp (spdlog's default pattern) and the first exception
  // come after the filter is in place, as they may in a VMM thread.
  EXPECT_EXIT((spdlog::set_default_logger(spdlog::stderr_color_mt("seccomp-test")),
               in_confined_thread(ThreadKind::kVcpu, "vcpu0",
                                 [] {
                                   spdlog::warn("from a confined thread");
                                   try {
                                     throw std::runtime_error("thrown in a confined thread");
                                   } catch (const std::exception& error) {
                                     spdlog::error("{}: {}", error.what(), std::strerror(EBADF));
                                   }
                                 })),
              ::testing::ExitedWithCode(0), "thrown in a confined thread: Bad file descriptor");
}

TEST_F(SeccompTest, SignalsOnlyToThisProcess) {
  // tgkill to this process's threads is allowed (a vCPU kick); to another process it is not.
  EXPECT_EXIT(in_confined_thread(ThreadKind::kMain, "main",
                                 [] {
                                   if (::syscall(SYS_tgkill, ::getpid(), ::syscall(SYS_gettid), 0) != 0)
                                     std::_Exit(3);
                                 }),
              ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(in_confined_thread(ThreadKind::kMain, "main",
                                 [] { ::syscall(SYS_tgkill, 1, 1, 0); }),
              ::testing::KilledBySignal(SIGSYS), "thread main made a forbidden system call: tgkill");
}

TEST_F(SeccompTest, TheListsNameRealCallsOnce) {
  for (ThreadKind kind : {ThreadKind::kVcpu, ThreadKind::kMain}) {
    const auto calls = allowed_calls(kind);
    std::set<std::string> unique(calls.begin(), calls.end());
    EXPECT_EQ(unique.size(), calls.size());
    for (const auto& call : calls)
      EXPECT_GE(seccomp_syscall_resolve_name(call.c_str()), 0) << call;
    for (const char* never : {"execve", "open", "openat", "ptrace", "mount", "clone", "fork"})
      EXPECT_EQ(unique.count(never), 0U) << never;
  }
}

TEST_F(SeccompTest, OffIsAWarningAndOnConfines) {
  EXPECT_TRUE(wanted("on"));
  EXPECT_FALSE(wanted("off"));
}

}  // namespace
}  // namespace ember::seccomp
