// The host and guest halves of `ember run --net tap -p` together, without a VM, for
// guest_network_test.py:
//   run_network_probe GUEST_NAMESPACE BEYOND_GATEWAY_IP
// run inside a network namespace of its own (the "host"). It creates the run network there
// (create_run_network), builds a second tap inside GUEST_NAMESPACE with the guest's MAC and
// configures it as ember-init would (bring_up_loopback, configure_network with RunNetwork::spec()),
// and copies frames between the two taps' fds on the EventLoop: that loop stands in for the VM
// (virtio-net plus the guest's driver), the guest namespace's kernel for the guest's. Then:
//   - a client in the host namespace talks to an echo server on guest_ip:7000 in the guest namespace
//     through PortForwarder (127.0.0.1:port -> guest), 1 MiB each way with a half-close;
//   - a client in the guest namespace reaches BEYOND_GATEWAY_IP:7001 (a host-namespace address outside
//     the /30) over the guest's default route.
// Prints "check NAME ok" or "check NAME fail DETAIL" per check.
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "devices/backends/tap.hpp"
#include "guest/init/network.hpp"
#include "vmm/error.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/port_forward.hpp"
#include "vmm/run_network.hpp"

namespace {

using ember::UniqueFd;

constexpr uint16_t kGuestPort = 7000;
constexpr uint16_t kBeyondPort = 7001;
constexpr size_t kBytes = 1 << 20;
constexpr int kLivenessMs = 20000;

void check(const std::string& name, bool ok, const std::string& detail = "") {
  std::printf("check %s %s%s%s\n", name.c_str(), ok ? "ok" : "fail", detail.empty() ? "" : " ", detail.c_str());
  std::fflush(stdout);
}

sockaddr_in endpoint(const std::string& ip, uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  ::inet_pton(AF_INET, ip.c_str(), &address.sin_addr);
  return address;
}

UniqueFd listen_on(const std::string& ip, uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const sockaddr_in address = endpoint(ip, port);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(fd.get(), 8) != 0)
    throw ember::system_error("listen on " + ip + ":" + std::to_string(port));
  return fd;
}

bool send_all(int fd, const uint8_t* data, size_t size) {
  for (ssize_t sent; size > 0; data += sent, size -= static_cast<size_t>(sent))
    if ((sent = ::send(fd, data, size, MSG_NOSIGNAL)) <= 0) return false;
  return true;
}

std::string read_to_end(int fd) {
  std::string data;
  char chunk[65536];
  for (;;) {
    pollfd ready{fd, POLLIN, 0};
    if (::poll(&ready, 1, kLivenessMs) != 1) return data + "<timed out>";
    const ssize_t count = ::recv(fd, chunk, sizeof(chunk), 0);
    if (count <= 0) return data;
    data.append(chunk, static_cast<size_t>(count));
  }
}

// Accepts one connection and echoes it, then sends "bytes=N" after the client's end of file.
void echo_one(int listener) {
  pollfd ready{listener, POLLIN, 0};
  if (::poll(&ready, 1, kLivenessMs) != 1) return;
  UniqueFd connection(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  std::string chunk(65536, '\0');
  size_t total = 0;
  for (ssize_t count; (count = ::recv(connection.get(), chunk.data(), chunk.size(), 0)) > 0; total += count)
    if (!send_all(connection.get(), reinterpret_cast<const uint8_t*>(chunk.data()), static_cast<size_t>(count)))
      return;
  const std::string trailer = "bytes=" + std::to_string(total);
  send_all(connection.get(), reinterpret_cast<const uint8_t*>(trailer.data()), trailer.size());
}

// Runs `body` with this thread in the network namespace at `path`, then returns to `home`.
void in_namespace(const std::string& path, int home, const std::function<void()>& body) {
  UniqueFd target(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!target || ::setns(target.get(), CLONE_NEWNET) != 0) throw ember::system_error("setns " + path);
  try {
    body();
  } catch (...) {
    ::setns(home, CLONE_NEWNET);
    throw;
  }
  if (::setns(home, CLONE_NEWNET) != 0) throw ember::system_error("setns back");
}

// Copies every frame (virtio-net header included: both taps use the same 12-byte header and no
// offloads) from one tap to the other, as the VM's virtio-net and the guest's driver would.
void bridge(ember::EventLoop& loop, ember::Tap& from, ember::Tap& to) {
  loop.add(from.fd(), EPOLLIN, [&from, &to](uint32_t) {
    std::array<std::byte, 65536 + ember::Tap::kVnetHeaderBytes> frame;
    for (ssize_t length; (length = from.read(frame)) > 0;) {
      const iovec buffer{frame.data(), static_cast<size_t>(length)};
      to.writev({&buffer, 1});  // A full queue drops the frame, as a NIC would.
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: run_network_probe GUEST_NAMESPACE BEYOND_GATEWAY_IP\n");
    return 2;
  }
  const std::string guest_namespace = std::string("/run/netns/") + argv[1];
  const std::string beyond_ip = argv[2];
  try {
    UniqueFd home(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
    auto network = ember::create_run_network("probe");
    check("run-network-created", ::if_nametoindex(network->tap_name.c_str()) != 0,
          network->tap_name + " " + network->host_address + " " + network->guest_address);
    const nlohmann::json spec = network->spec();
    ember::init::NetworkSpec guest_spec{spec["interface"], spec["mac"], spec["address"], spec["gateway"],
                                        spec["mtu"], spec["dns"]};

    std::unique_ptr<ember::Tap> guest_tap;
    UniqueFd guest_listener;
    UniqueFd guest_client(-1);
    in_namespace(guest_namespace, home.get(), [&] {
      guest_tap = std::make_unique<ember::Tap>("gtap0");  // The guest's NIC, renamed to eth0 below.
      UniqueFd control(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      ifreq request{};
      std::strcpy(request.ifr_name, "gtap0");
      request.ifr_hwaddr.sa_family = ARPHRD_ETHER;
      std::memcpy(request.ifr_hwaddr.sa_data, network->guest_mac.data(), 6);
      if (::ioctl(control.get(), SIOCSIFHWADDR, &request) != 0) throw ember::system_error("SIOCSIFHWADDR gtap0");
      ember::init::bring_up_loopback();
      ember::init::configure_network(guest_spec);
      guest_listener = listen_on(network->guest_ip, kGuestPort);
      guest_client.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    });
    check("guest-interface-renamed", guest_tap && ::if_nametoindex("gtap0") == 0);
    ember::Tap host_tap(network->tap_name);  // Attaches to the persistent tap, as the VM does.

    ember::EventLoop loop;
    bridge(loop, host_tap, *guest_tap);
    bridge(loop, *guest_tap, host_tap);
    ember::PortForwarder forwarder(loop, network->guest_ip, {{"127.0.0.1", 0, kGuestPort}});
    std::thread runner([&] { loop.run(); });
    std::thread guest_server([&] { echo_one(guest_listener.get()); });

    // Host client -> PortForwarder -> tap -> guest namespace's echo server, with a half-close.
    std::string payload(kBytes, '\0');
    for (size_t i = 0; i < kBytes; ++i) payload[i] = static_cast<char>(i * 7 + i / 1000);
    UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const sockaddr_in forwarded = endpoint("127.0.0.1", forwarder.host_ports().at(0));
    const bool connected =
        ::connect(client.get(), reinterpret_cast<const sockaddr*>(&forwarded), sizeof(forwarded)) == 0;
    std::thread writer([&] {
      send_all(client.get(), reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
      ::shutdown(client.get(), SHUT_WR);
    });
    const std::string reply = connected ? read_to_end(client.get()) : "<connect failed>";
    writer.join();
    const std::string expected = payload + "bytes=" + std::to_string(kBytes);
    check("port-forward-through-tap", reply == expected,
          "got " + std::to_string(reply.size()) + " bytes, expected " + std::to_string(expected.size()));

    // Guest namespace -> its default route -> the host namespace's address beyond the /30.
    UniqueFd beyond = listen_on(beyond_ip, kBeyondPort);
    const sockaddr_in beyond_address = endpoint(beyond_ip, kBeyondPort);
    const bool reached =
        ::connect(guest_client.get(), reinterpret_cast<const sockaddr*>(&beyond_address), sizeof(beyond_address)) == 0;
    std::string peer = "<none>";
    if (reached) {
      sockaddr_in from{};
      socklen_t length = sizeof(from);
      UniqueFd accepted(::accept4(beyond.get(), reinterpret_cast<sockaddr*>(&from), &length, SOCK_CLOEXEC));
      char text[INET_ADDRSTRLEN] = "?";
      ::inet_ntop(AF_INET, &from.sin_addr, text, sizeof(text));
      peer = text;
    }
    check("guest-default-route", reached && peer == network->guest_ip,
          "connect " + std::string(reached ? "ok" : std::strerror(errno)) + ", peer " + peer);

    guest_server.join();
    loop.stop();
    runner.join();
    const std::string tap_name = network->tap_name;
    network.reset();
    // The VM's fd (host_tap) still holds the device open; RTM_DELLINK removes it regardless.
    check("run-network-tap-deleted", ::if_nametoindex(tap_name.c_str()) == 0);
  } catch (const std::exception& error) {
    check("probe", false, error.what());
    return 1;
  }
  return 0;
}
