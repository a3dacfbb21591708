#include <gtest/gtest.h>

#include "fake_virtio_device.hpp"

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "devices/pci/root.hpp"
#include "devices/virtio/pci_transport.hpp"
#include "tests/unit/log_capture.hpp"
#include "vmm/bus.hpp"
#include "vmm/error.hpp"

namespace ember::virtio {
namespace {

// Offsets and values written out from virtio 1.2 §4.1 and PCI 3.0 on purpose, not taken from the
// transport's header.
constexpr uint64_t kWindowBase = 0xc0000000;
constexpr uint64_t kWindowSize = 0x1000000;
constexpr uint64_t kEcamBase = 0xe0000000;
constexpr uint64_t kEcamSize = 0x100000;

constexpr uint16_t kCommonDeviceFeatureSelect = 0x00;
constexpr uint16_t kCommonDeviceFeature = 0x04;
constexpr uint16_t kCommonDriverFeatureSelect = 0x08;
constexpr uint16_t kCommonDriverFeature = 0x0c;
constexpr uint16_t kCommonConfigMsixVector = 0x10;
constexpr uint16_t kCommonNumQueues = 0x12;
constexpr uint16_t kCommonDeviceStatus = 0x14;
constexpr uint16_t kCommonConfigGeneration = 0x15;
constexpr uint16_t kCommonQueueSelect = 0x16;
constexpr uint16_t kCommonQueueSize = 0x18;
constexpr uint16_t kCommonQueueMsixVector = 0x1a;
constexpr uint16_t kCommonQueueEnable = 0x1c;
constexpr uint16_t kCommonQueueNotifyOff = 0x1e;
constexpr uint16_t kCommonQueueDesc = 0x20;
constexpr uint16_t kCommonQueueDriver = 0x28;
constexpr uint16_t kCommonQueueDevice = 0x30;


using test::FakeDevice;
using test::kDeviceOwnFeature;
using test::kQueueCount;
using test::kQueueMaxSize;

class RecordingSink : public MsiSink {
 public:
  void configure(uint32_t, uint16_t vector, uint64_t address, uint32_t data, bool masked) override {
    configured[vector] = {address, data, masked};
  }
  void trigger(uint32_t requester, uint16_t vector) override {
    triggers.push_back(vector);
    last_requester = requester;
  }
  struct Message {
    uint64_t address;
    uint32_t data;
    bool masked;
  };
  std::map<uint16_t, Message> configured;
  std::vector<uint16_t> triggers;
  uint32_t last_requester = 0;
};

struct VendorCap {
  uint16_t at;
  uint8_t length;
  uint8_t type;
  uint8_t bar;
  uint32_t offset;
  uint32_t region_length;
};

class VirtioPciTest : public ::testing::Test {
 protected:
  VirtioPciTest()
      : memory({{0, 1 << 20}}),
        sink(std::make_shared<RecordingSink>()),
        transport(std::make_shared<VirtioPciTransport>(std::make_unique<FakeDevice>(DeviceType::kNet), memory, loop,
                                                       sink,
                                                       [this](uint16_t queue) {
                                                         notified.push_back(queue);
                                                         transport->notify(queue);
                                                       })),
        device(static_cast<FakeDevice&>(transport->device())),
        root(std::make_shared<PciRoot>(kWindowBase, kWindowSize)),
        mmio("mmio") {
    slot = root->add(transport);
    mmio.insert(kEcamBase, kEcamSize, std::make_shared<PciEcam>(root));
    mmio.insert(kWindowBase, kWindowSize, std::make_shared<PciMmioWindow>(root));
    bar = cfg(0x10, 4) & ~0xfull;
    bar |= cfg(0x14, 4) << 32;
    for (const VendorCap& cap : vendor_caps()) caps[cap.type] = cap;
  }
  ~VirtioPciTest() override { EXPECT_EQ(device.unlocked_calls, 0); }

  static uint64_t value(std::span<const uint8_t> bytes) {
    uint64_t result = 0;
    for (size_t i = 0; i < bytes.size(); ++i) result |= static_cast<uint64_t>(bytes[i]) << (8 * i);
    return result;
  }
  uint64_t read(uint64_t address, size_t size) {
    std::array<uint8_t, 8> bytes{};
    mmio.read(address, std::span(bytes).first(size));
    return value(std::span(bytes).first(size));
  }
  void write(uint64_t address, uint64_t data, size_t size) {
    std::array<uint8_t, 8> bytes{};
    for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(data >> (8 * i));
    mmio.write(address, std::span<const uint8_t>(bytes).first(size));
  }
  uint64_t cfg(uint16_t offset, size_t size) {
    return read(kEcamBase + (uint64_t{slot} << 15) + offset, size);
  }
  void cfg_write(uint16_t offset, uint64_t data, size_t size) {
    write(kEcamBase + (uint64_t{slot} << 15) + offset, data, size);
  }
  std::vector<VendorCap> vendor_caps() {
    std::vector<VendorCap> found;
    for (uint16_t at = cfg(0x34, 1); at != 0 && found.size() < 48; at = cfg(at + 1, 1)) {
      if (cfg(at, 1) != 0x09) continue;
      found.push_back({at, static_cast<uint8_t>(cfg(at + 2, 1)),
                       static_cast<uint8_t>(cfg(at + 3, 1)), static_cast<uint8_t>(cfg(at + 4, 1)),
                       static_cast<uint32_t>(cfg(at + 8, 4)),
                       static_cast<uint32_t>(cfg(at + 12, 4))});
    }
    return found;
  }
  uint16_t msix_cap() {
    for (uint16_t at = cfg(0x34, 1); at != 0; at = cfg(at + 1, 1))
      if (cfg(at, 1) == 0x11) return at;
    return 0;
  }
  uint64_t region(uint8_t type) { return bar + caps.at(type).offset; }
  uint64_t common(uint16_t offset, size_t size) { return read(region(1) + offset, size); }
  void common_write(uint16_t offset, uint64_t data, size_t size) {
    write(region(1) + offset, data, size);
  }
  uint8_t status() { return static_cast<uint8_t>(common(kCommonDeviceStatus, 1)); }
  void set_status(uint8_t value) { common_write(kCommonDeviceStatus, value, 1); }

  bool negotiate(uint64_t features) {
    set_status(0);
    set_status(kStatusAcknowledge);
    set_status(kStatusAcknowledge | kStatusDriver);
    common_write(kCommonDriverFeatureSelect, 0, 4);
    common_write(kCommonDriverFeature, static_cast<uint32_t>(features), 4);
    common_write(kCommonDriverFeatureSelect, 1, 4);
    common_write(kCommonDriverFeature, features >> 32, 4);
    set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    return (status() & kStatusFeaturesOk) != 0;
  }
  void setup_queue(uint16_t index, uint16_t size, uint64_t base, uint16_t vector = 0xffff) {
    common_write(kCommonQueueSelect, index, 2);
    common_write(kCommonQueueSize, size, 2);
    common_write(kCommonQueueMsixVector, vector, 2);
    common_write(kCommonQueueDesc, base, 4);  // Low then high half, as Linux does.
    common_write(kCommonQueueDesc + 4, base >> 32, 4);
    common_write(kCommonQueueDriver, base + 0x400, 8);  // Or one QWORD.
    common_write(kCommonQueueDevice, base + 0x800, 4);
    common_write(kCommonQueueDevice + 4, 0, 4);
    common_write(kCommonQueueEnable, 1, 2);
  }
  static constexpr uint8_t kBeforeDriverOk = kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk;
  uint8_t start(uint64_t features = kFeatureVersion1) {
    EXPECT_TRUE(negotiate(features));
    setup_queue(0, kQueueMaxSize, 0x10000, 1);
    setup_queue(1, 8, 0x11000, 2);
    set_status(kBeforeDriverOk | kStatusDriverOk);
    return status();
  }
  // §4.1.4.4: cap.offset + queue_notify_off * notify_off_multiplier; Linux writes the index, 16
  // bits.
  void notify(uint16_t queue) {
    common_write(kCommonQueueSelect, queue, 2);
    const uint64_t notify_off = common(kCommonQueueNotifyOff, 2);
    write(region(2) + notify_off * notify_multiplier(), queue, 2);
  }
  uint32_t notify_multiplier() { return static_cast<uint32_t>(cfg(caps.at(2).at + 16, 4)); }
  void enable_msix() {
    const uint16_t at = msix_cap();
    cfg_write(at + 2, 0x8000, 2);
  }
  uint64_t msix_table() { return bar + (cfg(msix_cap() + 4, 4) & ~7ull); }
  uint64_t msix_pba() { return bar + (cfg(msix_cap() + 8, 4) & ~7ull); }
  void program_vector(uint16_t vector, uint32_t data, bool masked) {
    const uint64_t entry = msix_table() + 16ull * vector;
    write(entry, 0xfee00000, 4);
    write(entry + 4, 0, 4);
    write(entry + 8, data, 4);
    write(entry + 12, masked ? 1 : 0, 4);
  }

  GuestMemory memory;
  EventLoop loop;
  std::shared_ptr<RecordingSink> sink;
  std::vector<uint16_t> notified;
  std::shared_ptr<VirtioPciTransport> transport;
  FakeDevice& device;
  std::shared_ptr<PciRoot> root;
  Bus mmio;
  uint8_t slot = 0;
  uint64_t bar = 0;
  std::map<uint8_t, VendorCap> caps;
};

TEST_F(VirtioPciTest, HeaderIdentifiesAModernVirtioNetDevice) {
  EXPECT_EQ(cfg(0x00, 2), 0x1af4u);
  EXPECT_EQ(cfg(0x02, 2), 0x1041u);  // 0x1040 + 1 (net).
  EXPECT_EQ(cfg(0x08, 1), 1u);       // Revision 1: non-transitional.
  EXPECT_EQ(cfg(0x09, 3), 0x020000u);
  EXPECT_EQ(cfg(0x0e, 1), 0u);
  EXPECT_EQ(cfg(0x2c, 2), 0x1af4u);
  EXPECT_GE(cfg(0x2e, 2), 0x40u);
  EXPECT_NE(cfg(0x06, 2) & 0x10, 0u);  // Capabilities list.
  EXPECT_EQ(cfg(0x3d, 1), 0u);         // No INTx pin.
  EXPECT_EQ(cfg(0x18, 4), 0u);         // Only BAR 0/1 (64-bit) is implemented.
}

TEST_F(VirtioPciTest, ClassCodesFollowTheDeviceType) {
  EXPECT_EQ(pci::class_code(DeviceType::kNet), 0x020000u);
  EXPECT_EQ(pci::class_code(DeviceType::kBlock), 0x010000u);
  EXPECT_EQ(pci::class_code(DeviceType::kConsole), 0x078000u);
  EXPECT_EQ(pci::class_code(DeviceType::kEntropy), 0x00ff00u);
}

TEST_F(VirtioPciTest, BarIsA64BitMemoryBarThatSizes) {
  const uint64_t size = transport->bar_size();
  EXPECT_GE(size, 0x4000u);
  EXPECT_EQ(cfg(0x10, 4) & 0xf, 0x4u);
  EXPECT_EQ(bar % size, 0u);
  EXPECT_GE(bar, kWindowBase);
  cfg_write(0x04, 0, 2);
  cfg_write(0x10, 0xffffffff, 4);
  cfg_write(0x14, 0xffffffff, 4);
  EXPECT_EQ(cfg(0x10, 4), (~(size - 1) & 0xffffffff) | 0x4);
  EXPECT_EQ(cfg(0x14, 4), 0xffffffffu);
}

TEST_F(VirtioPciTest, CapabilitiesDescribeEveryRegion) {
  const auto found = vendor_caps();
  ASSERT_EQ(found.size(), 5u);
  for (uint8_t type = 1; type <= 5; ++type) ASSERT_TRUE(caps.contains(type)) << int{type};
  for (const VendorCap& cap : found) {
    EXPECT_EQ(cap.bar, 0) << int{cap.type};
    EXPECT_EQ(cap.at % 4, 0u);
    EXPECT_EQ(cap.length, cap.type == 2 || cap.type == 5 ? 20 : 16);
    if (cap.type != 5) {
      EXPECT_LE(uint64_t{cap.offset} + cap.region_length, transport->bar_size());
    }
  }
  EXPECT_GE(caps[1].region_length, 0x38u);  // Common configuration through queue_device.
  EXPECT_GE(caps[3].region_length, 1u);
  EXPECT_EQ(caps[2].offset % 2, 0u);
  EXPECT_EQ(notify_multiplier(), 4u);
  EXPECT_GE(caps[2].region_length, kQueueCount * 4u);
  // Regions do not overlap.
  for (const auto& [a_type, a] : caps) {
    for (const auto& [b_type, b] : caps) {
      if (a_type < b_type && a_type != 5 && b_type != 5) {
        EXPECT_TRUE(a.offset + a.region_length <= b.offset ||
                    b.offset + b.region_length <= a.offset);
      }
    }
  }
  // MSI-X: one vector for configuration plus one per queue, table and PBA in BAR 0.
  const uint16_t at = msix_cap();
  ASSERT_NE(at, 0);
  EXPECT_EQ(cfg(at + 2, 2) & 0x7ff, kQueueCount);
  EXPECT_EQ(cfg(at + 4, 4) & 7, 0u);
  EXPECT_EQ(cfg(at + 8, 4) & 7, 0u);
  EXPECT_LE((cfg(at + 8, 4) & ~7ull) + 8, transport->bar_size());
}

TEST_F(VirtioPciTest, FeaturesAreOfferedInTwoWords) {
  common_write(kCommonDeviceFeatureSelect, 0, 4);
  EXPECT_EQ(
      common(kCommonDeviceFeature, 4),
      static_cast<uint32_t>(kDeviceOwnFeature | kFeatureEventIndex | kFeatureIndirectDescriptors));
  common_write(kCommonDeviceFeatureSelect, 1, 4);
  EXPECT_EQ(common(kCommonDeviceFeature, 4), 1u);  // VERSION_1.
  common_write(kCommonDeviceFeatureSelect, 2, 4);
  EXPECT_EQ(common(kCommonDeviceFeature, 4), 0u);
  EXPECT_EQ(common(kCommonNumQueues, 2), kQueueCount);
}

TEST_F(VirtioPciTest, FeaturesOkNeedsVersion1AndOnlyOfferedBits) {
  EXPECT_FALSE(negotiate(kDeviceOwnFeature));
  EXPECT_FALSE(negotiate(kFeatureVersion1 | (1ull << 5)));
  EXPECT_FALSE(negotiate(kFeatureVersion1 | (1ull << 40)));
  EXPECT_TRUE(negotiate(kFeatureVersion1 | kDeviceOwnFeature | kFeatureEventIndex));
  // Driver features read back, and are frozen after FEATURES_OK.
  common_write(kCommonDriverFeatureSelect, 0, 4);
  EXPECT_EQ(common(kCommonDriverFeature, 4), kDeviceOwnFeature | kFeatureEventIndex);
  common_write(kCommonDriverFeature, 0, 4);
  EXPECT_EQ(common(kCommonDriverFeature, 4), kDeviceOwnFeature | kFeatureEventIndex);
}

TEST_F(VirtioPciTest, QueueRegistersReadBackPerSelectedQueue) {
  common_write(kCommonQueueSelect, 1, 2);
  EXPECT_EQ(common(kCommonQueueSize, 2), kQueueMaxSize);
  EXPECT_EQ(common(kCommonQueueNotifyOff, 2), 1u);
  EXPECT_EQ(common(kCommonQueueMsixVector, 2), 0xffffu);
  setup_queue(1, 8, 0x1'0000'2000, 2);
  EXPECT_EQ(common(kCommonQueueSize, 2), 8u);
  EXPECT_EQ(common(kCommonQueueDesc, 8), 0x1'0000'2000u);
  EXPECT_EQ(common(kCommonQueueDriver, 4), 0x2400u);
  EXPECT_EQ(common(kCommonQueueDriver + 4, 4), 1u);
  EXPECT_EQ(common(kCommonQueueDevice, 8), 0x2800u);
  EXPECT_EQ(common(kCommonQueueEnable, 2), 1u);
  EXPECT_EQ(common(kCommonQueueMsixVector, 2), 2u);
  // Enabled: the set-up is fixed.
  common_write(kCommonQueueSize, 4, 2);
  common_write(kCommonQueueDesc, 0, 8);
  EXPECT_EQ(common(kCommonQueueSize, 2), 8u);
  EXPECT_EQ(common(kCommonQueueDesc, 8), 0x1'0000'2000u);
  common_write(kCommonQueueSelect, 0, 2);
  EXPECT_EQ(common(kCommonQueueEnable, 2), 0u);
  // Vectors beyond the table read back as NO_VECTOR.
  common_write(kCommonQueueMsixVector, 3, 2);
  EXPECT_EQ(common(kCommonQueueMsixVector, 2), 0xffffu);
  common_write(kCommonConfigMsixVector, 0, 2);
  EXPECT_EQ(common(kCommonConfigMsixVector, 2), 0u);
  common_write(kCommonConfigMsixVector, 7, 2);
  EXPECT_EQ(common(kCommonConfigMsixVector, 2), 0xffffu);
}

TEST_F(VirtioPciTest, OutOfRangeQueueSelectReadsZeroAndIgnoresWrites) {
  common_write(kCommonQueueSelect, kQueueCount, 2);
  EXPECT_EQ(common(kCommonQueueSize, 2), 0u);
  common_write(kCommonQueueSize, 4, 2);
  common_write(kCommonQueueEnable, 1, 2);
  common_write(kCommonQueueDesc, 0x1000, 8);
  EXPECT_EQ(common(kCommonQueueSize, 2), 0u);
  EXPECT_EQ(common(kCommonQueueEnable, 2), 0u);
  common_write(kCommonQueueSelect, 0xffff, 2);
  EXPECT_EQ(common(kCommonQueueSelect, 2), 0xffffu);
  EXPECT_EQ(common(kCommonQueueDesc, 8), 0u);
}

TEST_F(VirtioPciTest, DriverOkActivatesTheDeviceWithItsQueues) {
  const uint8_t final_status = start(kFeatureVersion1 | kFeatureEventIndex);
  EXPECT_EQ(final_status, kBeforeDriverOk | kStatusDriverOk);
  EXPECT_EQ(device.activations, 1);
  EXPECT_EQ(device.activated_features, kFeatureVersion1 | kFeatureEventIndex);
  EXPECT_EQ(device.activated_queues, (std::vector<bool>{true, true}));
  notify(1);
  notify(0);
  EXPECT_EQ(notified, (std::vector<uint16_t>{1, 0}));
  EXPECT_EQ(device.processed, (std::vector<uint16_t>{1, 0}));
  // Writing DRIVER_OK again does not activate twice.
  set_status(kBeforeDriverOk | kStatusDriverOk);
  EXPECT_EQ(device.activations, 1);
}

TEST_F(VirtioPciTest, DisabledQueuesStayInactive) {
  ASSERT_TRUE(negotiate(kFeatureVersion1));
  setup_queue(0, 4, 0x10000);
  set_status(kBeforeDriverOk | kStatusDriverOk);
  EXPECT_EQ(device.activated_queues, (std::vector<bool>{true, false}));
  transport->notify(1);
  EXPECT_TRUE(device.processed.empty());
}

TEST_F(VirtioPciTest, NotificationsBeforeDriverOkAreIgnored) {
  ASSERT_TRUE(negotiate(kFeatureVersion1));
  setup_queue(0, 4, 0x10000);
  notify(0);
  transport->notify(0);
  transport->notify(77);
  EXPECT_TRUE(device.processed.empty());
  EXPECT_EQ(device.activations, 0);
}

TEST_F(VirtioPciTest, BadQueueSetUpEndsInNeedsReset) {
  ASSERT_TRUE(negotiate(kFeatureVersion1));
  setup_queue(0, 0xffff, 0x10000, 1);  // Giant, not a power of two, beyond the maximum.
  set_status(kBeforeDriverOk | kStatusDriverOk);
  EXPECT_NE(status() & kStatusNeedsReset, 0);
  EXPECT_EQ(device.activations, 0);
  notify(0);
  EXPECT_TRUE(device.processed.empty());
  // Rings outside guest memory too.
  ASSERT_TRUE(negotiate(kFeatureVersion1));
  EXPECT_EQ(status() & kStatusNeedsReset, 0);
  setup_queue(0, 8, 0xffff'ffff'f000);
  set_status(kBeforeDriverOk | kStatusDriverOk);
  EXPECT_NE(status() & kStatusNeedsReset, 0);
  EXPECT_EQ(device.activations, 0);
}

TEST_F(VirtioPciTest, DeviceRefusingOrThrowingEndsInNeedsResetWithAConfigInterrupt) {
  enable_msix();
  program_vector(0, 0x40, false);
  device.accept_activation = false;
  ASSERT_TRUE(negotiate(kFeatureVersion1));
  common_write(kCommonConfigMsixVector, 0, 2);
  setup_queue(0, 4, 0x10000);
  set_status(kBeforeDriverOk | kStatusDriverOk);
  EXPECT_NE(status() & kStatusNeedsReset, 0);
  EXPECT_EQ(sink->triggers, std::vector<uint16_t>{0});
  device.accept_activation = true;
  device.throw_on_activate = true;
  ASSERT_TRUE(negotiate(kFeatureVersion1));
  setup_queue(0, 4, 0x10000);
  set_status(kBeforeDriverOk | kStatusDriverOk);
  EXPECT_NE(status() & kStatusNeedsReset, 0);
  EXPECT_EQ(device.resets, 1);  // The second negotiate() undid the first activation.
}

TEST_F(VirtioPciTest, NeedsResetOverAndOverIsOneWarning) {
  ::ember::test::LogCapture captured;
  for (int round = 0; round < 50; ++round) {
    ASSERT_TRUE(negotiate(kFeatureVersion1));
    setup_queue(0, 3, 0x10000);  // Not a power of two.
    set_status(kBeforeDriverOk | kStatusDriverOk);
    ASSERT_NE(status() & kStatusNeedsReset, 0);
  }
  EXPECT_EQ(captured.lines_with("device needs reset"), 1) << captured.text();
}

TEST_F(VirtioPciTest, DriverOkWithoutFeaturesOkNeedsReset) {
  set_status(kStatusAcknowledge | kStatusDriver | kStatusDriverOk);
  EXPECT_NE(status() & kStatusNeedsReset, 0);
  EXPECT_EQ(device.activations, 0);
}

TEST_F(VirtioPciTest, ResetClearsEverything) {
  start();
  common_write(kCommonConfigMsixVector, 0, 2);
  device.interrupts()->queue_used(0);
  set_status(0);
  EXPECT_EQ(device.resets, 1);
  EXPECT_EQ(status(), 0);
  EXPECT_EQ(common(kCommonConfigMsixVector, 2), 0xffffu);
  EXPECT_EQ(read(region(3), 1), 0u);  // ISR cleared.
  common_write(kCommonDriverFeatureSelect, 0, 4);
  EXPECT_EQ(common(kCommonDriverFeature, 4), 0u);
  for (uint16_t queue = 0; queue < kQueueCount; ++queue) {
    common_write(kCommonQueueSelect, queue, 2);
    EXPECT_EQ(common(kCommonQueueEnable, 2), 0u);
    EXPECT_EQ(common(kCommonQueueSize, 2), kQueueMaxSize);
    EXPECT_EQ(common(kCommonQueueDesc, 8), 0u);
    EXPECT_EQ(common(kCommonQueueMsixVector, 2), 0xffffu);
  }
  notify(0);
  EXPECT_TRUE(device.processed.empty());
  // And the device can start again.
  EXPECT_EQ(start(), kBeforeDriverOk | kStatusDriverOk);
  EXPECT_EQ(device.activations, 2);
}

TEST_F(VirtioPciTest, IsrIsReadToClear) {
  start();
  device.interrupts()->queue_used(0);
  EXPECT_EQ(read(region(3), 1), 1u);
  EXPECT_EQ(read(region(3), 1), 0u);
  device.interrupts()->config_changed();
  device.interrupts()->queue_used(1);
  EXPECT_EQ(read(region(3), 4), 3u);
  EXPECT_EQ(read(region(3), 4), 0u);
}

TEST_F(VirtioPciTest, ConfigChangeBumpsTheGeneration) {
  start();
  const uint64_t before = common(kCommonConfigGeneration, 1);
  device.interrupts()->config_changed();
  EXPECT_EQ(common(kCommonConfigGeneration, 1), (before + 1) & 0xff);
}

TEST_F(VirtioPciTest, MsixVectorsReachTheSink) {
  enable_msix();
  program_vector(0, 0x40, false);
  program_vector(1, 0x41, false);
  program_vector(2, 0x42, true);
  EXPECT_FALSE(sink->configured.at(1).masked);
  EXPECT_EQ(sink->configured.at(1).data, 0x41u);
  EXPECT_EQ(sink->configured.at(1).address, 0xfee00000u);
  EXPECT_TRUE(sink->configured.at(2).masked);
  start();  // Queue 0 -> vector 1, queue 1 -> vector 2.
  common_write(kCommonConfigMsixVector, 0, 2);
  device.interrupts()->queue_used(0);
  device.interrupts()->config_changed();
  EXPECT_EQ(sink->triggers, (std::vector<uint16_t>{1, 0}));
  EXPECT_EQ(sink->last_requester, uint32_t{slot} << 3);
  // Vector 2 is masked: pending, then delivered on unmask.
  device.interrupts()->queue_used(1);
  EXPECT_EQ(sink->triggers.size(), 2u);
  EXPECT_EQ(read(msix_pba(), 8), 0b100u);
  write(msix_table() + 2 * 16 + 12, 0, 4);
  EXPECT_EQ(sink->triggers, (std::vector<uint16_t>{1, 0, 2}));
  EXPECT_EQ(read(msix_pba(), 8), 0u);
}

TEST_F(VirtioPciTest, InterruptsAreDroppedWithoutMsix) {
  start();
  device.interrupts()->queue_used(0);
  EXPECT_TRUE(sink->triggers.empty());
  EXPECT_EQ(read(region(3), 1), 1u);  // The ISR still says so.
}

TEST_F(VirtioPciTest, DeviceConfigurationIsTheDevicesOwn) {
  EXPECT_EQ(read(region(4), 4), 0x04030201u);
  EXPECT_EQ(read(region(4) + 6, 2), 0x0807u);
  EXPECT_EQ(read(region(4) + 0x100, 4), 0u);
  write(region(4) + 1, 0xaa, 1);
  EXPECT_EQ(device.config[1], 0xaa);
}

TEST_F(VirtioPciTest, PciCfgCapabilityReachesTheBar) {
  const uint16_t at = caps.at(5).at;
  cfg_write(at + 4, 0, 1);  // BAR 0.
  cfg_write(at + 8, caps.at(1).offset + kCommonNumQueues, 4);
  cfg_write(at + 12, 2, 4);
  EXPECT_EQ(cfg(at + 16, 2), kQueueCount);
  // A write through it: device_feature_select = 1, then device_feature reads VERSION_1.
  cfg_write(at + 8, caps.at(1).offset + kCommonDeviceFeatureSelect, 4);
  cfg_write(at + 12, 4, 4);
  cfg_write(at + 16, 1, 4);
  EXPECT_EQ(common(kCommonDeviceFeatureSelect, 4), 1u);
  // Bad lengths and BARs do nothing.
  cfg_write(at + 12, 3, 4);
  cfg_write(at + 16, 0, 4);
  cfg_write(at + 4, 5, 1);
  cfg_write(at + 12, 4, 4);
  cfg_write(at + 16, 0, 4);
  EXPECT_EQ(common(kCommonDeviceFeatureSelect, 4), 1u);
}

TEST_F(VirtioPciTest, NotifyRegionsFollowTheBar) {
  std::vector<std::vector<NotifyRegion>> changes;
  transport->set_notify_regions_handler(
      [&](const std::vector<NotifyRegion>& regions) { changes.push_back(regions); });
  auto regions = transport->notify_regions();
  ASSERT_EQ(regions.size(), kQueueCount);
  EXPECT_EQ(regions[1].address, region(2) + notify_multiplier());
  EXPECT_EQ(regions[1].queue, 1);
  EXPECT_EQ(regions[1].length, 4u);
  cfg_write(0x04, 0, 2);  // Decoding off: no regions.
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].empty());
  const uint64_t moved = kWindowBase + 0x800000;
  cfg_write(0x10, moved, 4);
  EXPECT_EQ(changes.size(), 1u);  // Still not decoding.
  cfg_write(0x04, 0x6, 2);
  ASSERT_EQ(changes.size(), 2u);
  ASSERT_EQ(changes[1].size(), kQueueCount);
  EXPECT_EQ(changes[1][0].address, moved + caps.at(2).offset);
  cfg_write(0x3c, 0xff, 1);  // Unrelated writes do not call.
  EXPECT_EQ(changes.size(), 2u);
  // The registers answer at the new place.
  bar = moved;
  EXPECT_EQ(common(kCommonNumQueues, 2), kQueueCount);
}

TEST_F(VirtioPciTest, HostileAccessesDoNotCrash) {
  const uint64_t size = transport->bar_size();
  for (int round = 0; round < 2; ++round) {
    if (round == 1) start();
    for (uint64_t offset = 0; offset < size; offset += (offset < 0x60 ? 1 : 0x3f)) {
      for (size_t width : {1, 2, 4, 8}) {
        read(bar + offset, width);
        if (offset >= 0x14 && offset < 0x16) continue;  // Status writes are covered below.
        write(bar + offset, 0xdeadbeefcafef00d, width);
      }
    }
    for (uint16_t offset = 0; offset < 0x1000; offset += 3) cfg(offset, 2);
  }
  // Odd-width writes to common registers are ignored.
  common_write(kCommonQueueSelect, 0, 2);
  const uint64_t size_before = common(kCommonQueueSize, 2);
  common_write(kCommonQueueSize, 2, 1);
  common_write(kCommonQueueSize, 2, 4);
  EXPECT_EQ(common(kCommonQueueSize, 2), size_before);
  common_write(kCommonDeviceStatus, 0xffff, 2);  // Status is a byte register.
  common_write(kCommonNumQueues, 9, 2);
  EXPECT_EQ(common(kCommonNumQueues, 2), kQueueCount);
  EXPECT_EQ(common(0x38, 4), 0u);  // Past the common configuration.
}

TEST(VirtioPciTransport, RejectsBadSetUps) {
  GuestMemory memory({{0, 1 << 20}});
  EventLoop loop;
  auto sink = std::make_shared<RecordingSink>();
  EXPECT_THROW(VirtioPciTransport(nullptr, memory, loop, sink), Error);
  EXPECT_THROW(VirtioPciTransport(std::make_unique<FakeDevice>(DeviceType::kNet), memory, loop, nullptr), Error);
}

}  // namespace
}  // namespace ember::virtio
