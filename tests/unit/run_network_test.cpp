// RunNetwork against the real kernel, each case in a forked child with a network namespace of its
// own (unshare(CLONE_NEWNET)), so no tap or address ever reaches the host's namespace. Needs root,
// as the other machine tests.
#include "vmm/run_network.hpp"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/capability.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <sstream>
#include <string>

#include "vmm/error.hpp"

namespace ember {
namespace {

using ::testing::HasSubstr;

// Runs `body` in a child inside a fresh network namespace; returns what it reported ("" when every
// check held). The child cannot use gtest's assertions, so checks append to a report instead.
std::string in_new_network_namespace(const std::function<void(std::ostringstream&)>& body) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return "pipe2 failed";
  const pid_t child = ::fork();
  if (child < 0) return "fork failed";
  if (child == 0) {
    ::close(pipe_fds[0]);
    std::ostringstream report;
    if (::unshare(CLONE_NEWNET) != 0) {
      report << "unshare(CLONE_NEWNET): " << std::strerror(errno);
    } else {
      try {
        body(report);
      } catch (const std::exception& error) {
        report << "exception: " << error.what();
      }
    }
    const std::string text = report.str();
    [[maybe_unused]] auto written = ::write(pipe_fds[1], text.data(), text.size());
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  std::string text;
  char buffer[4096];
  for (ssize_t count; (count = ::read(pipe_fds[0], buffer, sizeof(buffer))) > 0;) text.append(buffer, count);
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) text += " (child did not exit cleanly)";
  return text;
}

#define CHECK_THAT(report, condition) \
  if (!(condition)) (report) << "failed: " #condition " (line " << __LINE__ << "); "

// "a.b.c.d/prefix" of the IPv4 addresses on `interface`, space-separated.
std::string addresses_of(const std::string& interface) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "getifaddrs failed";
  std::string out;
  for (ifaddrs* entry = list; entry; entry = entry->ifa_next) {
    if (!entry->ifa_addr || entry->ifa_addr->sa_family != AF_INET || interface != entry->ifa_name) continue;
    char text[INET_ADDRSTRLEN];
    const auto* address = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
    const auto* mask = reinterpret_cast<const sockaddr_in*>(entry->ifa_netmask);
    ::inet_ntop(AF_INET, &address->sin_addr, text, sizeof(text));
    out += std::string(out.empty() ? "" : " ") + text + "/" +
           std::to_string(__builtin_popcount(mask->sin_addr.s_addr));
  }
  ::freeifaddrs(list);
  return out;
}

bool is_up(const std::string& interface) {
  UniqueFd control(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq request{};
  std::strncpy(request.ifr_name, interface.c_str(), IFNAMSIZ - 1);
  return ::ioctl(control.get(), SIOCGIFFLAGS, &request) == 0 && (request.ifr_flags & IFF_UP);
}

TEST(RunNetwork, CreatesAnAddressedTapAndDeletesIt) {
  EXPECT_EQ(in_new_network_namespace([](std::ostringstream& report) {
    auto network = create_run_network("unit");
    CHECK_THAT(report, network->tap_name == "emb-unit");
    CHECK_THAT(report, network->host_address == "172.30.0.1");
    CHECK_THAT(report, network->guest_address == "172.30.0.2/30");
    CHECK_THAT(report, network->guest_ip == "172.30.0.2");
    CHECK_THAT(report, addresses_of("emb-unit") == "172.30.0.1/30");
    CHECK_THAT(report, is_up("emb-unit"));
    const NetConfig config = network->net_config();
    CHECK_THAT(report, config.tap == "emb-unit" && config.mac == network->guest_mac);
    CHECK_THAT(report, (network->guest_mac[0] & 0x03) == 0x02);  // Locally administered, unicast.
    const nlohmann::json spec = network->spec();
    CHECK_THAT(report, spec["interface"] == "eth0" && spec["address"] == "172.30.0.2/30" &&
                           spec["gateway"] == "172.30.0.1" && spec["mtu"] == 1500 &&
                           spec["mac"].get<std::string>().size() == 17 && spec["dns"].is_array() &&
                           !spec["dns"].empty());
    network.reset();
    CHECK_THAT(report, ::if_nametoindex("emb-unit") == 0);
  }),
            "");
}

TEST(RunNetwork, TwoRunsGetDifferentSubnetsAndAFreedOneIsReused) {
  EXPECT_EQ(in_new_network_namespace([](std::ostringstream& report) {
    auto first = create_run_network("same");
    auto second = create_run_network("same");
    CHECK_THAT(report, first->tap_name == "emb-same");
    CHECK_THAT(report, second->tap_name != first->tap_name && second->tap_name.size() <= 15);
    CHECK_THAT(report, first->host_address == "172.30.0.1");
    CHECK_THAT(report, second->host_address == "172.30.0.5" && second->guest_address == "172.30.0.6/30");
    CHECK_THAT(report, addresses_of(second->tap_name) == "172.30.0.5/30");
    CHECK_THAT(report, first->guest_mac != second->guest_mac);
    const std::string second_name = second->tap_name;
    first.reset();
    auto third = create_run_network("");  // No hint: named after the pid.
    CHECK_THAT(report, third->tap_name == "emb-" + std::to_string(::getpid()));
    CHECK_THAT(report, third->host_address == "172.30.0.1");
    second.reset();
    CHECK_THAT(report, ::if_nametoindex(second_name.c_str()) == 0);
  }),
            "");
}

TEST(RunNetwork, SkipsSubnetsTheHostAlreadyUses) {
  EXPECT_EQ(in_new_network_namespace([](std::ostringstream& report) {
    // 172.30.0.0/28 on lo of this throw-away namespace (SIOCSIFADDR replaces 127.0.0.1 there).
    UniqueFd control(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq request{};
    std::strcpy(request.ifr_name, "lo");
    auto* address = reinterpret_cast<sockaddr_in*>(&request.ifr_addr);
    address->sin_family = AF_INET;
    ::inet_pton(AF_INET, "172.30.0.3", &address->sin_addr);
    CHECK_THAT(report, ::ioctl(control.get(), SIOCSIFADDR, &request) == 0);
    ::inet_pton(AF_INET, "255.255.255.240", &address->sin_addr);
    CHECK_THAT(report, ::ioctl(control.get(), SIOCSIFNETMASK, &request) == 0);
    auto network = create_run_network("skip");
    CHECK_THAT(report, network->host_address == "172.30.0.17");
  }),
            "");
}

TEST(RunNetwork, WithoutNetAdminSaysSo) {
  const std::string report = in_new_network_namespace([](std::ostringstream& out) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    CHECK_THAT(out, ::syscall(SYS_capget, &header, data) == 0);
    data[CAP_NET_ADMIN / 32].effective &= ~(1u << (CAP_NET_ADMIN % 32));
    CHECK_THAT(out, ::syscall(SYS_capset, &header, data) == 0);
    try {
      create_run_network("nocap");
      out << "created a tap without CAP_NET_ADMIN";
    } catch (const Error& error) {
      out << error.what();
    }
  });
  EXPECT_THAT(report, HasSubstr("CAP_NET_ADMIN"));
  EXPECT_EQ(report.find('\n'), std::string::npos);
  EXPECT_EQ(report.find("failed:"), std::string::npos) << report;
}

TEST(RunNetwork, GuestDnsServersLeaveOutLoopbackAndIpv6) {
  EXPECT_EQ(guest_dns_servers("# comment\nnameserver 127.0.0.53\nnameserver 10.1.2.3\n"
                              "nameserver ::1\nnameserver fe80::1\noptions edns0\nnameserver 8.8.8.8\n",
                              "172.30.0.1"),
            (std::vector<std::string>{"10.1.2.3", "8.8.8.8"}));
  EXPECT_EQ(guest_dns_servers("nameserver 127.0.0.53\n", "172.30.0.1"), (std::vector<std::string>{"172.30.0.1"}));
  EXPECT_EQ(guest_dns_servers("", "172.30.0.9"), (std::vector<std::string>{"172.30.0.9"}));
}

}  // namespace
}  // namespace ember
