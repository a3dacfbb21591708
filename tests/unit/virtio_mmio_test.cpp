#include <gtest/gtest.h>

#include "fake_virtio_device.hpp"

#include <array>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "devices/virtio/mmio_transport.hpp"
#include "vmm/error.hpp"

namespace ember::virtio {
namespace {

// Register offsets and values written out from virtio 1.2 §4.2.2 on purpose, not taken from the
// transport's header.
constexpr uint64_t kMagicValue = 0x000;
constexpr uint64_t kVersion = 0x004;
constexpr uint64_t kDeviceId = 0x008;
constexpr uint64_t kVendorId = 0x00c;
constexpr uint64_t kDeviceFeatures = 0x010;
constexpr uint64_t kDeviceFeaturesSel = 0x014;
constexpr uint64_t kDriverFeatures = 0x020;
constexpr uint64_t kDriverFeaturesSel = 0x024;
constexpr uint64_t kQueueSel = 0x030;
constexpr uint64_t kQueueNumMax = 0x034;
constexpr uint64_t kQueueNum = 0x038;
constexpr uint64_t kQueueReady = 0x044;
constexpr uint64_t kQueueNotify = 0x050;
constexpr uint64_t kInterruptStatus = 0x060;
constexpr uint64_t kInterruptAck = 0x064;
constexpr uint64_t kStatus = 0x070;
constexpr uint64_t kQueueDescLow = 0x080;
constexpr uint64_t kQueueDescHigh = 0x084;
constexpr uint64_t kQueueDriverLow = 0x090;
constexpr uint64_t kQueueDriverHigh = 0x094;
constexpr uint64_t kQueueDeviceLow = 0x0a0;
constexpr uint64_t kQueueDeviceHigh = 0x0a4;
constexpr uint64_t kShmSel = 0x0ac;
constexpr uint64_t kShmLenLow = 0x0b0;
constexpr uint64_t kConfigGeneration = 0x0fc;
constexpr uint64_t kConfig = 0x100;

constexpr uint64_t kMemorySize = 1 << 20;

using test::FakeDevice;
using test::kDeviceOwnFeature;
using test::kQueueCount;
using test::kQueueMaxSize;

class FakeLine : public InterruptLine {
 public:
  void set_level(bool asserted) override {
    if (asserted && !level) ++edges;
    level = asserted;
  }
  bool level = false;
  int edges = 0;
};

class VirtioMmioTest : public ::testing::Test {
 protected:
  VirtioMmioTest()
      : memory({{0, kMemorySize}}),
        transport(
            std::make_unique<FakeDevice>(), memory, loop, line,
            [this](uint16_t queue) {
              notified.push_back(queue);
              transport.notify(queue);  // As the lead's handler would, on whatever thread it picks.
            }),
        device(static_cast<FakeDevice&>(transport.device())) {}

  ~VirtioMmioTest() override { EXPECT_EQ(device.unlocked_calls, 0); }

  uint32_t read32(uint64_t offset) {
    std::array<uint8_t, 4> data{0xaa, 0xaa, 0xaa, 0xaa};
    transport.read(offset, data);
    uint32_t value;
    std::memcpy(&value, data.data(), 4);
    return value;
  }
  void write32(uint64_t offset, uint32_t value) {
    std::array<uint8_t, 4> data;
    std::memcpy(data.data(), &value, 4);
    transport.write(offset, data);
  }
  uint64_t device_features() {
    write32(kDeviceFeaturesSel, 0);
    const uint64_t low = read32(kDeviceFeatures);
    write32(kDeviceFeaturesSel, 1);
    return low | uint64_t{read32(kDeviceFeatures)} << 32;
  }
  void write_driver_features(uint64_t features) {
    write32(kDriverFeaturesSel, 0);
    write32(kDriverFeatures, static_cast<uint32_t>(features));
    write32(kDriverFeaturesSel, 1);
    write32(kDriverFeatures, static_cast<uint32_t>(features >> 32));
  }
  // §3.1.1 steps 1-6: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK; true if it stuck.
  bool negotiate(uint64_t features) {
    write32(kStatus, 0);
    write32(kStatus, kStatusAcknowledge);
    write32(kStatus, kStatusAcknowledge | kStatusDriver);
    write_driver_features(features);
    write32(kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    return read32(kStatus) & kStatusFeaturesOk;
  }
  // A ring layout for a queue of `size` inside guest memory, 4 KiB apart per queue.
  void setup_queue(uint16_t index, uint32_t size, uint64_t base) {
    write32(kQueueSel, index);
    write32(kQueueNum, size);
    write32(kQueueDescLow, static_cast<uint32_t>(base));
    write32(kQueueDescHigh, static_cast<uint32_t>(base >> 32));
    write32(kQueueDriverLow, static_cast<uint32_t>(base + 0x400));
    write32(kQueueDriverHigh, static_cast<uint32_t>((base + 0x400) >> 32));
    write32(kQueueDeviceLow, static_cast<uint32_t>(base + 0x800));
    write32(kQueueDeviceHigh, static_cast<uint32_t>((base + 0x800) >> 32));
    write32(kQueueReady, 1);
  }
  static constexpr uint32_t kStatusBeforeDriverOk =
      kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk;
  // The whole initialisation with both queues; returns the final status.
  uint32_t start(uint64_t features = kFeatureVersion1) {
    EXPECT_TRUE(negotiate(features));
    setup_queue(0, kQueueMaxSize, 0x10000);
    setup_queue(1, 8, 0x11000);
    write32(kStatus, kStatusBeforeDriverOk | kStatusDriverOk);
    return read32(kStatus);
  }

  GuestMemory memory;
  EventLoop loop;
  FakeLine line;
  std::vector<uint16_t> notified;
  VirtioMmioTransport transport;
  FakeDevice& device;
};

TEST_F(VirtioMmioTest, IdentifiesAsVersion2) {
  EXPECT_EQ(read32(kMagicValue), 0x74726976u);
  EXPECT_EQ(read32(kVersion), 2u);
  EXPECT_EQ(read32(kDeviceId), 4u);  // Entropy.
  EXPECT_EQ(read32(kVendorId), 0x52424d45u);
  EXPECT_EQ(read32(kStatus), 0u);
  EXPECT_EQ(read32(kInterruptStatus), 0u);
  EXPECT_EQ(transport.notify_address_offset(), 0x50u);
  EXPECT_EQ(transport.queue_count(), kQueueCount);
  write32(kShmSel, 0);
  EXPECT_EQ(read32(kShmLenLow), 0xffffffffu);  // No shared memory region 0.
}

TEST_F(VirtioMmioTest, ConstructorRejectsMissingPieces) {
  EXPECT_THROW(VirtioMmioTransport(nullptr, memory, loop, line, [](uint16_t) {}), Error);
  EXPECT_THROW(VirtioMmioTransport(std::make_unique<FakeDevice>(), memory, loop, line, nullptr),
               Error);
}

TEST_F(VirtioMmioTest, OffersDeviceFeaturesWithVersion1) {
  EXPECT_EQ(device_features(), kDeviceOwnFeature | kFeatureEventIndex |
                                   kFeatureIndirectDescriptors | kFeatureVersion1);
  write32(kDeviceFeaturesSel, 2);
  EXPECT_EQ(read32(kDeviceFeatures), 0u);
}

TEST_F(VirtioMmioTest, AcceptsASubsetWithVersion1) {
  EXPECT_TRUE(negotiate(kFeatureVersion1 | kDeviceOwnFeature));
  EXPECT_EQ(read32(kStatus), kStatusBeforeDriverOk);
  // Features are frozen once FEATURES_OK is set.
  write_driver_features(kFeatureVersion1 | kFeatureEventIndex);
  setup_queue(0, kQueueMaxSize, 0x10000);
  write32(kStatus, kStatusBeforeDriverOk | kStatusDriverOk);
  EXPECT_EQ(device.activated_features, kFeatureVersion1 | kDeviceOwnFeature);
}

TEST_F(VirtioMmioTest, RefusesFeaturesWithoutVersion1OrNotOffered) {
  EXPECT_FALSE(negotiate(kDeviceOwnFeature));             // Legacy driver.
  EXPECT_FALSE(negotiate(kFeatureVersion1 | 1ull << 5));  // Not offered.
  EXPECT_FALSE(negotiate(kFeatureVersion1 | 1ull << 40));
  EXPECT_EQ(read32(kStatus), kStatusAcknowledge | kStatusDriver);
  // DRIVER_OK without FEATURES_OK does not start the device.
  write32(kStatus, kStatusAcknowledge | kStatusDriver | kStatusDriverOk);
  EXPECT_EQ(device.activations, 0);
  EXPECT_FALSE(read32(kStatus) & kStatusDriverOk);
}

TEST_F(VirtioMmioTest, QueueRegistersFollowQueueSel) {
  write32(kQueueSel, 0);
  EXPECT_EQ(read32(kQueueNumMax), kQueueMaxSize);
  EXPECT_EQ(read32(kQueueReady), 0u);
  write32(kQueueReady, 1);
  EXPECT_EQ(read32(kQueueReady), 1u);
  write32(kQueueSel, 1);
  EXPECT_EQ(read32(kQueueReady), 0u);
  write32(kQueueSel, kQueueCount);  // No such queue: reads 0, writes ignored.
  EXPECT_EQ(read32(kQueueNumMax), 0u);
  write32(kQueueReady, 1);
  write32(kQueueNum, 4);
  EXPECT_EQ(read32(kQueueReady), 0u);
  write32(kQueueSel, 0xffffffff);
  EXPECT_EQ(read32(kQueueNumMax), 0u);
}

TEST_F(VirtioMmioTest, DriverOkActivatesReadyQueuesAndTheDevice) {
  EXPECT_TRUE(negotiate(kFeatureVersion1 | kFeatureEventIndex));
  setup_queue(0, kQueueMaxSize, 0x10000);  // Queue 1 left disabled.
  EXPECT_EQ(device.activations, 0);
  write32(kStatus, kStatusBeforeDriverOk | kStatusDriverOk);
  EXPECT_EQ(read32(kStatus), kStatusBeforeDriverOk | kStatusDriverOk);
  ASSERT_EQ(device.activations, 1);
  EXPECT_EQ(device.activated_features, kFeatureVersion1 | kFeatureEventIndex);
  EXPECT_EQ(device.activated_queues, (std::vector<bool>{true, false}));
  EXPECT_NE(device.interrupts(), nullptr);
  EXPECT_EQ(line.edges, 0);
  // Queue set-up is frozen while the device runs.
  write32(kQueueSel, 0);
  write32(kQueueReady, 0);
  EXPECT_EQ(read32(kQueueReady), 1u);
  // A repeated DRIVER_OK does not activate again.
  write32(kStatus, kStatusBeforeDriverOk | kStatusDriverOk);
  EXPECT_EQ(device.activations, 1);
}

TEST_F(VirtioMmioTest, NotifyBeforeDriverOkIsIgnored) {
  EXPECT_TRUE(negotiate(kFeatureVersion1));
  setup_queue(0, kQueueMaxSize, 0x10000);
  write32(kQueueNotify, 0);
  transport.notify(0);
  EXPECT_TRUE(notified.empty());
  EXPECT_TRUE(device.processed.empty());
}

TEST_F(VirtioMmioTest, NotifyAfterDriverOkReachesTheDevice) {
  ASSERT_EQ(start(), kStatusBeforeDriverOk | kStatusDriverOk);
  write32(kQueueNotify, 1);
  EXPECT_EQ(notified, (std::vector<uint16_t>{1}));
  transport.notify(0);  // As from the ioeventfd.
  EXPECT_EQ(device.processed, (std::vector<uint16_t>{1, 0}));
  write32(kQueueNotify, kQueueCount);  // No such queue.
  transport.notify(kQueueCount);
  transport.notify(0xffff);
  EXPECT_EQ(notified.size(), 1u);
  EXPECT_EQ(device.processed.size(), 2u);
}

TEST_F(VirtioMmioTest, NotifyOfADisabledQueueIsIgnored) {
  EXPECT_TRUE(negotiate(kFeatureVersion1));
  setup_queue(0, kQueueMaxSize, 0x10000);
  write32(kStatus, kStatusBeforeDriverOk | kStatusDriverOk);
  transport.notify(1);
  EXPECT_TRUE(device.processed.empty());
}

TEST_F(VirtioMmioTest, UsedBufferInterruptIsAnEdgeAndAckClearsIt) {
  start();
  ASSERT_NE(device.interrupts(), nullptr);
  {
    std::lock_guard lock(device.mutex());  // Devices raise interrupts with their mutex held.
    device.interrupts()->queue_used(0);
  }
  EXPECT_EQ(line.edges, 1);
  EXPECT_FALSE(line.level);
  EXPECT_EQ(read32(kInterruptStatus), 1u);
  {
    std::lock_guard lock(device.mutex());
    device.interrupts()->queue_used(1);
  }
  EXPECT_EQ(line.edges, 2);  // An edge each time, even with the bit still set.
  write32(kInterruptAck, 1);
  EXPECT_EQ(read32(kInterruptStatus), 0u);
  write32(kInterruptAck, 1);  // ACK of nothing is harmless.
  EXPECT_EQ(read32(kInterruptStatus), 0u);
}

TEST_F(VirtioMmioTest, ConfigChangeBumpsGenerationAndInterrupts) {
  start();
  const uint32_t generation = read32(kConfigGeneration);
  {
    std::lock_guard lock(device.mutex());
    device.interrupts()->config_changed();
  }
  EXPECT_NE(read32(kConfigGeneration), generation);
  EXPECT_EQ(read32(kInterruptStatus), 2u);
  EXPECT_EQ(line.edges, 1);
  {
    std::lock_guard lock(device.mutex());
    device.interrupts()->queue_used(0);
  }
  EXPECT_EQ(read32(kInterruptStatus), 3u);
  write32(kInterruptAck, 2);
  EXPECT_EQ(read32(kInterruptStatus), 1u);
}

TEST_F(VirtioMmioTest, ConfigSpaceGoesToTheDeviceAtAnyWidth) {
  std::array<uint8_t, 1> byte{};
  transport.read(kConfig + 2, byte);
  EXPECT_EQ(byte[0], 3);
  std::array<uint8_t, 2> half{};
  transport.read(kConfig + 5, half);
  EXPECT_EQ(half, (std::array<uint8_t, 2>{6, 7}));
  std::array<uint8_t, 8> wide{};
  transport.read(kConfig, wide);
  EXPECT_EQ(wide, device.config);
  EXPECT_EQ(read32(kConfig + 4), 0x08070605u);
  const std::array<uint8_t, 1> value{0x55};
  transport.write(kConfig + 1, value);
  EXPECT_EQ(device.config[1], 0x55);
  EXPECT_EQ(read32(kConfig + 0xf00), 0u);  // Past the device's config: zeros.
}

TEST_F(VirtioMmioTest, StatusZeroResetsDeviceAndQueues) {
  start(kFeatureVersion1 | kFeatureEventIndex);
  {
    std::lock_guard lock(device.mutex());
    device.interrupts()->queue_used(0);
  }
  const int resets = device.resets;  // negotiate() resets first, as drivers do.
  write32(kStatus, 0);
  EXPECT_EQ(device.resets, resets + 1);
  EXPECT_EQ(read32(kStatus), 0u);
  EXPECT_EQ(read32(kInterruptStatus), 0u);
  write32(kQueueSel, 0);
  EXPECT_EQ(read32(kQueueReady), 0u);
  EXPECT_EQ(read32(kQueueNumMax), kQueueMaxSize);
  transport.notify(0);
  EXPECT_TRUE(device.processed.empty());
  // Driver features were forgotten: a fresh negotiation starts from nothing.
  write32(kStatus, kStatusAcknowledge | kStatusDriver);
  write32(kStatus, kStatusBeforeDriverOk);
  EXPECT_FALSE(read32(kStatus) & kStatusFeaturesOk);
  // And the device can be started again.
  EXPECT_EQ(start(), kStatusBeforeDriverOk | kStatusDriverOk);
  EXPECT_EQ(device.activations, 2);
}

TEST_F(VirtioMmioTest, DriverCannotClearStatusBitsOrSetNeedsReset) {
  negotiate(kFeatureVersion1);
  write32(kStatus, kStatusAcknowledge);  // Clears DRIVER and FEATURES_OK: ignored.
  EXPECT_EQ(read32(kStatus), kStatusBeforeDriverOk);
  write32(kStatus, kStatusBeforeDriverOk | kStatusNeedsReset);
  EXPECT_EQ(read32(kStatus), kStatusBeforeDriverOk);
  write32(kStatus, kStatusBeforeDriverOk | kStatusFailed);
  EXPECT_EQ(read32(kStatus), kStatusBeforeDriverOk | kStatusFailed);
}

// Activation failures: NEEDS_RESET, a configuration interrupt, and no queue processing.
class VirtioMmioFailureTest : public VirtioMmioTest {
 protected:
  void expect_needs_reset() {
    EXPECT_TRUE(read32(kStatus) & kStatusNeedsReset);
    EXPECT_EQ(read32(kInterruptStatus) & 2u, 2u);
    EXPECT_EQ(line.edges, 1);
    write32(kQueueNotify, 0);
    transport.notify(0);
    EXPECT_TRUE(device.processed.empty());
    // Reset recovers.
    write32(kStatus, 0);
    EXPECT_EQ(read32(kStatus), 0u);
  }
  void start_with_queue0(uint32_t size, uint64_t base) {
    ASSERT_TRUE(negotiate(kFeatureVersion1));
    setup_queue(0, size, base);
    write32(kStatus, kStatusBeforeDriverOk | kStatusDriverOk);
  }
};

TEST_F(VirtioMmioFailureTest, QueueLargerThanMax) {
  start_with_queue0(kQueueMaxSize * 2, 0x10000);
  EXPECT_EQ(device.activations, 0);
  expect_needs_reset();
}

TEST_F(VirtioMmioFailureTest, QueueSizeNotAPowerOfTwo) {
  start_with_queue0(12, 0x10000);
  EXPECT_EQ(device.activations, 0);
  expect_needs_reset();
}

TEST_F(VirtioMmioFailureTest, QueueSizeZeroOrTooWide) {
  start_with_queue0(0, 0x10000);
  expect_needs_reset();
  line.edges = 0;
  start_with_queue0(0x10000 + kQueueMaxSize, 0x10000);  // Must not wrap to 16.
  EXPECT_EQ(device.activations, 0);
  expect_needs_reset();
}

TEST_F(VirtioMmioFailureTest, RingsOutsideGuestMemory) {
  start_with_queue0(kQueueMaxSize, kMemorySize - 0x100);
  EXPECT_EQ(device.activations, 0);
  expect_needs_reset();
  line.edges = 0;
  start_with_queue0(kQueueMaxSize, 0xfffffffffffff000ull);
  EXPECT_EQ(device.activations, 0);
  expect_needs_reset();
}

TEST_F(VirtioMmioFailureTest, DeviceRefusesToStart) {
  device.accept_activation = false;
  start_with_queue0(kQueueMaxSize, 0x10000);
  EXPECT_EQ(device.activations, 1);
  expect_needs_reset();
}

TEST_F(VirtioMmioFailureTest, DeviceThrowsOnActivation) {
  device.throw_on_activate = true;
  start_with_queue0(kQueueMaxSize, 0x10000);
  EXPECT_EQ(device.activations, 1);
  expect_needs_reset();
}

TEST_F(VirtioMmioFailureTest, DeviceThrowsWhileProcessing) {
  start_with_queue0(kQueueMaxSize, 0x10000);
  device.throw_on_process = true;
  transport.notify(0);  // Must not throw into the I/O loop.
  device.throw_on_process = false;
  expect_needs_reset();
}

TEST_F(VirtioMmioTest, HostileAccessesReadZeroAndChangeNothing) {
  start();
  const uint32_t status = read32(kStatus);
  const int resets = device.resets;
  // Wrong widths and unaligned offsets in the register area.
  for (uint64_t offset = 0; offset < kConfig; ++offset) {
    for (size_t size : {1u, 2u, 8u}) {
      std::vector<uint8_t> data(size, 0xaa);
      transport.read(offset, data);
      EXPECT_EQ(data, std::vector<uint8_t>(size, 0)) << offset << " " << size;
      std::vector<uint8_t> zeros(size, 0);
      transport.write(offset, zeros);
    }
    if (offset % 4 != 0) {
      std::array<uint8_t, 4> data{0xaa, 0xaa, 0xaa, 0xaa};
      transport.read(offset, data);
      EXPECT_EQ(data, (std::array<uint8_t, 4>{})) << offset;
      transport.write(offset, std::array<uint8_t, 4>{});
    }
  }
  transport.read(0, std::span<uint8_t>());
  transport.write(kStatus, std::span<const uint8_t>());
  transport.read(0xffffffffffffffffull, std::span<uint8_t>());
  transport.write(0xfffffffffffffff0ull, std::array<uint8_t, 4>{});
  EXPECT_EQ(read32(kStatus), status);
  EXPECT_EQ(device.resets, resets);
  EXPECT_TRUE(notified.empty());
  // Write-only and reserved registers read as zero; read-only ones ignore writes.
  EXPECT_EQ(read32(kQueueNotify), 0u);
  EXPECT_EQ(read32(kInterruptAck), 0u);
  EXPECT_EQ(read32(0x0c4), 0u);
  write32(kMagicValue, 0);
  write32(kInterruptStatus, 0xffffffff);
  EXPECT_EQ(read32(kMagicValue), 0x74726976u);
}

}  // namespace
}  // namespace ember::virtio
