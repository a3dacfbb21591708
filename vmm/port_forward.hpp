// `ember run -p [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]`: a TCP proxy on the I/O thread's EventLoop.
// Each mapping listens on host_ip:host_port; every accepted connection gets its own non-blocking
// connection to guest_ip:guest_port, and bytes are copied both ways through two bounded buffers
// (64 KiB each way) driven by edge-triggered epoll events, so a slow reader stalls only its own
// writer. End of file on one side becomes shutdown(SHUT_WR) on the other (half-close); a reset or
// error on either side closes both. A guest port that refuses, or does not answer within the
// connect timeout, closes the client's connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vmm/event_loop.hpp"

namespace ember {

struct PortMapping {
  std::string host_ip = "0.0.0.0";
  uint16_t host_port = 0;
  uint16_t guest_port = 0;
};

// "8080:80", "127.0.0.1:8080:80", "8080:80/tcp". Throws Error naming the text ("/udp": only tcp
// is supported; ports must be 1-65535; the host address must be IPv4).
PortMapping parse_port_mapping(const std::string& text);

class PortForwarder {
 public:
  static constexpr std::chrono::milliseconds kDefaultConnectTimeout{20000};

  // Listens on every mapping at once (throws Error naming the mapping when one cannot be bound);
  // the handlers run on `loop`'s thread. May be constructed and destroyed on any thread.
  PortForwarder(EventLoop& loop, std::string guest_ip, std::vector<PortMapping> mappings,
                std::chrono::milliseconds connect_timeout = kDefaultConnectTimeout);
  ~PortForwarder();  // Removes every listener and connection from the loop and closes them.

  PortForwarder(const PortForwarder&) = delete;
  PortForwarder& operator=(const PortForwarder&) = delete;

  // The port each mapping listens on, in order (the kernel's choice for host_port 0).
  std::vector<uint16_t> host_ports() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace ember
