#include "vmm/jail.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "vmm/cgroup.hpp"
#include "vmm/seccomp.hpp"

namespace ember {
namespace {

// This host's layout: cgroup v1 controllers beside an empty unified hierarchy.
constexpr const char* kHybridMountinfo =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime shared:9 - cgroup cgroup rw,pids\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
    "42 23 0:5 / /proc rw - proc proc rw\n";

TEST(CgroupTest, ParsesV1AndV2Mounts) {
  const auto mounts = cgroup::parse_mounts(kHybridMountinfo);
  ASSERT_EQ(mounts.size(), 6u);
  EXPECT_EQ(mounts[0].point, "/sys/fs/cgroup/cpu");
  EXPECT_EQ(mounts[0].controllers, std::vector<std::string>{"cpu"});
  EXPECT_EQ(mounts[2].controllers, std::vector<std::string>{"memory"});
  EXPECT_TRUE(mounts[4].controllers.empty());  // name=systemd, xattr: no controller
  EXPECT_TRUE(mounts[5].v2);
  EXPECT_EQ(mounts[5].point, "/sys/fs/cgroup/unified");
}

TEST(CgroupTest, CombinedV1Controllers) {
  const auto mounts = cgroup::parse_mounts(
      "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n");
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].controllers, (std::vector<std::string>{"cpu", "cpuacct"}));
}

TEST(CgroupTest, OwnPathPerController) {
  const char* text = "9:name=systemd:/\n4:memory:/process_api/e4b4\n2:cpu,cpuacct:/a/b\n0::/\n";
  EXPECT_EQ(cgroup::own_path(text, "memory"), "/process_api/e4b4");
  EXPECT_EQ(cgroup::own_path(text, "cpu"), "/a/b");
  EXPECT_EQ(cgroup::own_path(text, "cpuacct"), "/a/b");
  EXPECT_EQ(cgroup::own_path(text, ""), "/");
  EXPECT_EQ(cgroup::own_path(text, "pids"), std::nullopt);
  EXPECT_EQ(cgroup::own_path("0::/user.slice/x.scope\n", ""), "/user.slice/x.scope");
}

TEST(CgroupTest, DirectoryOfOwnCgroup) {
  cgroup::Mount whole{"/sys/fs/cgroup", "/", true, {}};
  EXPECT_EQ(cgroup::directory_of(whole, "/"), "/sys/fs/cgroup");
  EXPECT_EQ(cgroup::directory_of(whole, "/a/b"), "/sys/fs/cgroup/a/b");
  // A container's mount of its own subtree.
  cgroup::Mount subtree{"/sys/fs/cgroup", "/docker/abc", true, {}};
  EXPECT_EQ(cgroup::directory_of(subtree, "/docker/abc"), "/sys/fs/cgroup");
  EXPECT_EQ(cgroup::directory_of(subtree, "/docker/abc/x"), "/sys/fs/cgroup/x");
  EXPECT_EQ(cgroup::directory_of(subtree, "/docker/abcd"), std::nullopt);
  EXPECT_EQ(cgroup::directory_of(subtree, "/"), std::nullopt);
}

TEST(CgroupTest, CpuMaxIsCpusTimesThePeriod) {
  EXPECT_EQ(cgroup::cpu_max(1), "100000 100000");
  EXPECT_EQ(cgroup::cpu_max(4), "400000 100000");
}

TEST(JailTest, LimitsAddOverheadToTheGuest) {
  jail::Options options;
  options.memory_bytes = 512ull << 20;
  options.cpus = 2;
  EXPECT_EQ(jail::memory_limit(options), (512ull + 64) << 20);
  EXPECT_EQ(jail::pids_limit(options), 66u);
  options.shares = 2;
  EXPECT_EQ(jail::memory_limit(options), (512ull + 64 + 128) << 20);
  EXPECT_EQ(jail::pids_limit(options), 66u + 160u);
}

std::string read_all(int fd) {
  std::string text;
  char buffer[4096];
  ssize_t count;
  while ((count = ::read(fd, buffer, sizeof(buffer))) > 0) text.append(buffer, count);
  return text;
}

std::string status_field(const std::string& status, const std::string& name) {
  std::istringstream lines(status);
  std::string line;
  while (std::getline(lines, line))
    if (line.starts_with(name + ":")) {
      line.erase(0, name.size() + 1);
      line.erase(0, line.find_first_not_of(" \t"));
      return line;
    }
  return "?";
}

std::string file_text(const char* path) {
  std::ifstream file(path);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

// What the locked process sees of itself, written to `report` before and after Jail::lock().
int describe_jail(jail::Jail& jail, int report) {
  std::string text = "cgroup=" + file_text("/proc/self/cgroup");
  int status_fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);  // readable after the pivot
  jail.lock();
  const std::string status = read_all(status_fd);
  text += "pid=" + std::to_string(::getpid()) + "\n";
  text += "uid=" + status_field(status, "Uid") + "\n";
  text += "gid=" + status_field(status, "Gid") + "\n";
  text += "CapEff=" + status_field(status, "CapEff") + "\n";
  text += "CapPrm=" + status_field(status, "CapPrm") + "\n";
  text += "CapBnd=" + status_field(status, "CapBnd") + "\n";
  text += "NoNewPrivs=" + status_field(status, "NoNewPrivs") + "\n";
  char hostname[64] = {};
  ::gethostname(hostname, sizeof(hostname) - 1);
  text += "hostname=" + std::string(hostname) + "\n";
  int entries = 0;
  if (DIR* root = ::opendir("/")) {
    while (dirent* entry = ::readdir(root))
      if (std::string(entry->d_name) != "." && std::string(entry->d_name) != "..") ++entries;
    ::closedir(root);
  }
  text += "root_entries=" + std::to_string(entries) + "\n";
  text += "root_writable=" + std::to_string(::mkdir("/x", 0700) == 0) + "\n";
  text += "etc_passwd=" + std::to_string(::access("/etc/passwd", F_OK) == 0) + "\n";
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  text += "nofile=" + std::to_string(files.rlim_max) + "\n";
  text += "dumpable=" + std::to_string(::prctl(PR_GET_DUMPABLE)) + "\n";
  ::write(report, text.data(), text.size());
  return 42;
}

class JailProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "the jail needs root (namespaces, a change of uid)";
  }
};

// Runs describe_jail() in the jail; returns its report and sets `status`.
std::string jailed_report(const jail::Options& options, int& status) {
  int pipe[2];
  if (::pipe(pipe) != 0) return "pipe failed";
  status = jail::run_jailed(options, [&](jail::Jail& jail) {
    ::close(pipe[0]);
    return describe_jail(jail, pipe[1]);
  });
  ::close(pipe[1]);
  std::string report = read_all(pipe[0]);
  ::close(pipe[0]);
  return report;
}

TEST_F(JailProcessTest, LocksTheVmmProcessIn) {
  jail::Options options;
  options.name = "jailtest";
  options.uid = 4242;
  options.gid = 4343;
  options.memory_bytes = 64ull << 20;
  int status = 0;
  const std::string report = jailed_report(options, status);
  EXPECT_EQ(status, 42) << report;
  for (const char* expected :
       {"pid=1\n", "uid=4242\t4242\t4242\t4242\n", "gid=4343\t4343\t4343\t4343\n",
        "CapEff=0000000000000000\n", "CapPrm=0000000000000000\n", "CapBnd=0000000000000000\n",
        "NoNewPrivs=1\n", "hostname=jailtest\n", "root_entries=0\n", "root_writable=0\n",
        "etc_passwd=0\n", "nofile=1024\n", "dumpable=0\n"})
    EXPECT_NE(report.find(expected), std::string::npos) << expected << " in:\n" << report;
  // Where the host allows cgroups the process was in ember's (v2 "0::PATH", or v1
  // "N:memory:PATH" and the like), and it is gone afterwards.
  const std::string leaf = "/ember-jailtest-" + std::to_string(::getpid());
  std::istringstream lines(report);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.starts_with("cgroup=")) line.erase(0, 7);
    const size_t first = line.find(':'), second = line.find(':', first + 1);
    if (second == std::string::npos || line.find(leaf) == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string directory = "/sys/fs/cgroup" +
                                  (controllers.empty() ? "" : "/" + controllers) +
                                  line.substr(second + 1);
    EXPECT_NE(::access(directory.c_str(), F_OK), 0) << directory << " is left behind";
  }
}

TEST_F(JailProcessTest, DefaultIdsAreOwnPerEmber) {
  jail::Options options;
  options.name = "jailtest";
  int status = 0;
  const std::string report = jailed_report(options, status);
  EXPECT_EQ(status, 42);
  const std::string id = std::to_string(jail::kDefaultIdBase + static_cast<uint32_t>(::getpid()));
  EXPECT_NE(report.find("uid=" + id + "\t"), std::string::npos) << report;
  EXPECT_NE(report.find("gid=" + id + "\t"), std::string::npos) << report;
}

TEST_F(JailProcessTest, VmmKilledBySignalIsAFailure) {
  // A seccomp kill: the kernel's own signal reaches even pid 1 of a namespace (one it sends itself
  // would be dropped).
  jail::Options options;
  options.name = "jailtest";
  options.failure_status = 125;
  testing::internal::CaptureStderr();
  const int status = jail::run_jailed(options, [](jail::Jail&) {
    ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    scmp_filter_ctx filter = seccomp_init(SCMP_ACT_ALLOW);
    seccomp_rule_add(filter, SCMP_ACT_KILL_PROCESS, SCMP_SYS(getppid), 0);
    seccomp_load(filter);
    ::getppid();
    return 0;
  });
  const std::string errors = testing::internal::GetCapturedStderr();
  EXPECT_EQ(status, 125);
  EXPECT_NE(errors.find("(pid "), std::string::npos) << errors;
  EXPECT_NE(errors.find(", jailed) was killed by SIGSYS"), std::string::npos) << errors;
}

TEST_F(JailProcessTest, ForwardsSignalsSentToEmber) {
  // A helper outside sends SIGTERM to ember once the VMM is waiting; ember passes it on.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t ember = ::getpid();
  const pid_t helper = ::fork();
  ASSERT_GE(helper, 0);
  if (helper == 0) {
    ::close(ready[1]);
    char byte;
    if (::read(ready[0], &byte, 1) == 1) ::kill(ember, SIGTERM);
    ::_exit(0);
  }
  ::close(ready[0]);
  jail::Options options;
  options.name = "jailtest";
  const int status = jail::run_jailed(options, [&](jail::Jail&) {
    sigset_t wanted;
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGTERM);  // blocked since before the clone, as Machine::run wants
    ::write(ready[1], "x", 1);
    timespec patience{10, 0};
    return ::sigtimedwait(&wanted, nullptr, &patience) == SIGTERM ? 7 : 8;
  });
  ::close(ready[1]);
  ::waitpid(helper, nullptr, 0);
  EXPECT_EQ(status, 7);
}

TEST_F(JailProcessTest, SeccompReportEndsAJailedVmm) {
  // ember's own filter and SIGSYS reporter in pid 1 of a namespace: the report, then the end.
  jail::Options options;
  options.name = "jailtest";
  options.failure_status = 125;
  testing::internal::CaptureStderr();
  const int status = jail::run_jailed(options, [](jail::Jail& jail) {
    jail.lock();
    seccomp::prepare();
    seccomp::confine_this_thread(seccomp::ThreadKind::kVcpu, "vcpu0");
    ::syscall(SYS_getppid);
    return 0;
  });
  const std::string errors = testing::internal::GetCapturedStderr();
  EXPECT_EQ(status, 125);
  EXPECT_NE(errors.find("ember: seccomp: thread vcpu0 made a forbidden system call: getppid"),
            std::string::npos) << errors;
  EXPECT_NE(errors.find("was killed by SIGSYS"), std::string::npos) << errors;
}

}  // namespace
}  // namespace ember
