#include "vmm/port_forward.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>
#include <utility>

#include "vmm/error.hpp"
#include "vmm/unique_fd.hpp"

namespace ember {
namespace {

constexpr size_t kBufferBytes = 64 * 1024;  // Per direction per connection.
constexpr int kListenBacklog = 128;
// Every connection fd is watched once, edge-triggered, for both directions: handlers read and
// write until EAGAIN, so interest never changes (EventLoop has no EPOLL_CTL_MOD).
constexpr uint32_t kSocketEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

uint16_t parse_port(const std::string& mapping, const std::string& which, const std::string& text) {
  unsigned long value = 0;
  if (!text.empty() && text.size() <= 5 && text.find_first_not_of("0123456789") == std::string::npos)
    value = std::stoul(text);
  if (value < 1 || value > 65535)
    throw Error("-p " + mapping + ": " + which + " port \"" + text + "\" is not a number from 1 to 65535");
  return static_cast<uint16_t>(value);
}

sockaddr_in ipv4_endpoint(const std::string& ip, uint16_t port, const std::string& what) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  if (::inet_pton(AF_INET, ip.c_str(), &address.sin_addr) != 1)
    throw Error(what + ": \"" + ip + "\" is not an IPv4 address");
  return address;
}

void set_no_delay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // Latency only; failure is harmless.
}

// One direction of a connection: bytes read from `from`, not yet written to `to`.
struct Direction {
  std::unique_ptr<std::byte[]> buffer = std::make_unique<std::byte[]>(kBufferBytes);
  size_t start = 0;
  size_t end = 0;
  bool end_of_file = false;  // `from` reached EOF.
  bool shut = false;         // ...and `to` got shutdown(SHUT_WR) after the last byte.
};

enum class Pumped { kWaiting, kFailed };

// Moves bytes until both sides would block (or `from` ended and everything was written). Each
// return with data still buffered follows an EAGAIN on `to`, whose next EPOLLOUT edge resumes it.
Pumped pump(Direction& direction, int from, int to) {
  for (;;) {
    if (direction.start < direction.end) {
      const ssize_t sent = ::send(to, direction.buffer.get() + direction.start,
                                  direction.end - direction.start, MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN ? Pumped::kWaiting : Pumped::kFailed;
      }
      direction.start += static_cast<size_t>(sent);
      if (direction.start == direction.end) direction.start = direction.end = 0;
      continue;
    }
    if (direction.end_of_file) {
      if (!direction.shut && ::shutdown(to, SHUT_WR) != 0 && errno != ENOTCONN) return Pumped::kFailed;
      direction.shut = true;
      return Pumped::kWaiting;
    }
    const ssize_t received = ::recv(from, direction.buffer.get(), kBufferBytes, 0);
    if (received > 0) {
      direction.end = static_cast<size_t>(received);
    } else if (received == 0) {
      direction.end_of_file = true;
    } else if (errno != EINTR) {
      return errno == EAGAIN ? Pumped::kWaiting : Pumped::kFailed;
    }
  }
}

}  // namespace

struct Connection {
  UniqueFd client;
  UniqueFd guest;
  UniqueFd connect_timer;  // Armed while the connection to the guest is in progress.
  bool connecting = true;
  bool closed = false;
  Direction to_guest;
  Direction to_client;
  std::string description;  // "client 127.0.0.1:40000 -> guest port 80"
};

struct PortForwarder::State {
  State(EventLoop& event_loop, std::chrono::milliseconds timeout)
      : loop(event_loop), connect_timeout(timeout) {}

  struct Listener {
    UniqueFd fd;
    uint16_t host_port = 0;
    uint16_t guest_port = 0;
  };

  EventLoop& loop;
  std::chrono::milliseconds connect_timeout;
  in_addr guest_address{};
  // Handlers run on the loop's thread, the destructor on any: both hold the mutex, and handlers do
  // nothing once `stopped` is set (a handler the loop copied before remove() may still run).
  std::mutex mutex;
  bool stopped = false;
  std::vector<Listener> listeners;
  std::set<std::shared_ptr<Connection>> connections;

  void accept_all(const std::shared_ptr<State>& self, const Listener& listener);
  void start_connection(const std::shared_ptr<State>& self, UniqueFd client, uint16_t guest_port,
                        const sockaddr_in& peer);
  void on_guest_event(Connection& connection, uint32_t events);
  void service(Connection& connection);
  void close(Connection& connection, const char* why);
};

void PortForwarder::State::accept_all(const std::shared_ptr<State>& self, const Listener& listener) {
  for (;;) {
    sockaddr_in peer{};
    socklen_t length = sizeof(peer);
    UniqueFd client(::accept4(listener.fd.get(), reinterpret_cast<sockaddr*>(&peer), &length,
                              SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!client) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN)  // EMFILE and the like: the next connection's edge retries.
        spdlog::warn("-p {}:{}: accept: {}", listener.host_port, listener.guest_port, std::strerror(errno));
      return;
    }
    start_connection(self, std::move(client), listener.guest_port, peer);
  }
}

void PortForwarder::State::start_connection(const std::shared_ptr<State>& self, UniqueFd client,
                                            uint16_t guest_port, const sockaddr_in& peer) {
  auto connection = std::make_shared<Connection>();
  std::array<char, INET_ADDRSTRLEN> peer_text{};
  ::inet_ntop(AF_INET, &peer.sin_addr, peer_text.data(), peer_text.size());
  connection->description = std::string("client ") + peer_text.data() + ":" +
                            std::to_string(ntohs(peer.sin_port)) + " -> guest port " +
                            std::to_string(guest_port);
  connection->client = std::move(client);
  connection->guest.reset(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!connection->guest) {
    spdlog::warn("{}: socket: {}", connection->description, std::strerror(errno));
    return;  // The client fd closes here.
  }
  set_no_delay(connection->client.get());
  set_no_delay(connection->guest.get());
  sockaddr_in guest{};
  guest.sin_family = AF_INET;
  guest.sin_addr = guest_address;
  guest.sin_port = htons(guest_port);
  if (::connect(connection->guest.get(), reinterpret_cast<const sockaddr*>(&guest), sizeof(guest)) == 0) {
    connection->connecting = false;
  } else if (errno != EINPROGRESS) {
    spdlog::debug("{}: connect: {}", connection->description, std::strerror(errno));
    return;
  } else {
    connection->connect_timer.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (!connection->connect_timer) {
      spdlog::warn("{}: timerfd_create: {}", connection->description, std::strerror(errno));
      return;
    }
    const auto nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(connect_timeout).count();
    itimerspec timeout{};
    timeout.it_value.tv_sec = static_cast<time_t>(nanoseconds / 1000000000);
    timeout.it_value.tv_nsec = static_cast<long>(nanoseconds % 1000000000);
    if (timeout.it_value.tv_sec == 0 && timeout.it_value.tv_nsec == 0) timeout.it_value.tv_nsec = 1;
    ::timerfd_settime(connection->connect_timer.get(), 0, &timeout, nullptr);
  }

  Connection* raw = connection.get();
  connections.insert(connection);
  try {
    // Each handler holds the state and its connection, so both outlive a call already under way.
    loop.add(raw->client.get(), kSocketEvents, [self, connection](uint32_t) {
      std::lock_guard lock(self->mutex);
      if (!self->stopped && !connection->closed && !connection->connecting) self->service(*connection);
    });
    loop.add(raw->guest.get(), kSocketEvents, [self, connection](uint32_t events) {
      std::lock_guard lock(self->mutex);
      if (!self->stopped && !connection->closed) self->on_guest_event(*connection, events);
    });
    if (raw->connect_timer) {
      loop.add(raw->connect_timer.get(), EPOLLIN, [self, connection](uint32_t) {
        std::lock_guard lock(self->mutex);
        if (!self->stopped && !connection->closed && connection->connecting)
          self->close(*connection, "the guest did not answer");
      });
    }
  } catch (const Error& error) {  // Nothing may escape onto the loop's thread.
    spdlog::warn("{}: {}", raw->description, error.what());
    close(*raw, "could not watch it");
  }
}

void PortForwarder::State::on_guest_event(Connection& connection, uint32_t events) {
  if (connection.connecting) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int error = 0;
    socklen_t length = sizeof(error);
    if (::getsockopt(connection.guest.get(), SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
    if (error != 0) {
      spdlog::debug("{}: connect: {}", connection.description, std::strerror(error));
      close(connection, "the guest refused");
      return;
    }
    connection.connecting = false;
    loop.remove(connection.connect_timer.get());
    connection.connect_timer.reset();
  }
  service(connection);
}

void PortForwarder::State::service(Connection& connection) {
  const int client = connection.client.get();
  const int guest = connection.guest.get();
  if (pump(connection.to_guest, client, guest) == Pumped::kFailed ||
      pump(connection.to_client, guest, client) == Pumped::kFailed) {
    close(connection, "reset or error");
    return;
  }
  if (connection.to_guest.shut && connection.to_client.shut) close(connection, "both sides finished");
}

void PortForwarder::State::close(Connection& connection, const char* why) {
  spdlog::debug("{}: closed ({})", connection.description, why);
  for (UniqueFd* fd : {&connection.client, &connection.guest, &connection.connect_timer}) {
    if (*fd) loop.remove(fd->get());
    fd->reset();
  }
  connection.closed = true;
  for (auto it = connections.begin(); it != connections.end(); ++it) {
    if (it->get() == &connection) {
      connections.erase(it);  // The handler's own reference keeps `connection` alive until it returns.
      break;
    }
  }
}

PortMapping parse_port_mapping(const std::string& text) {
  std::string ports = text;
  const auto slash = ports.find('/');
  if (slash != std::string::npos) {
    const std::string protocol = ports.substr(slash + 1);
    if (protocol != "tcp") {
      if (protocol == "udp" || protocol == "sctp")
        throw Error("-p " + text + ": only tcp is supported");
      throw Error("-p " + text + ": unknown protocol \"" + protocol + "\"");
    }
    ports.resize(slash);
  }
  std::vector<std::string> fields;
  for (size_t start = 0;;) {
    const auto colon = ports.find(':', start);
    fields.push_back(ports.substr(start, colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  if (fields.size() != 2 && fields.size() != 3)
    throw Error("-p " + text + ": expected [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]");
  PortMapping mapping;
  if (fields.size() == 3) {
    mapping.host_ip = fields[0];
    ipv4_endpoint(mapping.host_ip, 0, "-p " + text + ": host address");
  }
  mapping.host_port = parse_port(text, "host", fields[fields.size() - 2]);
  mapping.guest_port = parse_port(text, "guest", fields.back());
  return mapping;
}

PortForwarder::PortForwarder(EventLoop& loop, std::string guest_ip, std::vector<PortMapping> mappings,
                             std::chrono::milliseconds connect_timeout)
    : state_(std::make_shared<State>(loop, connect_timeout)) {
  state_->guest_address = ipv4_endpoint(guest_ip, 0, "port forwarding: guest address").sin_addr;
  for (const PortMapping& mapping : mappings) {
    const std::string name = "-p " + mapping.host_ip + ":" + std::to_string(mapping.host_port) + ":" +
                             std::to_string(mapping.guest_port);
    const sockaddr_in address = ipv4_endpoint(mapping.host_ip, mapping.host_port, name + ": host address");
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) throw system_error(name + ": socket");
    const int one = 1;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
      throw system_error(name + ": SO_REUSEADDR");
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0)
      throw system_error(name + ": cannot listen on host port " + std::to_string(mapping.host_port));
    if (::listen(fd.get(), kListenBacklog) != 0) throw system_error(name + ": listen");
    sockaddr_in bound{};
    socklen_t length = sizeof(bound);
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &length) != 0)
      throw system_error(name + ": getsockname");
    state_->listeners.push_back({std::move(fd), ntohs(bound.sin_port), mapping.guest_port});
  }
  // Registered only once every port is bound, so a failed constructor leaves nothing in the loop.
  std::lock_guard lock(state_->mutex);
  for (size_t index = 0; index < state_->listeners.size(); ++index) {
    loop.add(state_->listeners[index].fd.get(), EPOLLIN | EPOLLET, [self = state_, index](uint32_t) {
      std::lock_guard handler_lock(self->mutex);
      if (!self->stopped) self->accept_all(self, self->listeners[index]);
    });
  }
}

PortForwarder::~PortForwarder() {
  std::lock_guard lock(state_->mutex);
  state_->stopped = true;
  for (auto& listener : state_->listeners) {
    state_->loop.remove(listener.fd.get());
    listener.fd.reset();
  }
  while (!state_->connections.empty()) state_->close(**state_->connections.begin(), "port forwarding stopped");
}

std::vector<uint16_t> PortForwarder::host_ports() const {
  std::vector<uint16_t> ports;
  for (const auto& listener : state_->listeners) ports.push_back(listener.host_port);
  return ports;
}

}  // namespace ember
