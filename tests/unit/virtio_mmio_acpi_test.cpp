#include "boot/virtio_mmio_acpi.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "boot/acpi.hpp"
#include "boot/layout.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

constexpr size_t kHeaderSize = 36;  // ACPI table header (ACPI 6.5 §5.2.6).

TEST(VirtioMmioSlots, FollowTheLayout) {
  const VirtioMmioPlacement first = virtio_mmio_slot(0);
  EXPECT_EQ(first.index, 0u);
  EXPECT_EQ(first.base, 0xfe000000u);
  EXPECT_EQ(first.size, 0x200u);
  EXPECT_EQ(first.gsi, 16u);
  const VirtioMmioPlacement last = virtio_mmio_slot(7);
  EXPECT_EQ(last.base, 0xfe007000u);
  EXPECT_EQ(last.gsi, 23u);  // The last IOAPIC pin.
  EXPECT_THROW(virtio_mmio_slot(8), Error);
  // The reserved area holds every slot and stays below the IOAPIC.
  EXPECT_LE(layout::kVirtioMmioStart + layout::kVirtioMmioSlots * layout::kVirtioMmioSlotSize,
            layout::kVirtioMmioEnd);
  EXPECT_LE(layout::kVirtioMmioEnd, layout::kIoapicAddress);
  EXPECT_GE(layout::kVirtioMmioStart, layout::kMmioHoleStart);
  EXPECT_LE(layout::kVirtioMmioWindowSize, layout::kVirtioMmioSlotSize);
}

TEST(VirtioMmioCmdline, IsLinuxsDeviceParameter) {
  EXPECT_EQ(virtio_mmio_cmdline(virtio_mmio_slot(0)), "virtio_mmio.device=0x200@0xfe000000:16");
  EXPECT_EQ(virtio_mmio_cmdline(virtio_mmio_slot(3)), "virtio_mmio.device=0x200@0xfe003000:19");
}

TEST(VirtioMmioAml, RejectsWhatAcpiCannotDescribe) {
  EXPECT_THROW(virtio_mmio_acpi_device({256, 0xfe000000, 0x200, 16}), Error);
  EXPECT_THROW(virtio_mmio_acpi_device({0, 0xfffffe00, 0x400, 16}), Error);
  EXPECT_THROW(virtio_mmio_acpi_device({0, 0x100000000, 0x200, 16}), Error);
  EXPECT_THROW(virtio_mmio_acpi_device({0, 0xfe000000, 0, 16}), Error);
  EXPECT_THROW(virtio_mmio_acpi_device({0, 0xffffffffffffff00, 0x200, 16}), Error);
  EXPECT_NO_THROW(virtio_mmio_acpi_device({255, 0xfffffe00, 0x200, 16}));
}

// iasl (acpica-tools) compiles the same device written as ASL to the same bytes, and disassembles
// the DSDT ember builds with the devices in it.
class VirtioMmioIasl : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(std::system("command -v iasl >/dev/null 2>&1"), 0)
        << "iasl not found: install acpica-tools (apt-get install acpica-tools)";
    std::string pattern =
        (std::filesystem::temp_directory_path() / "ember-virtio-mmio-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Runs iasl with args in the temp dir; returns its exit status, output in *output.
  int iasl(const std::string& args, std::string* output) {
    const std::string command = "cd '" + dir_.string() + "' && iasl " + args + " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) return -1;
    std::array<char, 4096> chunk;
    while (size_t n = fread(chunk.data(), 1, chunk.size(), pipe)) output->append(chunk.data(), n);
    const int status = pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  void write_file(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
  }
  std::string read_file(const std::string& name) {
    std::ifstream file(dir_ / name, std::ios::binary);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  }
  static void expect_clean(const std::string& output) {
    EXPECT_EQ(output.find("Error  "), std::string::npos) << output;
    EXPECT_EQ(output.find("Warning  "), std::string::npos) << output;
  }

  std::filesystem::path dir_;
};

TEST_F(VirtioMmioIasl, DeviceMatchesCompiledAsl) {
  const aml::Bytes built = virtio_mmio_acpi_device(virtio_mmio_slot(2));
  write_file("vr.asl", R"(DefinitionBlock ("", "SSDT", 2, "EMBER ", "EMBRVIRT", 1) {
  Device (VR02) {
    Name (_HID, "LNRO0005")
    Name (_UID, 2)
    Name (_CCA, One)
    Name (_CRS, ResourceTemplate () {
      Memory32Fixed (ReadWrite, 0xFE002000, 0x00000200)
      Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {18}
    })
  }
})");
  std::string output;
  ASSERT_EQ(iasl("vr.asl", &output), 0) << output;
  expect_clean(output);
  const std::string compiled = read_file("vr.aml");
  ASSERT_GT(compiled.size(), kHeaderSize);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(built.data()), built.size()),
            compiled.substr(kHeaderSize));
}

TEST_F(VirtioMmioIasl, DsdtWithDevicesDisassembles) {
  AcpiConfig config;
  for (uint32_t index = 0; index < layout::kVirtioMmioMaxDevices; ++index) {
    config.extra_devices.push_back(virtio_mmio_acpi_device(virtio_mmio_slot(index)));
  }
  const AcpiTables tables = build_acpi_tables(config);
  const auto [address, length] = tables.tables.at("DSDT");
  const auto dsdt = std::span(tables.bytes).subspan(address - tables.base, length);
  write_file("dsdt.dat", std::string(reinterpret_cast<const char*>(dsdt.data()), dsdt.size()));
  std::string output;
  ASSERT_EQ(iasl("-d dsdt.dat", &output), 0) << output;
  expect_clean(output);
  const std::string dsl = read_file("dsdt.dsl");
  for (const char* expected :
       {"Device (VR00)", "Device (VR07)", "\"LNRO0005\"", "Name (_CCA, One)", "0xFE000000",
        "0xFE007000", "0x00000200", "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive",
        "0x00000010", "0x00000017"}) {
    EXPECT_NE(dsl.find(expected), std::string::npos) << expected << "\n" << dsl;
  }
  output.clear();
  EXPECT_EQ(iasl("dsdt.dsl", &output), 0) << output;
  expect_clean(output);
}

}  // namespace
}  // namespace ember::boot
