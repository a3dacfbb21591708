#include "boot/pci_acpi.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "boot/acpi.hpp"
#include "boot/aml.hpp"
#include "boot/layout.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

uint64_t le(std::span<const std::byte> bytes, size_t offset, size_t size) {
  uint64_t value = 0;
  for (size_t i = 0; i < size; ++i)
    value |= std::to_integer<uint64_t>(bytes[offset + i]) << (8 * i);
  return value;
}

bool contains(std::span<const std::byte> haystack, std::string_view needle) {
  const std::string text(reinterpret_cast<const char*>(haystack.data()), haystack.size());
  return text.find(needle) != std::string::npos;
}

TEST(PciAcpi, McfgHasOneAllocationForBusZero) {
  const auto mcfg = pci_mcfg_table({});
  // Written out from PCI Firmware 3.2 Table 4-3: 36-byte header, 8 reserved, one 16-byte entry.
  ASSERT_EQ(mcfg.size(), 60u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(mcfg.data()), 4), "MCFG");
  EXPECT_EQ(le(mcfg, 4, 4), 60u);
  EXPECT_EQ(acpi_checksum(mcfg), 0);
  EXPECT_EQ(le(mcfg, 44, 8), layout::kPciEcamBase);
  EXPECT_EQ(le(mcfg, 52, 2), 0u);  // Segment.
  EXPECT_EQ(le(mcfg, 54, 1), 0u);  // Start bus.
  EXPECT_EQ(le(mcfg, 55, 1), 0u);  // End bus.
  EXPECT_EQ(pci_ecam_size({}), layout::kPciEcamSize);
}

TEST(PciAcpi, LayoutKeepsPciClearOfEverythingElse) {
  EXPECT_GE(layout::kPciMmioBase, layout::kMmioHoleStart);
  EXPECT_LE(layout::kPciMmioBase + layout::kPciMmioSize, layout::kPciEcamBase);
  EXPECT_LE(layout::kPciEcamBase + layout::kPciEcamSize, layout::kVirtioMmioStart);
  EXPECT_LE(layout::kVirtioMmioEnd, layout::kIoapicAddress);
  EXPECT_EQ(layout::kPciEcamBase % layout::kPciEcamSize, 0u);
}

TEST(PciAcpi, AddsTheTableAndBothDevices) {
  AcpiConfig acpi;
  add_pci_to_acpi(acpi);
  ASSERT_EQ(acpi.extra_tables.size(), 1u);
  ASSERT_EQ(acpi.extra_devices.size(), 2u);
  const auto tables = build_acpi_tables(acpi);
  ASSERT_TRUE(tables.tables.contains("MCFG"));
  const auto& [dsdt_address, dsdt_length] = tables.tables.at("DSDT");
  const auto dsdt = std::span(tables.bytes).subspan(dsdt_address - tables.base, dsdt_length);
  EXPECT_TRUE(contains(dsdt, "PCI0"));
  EXPECT_TRUE(contains(dsdt, "PRES"));
}

TEST(PciAcpi, RejectsWindowsAbove4G) {
  PciAcpiConfig config;
  config.mmio_base = 0x1'0000'0000;
  EXPECT_THROW(pci_host_bridge_device(config), Error);
  config = {};
  config.mmio_size = 0;
  EXPECT_THROW(pci_host_bridge_device(config), Error);
  config = {};
  config.ecam_base = 0xfff00000;
  config.last_bus = 1;
  EXPECT_THROW(pci_ecam_reservation_device(config), Error);
}

// iasl (acpica-tools) disassembles what ember writes and compiles it again.
class PciAcpiIasl : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(std::system("command -v iasl >/dev/null 2>&1"), 0)
        << "iasl not found: install acpica-tools (apt-get install acpica-tools)";
    std::string pattern =
        (std::filesystem::temp_directory_path() / "ember-pci-acpi-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::pair<int, std::string> iasl(const std::string& args) {
    const std::string command = "cd '" + dir_.string() + "' && iasl " + args + " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) return {-1, "popen failed"};
    std::string output;
    std::array<char, 4096> chunk;
    while (size_t n = fread(chunk.data(), 1, chunk.size(), pipe)) output.append(chunk.data(), n);
    const int status = pclose(pipe);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
  }
  std::string disassemble(const std::string& name, std::span<const std::byte> bytes) {
    {
      std::ofstream file(dir_ / (name + ".dat"), std::ios::binary);
      file.write(reinterpret_cast<const char*>(bytes.data()),
                 static_cast<std::streamsize>(bytes.size()));
    }
    const auto [status, output] = iasl("-d " + name + ".dat");
    EXPECT_EQ(status, 0) << output;
    std::ifstream file(dir_ / (name + ".dsl"), std::ios::binary);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  }
  static void expect_clean(const std::string& output) {
    EXPECT_EQ(output.find("Error  "), std::string::npos) << output;
    EXPECT_EQ(output.find("Warning  "), std::string::npos) << output;
  }
  std::filesystem::path dir_;
};

TEST_F(PciAcpiIasl, McfgDisassembles) {
  const std::string dsl = disassemble("mcfg", pci_mcfg_table({}));
  EXPECT_NE(dsl.find("Base Address : 00000000E0000000"), std::string::npos) << dsl;
  EXPECT_NE(dsl.find("End Bus Number : 00"), std::string::npos) << dsl;
  expect_clean(dsl);
  const auto [status, output] = iasl("mcfg.dsl");
  EXPECT_EQ(status, 0) << output;
}

TEST_F(PciAcpiIasl, DsdtWithTheHostBridgeDisassemblesAndRecompiles) {
  AcpiConfig acpi;
  add_pci_to_acpi(acpi);
  const auto tables = build_acpi_tables(acpi);
  const auto& [address, length] = tables.tables.at("DSDT");
  const std::string dsl =
      disassemble("dsdt", std::span(tables.bytes).subspan(address - tables.base, length));
  for (const char* expected :
       {"Device (PCI0)", "EisaId (\"PNP0A08\")", "EisaId (\"PNP0A03\")", "_SEG", "_BBN",
        "WordBusNumber", "0x0CF8", "0x0CF7", "0x0D00", "DWordMemory", "0xC0000000", "0xDFFFFFFF",
        "Device (PRES)", "EisaId (\"PNP0C02\")", "Memory32Fixed (ReadWrite,", "0xE0000000",
        "0x00100000"}) {
    EXPECT_NE(dsl.find(expected), std::string::npos) << expected << "\n" << dsl;
  }
  expect_clean(dsl);
  const auto [status, output] = iasl("dsdt.dsl");
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find(" 0 Errors"), std::string::npos) << output;
}

}  // namespace
}  // namespace ember::boot
