#include "boot/acpi.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include "boot/aml.hpp"
#include "boot/layout.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

// Offsets below are written out from the ACPI 6.5 spec tables on purpose, not taken from acpi.cpp.
constexpr size_t kHeaderSize = 36;

uint64_t read_le(std::span<const std::byte> bytes, size_t offset, size_t size) {
  uint64_t value = 0;
  for (size_t i = 0; i < size; ++i) {
    value |= std::to_integer<uint64_t>(bytes[offset + i]) << (8 * i);
  }
  return value;
}
uint8_t u8(std::span<const std::byte> bytes, size_t offset) {
  return static_cast<uint8_t>(read_le(bytes, offset, 1));
}
uint16_t u16(std::span<const std::byte> bytes, size_t offset) {
  return static_cast<uint16_t>(read_le(bytes, offset, 2));
}
uint32_t u32(std::span<const std::byte> bytes, size_t offset) {
  return static_cast<uint32_t>(read_le(bytes, offset, 4));
}
uint64_t u64(std::span<const std::byte> bytes, size_t offset) {
  return read_le(bytes, offset, 8);
}

std::string text(std::span<const std::byte> bytes, size_t offset, size_t size) {
  std::string out;
  for (size_t i = 0; i < size; ++i) out.push_back(static_cast<char>(bytes[offset + i]));
  return out;
}

// The bytes of the table at a guest-physical address, by its header length.
std::span<const std::byte> table_at(const AcpiTables& tables, uint64_t address) {
  EXPECT_GE(address, tables.base);
  const size_t offset = address - tables.base;
  EXPECT_LE(offset + kHeaderSize, tables.bytes.size());
  const uint32_t length = u32(tables.bytes, offset + 4);
  EXPECT_LE(offset + length, tables.bytes.size());
  return std::span(tables.bytes).subspan(offset, length);
}

std::span<const std::byte> table(const AcpiTables& tables, const std::string& signature) {
  const auto it = tables.tables.find(signature);
  if (it == tables.tables.end()) {
    ADD_FAILURE() << "no " << signature;
    return {};
  }
  return std::span(tables.bytes).subspan(it->second.first - tables.base, it->second.second);
}

TEST(AcpiTables, EveryTableChecksumsAndFitsTheAcpiArea) {
  AcpiConfig config;
  config.cpu_count = kAcpiMaxCpus;  // The largest MADT.
  const AcpiTables tables = build_acpi_tables(config);
  EXPECT_EQ(tables.base, layout::kAcpiStart);
  EXPECT_EQ(tables.rsdp_address, layout::kAcpiStart);
  EXPECT_LE(tables.base + tables.bytes.size(), layout::kAcpiEnd);
  for (const char* signature : {"RSDP", "XSDT", "FACP", "APIC", "DSDT"}) {
    ASSERT_TRUE(tables.tables.contains(signature)) << signature;
    const auto [address, length] = tables.tables.at(signature);
    EXPECT_EQ(address % 16, 0u) << signature;
    EXPECT_GE(address, layout::kAcpiStart) << signature;
    EXPECT_LE(address + length, layout::kAcpiEnd) << signature;
    if (std::string(signature) == "RSDP") continue;
    const auto bytes = table(tables, signature);
    EXPECT_EQ(text(bytes, 0, 4), signature);
    EXPECT_EQ(u32(bytes, 4), length) << signature;
    EXPECT_EQ(acpi_checksum(bytes), 0) << signature;
    EXPECT_EQ(text(bytes, 10, 6), "EMBER ") << signature;
  }
}

TEST(AcpiTables, RsdpPointsAtXsdtWithBothChecksums) {
  const AcpiTables tables = build_acpi_tables({});
  const auto rsdp = table(tables, "RSDP");
  ASSERT_EQ(rsdp.size(), 36u);
  EXPECT_EQ(text(rsdp, 0, 8), "RSD PTR ");
  EXPECT_EQ(acpi_checksum(rsdp.first(20)), 0);
  EXPECT_EQ(acpi_checksum(rsdp), 0);
  EXPECT_EQ(text(rsdp, 9, 6), "EMBER ");
  EXPECT_EQ(u8(rsdp, 15), 2);     // Revision.
  EXPECT_EQ(u32(rsdp, 20), 36u);  // Length.
  EXPECT_EQ(u64(rsdp, 24), tables.tables.at("XSDT").first);
}

TEST(AcpiTables, XsdtListsFadtAndMadt) {
  const AcpiTables tables = build_acpi_tables({});
  const auto xsdt = table(tables, "XSDT");
  ASSERT_EQ(xsdt.size(), kHeaderSize + 2 * 8);
  EXPECT_EQ(u64(xsdt, 36), tables.tables.at("FACP").first);
  EXPECT_EQ(u64(xsdt, 44), tables.tables.at("APIC").first);
  EXPECT_EQ(text(table_at(tables, u64(xsdt, 36)), 0, 4), "FACP");
  EXPECT_EQ(text(table_at(tables, u64(xsdt, 44)), 0, 4), "APIC");
}

TEST(AcpiTables, ExtraTablesAreListedInTheXsdt) {
  AcpiConfig config;
  config.extra_tables.push_back(acpi_table("MCFG", 1, aml::Bytes(44)));
  const AcpiTables tables = build_acpi_tables(config);
  const auto xsdt = table(tables, "XSDT");
  ASSERT_EQ(xsdt.size(), kHeaderSize + 3 * 8);
  EXPECT_EQ(u64(xsdt, 52), tables.tables.at("MCFG").first);
  EXPECT_EQ(acpi_checksum(table_at(tables, u64(xsdt, 52))), 0);

  config.extra_tables.back()[20] ^= std::byte{1};  // Breaks its checksum.
  EXPECT_THROW(build_acpi_tables(config), Error);
  config.extra_tables.back() = acpi_table("APIC", 1, {});  // Duplicates the MADT.
  EXPECT_THROW(build_acpi_tables(config), Error);
}

TEST(AcpiTables, FadtIsHardwareReducedWithSleepAndResetRegisters) {
  const AcpiTables tables = build_acpi_tables({});
  const auto fadt = table(tables, "FACP");
  ASSERT_EQ(fadt.size(), 276u);
  EXPECT_EQ(u8(fadt, 8), 6);    // Revision.
  EXPECT_EQ(u8(fadt, 131), 3);  // FADT minor version: ACPI 6.3.
  const uint32_t flags = u32(fadt, 112);
  EXPECT_TRUE(flags & (1u << 20));  // HW_REDUCED_ACPI.
  EXPECT_TRUE(flags & (1u << 10));  // RESET_REG_SUP.
  EXPECT_TRUE(flags & (1u << 4));   // PWR_BUTTON.
  EXPECT_TRUE(flags & (1u << 5));   // SLP_BUTTON.
  const uint16_t boot_arch = u16(fadt, 109);
  EXPECT_EQ(boot_arch, (1u << 1) | (1u << 2) | (1u << 5));  // 8042, no VGA, no CMOS RTC.

  auto expect_io_register = [&](size_t offset, uint16_t port) {
    EXPECT_EQ(u8(fadt, offset), 1) << offset;      // SystemIO.
    EXPECT_EQ(u8(fadt, offset + 1), 8) << offset;  // Bit width.
    EXPECT_EQ(u8(fadt, offset + 2), 0) << offset;  // Bit offset.
    EXPECT_EQ(u8(fadt, offset + 3), 1) << offset;  // Byte access.
    EXPECT_EQ(u64(fadt, offset + 4), port) << offset;
  };
  expect_io_register(116, layout::kAcpiResetPort);  // RESET_REG.
  EXPECT_EQ(u8(fadt, 128), layout::kAcpiResetValue);
  expect_io_register(244, layout::kAcpiSleepControlPort);
  expect_io_register(256, layout::kAcpiSleepStatusPort);
  EXPECT_EQ(u32(fadt, 40), 0u);                               // 32-bit DSDT unused,
  EXPECT_EQ(u64(fadt, 140), tables.tables.at("DSDT").first);  // X_DSDT instead.
  EXPECT_EQ(text(table_at(tables, u64(fadt, 140)), 0, 4), "DSDT");
  EXPECT_EQ(u32(fadt, 36), 0u);  // No FACS in hardware-reduced mode.
  EXPECT_EQ(u64(fadt, 132), 0u);
  EXPECT_EQ(u16(fadt, 46), 0u);  // No SCI.
  EXPECT_EQ(text(fadt, 268, 5), "EMBER");
}

TEST(AcpiTables, FadtOmits8042FlagWithoutI8042) {
  AcpiConfig config;
  config.i8042 = false;
  const auto tables = build_acpi_tables(config);
  EXPECT_EQ(u16(table(tables, "FACP"), 109), (1u << 2) | (1u << 5));
}

struct MadtCounts {
  std::vector<std::pair<uint8_t, uint8_t>> local_apics;  // (UID, APIC ID), enabled ones.
  int ioapics = 0;
  int overrides = 0;
  int nmis = 0;
  int other = 0;
};

MadtCounts parse_madt(std::span<const std::byte> madt) {
  MadtCounts counts;
  EXPECT_EQ(u32(madt, 36), layout::kLapicAddress);
  EXPECT_EQ(u32(madt, 40), 1u);  // PCAT_COMPAT.
  for (size_t offset = 44; offset < madt.size();) {
    const uint8_t type = u8(madt, offset);
    const uint8_t length = u8(madt, offset + 1);
    EXPECT_GE(length, 2u);
    EXPECT_LE(offset + length, madt.size());
    if (length < 2 || offset + length > madt.size()) break;
    switch (type) {
      case 0:
        EXPECT_EQ(length, 8u);
        EXPECT_EQ(u32(madt, offset + 4), 1u);  // Enabled.
        counts.local_apics.emplace_back(u8(madt, offset + 2), u8(madt, offset + 3));
        break;
      case 1:
        EXPECT_EQ(length, 12u);
        EXPECT_EQ(u8(madt, offset + 2), 0u);  // IOAPIC ID.
        EXPECT_EQ(u32(madt, offset + 4), layout::kIoapicAddress);
        EXPECT_EQ(u32(madt, offset + 8), 0u);  // GSI base.
        ++counts.ioapics;
        break;
      case 2:
        EXPECT_EQ(length, 10u);
        EXPECT_EQ(u8(madt, offset + 2), 0u);   // ISA.
        EXPECT_EQ(u8(madt, offset + 3), 0u);   // IRQ 0
        EXPECT_EQ(u32(madt, offset + 4), 2u);  // -> GSI 2.
        EXPECT_EQ(u16(madt, offset + 8), 0u);  // Conforming.
        ++counts.overrides;
        break;
      case 4:
        EXPECT_EQ(length, 6u);
        EXPECT_EQ(u8(madt, offset + 2), 0xffu);  // All processors.
        EXPECT_EQ(u16(madt, offset + 3), 0u);
        EXPECT_EQ(u8(madt, offset + 5), 1u);  // LINT1.
        ++counts.nmis;
        break;
      default:
        ++counts.other;
    }
    offset += length;
  }
  return counts;
}

TEST(AcpiTables, MadtHasOneLocalApicPerCpuAndTheIoapic) {
  for (uint32_t cpus : {1u, 2u, 8u, 254u}) {
    SCOPED_TRACE(cpus);
    AcpiConfig config;
    config.cpu_count = cpus;
    const auto tables = build_acpi_tables(config);
    const auto madt = table(tables, "APIC");
    EXPECT_EQ(madt.size(), 44u + 8 * cpus + 12 + 10 + 6);
    const MadtCounts counts = parse_madt(madt);
    ASSERT_EQ(counts.local_apics.size(), cpus);
    for (uint32_t cpu = 0; cpu < cpus; ++cpu) {
      EXPECT_EQ(counts.local_apics[cpu], std::make_pair(uint8_t(cpu), uint8_t(cpu)));
    }
    EXPECT_EQ(counts.ioapics, 1);
    EXPECT_EQ(counts.overrides, 1);
    EXPECT_EQ(counts.nmis, 1);
    EXPECT_EQ(counts.other, 0);
  }
}

TEST(AcpiTables, RejectsCpuCountsOutsideXapicRange) {
  for (uint32_t cpus : {0u, 255u, 1000u}) {
    AcpiConfig config;
    config.cpu_count = cpus;
    EXPECT_THROW(build_acpi_tables(config), Error) << cpus;
  }
}

TEST(AcpiTables, RejectsUnalignedBaseAndTablesPastTheArea) {
  EXPECT_THROW(build_acpi_tables({}, layout::kAcpiStart + 8), Error);
  EXPECT_THROW(build_acpi_tables({}, layout::kAcpiEnd - 0x100), Error);
  const auto elsewhere = build_acpi_tables({}, 0x10000);
  EXPECT_EQ(elsewhere.rsdp_address, 0x10000u);
  EXPECT_EQ(u64(table(elsewhere, "RSDP"), 24), elsewhere.tables.at("XSDT").first);
}

TEST(AcpiTables, DsdtDevicesFollowTheConfig) {
  auto contains = [](std::span<const std::byte> haystack, std::string_view needle) {
    const std::string text_bytes(reinterpret_cast<const char*>(haystack.data()), haystack.size());
    return text_bytes.find(needle) != std::string::npos;
  };
  const std::string pnp0501("\x41\xd0\x05\x01", 4);  // EISAID("PNP0501").
  const auto all = build_acpi_tables({});
  EXPECT_TRUE(contains(table(all, "DSDT"), pnp0501));
  EXPECT_TRUE(contains(table(all, "DSDT"), "QEMU0001"));
  EXPECT_TRUE(contains(table(all, "DSDT"), "_S5_"));
  AcpiConfig none;
  none.com1 = false;
  none.pvpanic = false;
  const auto bare = build_acpi_tables(none);
  EXPECT_FALSE(contains(table(bare, "DSDT"), pnp0501));
  EXPECT_FALSE(contains(table(bare, "DSDT"), "QEMU0001"));
  EXPECT_TRUE(contains(table(bare, "DSDT"), "_S5_"));
}

// iasl (acpica-tools) disassembles and recompiles what ember writes.
class AcpiIasl : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(std::system("command -v iasl >/dev/null 2>&1"), 0)
        << "iasl not found: install acpica-tools (apt-get install acpica-tools)";
    std::string pattern = (std::filesystem::temp_directory_path() / "ember-acpi-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  struct Result {
    int status;
    std::string output;
  };
  // Runs iasl with args in the temp dir and returns its exit status and combined output.
  Result iasl(const std::string& args) {
    const std::string command = "cd '" + dir_.string() + "' && iasl " + args + " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) return {-1, "popen failed"};
    std::string output;
    std::array<char, 4096> chunk;
    while (size_t n = fread(chunk.data(), 1, chunk.size(), pipe)) output.append(chunk.data(), n);
    const int status = pclose(pipe);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
  }

  void write_file(const std::string& name, std::span<const std::byte> bytes) {
    std::ofstream file(dir_ / name, std::ios::binary);
    file.write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
  }
  std::string read_file(const std::string& name) {
    std::ifstream file(dir_ / name, std::ios::binary);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  }

  // Disassembles one table; returns the .dsl text.
  std::string disassemble(const std::string& name, std::span<const std::byte> bytes) {
    write_file(name + ".dat", bytes);
    const Result result = iasl("-d " + name + ".dat");
    EXPECT_EQ(result.status, 0) << result.output;
    expect_no_errors(result.output);
    return read_file(name + ".dsl");
  }

  // iasl reports problems as "Error  <id> - ..." or "Warning  <id> - ..." lines, and ends a
  // compilation with a "Compilation successful. 0 Errors, 0 Warnings, ..." summary.
  static void expect_no_errors(const std::string& output) {
    std::istringstream lines(output);
    for (std::string line; std::getline(lines, line);) {
      const bool summary = line.find(" 0 Errors, 0 Warnings") != std::string::npos;
      const bool problem = line.find("Error") != std::string::npos ||
                           line.find("Warning") != std::string::npos ||
                           line.find("Invalid") != std::string::npos;
      EXPECT_TRUE(summary || !problem) << line << "\n" << output;
    }
  }

  std::filesystem::path dir_;
};

// The RSDP is not in this list: it has no table header, and iasl -d rejects a file holding one
// ("does not contain a valid ACPI table"). RsdpPointsAtXsdtWithBothChecksums covers it.
TEST_F(AcpiIasl, EveryTableDisassembles) {
  AcpiConfig config;
  config.cpu_count = 4;
  const auto tables = build_acpi_tables(config);
  for (const char* signature : {"XSDT", "FACP", "APIC", "DSDT"}) {
    SCOPED_TRACE(signature);
    const std::string dsl = disassemble(signature, table(tables, signature));
    EXPECT_FALSE(dsl.empty());
    expect_no_errors(dsl);
  }
}

TEST_F(AcpiIasl, DsdtDisassemblesToTheDevicesAndRecompiles) {
  const auto tables = build_acpi_tables({});
  const std::string dsl = disassemble("dsdt", table(tables, "DSDT"));
  EXPECT_NE(dsl.find("PNP0501"), std::string::npos) << dsl;
  EXPECT_NE(dsl.find("QEMU0001"), std::string::npos) << dsl;
  EXPECT_NE(dsl.find("_S5_"), std::string::npos) << dsl;
  EXPECT_NE(dsl.find("IRQNoFlags"), std::string::npos) << dsl;
  EXPECT_NE(dsl.find("0x0505"), std::string::npos) << dsl;
  const Result compiled = iasl("dsdt.dsl");
  EXPECT_EQ(compiled.status, 0) << compiled.output;
  expect_no_errors(compiled.output);
}

TEST_F(AcpiIasl, DataTablesRecompile) {
  const auto tables = build_acpi_tables({});
  for (const char* signature : {"FACP", "APIC"}) {
    SCOPED_TRACE(signature);
    disassemble(signature, table(tables, signature));
    const Result compiled = iasl(std::string(signature) + ".dsl");
    EXPECT_EQ(compiled.status, 0) << compiled.output;
    expect_no_errors(compiled.output);
    const std::string aml = read_file(std::string(signature) + ".aml");
    const auto original = table(tables, signature);
    // The recompiled table's bytes after the header (iasl stamps its own creator fields).
    ASSERT_EQ(aml.size(), original.size());
    EXPECT_EQ(aml.substr(kHeaderSize),
              std::string(reinterpret_cast<const char*>(original.data()) + kHeaderSize,
                          original.size() - kHeaderSize));
  }
}

aml::Bytes concat_for_test(const std::vector<aml::Bytes>& terms) {
  aml::Bytes out;
  for (const auto& term : terms) aml::append(out, term);
  return out;
}

// The AML builder against iasl itself: the same terms written as ASL compile to the same bytes.
TEST_F(AcpiIasl, AmlBuilderMatchesCompiledAsl) {
  using namespace aml;
  const std::array<uint8_t, 1> irq4{4};
  const std::array<uint32_t, 2> gsis{5, 40};
  const Bytes big(5000, std::byte{0x5a});  // A three-byte PkgLength.
  const Bytes built = concat_for_test({
      scope("_SB",
            {
                device("PCI0",
                       {
                           name("_HID", eisa_id("PNP0A08")),
                           name("_CID", eisa_id("PNP0A03")),
                           name("_UID", integer(0)),
                           name("_CRS", resource_template({
                                            word_bus_number(0, 0xff),
                                            word_io(0x0d00, 0xffff),
                                            dword_memory(0xc0000000, 0xfebfffff,
                                                         Cacheability::kNonCacheable),
                                            qword_memory(0x8000000000, 0xffffffffff,
                                                         Cacheability::kPrefetchable),
                                        })),
                           method("_STA", 0, false, {return_value(integer(0x0f))}),
                       }),
                device("VR00",
                       {
                           name("_HID", string("LNRO0005")),
                           name("_CRS", resource_template({
                                            memory32_fixed(true, 0xd0000000, 0x200),
                                            interrupt(Usage::kConsumer, Trigger::kEdge,
                                                      Polarity::kActiveLow, Sharing::kShared, gsis),
                                            io(0x3f8, 0x3f8, 0, 8),
                                            irq_no_flags(irq4),
                                        })),
                       }),
            }),
      name("BIG0", buffer(big)),
      name("PKG0", package({integer(0x123456789), integer(~0ull), integer(0xffff), string("x")})),
      name("_S5",
           package({integer(5), integer(0), integer(0), integer(0)})),  // iasl drops the '\\'.
  });

  std::string big_asl;
  for (size_t i = 0; i < big.size(); ++i) big_asl += i ? ", 0x5A" : "0x5A";
  const std::string asl = R"(DefinitionBlock ("", "DSDT", 2, "EMBER ", "EMBRDSDT", 1) {
  Scope (\_SB) {
    Device (PCI0) {
      Name (_HID, EisaId ("PNP0A08"))
      Name (_CID, EisaId ("PNP0A03"))
      Name (_UID, Zero)
      Name (_CRS, ResourceTemplate () {
        WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
                       0x0000, 0x0000, 0x00FF, 0x0000, 0x0100)
        WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                0x0000, 0x0D00, 0xFFFF, 0x0000, 0xF300)
        DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
                     0x00000000, 0xC0000000, 0xFEBFFFFF, 0x00000000, 0x3EC00000)
        QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Prefetchable, ReadWrite,
                     0x0, 0x8000000000, 0xFFFFFFFFFF, 0x0, 0x8000000000)
      })
      Method (_STA, 0, NotSerialized) { Return (0x0F) }
    }
    Device (VR00) {
      Name (_HID, "LNRO0005")
      Name (_CRS, ResourceTemplate () {
        Memory32Fixed (ReadWrite, 0xD0000000, 0x00000200)
        Interrupt (ResourceConsumer, Edge, ActiveLow, Shared) {5, 40}
        IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08)
        IRQNoFlags () {4}
      })
    }
  }
  Name (BIG0, Buffer () {)" +
                          big_asl + R"(})
  Name (PKG0, Package () { 0x123456789, 0xFFFFFFFFFFFFFFFF, 0xFFFF, "x" })
  Name (\_S5, Package () { 5, 0, 0, 0 })
})";
  {
    std::ofstream file(dir_ / "builder.asl");
    file << asl;
  }
  const Result compiled = iasl("builder.asl");
  ASSERT_EQ(compiled.status, 0) << compiled.output;
  const std::string aml_file = read_file("builder.aml");
  ASSERT_GT(aml_file.size(), kHeaderSize);
  const std::string expected = aml_file.substr(kHeaderSize);
  const std::string actual(reinterpret_cast<const char*>(built.data()), built.size());
  EXPECT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < std::min(actual.size(), expected.size()); ++i) {
    if (actual[i] != expected[i]) {
      ADD_FAILURE() << "first difference at body offset " << i;
      break;
    }
  }
}

}  // namespace
}  // namespace ember::boot
