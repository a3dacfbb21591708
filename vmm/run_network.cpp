#include "vmm/run_network.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "vmm/error.hpp"

namespace ember {
namespace {

constexpr uint32_t kPool = 0xac1e0000;  // 172.30.0.0/16
constexpr unsigned kPoolPrefix = 16;
constexpr unsigned kSubnetPrefix = 30;
constexpr uint32_t kSubnets = 1u << (kSubnetPrefix - kPoolPrefix);

Error needs_net_admin(const std::string& what) {
  return Error("--net tap: " + what + " needs CAP_NET_ADMIN (run ember as root)");
}

std::string ipv4_text(uint32_t host_order) {
  in_addr address{htonl(host_order)};
  char text[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &address, text, sizeof(text));
  return text;
}

uint32_t prefix_mask(unsigned length) { return length == 0 ? 0 : ~uint32_t{0} << (32 - length); }

struct Prefix {
  uint32_t network;  // Host order.
  unsigned length;
};

bool overlaps(const Prefix& a, const Prefix& b) {
  return ((a.network ^ b.network) & prefix_mask(std::min(a.length, b.length))) == 0;
}

// An rtnetlink socket: one request at a time, each answered by an ACK or a dump.
class RouteNetlink {
 public:
  RouteNetlink() {
    fd_.reset(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd_) throw system_error("--net tap: rtnetlink socket");
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0)
      throw system_error("--net tap: binding the rtnetlink socket");
  }

  // A message under construction: header, the family's struct, then attributes.
  class Message {
   public:
    template <typename Body>
    Message(uint16_t type, uint16_t flags, const Body& body) : bytes_(NLMSG_SPACE(sizeof(Body))) {
      auto* header = reinterpret_cast<nlmsghdr*>(bytes_.data());
      header->nlmsg_type = type;
      header->nlmsg_flags = static_cast<uint16_t>(flags | NLM_F_REQUEST);
      std::memcpy(bytes_.data() + NLMSG_HDRLEN, &body, sizeof(Body));
    }
    void attribute(uint16_t type, const void* data, size_t size) {
      const size_t offset = bytes_.size();
      bytes_.resize(offset + RTA_SPACE(size));
      rtattr attribute{static_cast<unsigned short>(RTA_LENGTH(size)), type};
      std::memcpy(bytes_.data() + offset, &attribute, sizeof(attribute));
      std::memcpy(bytes_.data() + offset + RTA_LENGTH(0), data, size);
    }
    std::vector<char>& finish(uint32_t sequence) {
      auto* header = reinterpret_cast<nlmsghdr*>(bytes_.data());
      header->nlmsg_len = static_cast<uint32_t>(bytes_.size());
      header->nlmsg_seq = sequence;
      return bytes_;
    }

   private:
    std::vector<char> bytes_;
  };

  // Sends a request with NLM_F_ACK; returns 0 or the kernel's errno.
  int request(Message& message) {
    int status = 0;
    exchange(message, [&](const nlmsghdr&) {}, &status);
    return status;
  }

  // Runs a dump; calls `each` with every message until NLMSG_DONE.
  void dump(Message& message, const std::function<void(const nlmsghdr&)>& each) {
    int status = 0;
    exchange(message, each, &status);
    if (status != 0) throw system_error("--net tap: rtnetlink dump", status);
  }

 private:
  void exchange(Message& message, const std::function<void(const nlmsghdr&)>& each, int* status) {
    const std::vector<char>& bytes = message.finish(++sequence_);
    if (::send(fd_.get(), bytes.data(), bytes.size(), 0) < 0) throw system_error("--net tap: rtnetlink send");
    std::vector<char> buffer(64 * 1024);
    for (;;) {
      const ssize_t received = ::recv(fd_.get(), buffer.data(), buffer.size(), 0);
      if (received < 0) {
        if (errno == EINTR) continue;
        throw system_error("--net tap: rtnetlink receive");
      }
      // ssize_t, not int: NLMSG_OK compares it with the u32 nlmsg_len (clang's -Wsign-compare).
      ssize_t left = received;
      for (auto* header = reinterpret_cast<nlmsghdr*>(buffer.data()); NLMSG_OK(header, left);
           header = NLMSG_NEXT(header, left)) {
        if (header->nlmsg_seq != sequence_) continue;
        if (header->nlmsg_type == NLMSG_DONE) return;
        if (header->nlmsg_type == NLMSG_ERROR) {
          nlmsgerr error{};
          std::memcpy(&error, NLMSG_DATA(header), sizeof(error));
          *status = -error.error;
          return;  // An ACK (error 0) or the failure; either ends the request.
        }
        each(*header);
      }
    }
  }

  UniqueFd fd_;
  uint32_t sequence_ = 0;
};

// Every IPv4 prefix the host uses in this network namespace: its addresses and its routes in all
// tables, default routes left out (they overlap everything and take nothing).
std::vector<Prefix> prefixes_in_use(RouteNetlink& netlink) {
  std::vector<Prefix> prefixes;
  ifaddrmsg address_request{};
  address_request.ifa_family = AF_INET;
  RouteNetlink::Message addresses(RTM_GETADDR, NLM_F_DUMP, address_request);
  netlink.dump(addresses, [&](const nlmsghdr& header) {
    if (header.nlmsg_type != RTM_NEWADDR) return;
    const auto* message = static_cast<const ifaddrmsg*>(NLMSG_DATA(&header));
    int length = static_cast<int>(IFA_PAYLOAD(&header));
    for (const rtattr* attribute = IFA_RTA(message); RTA_OK(attribute, length);
         attribute = RTA_NEXT(attribute, length)) {
      if ((attribute->rta_type == IFA_LOCAL || attribute->rta_type == IFA_ADDRESS) &&
          RTA_PAYLOAD(attribute) == 4) {
        uint32_t network;
        std::memcpy(&network, RTA_DATA(attribute), 4);
        prefixes.push_back({ntohl(network), message->ifa_prefixlen});
      }
    }
  });
  rtmsg route_request{};
  route_request.rtm_family = AF_INET;
  RouteNetlink::Message routes(RTM_GETROUTE, NLM_F_DUMP, route_request);
  netlink.dump(routes, [&](const nlmsghdr& header) {
    if (header.nlmsg_type != RTM_NEWROUTE) return;
    const auto* message = static_cast<const rtmsg*>(NLMSG_DATA(&header));
    if (message->rtm_dst_len == 0) return;
    int length = static_cast<int>(RTM_PAYLOAD(&header));
    for (const rtattr* attribute = RTM_RTA(message); RTA_OK(attribute, length);
         attribute = RTA_NEXT(attribute, length)) {
      if (attribute->rta_type == RTA_DST && RTA_PAYLOAD(attribute) == 4) {
        uint32_t network;
        std::memcpy(&network, RTA_DATA(attribute), 4);
        prefixes.push_back({ntohl(network), message->rtm_dst_len});
      }
    }
  });
  return prefixes;
}

// Binds the abstract unix socket that reserves `subnet` in this network namespace; an invalid fd
// when another process holds it.
UniqueFd claim_subnet(uint32_t subnet) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw system_error("--net tap: unix socket");
  const std::string name = "ember-run-network-" + ipv4_text(subnet) + "/30";
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: abstract.
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), length) != 0) {
    if (errno == EADDRINUSE) return {};
    throw system_error("--net tap: binding " + name);
  }
  return fd;
}

std::string sanitized(const std::string& hint) {
  std::string name;
  for (char c : hint)
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') name += c;
  return name;
}

// Creates the persistent tap `name`; false if an interface of that name exists already.
bool create_tap(const std::string& name) {
  UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tun) throw system_error("--net tap: cannot open /dev/net/tun");
  ifreq request{};
  std::memcpy(request.ifr_name, name.data(), name.size());  // At most IFNAMSIZ - 1 bytes.
  // The flags the VM's Tap attaches with; IFF_TUN_EXCL: fail rather than attach to an existing one.
  request.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL);
  if (::ioctl(tun.get(), TUNSETIFF, &request) != 0) {
    if (errno == EBUSY || errno == EEXIST) return false;
    if (errno == EPERM || errno == EACCES) throw needs_net_admin("creating tap " + name);
    throw system_error("--net tap: creating tap " + name);
  }
  // Kept after this fd closes, so the VM's Tap can attach to it; deleted by ~RunNetwork.
  if (::ioctl(tun.get(), TUNSETPERSIST, 1) != 0) throw system_error("--net tap: TUNSETPERSIST " + name);
  return true;
}

}  // namespace

RunNetwork::~RunNetwork() {
  if (tap_index == 0) return;
  try {
    RouteNetlink netlink;
    ifinfomsg link{};
    link.ifi_family = AF_UNSPEC;
    link.ifi_index = tap_index;
    RouteNetlink::Message message(RTM_DELLINK, NLM_F_ACK, link);
    if (const int status = netlink.request(message); status != 0)
      spdlog::warn("--net tap: deleting tap {}: {}", tap_name, std::strerror(status));
  } catch (const Error& error) {
    spdlog::warn("--net tap: deleting tap {}: {}", tap_name, error.what());
  }
}

nlohmann::json RunNetwork::spec() const {
  std::ifstream file("/etc/resolv.conf");
  std::stringstream text;
  text << file.rdbuf();
  char mac[18];
  std::snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", guest_mac[0], guest_mac[1], guest_mac[2],
                guest_mac[3], guest_mac[4], guest_mac[5]);
  return {{"interface", "eth0"}, {"mac", mac},       {"address", guest_address},
          {"gateway", host_address}, {"mtu", mtu}, {"dns", guest_dns_servers(text.str(), host_address)}};
}

NetConfig RunNetwork::net_config() const { return NetConfig{tap_name, guest_mac}; }

std::vector<std::string> guest_dns_servers(const std::string& resolv_conf, const std::string& fallback) {
  std::vector<std::string> servers;
  std::istringstream lines(resolv_conf);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string keyword, server;
    if (!(words >> keyword >> server) || keyword != "nameserver") continue;
    in_addr address{};
    if (::inet_pton(AF_INET, server.c_str(), &address) != 1) continue;  // IPv6: the guest has none.
    if ((ntohl(address.s_addr) >> 24) == 127) continue;
    servers.push_back(server);
  }
  if (servers.empty()) servers.push_back(fallback);
  return servers;
}

std::unique_ptr<RunNetwork> create_run_network(const std::string& name_hint) {
  RouteNetlink netlink;
  const std::vector<Prefix> in_use = prefixes_in_use(netlink);
  auto network = std::make_unique<RunNetwork>();
  uint32_t subnet = 0;
  for (uint32_t index = 0; index < kSubnets && !network->claim; ++index) {
    subnet = kPool + index * 4;
    bool used = false;
    for (const Prefix& prefix : in_use) used = used || overlaps(prefix, {subnet, kSubnetPrefix});
    if (!used) network->claim = claim_subnet(subnet);
  }
  if (!network->claim) throw Error("--net tap: no free /30 left in 172.30.0.0/16 on this host");
  const uint32_t index = (subnet - kPool) / 4;
  network->host_address = ipv4_text(subnet + 1);
  network->guest_ip = ipv4_text(subnet + 2);
  network->guest_address = network->guest_ip + "/30";
  // Locally administered, unicast; unique per subnet, which is all the point-to-point link needs.
  network->guest_mac = {0x02, 0x65, 0x6d, 0x00, static_cast<uint8_t>(index >> 8), static_cast<uint8_t>(index)};

  const std::string base = sanitized(name_hint).empty() ? std::to_string(::getpid()) : sanitized(name_hint);
  for (int attempt = 0; network->tap_name.empty(); ++attempt) {
    std::string name = "emb-" + (attempt == 0 ? base : std::to_string(::getpid()) + "-" + std::to_string(attempt));
    name.resize(std::min<size_t>(name.size(), IFNAMSIZ - 1));
    if (attempt > 100) throw Error("--net tap: no free tap name like " + name);
    if (create_tap(name)) network->tap_name = name;
  }
  network->tap_index = static_cast<int>(::if_nametoindex(network->tap_name.c_str()));
  if (network->tap_index == 0) throw system_error("--net tap: tap " + network->tap_name + " vanished");

  ifaddrmsg address{};
  address.ifa_family = AF_INET;
  address.ifa_prefixlen = kSubnetPrefix;
  address.ifa_index = static_cast<uint32_t>(network->tap_index);
  RouteNetlink::Message add(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, address);
  const uint32_t host = htonl(subnet + 1);
  add.attribute(IFA_LOCAL, &host, sizeof(host));
  add.attribute(IFA_ADDRESS, &host, sizeof(host));
  if (const int status = netlink.request(add); status != 0) {
    if (status == EPERM) throw needs_net_admin("adding an address");
    throw system_error("--net tap: adding " + network->host_address + "/30 to " + network->tap_name, status);
  }
  ifinfomsg link{};
  link.ifi_family = AF_UNSPEC;
  link.ifi_index = network->tap_index;
  link.ifi_flags = IFF_UP;
  link.ifi_change = IFF_UP;
  RouteNetlink::Message up(RTM_NEWLINK, NLM_F_ACK, link);
  if (const int status = netlink.request(up); status != 0)
    throw system_error("--net tap: bringing " + network->tap_name + " up", status);
  spdlog::debug("--net tap: {} with {}/30, guest {}", network->tap_name, network->host_address,
                network->guest_address);
  return network;
}

}  // namespace ember
