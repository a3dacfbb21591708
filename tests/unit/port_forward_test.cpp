// PortForwarder on loopback only: a local server plays the guest, the EventLoop runs on a thread
// of its own, clients connect to the forwarded port.
#include "vmm/port_forward.hpp"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/unique_fd.hpp"

namespace ember {
namespace {

using ::testing::HasSubstr;

constexpr size_t kTransferBytes = 8 << 20;
// Upper bound on waiting for something that must happen; a hang fails instead of blocking the suite.
constexpr int kLivenessMs = 30000;

std::vector<uint8_t> pattern(size_t size, unsigned seed) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(i * 131 + i / 4096 + seed);
  return bytes;
}

UniqueFd listener(int backlog = 64) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(fd.get(), backlog) != 0)
    throw system_error("test listener");
  return fd;
}

uint16_t port_of(int fd) {
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  return ntohs(address.sin_port);
}

UniqueFd connect_to(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
    throw system_error("connect to port " + std::to_string(port));
  return fd;
}

bool send_all(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t sent = ::send(fd, data, size, MSG_NOSIGNAL);
    if (sent <= 0) return false;
    data += sent;
    size -= static_cast<size_t>(sent);
  }
  return true;
}

// Reads until end of file (or an error, or nothing for kLivenessMs).
std::vector<uint8_t> read_to_end(int fd) {
  std::vector<uint8_t> data;
  std::vector<uint8_t> chunk(64 * 1024);
  for (;;) {
    pollfd ready{fd, POLLIN, 0};
    if (::poll(&ready, 1, kLivenessMs) != 1) break;
    const ssize_t count = ::recv(fd, chunk.data(), chunk.size(), 0);
    if (count <= 0) break;
    data.insert(data.end(), chunk.begin(), chunk.begin() + count);
  }
  return data;
}

// The "guest": for each connection, echoes every byte back, and after the client's end of file
// sends "bytes=N" and closes (so a client sees the trailer only if its half-close got through).
class EchoGuest {
 public:
  EchoGuest() : listen_(listener()), port_(port_of(listen_.get())) {
    acceptor_ = std::jthread([this] {
      for (;;) {
        const int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;  // shutdown() in the destructor.
        sessions_.emplace_back([fd] {
          UniqueFd connection(fd);
          std::vector<uint8_t> chunk(100 * 1000);  // Not a multiple of the forwarder's buffer.
          size_t total = 0;
          for (ssize_t count; (count = ::recv(fd, chunk.data(), chunk.size(), 0)) > 0;) {
            if (!send_all(fd, chunk.data(), static_cast<size_t>(count))) return;
            total += static_cast<size_t>(count);
          }
          const std::string trailer = "bytes=" + std::to_string(total);
          send_all(fd, reinterpret_cast<const uint8_t*>(trailer.data()), trailer.size());
        });
      }
    });
  }
  ~EchoGuest() {
    ::shutdown(listen_.get(), SHUT_RDWR);
    acceptor_.join();
  }
  uint16_t port() const { return port_; }

 private:
  UniqueFd listen_;
  uint16_t port_;
  std::vector<std::jthread> sessions_;  // Joined after the acceptor (declared before it).
  std::jthread acceptor_;
};

class PortForwarderTest : public ::testing::Test {
 protected:
  PortForwarderTest() : runner_([this] { loop_.run(); }) {}
  ~PortForwarderTest() override {
    loop_.stop();
    runner_.join();
  }
  EventLoop loop_;
  std::jthread runner_;
};

TEST_F(PortForwarderTest, CopiesEightMebibytesEachWayForConcurrentClientsWithHalfClose) {
  EchoGuest guest;
  PortForwarder forwarder(loop_, "127.0.0.1", {{"127.0.0.1", 0, guest.port()}});
  const uint16_t port = forwarder.host_ports().at(0);
  constexpr int kClients = 4;
  std::vector<std::vector<uint8_t>> sent(kClients), received(kClients);
  {
    std::vector<std::jthread> clients;
    for (int client = 0; client < kClients; ++client) {
      sent[client] = pattern(kTransferBytes, static_cast<unsigned>(client));
      clients.emplace_back([&, client] {
        UniqueFd fd = connect_to(port);
        std::jthread writer([&] {
          send_all(fd.get(), sent[client].data(), sent[client].size());
          ::shutdown(fd.get(), SHUT_WR);  // Half-close: the reply must still arrive.
        });
        received[client] = read_to_end(fd.get());
      });
    }
  }
  for (int client = 0; client < kClients; ++client) {
    const std::string trailer = "bytes=" + std::to_string(kTransferBytes);
    ASSERT_EQ(received[client].size(), kTransferBytes + trailer.size()) << "client " << client;
    EXPECT_TRUE(std::equal(sent[client].begin(), sent[client].end(), received[client].begin()))
        << "client " << client;
    EXPECT_EQ(std::string(received[client].begin() + kTransferBytes, received[client].end()), trailer);
  }
}

TEST_F(PortForwarderTest, ManyShortConnectionsAtOnce) {
  EchoGuest guest;
  PortForwarder forwarder(loop_, "127.0.0.1", {{"127.0.0.1", 0, guest.port()}});
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 64; ++i) clients.push_back(connect_to(forwarder.host_ports().at(0)));
  for (size_t i = 0; i < clients.size(); ++i) {
    const std::string message = "hello " + std::to_string(i);
    ASSERT_TRUE(send_all(clients[i].get(), reinterpret_cast<const uint8_t*>(message.data()), message.size()));
    ::shutdown(clients[i].get(), SHUT_WR);
  }
  for (size_t i = 0; i < clients.size(); ++i) {
    const std::string message = "hello " + std::to_string(i);
    const std::vector<uint8_t> reply = read_to_end(clients[i].get());
    EXPECT_EQ(std::string(reply.begin(), reply.end()), message + "bytes=" + std::to_string(message.size()));
  }
}

TEST_F(PortForwarderTest, ClosedGuestPortClosesTheClient) {
  uint16_t closed_port;
  {
    UniqueFd unused = listener();
    closed_port = port_of(unused.get());
  }  // Nothing listens there any more: the connect is refused.
  PortForwarder forwarder(loop_, "127.0.0.1", {{"127.0.0.1", 0, closed_port}});
  UniqueFd client = connect_to(forwarder.host_ports().at(0));
  pollfd ready{client.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&ready, 1, kLivenessMs), 1);
  char byte;
  EXPECT_LE(::recv(client.get(), &byte, 1, 0), 0);
}

TEST_F(PortForwarderTest, GuestThatNeverAnswersClosesTheClientAfterTheConnectTimeout) {
  // A listener whose accept queue is full and never drained: the kernel drops further SYNs.
  UniqueFd silent = listener(0);
  UniqueFd filler = connect_to(port_of(silent.get()));
  PortForwarder forwarder(loop_, "127.0.0.1", {{"127.0.0.1", 0, port_of(silent.get())}},
                          std::chrono::milliseconds(200));
  UniqueFd client = connect_to(forwarder.host_ports().at(0));
  pollfd ready{client.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&ready, 1, kLivenessMs), 1);
  char byte;
  EXPECT_LE(::recv(client.get(), &byte, 1, 0), 0);
}

TEST_F(PortForwarderTest, DestructorClosesOpenConnections) {
  EchoGuest guest;
  UniqueFd client;
  {
    PortForwarder forwarder(loop_, "127.0.0.1", {{"127.0.0.1", 0, guest.port()}});
    client = connect_to(forwarder.host_ports().at(0));
    ASSERT_TRUE(send_all(client.get(), reinterpret_cast<const uint8_t*>("ping"), 4));
    char echo[4];
    pollfd ready{client.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&ready, 1, kLivenessMs), 1);
    ASSERT_EQ(::recv(client.get(), echo, sizeof(echo), MSG_WAITALL), 4);
  }
  EXPECT_TRUE(read_to_end(client.get()).empty());  // End of file, not the guest's trailer.
}

TEST_F(PortForwarderTest, PortInUseNamesIt) {
  UniqueFd taken = listener();
  const uint16_t port = port_of(taken.get());
  try {
    PortForwarder forwarder(loop_, "127.0.0.1", {{"127.0.0.1", port, 80}});
    FAIL() << "bound a port that is in use";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr(std::to_string(port)));
    EXPECT_THAT(error.what(), HasSubstr("Address already in use"));
  }
}

TEST(ParsePortMapping, AcceptsDockerForms) {
  PortMapping mapping = parse_port_mapping("8080:80");
  EXPECT_EQ(mapping.host_ip, "0.0.0.0");
  EXPECT_EQ(mapping.host_port, 8080);
  EXPECT_EQ(mapping.guest_port, 80);
  mapping = parse_port_mapping("127.0.0.1:8080:80");
  EXPECT_EQ(mapping.host_ip, "127.0.0.1");
  EXPECT_EQ(mapping.host_port, 8080);
  EXPECT_EQ(mapping.guest_port, 80);
  mapping = parse_port_mapping("65535:1/tcp");
  EXPECT_EQ(mapping.host_port, 65535);
  EXPECT_EQ(mapping.guest_port, 1);
}

TEST(ParsePortMapping, RejectsWithOneLine) {
  auto message = [](const std::string& text) {
    try {
      parse_port_mapping(text);
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(message("53:53/udp"), "-p 53:53/udp: only tcp is supported");
  for (const std::string bad : {"80", "0:80", "8080:0", "70000:80", "a:80", "8080:", ":80", "1:2:3:4",
                                "localhost:8080:80", "8080:80/xyz", "-1:80", "+80:80", "080800:80"}) {
    const std::string text = message(bad);
    EXPECT_THAT(text, HasSubstr("-p " + bad + ": ")) << bad;
    EXPECT_EQ(text.find('\n'), std::string::npos) << bad;
  }
}

}  // namespace
}  // namespace ember
