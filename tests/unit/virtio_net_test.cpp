#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "devices/virtio/net.hpp"
#include "tests/unit/log_capture.hpp"
#include "tests/unit/virtio_test_ring.hpp"
#include "vmm/error.hpp"

namespace ember::virtio {
namespace {

using test::kHighRegionStart;
using test::TestRing;
using test::UsedElement;

// Values written out from virtio 1.2 §5.1.3 on purpose, not taken from the device's header.
constexpr uint64_t kGuestCsum = 1ull << 1;
constexpr uint64_t kGuestTso4 = 1ull << 7;
constexpr uint64_t kGuestTso6 = 1ull << 8;
constexpr uint64_t kGuestEcn = 1ull << 9;
constexpr uint64_t kMrgRxbuf = 1ull << 15;
constexpr size_t kHeader = 12;
constexpr uint16_t kRx = 0;
constexpr uint16_t kTx = 1;
constexpr std::array<uint8_t, 6> kMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

class RecordingInterrupts : public Interrupts {
 public:
  void queue_used(uint16_t queue) override { ++used[queue]; }
  void config_changed() override { ++config; }
  std::atomic<int> used[2] = {0, 0};
  std::atomic<int> config = 0;
};

std::vector<std::byte> make_packet(size_t frame_bytes, uint8_t seed) {
  std::vector<std::byte> packet(kHeader + frame_bytes);
  for (size_t i = 0; i < packet.size(); ++i) packet[i] = static_cast<std::byte>(seed + i * 7);
  return packet;
}

bool wait_for(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return condition();
}

class VirtioNetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds), 0);
    peer_.reset(fds[1]);
    net_ = std::make_unique<VirtioNet>(Tap::from_fd(UniqueFd(fds[0]), "test0"), kMac);
  }
  void TearDown() override {
    loop_.stop();
    if (thread_.joinable()) thread_.join();
    std::lock_guard lock(net_->mutex());
    net_->reset();
  }

  // What the transport does at DRIVER_OK, then the I/O thread starts.
  void start(uint64_t features) {
    ASSERT_TRUE(rx_.activate(queues_[kRx], true, true));
    ASSERT_TRUE(tx_.activate(queues_[kTx], true, true));
    {
      std::lock_guard lock(net_->mutex());
      ASSERT_TRUE(
          net_->activate(*memory_, queues_, net_->features() & features, interrupts_, loop_));
    }
    thread_ = std::thread([this] { loop_.run(); });
  }
  void notify(uint16_t queue) {
    std::lock_guard lock(net_->mutex());
    net_->process_queue(queue);
  }
  void send_to_device(std::span<const std::byte> packet) {
    ASSERT_EQ(::send(peer_.get(), packet.data(), packet.size(), 0),
              static_cast<ssize_t>(packet.size()));
  }
  // The next datagram the device wrote to its "tap", or empty if none is waiting.
  std::vector<std::byte> receive_from_device() {
    std::vector<std::byte> packet(70000);
    const ssize_t count = ::recv(peer_.get(), packet.data(), packet.size(), MSG_DONTWAIT);
    packet.resize(count > 0 ? static_cast<size_t>(count) : 0);
    return packet;
  }
  uint16_t rx_used() {
    std::lock_guard lock(net_->mutex());  // Orders our read after the I/O thread's writes.
    return rx_.used_index();
  }

  std::unique_ptr<GuestMemory> memory_ = test::make_test_memory();
  TestRing rx_{*memory_, 16, 0x1000, 0x100000};
  TestRing tx_{*memory_, 16, 0x2000, kHighRegionStart};
  std::vector<Queue> queues_{Queue(256), Queue(256)};
  RecordingInterrupts interrupts_;
  EventLoop loop_;
  std::thread thread_;
  UniqueFd peer_;
  std::unique_ptr<VirtioNet> net_;
};

TEST_F(VirtioNetTest, OffersTheNetworkFeatures) {
  const uint64_t features = net_->features();
  for (int bit : {0, 1, 5, 7, 8, 9, 11, 12, 13, 15, 16, 28, 29, 32})
    EXPECT_TRUE(features & (1ull << bit)) << "feature bit " << bit;
  EXPECT_FALSE(features & (1ull << 17)) << "no control queue";
  EXPECT_EQ(net_->type(), DeviceType::kNet);
  EXPECT_EQ(net_->queue_count(), 2);
}

TEST_F(VirtioNetTest, ConfigHasMacAndLinkStatus) {
  std::array<uint8_t, 8> config{};
  net_->read_config(0, config);
  EXPECT_EQ((std::array<uint8_t, 8>{0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0}), config);
  std::array<uint8_t, 4> past_end{0xff, 0xff, 0xff, 0xff};
  net_->read_config(7, past_end);
  EXPECT_EQ((std::array<uint8_t, 4>{0, 0, 0, 0}), past_end);

  net_->set_link(false);  // Not active yet: no interrupt.
  EXPECT_EQ(interrupts_.config, 0);
  start(~0ull);
  net_->set_link(true);
  EXPECT_EQ(interrupts_.config, 1);
  net_->set_link(true);  // No change, no interrupt.
  EXPECT_EQ(interrupts_.config, 1);
  net_->set_link(false);
  EXPECT_EQ(interrupts_.config, 2);
  std::array<uint8_t, 2> status{0xff, 0xff};
  {
    std::lock_guard lock(net_->mutex());
    net_->read_config(6, status);
  }
  EXPECT_EQ((std::array<uint8_t, 2>{0, 0}), status);
}

TEST_F(VirtioNetTest, OffloadFollowsWhatTheGuestReceives) {
  start(kGuestCsum | kGuestTso4 | kGuestEcn);
  EXPECT_EQ(net_->tap().offload(), unsigned{TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN});
  {
    std::lock_guard lock(net_->mutex());
    net_->reset();
    ASSERT_TRUE(net_->activate(*memory_, queues_, kGuestTso6, interrupts_, loop_));
  }
  EXPECT_EQ(net_->tap().offload(), 0u) << "TSO without GUEST_CSUM is not offloaded";
}

TEST_F(VirtioNetTest, TransmitReachesTheTapIntact) {
  start(~0ull);
  const auto packet = make_packet(1000, 3);
  const auto head = tx_.push({tx_.readable(std::span(packet).first(kHeader)),
                              tx_.readable(std::span(packet).subspan(kHeader, 400)),
                              tx_.readable(std::span(packet).subspan(kHeader + 400))});
  notify(kTx);
  EXPECT_EQ(receive_from_device(), packet);
  EXPECT_EQ(tx_.pop_used(), (UsedElement{head, 0}));
  EXPECT_EQ(interrupts_.used[kTx], 1);
  EXPECT_EQ(net_->counters().transmitted_frames, 1u);
}

TEST_F(VirtioNetTest, TransmitDropsMalformedChains) {
  start(~0ull);
  const auto big = make_packet(14 + 65536 + 1, 1);  // One byte more than any frame.
  const auto good = make_packet(60, 2);
  const uint16_t with_writable = tx_.push({tx_.readable(make_packet(60, 0)), tx_.writable(16)});
  const uint16_t too_short = tx_.push({tx_.readable(std::span(good).first(kHeader - 1))});
  const uint16_t too_big = tx_.push({tx_.readable(big)});
  const uint16_t only_writable = tx_.push({tx_.writable(100)});
  const uint16_t valid = tx_.push({tx_.readable(good)});
  notify(kTx);
  for (uint16_t head : {with_writable, too_short, too_big, only_writable, valid})
    EXPECT_EQ(tx_.pop_used(), (UsedElement{head, 0}));
  EXPECT_EQ(receive_from_device(), good) << "only the valid frame reaches the tap";
  EXPECT_TRUE(receive_from_device().empty());
  EXPECT_EQ(net_->counters().malformed_chains, 4u);
  EXPECT_FALSE(net_->needs_reset());
}

TEST_F(VirtioNetTest, TransmitWaitsForAFullTapAndResumes) {
  start(~0ull);
  // Large frames fill the socket's send buffer after a few; the rest must wait, not be dropped.
  const auto packet = make_packet(60000, 5);
  const auto buffer = tx_.readable(packet);
  constexpr int kFrames = 16;
  for (int i = 0; i < kFrames; ++i) tx_.push({buffer});
  notify(kTx);
  EXPECT_LT(net_->counters().transmitted_frames, uint64_t{kFrames}) << "the tap never filled up";

  int received = 0;
  ASSERT_TRUE(wait_for([&] {
    while (!receive_from_device().empty()) ++received;
    return received == kFrames;
  })) << "received "
      << received;
  ASSERT_TRUE(wait_for([&] {
    std::lock_guard lock(net_->mutex());
    return tx_.used_index() == kFrames;
  }));
  EXPECT_EQ(net_->counters().transmitted_frames, uint64_t{kFrames});
  EXPECT_EQ(net_->counters().transmit_errors, 0u);
}

TEST_F(VirtioNetTest, ReceiveFillsOneChainWithNumBuffersOne) {
  start(~kMrgRxbuf);
  const auto head = rx_.push({rx_.writable(1000), rx_.writable(1000)});
  const uint64_t first = rx_.buffer(0).address;
  const uint64_t second = rx_.buffer(1).address;
  auto packet = make_packet(1200, 9);
  packet[10] = std::byte{0xff};  // num_buffers as the tap left it: the device sets it.
  packet[11] = std::byte{0xff};
  send_to_device(packet);
  ASSERT_TRUE(wait_for([&] { return rx_used() == 1; }));

  EXPECT_EQ(rx_.pop_used(), (UsedElement{head, static_cast<uint32_t>(packet.size())}));
  auto landed = rx_.read_bytes(first, 1000);
  const auto rest = rx_.read_bytes(second, packet.size() - 1000);
  landed.insert(landed.end(), rest.begin(), rest.end());
  EXPECT_EQ(rx_.read16(first + 10), 1);
  packet[10] = std::byte{1};
  packet[11] = std::byte{0};
  EXPECT_EQ(landed, packet);
  EXPECT_GE(interrupts_.used[kRx], 1);
}

TEST_F(VirtioNetTest, MergeableBuffersSplitAFrame) {
  start(~0ull);
  std::vector<uint16_t> heads;
  std::vector<uint64_t> addresses;
  for (int i = 0; i < 4; ++i) {
    heads.push_back(rx_.push({rx_.writable(256)}));
    addresses.push_back(rx_.buffer(0).address);
  }
  auto packet = make_packet(700, 11);  // 712 bytes: 256 + 256 + 200.
  send_to_device(packet);
  ASSERT_TRUE(wait_for([&] { return rx_used() == 3; }));

  EXPECT_EQ(rx_.pop_used(), (UsedElement{heads[0], 256}));
  EXPECT_EQ(rx_.pop_used(), (UsedElement{heads[1], 256}));
  EXPECT_EQ(rx_.pop_used(), (UsedElement{heads[2], 200}));
  EXPECT_EQ(rx_.read16(addresses[0] + 10), 3) << "num_buffers";
  std::vector<std::byte> landed;
  for (int i = 0; i < 3; ++i) {
    const auto part = rx_.read_bytes(addresses[i], i < 2 ? 256 : 200);
    landed.insert(landed.end(), part.begin(), part.end());
  }
  packet[10] = std::byte{3};
  packet[11] = std::byte{0};
  EXPECT_EQ(landed, packet);

  // The fourth buffer takes the next frame alone.
  const auto small = make_packet(20, 1);
  send_to_device(small);
  ASSERT_TRUE(wait_for([&] { return rx_used() == 4; }));
  EXPECT_EQ(rx_.pop_used(), (UsedElement{heads[3], 32}));
  EXPECT_EQ(rx_.read16(addresses[3] + 10), 1);
}

TEST_F(VirtioNetTest, FramesWaitForReceiveBuffers) {
  start(~0ull);
  const auto first = make_packet(100, 1);
  const auto second = make_packet(200, 2);
  send_to_device(first);
  send_to_device(second);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(rx_used(), 0);

  rx_.push({rx_.writable(2048)});
  const uint64_t address = rx_.buffer(0).address;
  notify(kRx);
  ASSERT_EQ(rx_used(), 1);
  EXPECT_EQ(rx_.pop_used()->length, first.size());
  EXPECT_EQ(rx_.read_bytes(address + kHeader, 100),
            std::vector<std::byte>(first.begin() + kHeader, first.end()));

  rx_.push({rx_.writable(2048)});
  const uint64_t next_address = rx_.buffer(0).address;
  notify(kRx);
  ASSERT_EQ(rx_used(), 2);
  EXPECT_EQ(rx_.pop_used()->length, second.size());
  EXPECT_EQ(rx_.read_bytes(next_address + kHeader, 200),
            std::vector<std::byte>(second.begin() + kHeader, second.end()));
  EXPECT_EQ(net_->counters().received_frames, 2u);
}

TEST_F(VirtioNetTest, ReceiveDropsMalformedChains) {
  start(~0ull);
  const uint16_t readable = rx_.push({rx_.readable("not for writing")});
  const uint16_t tiny = rx_.push({rx_.writable(kHeader - 1)});
  const uint16_t good = rx_.push({rx_.writable(1024)});
  send_to_device(make_packet(64, 4));
  ASSERT_TRUE(wait_for([&] { return rx_used() == 3; }));
  EXPECT_EQ(rx_.pop_used(), (UsedElement{readable, 0}));
  EXPECT_EQ(rx_.pop_used(), (UsedElement{tiny, 0}));
  EXPECT_EQ(rx_.pop_used(), (UsedElement{good, 76}));
  EXPECT_EQ(net_->counters().malformed_chains, 2u);
  EXPECT_FALSE(net_->needs_reset());
}

TEST_F(VirtioNetTest, FrameTooBigForANonMergeableBufferIsDropped) {
  start(~kMrgRxbuf);
  const uint16_t head = rx_.push({rx_.writable(128)});
  send_to_device(make_packet(500, 1));  // Dropped: the buffer is kept for the next frame.
  const auto fits = make_packet(100, 2);
  send_to_device(fits);
  ASSERT_TRUE(wait_for([&] { return rx_used() == 1; }));
  EXPECT_EQ(rx_.pop_used(), (UsedElement{head, static_cast<uint32_t>(fits.size())}));
  EXPECT_EQ(net_->counters().receive_dropped, 1u);
}

TEST_F(VirtioNetTest, ABrokenQueueStopsTheDeviceUntilReset) {
  start(~0ull);
  tx_.set_available_index(100);  // More than the ring holds.
  notify(kTx);
  EXPECT_TRUE(net_->needs_reset());
  EXPECT_EQ(interrupts_.config, 1);
  rx_.push({rx_.writable(1024)});
  send_to_device(make_packet(64, 4));
  notify(kRx);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(rx_used(), 0) << "a device that needs reset does nothing";

  std::lock_guard lock(net_->mutex());
  net_->reset();
  EXPECT_FALSE(net_->needs_reset());
}

TEST_F(VirtioNetTest, BreakingTheQueueOverAndOverIsLoggedOnceASecond) {
  ::ember::test::LogCapture captured;
  start(~0ull);
  for (int round = 0; round < 50; ++round) {
    tx_.set_available_index(static_cast<uint16_t>(100 + round));
    notify(kTx);
    ASSERT_TRUE(net_->needs_reset());
    std::lock_guard lock(net_->mutex());
    net_->reset();
    for (Queue& queue : queues_) queue.reset();
    ASSERT_TRUE(rx_.activate(queues_[kRx], true, true));
    ASSERT_TRUE(tx_.activate(queues_[kTx], true, true));
    ASSERT_TRUE(net_->activate(*memory_, queues_, net_->features(), interrupts_, loop_));
  }
  EXPECT_EQ(captured.lines_with("broken"), 1) << captured.text();
}

TEST_F(VirtioNetTest, ResetStopsWatchingTheTapAndActivateResumes) {
  start(~0ull);
  {
    std::lock_guard lock(net_->mutex());
    net_->reset();
  }
  for (Queue& queue : queues_) queue.reset();
  const auto packet = make_packet(80, 6);
  send_to_device(packet);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));

  TestRing rx(*memory_, 16, 0x3000, 0x180000);
  const uint16_t head = rx.push({rx.writable(512)});
  ASSERT_TRUE(rx.activate(queues_[kRx], true, true));
  ASSERT_TRUE(tx_.activate(queues_[kTx], true, true));
  {
    std::lock_guard lock(net_->mutex());
    ASSERT_TRUE(net_->activate(*memory_, queues_, net_->features(), interrupts_, loop_));
  }
  ASSERT_TRUE(wait_for([&] {
    std::lock_guard lock(net_->mutex());
    return rx.used_index() == 1;
  }));
  EXPECT_EQ(rx.pop_used(), (UsedElement{head, static_cast<uint32_t>(packet.size())}));
}

TEST(VirtioNet, NeedsATap) {
  EXPECT_THROW(VirtioNet(nullptr, kMac), Error);
}

}  // namespace
}  // namespace ember::virtio
