#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <mutex>
#include <vector>

#include "devices/pci/root.hpp"
#include "vmm/bus.hpp"
#include "vmm/error.hpp"

namespace ember {
namespace {

// Addresses chosen for the test; the machine uses layout::kPci*.
constexpr uint64_t kWindowBase = 0xc0000000;
constexpr uint64_t kWindowSize = 0x100000;
constexpr uint64_t kEcamBase = 0xe0000000;
constexpr uint64_t kEcamSize = 0x200000;  // Two buses, to see bus 1 read as absent.
constexpr uint16_t kConfigPort = 0xcf8;

// A function with a 4 KiB 32-bit BAR 0 and a 16 KiB 64-bit BAR 2 whose reads return
// 0xB0 | bar in the first byte and the offset after it, and which records writes.
class TestFunction : public PciFunction {
 public:
  TestFunction()
      : config_(PciIdentity{.vendor_id = 0x1234, .device_id = 0xabcd, .class_code = 0xff0000}) {
    config_.add_memory_bar({.index = 0, .size = 0x1000});
    config_.add_memory_bar({.index = 2, .size = 0x4000, .is_64bit = true});
  }
  void config_read(uint16_t offset, std::span<uint8_t> data) override {
    std::lock_guard lock(mutex_);
    config_.read(offset, data);
  }
  void config_write(uint16_t offset, std::span<const uint8_t> data) override {
    std::lock_guard lock(mutex_);
    config_.write(offset, data);
  }
  std::vector<PciBarDefinition> bar_definitions() const override { return config_.bars(); }
  void assign_bar(uint8_t index, uint64_t address) override {
    config_.set_bar_address(index, address);
  }
  void enable_memory_decoding() override { config_.set_command(0x2); }
  std::vector<PciBarRegion> decoded_bars() const override {
    std::lock_guard lock(mutex_);
    return config_.decoded_bars();
  }
  void bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i)
      data[i] = i == 0 ? static_cast<uint8_t>(0xb0 | index)
                       : static_cast<uint8_t>(offset >> (8 * (i - 1)));
  }
  void bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) override {
    writes.push_back({index, offset, data.size()});
  }
  void set_requester_id(uint16_t id) override { requester_id = id; }

  struct Write {
    uint8_t bar;
    uint64_t offset;
    size_t size;
    bool operator==(const Write&) const = default;
  };
  std::vector<Write> writes;
  uint16_t requester_id = 0xffff;

 private:
  mutable std::mutex mutex_;
  PciConfigSpace config_;
};

class PciRootTest : public ::testing::Test {
 protected:
  PciRootTest()
      : root(std::make_shared<PciRoot>(kWindowBase, kWindowSize)),
        function(std::make_shared<TestFunction>()),
        pio("pio"),
        mmio("mmio") {
    device = root->add(function);
    pio.insert(kConfigPort, 8, std::make_shared<PciConfigIo>(root));
    mmio.insert(kEcamBase, kEcamSize, std::make_shared<PciEcam>(root));
    mmio.insert(kWindowBase, kWindowSize, std::make_shared<PciMmioWindow>(root));
  }

  static uint64_t value(std::span<const uint8_t> bytes) {
    uint64_t result = 0;
    for (size_t i = 0; i < bytes.size(); ++i) result |= static_cast<uint64_t>(bytes[i]) << (8 * i);
    return result;
  }
  uint64_t bus_read(const Bus& bus, uint64_t address, size_t size) {
    std::array<uint8_t, 8> bytes{};
    bus.read(address, std::span(bytes).first(size));
    return value(std::span(bytes).first(size));
  }
  void bus_write(const Bus& bus, uint64_t address, uint64_t data, size_t size) {
    std::array<uint8_t, 8> bytes{};
    for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(data >> (8 * i));
    bus.write(address, std::span<const uint8_t>(bytes).first(size));
  }
  static uint32_t config_address(uint8_t bus, uint8_t device, uint8_t function, uint8_t reg) {
    return 0x80000000u | bus << 16 | device << 11 | function << 8 | reg;
  }
  // Mechanism #1.
  uint64_t cf8_read(uint8_t dev, uint16_t offset, size_t size, uint8_t bus = 0) {
    bus_write(pio, kConfigPort, config_address(bus, dev, 0, offset & 0xfc), 4);
    return bus_read(pio, kConfigPort + 4 + (offset & 3), size);
  }
  void cf8_write(uint8_t dev, uint16_t offset, uint64_t data, size_t size) {
    bus_write(pio, kConfigPort, config_address(0, dev, 0, offset & 0xfc), 4);
    bus_write(pio, kConfigPort + 4 + (offset & 3), data, size);
  }
  // ECAM.
  static uint64_t ecam(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t offset) {
    return kEcamBase + (uint64_t{bus} << 20 | uint64_t{dev} << 15 | uint64_t{fn} << 12 | offset);
  }
  uint64_t ecam_read(uint8_t dev, uint16_t offset, size_t size) {
    return bus_read(mmio, ecam(0, dev, 0, offset), size);
  }
  void ecam_write(uint8_t dev, uint16_t offset, uint64_t data, size_t size) {
    bus_write(mmio, ecam(0, dev, 0, offset), data, size);
  }

  std::shared_ptr<PciRoot> root;
  std::shared_ptr<TestFunction> function;
  Bus pio;
  Bus mmio;
  uint8_t device = 0;
};

TEST_F(PciRootTest, FunctionsGetDeviceNumbersFromOneAndRequesterIds) {
  EXPECT_EQ(device, 1);
  EXPECT_EQ(function->requester_id, 1u << 3);
  EXPECT_EQ(root->function(1), function);
  EXPECT_NE(root->function(0), nullptr);  // Host bridge.
  EXPECT_EQ(root->function(2), nullptr);
}

TEST_F(PciRootTest, MechanismOneReadsIdsOfTheHostBridgeAndTheFunction) {
  EXPECT_EQ(cf8_read(0, 0x00, 4), 0x00081b36u);  // Red Hat PCIe host bridge.
  EXPECT_EQ(cf8_read(0, 0x08, 4) >> 8, 0x060000u);
  EXPECT_EQ(cf8_read(device, 0x00, 4), 0xabcd1234u);
  EXPECT_EQ(cf8_read(device, 0x00, 2), 0x1234u);
  EXPECT_EQ(cf8_read(device, 0x02, 2), 0xabcdu);
  EXPECT_EQ(cf8_read(device, 0x03, 1), 0xabu);
  EXPECT_EQ(cf8_read(device, 0x0b, 1), 0xffu);           // Class 0xff.
  EXPECT_EQ(cf8_read(2, 0x00, 4), 0xffffffffu);          // Empty slot.
  EXPECT_EQ(cf8_read(device, 0x00, 4, 1), 0xffffffffu);  // Bus 1.
  // Function 1 of a single-function device is absent.
  bus_write(pio, kConfigPort, config_address(0, device, 1, 0), 4);
  EXPECT_EQ(bus_read(pio, kConfigPort + 4, 4), 0xffffffffu);
}

TEST_F(PciRootTest, ConfigAddressLatchNeedsTheEnableBitAndDwordAccess) {
  bus_write(pio, kConfigPort, config_address(0, device, 0, 0), 4);
  EXPECT_EQ(bus_read(pio, kConfigPort, 4), config_address(0, device, 0, 0));
  bus_write(pio, kConfigPort, 0x00000800, 4);  // Device 1 without the enable bit.
  EXPECT_EQ(bus_read(pio, kConfigPort + 4, 4), 0xffffffffu);
  bus_write(pio, kConfigPort, config_address(0, device, 0, 0), 4);
  bus_write(pio, kConfigPort + 1, 0, 1);  // Byte writes to 0xcf9 are not CONFIG_ADDRESS.
  EXPECT_EQ(bus_read(pio, kConfigPort, 4), config_address(0, device, 0, 0));
  EXPECT_EQ(bus_read(pio, kConfigPort, 2), 0xffffu);
  EXPECT_EQ(bus_read(pio, kConfigPort + 6, 4), 0xffffffffu);  // Past CONFIG_DATA's end.
}

TEST_F(PciRootTest, EcamReadsTheSameSpace) {
  EXPECT_EQ(ecam_read(0, 0x00, 4), 0x00081b36u);
  EXPECT_EQ(ecam_read(device, 0x00, 4), 0xabcd1234u);
  EXPECT_EQ(ecam_read(device, 0x02, 2), 0xabcdu);
  EXPECT_EQ(ecam_read(device, 0x00, 8) & 0xffffffff, 0xabcd1234u);  // QWORD = two DWORDs.
  EXPECT_EQ(ecam_read(3, 0x00, 4), 0xffffffffu);
  EXPECT_EQ(bus_read(mmio, ecam(1, device, 0, 0), 4), 0xffffffffu);  // Bus 1.
  EXPECT_EQ(bus_read(mmio, ecam(0, device, 2, 0), 4), 0xffffffffu);  // Function 2.
  EXPECT_EQ(ecam_read(device, 0x100, 4), 0u);  // Extended space exists, empty.
}

TEST_F(PciRootTest, BarsArePlacedAlignedInTheWindowWithMemoryEnabled) {
  EXPECT_EQ(ecam_read(device, 0x04, 2) & 0x2, 0x2u);
  const uint64_t bar0 = ecam_read(device, 0x10, 4);
  const uint64_t bar2 = ecam_read(device, 0x18, 4) | ecam_read(device, 0x1c, 4) << 32;
  EXPECT_EQ(bar0, kWindowBase);
  EXPECT_EQ(bar2 & 0xf, 0x4u);  // 64-bit memory.
  EXPECT_EQ((bar2 & ~0xfull) % 0x4000, 0u);
  EXPECT_GE(bar2 & ~0xfull, kWindowBase + 0x1000);
  EXPECT_EQ(bus_read(mmio, kWindowBase + 0x10, 4), 0x0010b0u);
  EXPECT_EQ(bus_read(mmio, (bar2 & ~0xfull) + 0x234, 2), 0x34b2u);
  bus_write(mmio, (bar2 & ~0xfull) + 0x3ff8, 0, 8);
  ASSERT_EQ(function->writes.size(), 1u);
  EXPECT_EQ(function->writes[0], (TestFunction::Write{2, 0x3ff8, 8}));
  // Between and after the BARs nothing answers.
  EXPECT_EQ(bus_read(mmio, kWindowBase + 0x1000, 4), 0xffffffffu);
  EXPECT_EQ(bus_read(mmio, kWindowBase + kWindowSize - 4, 4), 0xffffffffu);
}

TEST_F(PciRootTest, BarSizingAndReprogrammingMoveTheRoute) {
  cf8_write(device, 0x10, 0xffffffff, 4);
  EXPECT_EQ(cf8_read(device, 0x10, 4), 0xfffff000u);
  cf8_write(device, 0x10, kWindowBase + 0x80000, 4);
  EXPECT_EQ(cf8_read(device, 0x10, 4), kWindowBase + 0x80000);
  EXPECT_EQ(bus_read(mmio, kWindowBase, 4), 0xffffffffu);  // Old place.
  EXPECT_EQ(bus_read(mmio, kWindowBase + 0x80004, 4), 0x0004b0u);
  // A BAR moved outside the window decodes nothing (the bus never sends it there).
  ecam_write(device, 0x10, 0x10000000, 4);
  EXPECT_EQ(bus_read(mmio, kWindowBase + 0x80004, 4), 0xffffffffu);
}

TEST_F(PciRootTest, MemorySpaceEnableGatesBarDecoding) {
  ecam_write(device, 0x04, 0, 2);
  EXPECT_EQ(bus_read(mmio, kWindowBase, 4), 0xffffffffu);
  bus_write(mmio, kWindowBase, 1, 4);
  EXPECT_TRUE(function->writes.empty());
  cf8_write(device, 0x04, 0x2, 2);
  EXPECT_EQ(bus_read(mmio, kWindowBase, 1), 0xb0u);
}

TEST_F(PciRootTest, AccessesStraddlingABarEndAreDropped) {
  EXPECT_EQ(bus_read(mmio, kWindowBase + 0xffc, 8), 0xffffffffffffffffu);
  bus_write(mmio, kWindowBase + 0xffe, 0, 4);
  EXPECT_TRUE(function->writes.empty());
}

TEST(PciRoot, FullBusOrWindowThrows) {
  auto root = std::make_shared<PciRoot>(kWindowBase, 0x8000);
  EXPECT_EQ(root->add(std::make_shared<TestFunction>()), 1);  // 0x0-0xfff and 0x4000-0x7fff.
  EXPECT_THROW(root->add(std::make_shared<TestFunction>()), Error);
  EXPECT_EQ(root->function(2), nullptr);  // The failed add took no slot.
  EXPECT_THROW(root->add(nullptr), Error);
  EXPECT_THROW(PciRoot(0, 0), Error);

  auto big = std::make_shared<PciRoot>(kWindowBase, 0x1000000);
  for (int i = 1; i < 32; ++i) EXPECT_EQ(big->add(std::make_shared<TestFunction>()), i);
  EXPECT_THROW(big->add(std::make_shared<TestFunction>()), Error);
}

}  // namespace
}  // namespace ember
