#include "devices/backends/tap.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "vmm/error.hpp"

namespace ember {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// A real tap needs /dev/net/tun and CAP_NET_ADMIN; without them those tests are skipped.
bool can_create_taps() {
  UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  return tun.valid();
}

TEST(Tap, StandInCarriesOneFramePerCall) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds), 0);
  UniqueFd peer(fds[1]);
  auto tap = Tap::from_fd(UniqueFd(fds[0]), "stand-in");
  EXPECT_EQ(tap->name(), "stand-in");
  EXPECT_NE(::fcntl(tap->fd(), F_GETFL) & O_NONBLOCK, 0);

  std::vector<std::byte> frame(100);
  EXPECT_EQ(tap->read(frame), -EAGAIN);

  char header[Tap::kVnetHeaderBytes] = "header";
  char payload[] = "payload";
  const iovec parts[] = {{header, sizeof(header)}, {payload, sizeof(payload)}};
  ASSERT_EQ(tap->writev(parts), static_cast<ssize_t>(sizeof(header) + sizeof(payload)));
  char received[64];
  ASSERT_EQ(::recv(peer.get(), received, sizeof(received), 0),
            static_cast<ssize_t>(sizeof(header) + sizeof(payload)));
  EXPECT_STREQ(received + sizeof(header), "payload");

  ASSERT_EQ(::send(peer.get(), "one", 3, 0), 3);
  ASSERT_EQ(::send(peer.get(), "three", 5, 0), 5);
  EXPECT_EQ(tap->read(frame), 3);
  EXPECT_EQ(tap->read(frame), 5);
  EXPECT_EQ(tap->read(frame), -EAGAIN);

  tap->set_offload(TUN_F_CSUM | TUN_F_TSO4);  // Only recorded for a stand-in.
  EXPECT_EQ(tap->offload(), unsigned{TUN_F_CSUM | TUN_F_TSO4});
}

TEST(Tap, StandInNeedsAnFd) {
  EXPECT_THROW(Tap::from_fd(UniqueFd(), "none"), Error);
}

TEST(Tap, NameTooLongIsAnError) {
  try {
    Tap tap("a-name-far-longer-than-ifnamsiz");
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("a-name-far-longer-than-ifnamsiz"));
  }
}

TEST(Tap, KernelChoosesAName) {
  if (!can_create_taps()) GTEST_SKIP() << "/dev/net/tun not usable here";
  Tap tap("");
  EXPECT_THAT(tap.name(), StartsWith("tap"));
  EXPECT_NE(::fcntl(tap.fd(), F_GETFL) & O_NONBLOCK, 0);
  std::vector<std::byte> frame(2048);
  EXPECT_EQ(tap.read(frame), -EAGAIN) << "a new tap has nothing to read, and does not block";
}

TEST(Tap, NamedTapTakesOffloads) {
  if (!can_create_taps()) GTEST_SKIP() << "/dev/net/tun not usable here";
  const std::string name = "embt" + std::to_string(::getpid() % 100000);
  Tap tap(name);
  EXPECT_EQ(tap.name(), name);
  tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN);
  EXPECT_EQ(tap.offload(), unsigned{TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN});
  tap.set_offload(0);
  EXPECT_NO_THROW(tap.set_up());
  try {
    tap.set_offload(TUN_F_TSO4);  // TSO without checksum offload: the kernel refuses it.
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr(name));
    EXPECT_THAT(error.what(), HasSubstr("TUNSETOFFLOAD"));
  }
}

// A frame to our own MAC with an unused EtherType, so nothing else on the interface is mistaken for
// it.
std::vector<std::byte> test_frame(uint8_t marker) {
  std::vector<std::byte> frame(60, std::byte{marker});
  const uint8_t addresses[12] = {0x52, 0x54, 0, 0, 0, 1, 0x52, 0x54, 0, 0, 0, 2};
  std::memcpy(frame.data(), addresses, sizeof(addresses));
  frame[12] = std::byte{0x88};  // EtherType 0x88b5: IEEE local experimental.
  frame[13] = std::byte{0xb5};
  return frame;
}

TEST(Tap, RealTapCarriesFramesWithTheirVnetHeader) {
  if (!can_create_taps()) GTEST_SKIP() << "/dev/net/tun not usable here";
  Tap tap("");
  tap.set_up();
  UniqueFd packet(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(0x88b5)));
  ASSERT_TRUE(packet.valid()) << std::strerror(errno);
  sockaddr_ll address{};
  address.sll_family = AF_PACKET;
  address.sll_protocol = htons(0x88b5);
  address.sll_ifindex = static_cast<int>(::if_nametoindex(tap.name().c_str()));
  ASSERT_EQ(::bind(packet.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);

  // Host to guest: a frame the kernel transmits on the tap is read with a 12-byte header.
  const auto sent = test_frame(0xaa);
  ASSERT_EQ(::send(packet.get(), sent.data(), sent.size(), 0), static_cast<ssize_t>(sent.size()));
  // The kernel may send its own frames (IPv6 MLD, router solicitations) once the link is up.
  std::vector<std::byte> frame(2048);
  ssize_t count = 0;
  for (;;) {
    pollfd readable{tap.fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&readable, 1, 5000), 1) << "the sent frame never reached the tap";
    count = tap.read(frame);
    ASSERT_GT(count, static_cast<ssize_t>(Tap::kVnetHeaderBytes));
    if (frame[Tap::kVnetHeaderBytes + 12] == std::byte{0x88} &&
        frame[Tap::kVnetHeaderBytes + 13] == std::byte{0xb5})
      break;
  }
  ASSERT_EQ(count, static_cast<ssize_t>(Tap::kVnetHeaderBytes + sent.size()));
  EXPECT_EQ(frame[1], std::byte{0}) << "gso_type NONE";
  EXPECT_TRUE(std::equal(sent.begin(), sent.end(), frame.begin() + Tap::kVnetHeaderBytes));

  // Guest to host: header plus frame written in one writev() arrive as the frame.
  std::byte header[Tap::kVnetHeaderBytes] = {};
  const auto written = test_frame(0xbb);
  const iovec parts[] = {{header, sizeof(header)},
                         {const_cast<std::byte*>(written.data()), written.size()}};
  ASSERT_EQ(tap.writev(parts), static_cast<ssize_t>(sizeof(header) + written.size()));
  for (;;) {
    pollfd incoming{packet.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&incoming, 1, 5000), 1) << "the written frame never arrived";
    std::vector<std::byte> received(2048);
    sockaddr_ll from{};
    socklen_t from_length = sizeof(from);
    const ssize_t length = ::recvfrom(packet.get(), received.data(), received.size(), 0,
                                      reinterpret_cast<sockaddr*>(&from), &from_length);
    ASSERT_GT(length, 0);
    if (from.sll_pkttype == PACKET_OUTGOING) continue;  // Our own send above.
    received.resize(static_cast<size_t>(length));
    EXPECT_EQ(received, written);
    break;
  }
}

}  // namespace
}  // namespace ember
