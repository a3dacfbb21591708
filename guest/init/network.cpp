#include "guest/init/network.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>

namespace ember::init {
namespace {

using Mac = std::array<uint8_t, 6>;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

std::runtime_error failure(const std::string& what, int error_number = errno) {
  return std::runtime_error(what + ": " + std::strerror(error_number));
}

Fd control_socket() {
  Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw failure("socket(AF_INET) for interface set-up");
  return fd;
}

ifreq request_for(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ)
    throw std::runtime_error("interface name \"" + name + "\" must be 1 to " +
                             std::to_string(IFNAMSIZ - 1) + " bytes");
  ifreq request{};
  std::memcpy(request.ifr_name, name.data(), name.size());
  return request;
}

void interface_ioctl(int socket, unsigned long command, ifreq& request, const std::string& what) {
  if (::ioctl(socket, command, &request) != 0)
    throw failure(std::string(request.ifr_name) + ": " + what);
}

in_addr parse_ipv4(const std::string& text, const std::string& what) {
  in_addr address{};
  if (::inet_pton(AF_INET, text.c_str(), &address) != 1)
    throw std::runtime_error(what + " \"" + text + "\" is not an IPv4 address");
  return address;
}

struct Prefix {
  in_addr address;
  unsigned length;
};

Prefix parse_prefix(const std::string& text) {
  const auto slash = text.find('/');
  if (slash == std::string::npos)
    throw std::runtime_error("network address \"" + text + "\" has no /prefix");
  const std::string length = text.substr(slash + 1);
  if (length.empty() || length.size() > 2 || length.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(length) > 32)
    throw std::runtime_error("network address \"" + text + "\" has a bad prefix length");
  return {parse_ipv4(text.substr(0, slash), "network address"), static_cast<unsigned>(std::stoul(length))};
}

Mac parse_mac(const std::string& text) {
  Mac mac{};
  unsigned bytes[6];
  char extra;
  if (text.size() != 17 || std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &bytes[0], &bytes[1],
                                       &bytes[2], &bytes[3], &bytes[4], &bytes[5], &extra) != 6)
    throw std::runtime_error("MAC address \"" + text + "\" is not xx:xx:xx:xx:xx:xx");
  for (size_t i = 0; i < mac.size(); ++i) mac[i] = static_cast<uint8_t>(bytes[i]);
  return mac;
}

sockaddr ipv4_sockaddr(in_addr address) {
  sockaddr_in inet{};
  inet.sin_family = AF_INET;
  inet.sin_addr = address;
  sockaddr out{};
  std::memcpy(&out, &inet, sizeof(inet));
  return out;
}

// The name of the Ethernet interface with this MAC, or "" if there is none.
std::string interface_with_mac(int socket, const Mac& mac) {
  std::unique_ptr<struct if_nameindex, decltype(&if_freenameindex)> interfaces(::if_nameindex(),
                                                                              &if_freenameindex);
  if (!interfaces) throw failure("listing network interfaces");
  for (const struct if_nameindex* entry = interfaces.get(); entry->if_index != 0; ++entry) {
    ifreq request = request_for(entry->if_name);
    if (::ioctl(socket, SIOCGIFHWADDR, &request) != 0) continue;  // Gone since listed.
    if (request.ifr_hwaddr.sa_family == ARPHRD_ETHER &&
        std::memcmp(request.ifr_hwaddr.sa_data, mac.data(), mac.size()) == 0)
      return entry->if_name;
  }
  return "";
}

void set_flags(int socket, const std::string& name, short set, short clear) {
  ifreq request = request_for(name);
  interface_ioctl(socket, SIOCGIFFLAGS, request, "SIOCGIFFLAGS");
  const short flags = static_cast<short>((request.ifr_flags | set) & ~clear);
  if (flags == request.ifr_flags) return;
  request.ifr_flags = flags;
  interface_ioctl(socket, SIOCSIFFLAGS, request, set & IFF_UP ? "bringing it up" : "taking it down");
}

void set_address(int socket, const std::string& name, in_addr address, in_addr netmask) {
  ifreq request = request_for(name);
  request.ifr_addr = ipv4_sockaddr(address);
  interface_ioctl(socket, SIOCSIFADDR, request, std::string("setting address ") + ::inet_ntoa(address));
  request = request_for(name);
  request.ifr_netmask = ipv4_sockaddr(netmask);
  interface_ioctl(socket, SIOCSIFNETMASK, request, std::string("setting netmask ") + ::inet_ntoa(netmask));
}

void add_default_route(int socket, const std::string& name, in_addr gateway) {
  rtentry route{};
  route.rt_dst = ipv4_sockaddr(in_addr{INADDR_ANY});
  route.rt_genmask = ipv4_sockaddr(in_addr{INADDR_ANY});
  route.rt_gateway = ipv4_sockaddr(gateway);
  route.rt_flags = RTF_UP | RTF_GATEWAY;
  std::array<char, IFNAMSIZ> device{};
  std::memcpy(device.data(), name.data(), name.size());  // Length checked by request_for().
  route.rt_dev = device.data();
  if (::ioctl(socket, SIOCADDRT, &route) != 0)
    throw failure(name + ": adding the default route via " + ::inet_ntoa(gateway));
}

// Writes `content` to <root>/etc/<name>: a new file beside it, renamed over it (a symlink left there
// by the image is replaced, never followed out of the root).
void replace_etc_file(const std::string& root, const std::string& name, const std::string& content) {
  const std::string etc = root + "/etc";
  if (::mkdir(etc.c_str(), 0755) != 0 && errno != EEXIST) throw failure("creating " + etc);
  const Fd directory(::open(etc.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (directory.get() < 0) throw failure("opening " + etc);
  const std::string temporary = "." + name + ".ember";
  ::unlinkat(directory.get(), temporary.c_str(), 0);
  {
    const Fd file(::openat(directory.get(), temporary.c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (file.get() < 0) throw failure("creating " + etc + "/" + temporary);
    size_t done = 0;
    while (done < content.size()) {
      const ssize_t written = ::write(file.get(), content.data() + done, content.size() - done);
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) throw failure("writing " + etc + "/" + temporary);
      done += static_cast<size_t>(written);
    }
    if (::fchmod(file.get(), 0644) != 0) throw failure("chmod " + etc + "/" + temporary);
  }
  if (::renameat(directory.get(), temporary.c_str(), directory.get(), name.c_str()) != 0)
    throw failure("renaming " + etc + "/" + temporary + " to " + name);
}

}  // namespace

void bring_up_loopback() {
  const Fd socket = control_socket();
  set_address(socket.get(), "lo", parse_ipv4("127.0.0.1", "loopback"), parse_ipv4("255.0.0.0", "netmask"));
  set_flags(socket.get(), "lo", IFF_UP, 0);
}

void configure_network(const NetworkSpec& spec) {
  const Fd socket = control_socket();
  const Mac mac = parse_mac(spec.mac);
  const Prefix prefix = parse_prefix(spec.address);
  request_for(spec.interface_name);  // Checks the name before anything changes.

  std::string name = interface_with_mac(socket.get(), mac);
  if (name.empty()) {
    if (::if_nametoindex(spec.interface_name.c_str()) == 0)
      throw std::runtime_error("no network interface has MAC " + spec.mac + " or is named " +
                               spec.interface_name);
    name = spec.interface_name;
  }
  if (name != spec.interface_name) {
    set_flags(socket.get(), name, 0, IFF_UP);  // SIOCSIFNAME needs the interface down.
    ifreq request = request_for(name);
    std::memcpy(request.ifr_newname, spec.interface_name.data(), spec.interface_name.size());
    interface_ioctl(socket.get(), SIOCSIFNAME, request, "renaming it to " + spec.interface_name);
    name = spec.interface_name;
  }
  if (spec.mtu != 0) {
    ifreq request = request_for(name);
    request.ifr_mtu = static_cast<int>(spec.mtu);
    interface_ioctl(socket.get(), SIOCSIFMTU, request, "setting MTU " + std::to_string(spec.mtu));
  }
  const uint32_t mask = prefix.length == 0 ? 0 : ~uint32_t{0} << (32 - prefix.length);
  set_address(socket.get(), name, prefix.address, in_addr{htonl(mask)});
  set_flags(socket.get(), name, IFF_UP, 0);
  if (!spec.gateway.empty())
    add_default_route(socket.get(), name, parse_ipv4(spec.gateway, "gateway"));
}

void write_resolver_files(const std::string& root, const NetworkSpec* spec, const std::string& hostname) {
  std::string hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  if (spec) {
    std::string resolv = "# written by ember-init from the launch spec\n";
    for (const std::string& server : spec->dns) resolv += "nameserver " + server + "\n";
    replace_etc_file(root, "resolv.conf", resolv);
    if (!hostname.empty()) {
      const Prefix prefix = parse_prefix(spec->address);
      hosts += std::string(::inet_ntoa(prefix.address)) + "\t" + hostname + "\n";
    }
  } else if (!hostname.empty()) {
    hosts += "127.0.1.1\t" + hostname + "\n";
  }
  replace_etc_file(root, "hosts", hosts);
}

}  // namespace ember::init
