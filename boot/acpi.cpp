#include "boot/acpi.hpp"

#include <algorithm>
#include <array>

#include "boot/aml.hpp"
#include "boot/little_endian.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

using aml::Bytes;

// Table revisions: ember writes ACPI 6.3 tables (the FADT and MADT layouts are unchanged up
// to 6.5).
constexpr uint8_t kRsdpRevision = 2;  // ACPI 2.0+ RSDP with XSDT address.
constexpr uint8_t kXsdtRevision = 1;
constexpr uint8_t kFadtRevision = 6;
constexpr uint8_t kFadtMinorRevision = 3;
constexpr uint8_t kMadtRevision = 5;
constexpr uint8_t kDsdtRevision = 2;  // 2 and up: AML integers are 64 bits.

constexpr std::string_view kOemId = "EMBER ";
constexpr std::string_view kCreatorId = "EMBR";
constexpr uint32_t kOemRevision = 1;
constexpr uint32_t kCreatorRevision = 1;
constexpr uint64_t kTableAlignment = 16;

// System description table header, §5.2.6.
constexpr size_t kHeaderSize = 36;
constexpr size_t kHeaderLengthOffset = 4;
constexpr size_t kHeaderChecksumOffset = 9;

// RSDP, §5.2.5.3.
constexpr size_t kRsdpSize = 36;
constexpr size_t kRsdpV1Size = 20;  // The part covered by the first checksum.
constexpr size_t kRsdpChecksumOffset = 8;
constexpr size_t kRsdpExtendedChecksumOffset = 32;

// FADT field offsets, §5.2.9 Table 5.9.
constexpr size_t kFadtSize = 276;
constexpr size_t kFadtIapcBootArchOffset = 109;
constexpr size_t kFadtFlagsOffset = 112;
constexpr size_t kFadtResetRegOffset = 116;
constexpr size_t kFadtResetValueOffset = 128;
constexpr size_t kFadtMinorVersionOffset = 131;
constexpr size_t kFadtXDsdtOffset = 140;
constexpr size_t kFadtSleepControlRegOffset = 244;
constexpr size_t kFadtSleepStatusRegOffset = 256;
constexpr size_t kFadtHypervisorVendorOffset = 268;

// FADT Fixed Feature Flags, §5.2.9 Table 5.10.
constexpr uint32_t kFadtPowerButton = 1u << 4;  // Power button, if any, is a control-method device.
constexpr uint32_t kFadtSleepButton = 1u << 5;
constexpr uint32_t kFadtResetRegSupported = 1u << 10;
constexpr uint32_t kFadtHardwareReduced = 1u << 20;

// IA-PC Boot Architecture Flags, §5.2.9.3.
constexpr uint16_t kBootArch8042 = 1u << 1;
constexpr uint16_t kBootArchVgaNotPresent = 1u << 2;
constexpr uint16_t kBootArchCmosRtcNotPresent = 1u << 5;

// Generic Address Structure, §5.2.3.2.
constexpr uint8_t kGasSystemIo = 1;
constexpr uint8_t kGasAccessByte = 1;

// MADT, §5.2.12.
constexpr uint32_t kMadtPcatCompat = 1u << 0;
constexpr uint8_t kMadtLocalApic = 0;
constexpr uint8_t kMadtIoApic = 1;
constexpr uint8_t kMadtInterruptOverride = 2;
constexpr uint8_t kMadtLocalApicNmi = 4;
constexpr uint32_t kLocalApicEnabled = 1u << 0;
constexpr uint8_t kAllProcessors = 0xff;
constexpr uint8_t kLint1 = 1;
constexpr uint8_t kIoApicId = 0;
constexpr uint8_t kTimerIsaIrq = 0;
constexpr uint32_t kTimerGsi = 2;

constexpr uint8_t kDeviceStatusPresent = 0x0f;  // Present, enabled, shown in UI, functioning.

void put_bytes(Bytes& out, size_t offset, std::span<const std::byte> bytes) {
  std::copy(bytes.begin(), bytes.end(), out.begin() + static_cast<std::ptrdiff_t>(offset));
}

void append_text(Bytes& out, std::string_view text, size_t width) {
  for (size_t i = 0; i < width; ++i) {
    aml::append_u8(out, i < text.size() ? static_cast<uint8_t>(text[i]) : ' ');
  }
}

Bytes system_io_register(uint16_t port) {
  Bytes gas;
  aml::append_u8(gas, kGasSystemIo);
  aml::append_u8(gas, 8);  // Register bit width.
  aml::append_u8(gas, 0);  // Bit offset.
  aml::append_u8(gas, kGasAccessByte);
  aml::append_u64(gas, port);
  return gas;
}

void set_checksum(Bytes& bytes, size_t checksum_offset, size_t length) {
  bytes[checksum_offset] = std::byte{0};
  const auto sum = acpi_checksum(std::span(bytes).first(length));
  bytes[checksum_offset] = static_cast<std::byte>(static_cast<uint8_t>(0x100 - sum));
}

Bytes make_fadt(const AcpiConfig& config, uint64_t dsdt_address) {
  Bytes body(kFadtSize - kHeaderSize);
  auto put = [&](size_t offset, auto value) {
    store_le(std::span(body), offset - kHeaderSize, value);
  };
  auto put_gas = [&](size_t offset, uint16_t port) {
    put_bytes(body, offset - kHeaderSize, system_io_register(port));
  };
  // Hardware-reduced: no PM1/GPE blocks, no SCI, no FACS; power off through the sleep registers.
  uint16_t boot_arch = kBootArchVgaNotPresent | kBootArchCmosRtcNotPresent;
  if (config.i8042) boot_arch |= kBootArch8042;
  put(kFadtIapcBootArchOffset, boot_arch);
  put(kFadtFlagsOffset,
      kFadtHardwareReduced | kFadtResetRegSupported | kFadtPowerButton | kFadtSleepButton);
  put_gas(kFadtResetRegOffset, layout::kAcpiResetPort);
  put(kFadtResetValueOffset, layout::kAcpiResetValue);
  put(kFadtMinorVersionOffset, kFadtMinorRevision);
  put(kFadtXDsdtOffset, dsdt_address);  // The 32-bit DSDT field stays 0 (§5.2.9: one of the two).
  put_gas(kFadtSleepControlRegOffset, layout::kAcpiSleepControlPort);
  put_gas(kFadtSleepStatusRegOffset, layout::kAcpiSleepStatusPort);
  Bytes vendor;
  append_text(vendor, "EMBER", 8);
  put_bytes(body, kFadtHypervisorVendorOffset - kHeaderSize, vendor);
  return acpi_table("FACP", kFadtRevision, body);
}

Bytes make_madt(const AcpiConfig& config) {
  Bytes body;
  aml::append_u32(body, static_cast<uint32_t>(layout::kLapicAddress));
  aml::append_u32(body, kMadtPcatCompat);
  for (uint32_t cpu = 0; cpu < config.cpu_count; ++cpu) {
    aml::append_u8(body, kMadtLocalApic);
    aml::append_u8(body, 8);
    aml::append_u8(body, static_cast<uint8_t>(cpu));  // ACPI processor UID.
    aml::append_u8(body, static_cast<uint8_t>(cpu));  // APIC ID.
    aml::append_u32(body, kLocalApicEnabled);
  }
  aml::append_u8(body, kMadtIoApic);
  aml::append_u8(body, 12);
  aml::append_u8(body, kIoApicId);
  aml::append_u8(body, 0);  // Reserved.
  aml::append_u32(body, static_cast<uint32_t>(layout::kIoapicAddress));
  aml::append_u32(body, 0);  // Global system interrupt base.

  // The PIT's IRQ 0 is wired to IOAPIC pin 2, as on PC hardware; flags 0: bus-conforming.
  aml::append_u8(body, kMadtInterruptOverride);
  aml::append_u8(body, 10);
  aml::append_u8(body, 0);  // Bus: ISA.
  aml::append_u8(body, kTimerIsaIrq);
  aml::append_u32(body, kTimerGsi);
  aml::append_u16(body, 0);

  aml::append_u8(body, kMadtLocalApicNmi);
  aml::append_u8(body, 6);
  aml::append_u8(body, kAllProcessors);
  aml::append_u16(body, 0);  // Flags: bus-conforming.
  aml::append_u8(body, kLint1);
  return acpi_table("APIC", kMadtRevision, body);
}

Bytes com1_device() {
  const std::array<uint8_t, 1> irqs{layout::kCom1Irq};
  return aml::device(
      "COM1", {
                  aml::name("_HID", aml::eisa_id("PNP0501")),
                  aml::name("_UID", aml::integer(0)),
                  aml::name("_STA", aml::integer(kDeviceStatusPresent)),
                  aml::name("_CRS", aml::resource_template({
                                        aml::io(layout::kCom1Port, layout::kCom1Port, 0x00, 0x08),
                                        aml::irq_no_flags(irqs),
                                    })),
              });
}

// QEMU's pvpanic ISA device: the guest writes a bit to the port when it panics.
Bytes pvpanic_device() {
  return aml::device(
      "PEVT",
      {
          aml::name("_HID", aml::string("QEMU0001")),
          aml::name("_STA", aml::integer(kDeviceStatusPresent)),
          aml::name("_CRS", aml::resource_template({
                                aml::io(layout::kPvpanicPort, layout::kPvpanicPort, 0x01, 0x01),
                            })),
      });
}

Bytes make_dsdt(const AcpiConfig& config) {
  std::vector<Bytes> devices;
  if (config.com1) devices.push_back(com1_device());
  if (config.pvpanic) devices.push_back(pvpanic_device());
  devices.insert(devices.end(), config.extra_devices.begin(), config.extra_devices.end());
  Bytes body = aml::scope("\\_SB", devices);
  // \_S5: SLP_TYP for poweroff; the other three values are reserved.
  aml::append(
      body, aml::name("\\_S5", aml::package({aml::integer(layout::kAcpiS5SleepType),
                                             aml::integer(0), aml::integer(0), aml::integer(0)})));
  return acpi_table("DSDT", kDsdtRevision, body);
}

std::string table_signature(std::span<const std::byte> table) {
  std::string signature;
  for (size_t i = 0; i < 4; ++i) signature.push_back(static_cast<char>(table[i]));
  return signature;
}

void check_extra_table(std::span<const std::byte> table) {
  if (table.size() < kHeaderSize) throw Error("ACPI extra table shorter than its header");
  const std::string signature = table_signature(table);
  uint32_t length = 0;
  for (size_t i = 0; i < 4; ++i) {
    length |= std::to_integer<uint32_t>(table[kHeaderLengthOffset + i]) << (8 * i);
  }
  if (length != table.size()) throw Error("ACPI table " + signature + ": header length mismatch");
  if (acpi_checksum(table) != 0) throw Error("ACPI table " + signature + ": bad checksum");
}

uint64_t align_up(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

uint8_t acpi_checksum(std::span<const std::byte> bytes) {
  uint8_t sum = 0;
  for (std::byte byte : bytes) sum = static_cast<uint8_t>(sum + std::to_integer<uint8_t>(byte));
  return sum;
}

std::vector<std::byte> acpi_table(std::string_view signature, uint8_t revision,
                                  std::span<const std::byte> body) {
  if (signature.size() != 4) throw Error("ACPI table signature must be four characters");
  const size_t length = kHeaderSize + body.size();
  if (length > UINT32_MAX) throw Error("ACPI table " + std::string(signature) + " is too large");
  Bytes table;
  table.reserve(length);
  append_text(table, signature, 4);
  aml::append_u32(table, static_cast<uint32_t>(length));
  aml::append_u8(table, revision);
  aml::append_u8(table, 0);  // Checksum, set below.
  append_text(table, kOemId, 6);
  append_text(table, std::string(kCreatorId) + std::string(signature), 8);  // OEM table ID.
  aml::append_u32(table, kOemRevision);
  append_text(table, kCreatorId, 4);
  aml::append_u32(table, kCreatorRevision);
  aml::append(table, body);
  set_checksum(table, kHeaderChecksumOffset, table.size());
  return table;
}

AcpiTables build_acpi_tables(const AcpiConfig& config, uint64_t base) {
  if (config.cpu_count == 0 || config.cpu_count > kAcpiMaxCpus) {
    throw Error("ACPI: " + std::to_string(config.cpu_count) + " vCPUs; ember supports 1 to " +
                std::to_string(kAcpiMaxCpus));
  }
  if (base % kTableAlignment != 0) throw Error("ACPI: table base must be 16-byte aligned");
  for (const auto& table : config.extra_tables) check_extra_table(table);

  // Tables that reference no addresses are built first; the FADT, XSDT and RSDP then point at them.
  std::vector<std::pair<std::string, Bytes>> tables;  // In memory order, after RSDP and XSDT.
  const size_t xsdt_entries = 2 + config.extra_tables.size();
  const uint64_t xsdt_offset = align_up(kRsdpSize, kTableAlignment);
  uint64_t offset = align_up(xsdt_offset + kHeaderSize + 8 * xsdt_entries, kTableAlignment);
  const uint64_t fadt_offset = offset;
  offset = align_up(offset + kFadtSize, kTableAlignment);
  Bytes madt = make_madt(config);
  const uint64_t madt_offset = offset;
  offset = align_up(offset + madt.size(), kTableAlignment);
  Bytes dsdt = make_dsdt(config);
  const uint64_t dsdt_offset = offset;
  offset = align_up(offset + dsdt.size(), kTableAlignment);

  tables.emplace_back("FACP", make_fadt(config, base + dsdt_offset));
  tables.emplace_back("APIC", std::move(madt));
  tables.emplace_back("DSDT", std::move(dsdt));
  std::vector<uint64_t> offsets{fadt_offset, madt_offset, dsdt_offset};
  for (const auto& extra : config.extra_tables) {
    tables.emplace_back(table_signature(extra), extra);
    offsets.push_back(offset);
    offset = align_up(offset + extra.size(), kTableAlignment);
  }
  const uint64_t total_size = offset;
  const uint64_t limit = (base >= layout::kAcpiStart && base < layout::kAcpiEnd)
                             ? layout::kAcpiEnd - base
                             : layout::kAcpiEnd - layout::kAcpiStart;
  if (total_size > limit) {
    throw Error("ACPI: tables need " + std::to_string(total_size) + " bytes, only " +
                std::to_string(limit) + " fit below the end of the ACPI area");
  }

  Bytes xsdt_body;
  for (size_t i = 0; i < tables.size(); ++i) {
    if (tables[i].first == "DSDT") continue;  // Reached through the FADT, not the XSDT.
    aml::append_u64(xsdt_body, base + offsets[i]);
  }
  Bytes xsdt = acpi_table("XSDT", kXsdtRevision, xsdt_body);

  Bytes rsdp;
  append_text(rsdp, "RSD PTR ", 8);
  aml::append_u8(rsdp, 0);  // Checksum of the first 20 bytes, set below.
  append_text(rsdp, kOemId, 6);
  aml::append_u8(rsdp, kRsdpRevision);
  aml::append_u32(rsdp, 0);  // No RSDT: ACPI 2.0+ OSes use the XSDT.
  aml::append_u32(rsdp, static_cast<uint32_t>(kRsdpSize));
  aml::append_u64(rsdp, base + xsdt_offset);
  aml::append_u8(rsdp, 0);  // Extended checksum, set below.
  aml::append_u8(rsdp, 0);  // Reserved (3 bytes).
  aml::append_u16(rsdp, 0);
  set_checksum(rsdp, kRsdpChecksumOffset, kRsdpV1Size);
  set_checksum(rsdp, kRsdpExtendedChecksumOffset, kRsdpSize);

  AcpiTables result{base, base, Bytes(total_size), {}};
  auto place = [&](const std::string& signature, uint64_t at, const Bytes& table) {
    put_bytes(result.bytes, at, table);
    result.tables[signature] = {base + at, static_cast<uint32_t>(table.size())};
  };
  place("RSDP", 0, rsdp);
  place("XSDT", xsdt_offset, xsdt);
  for (size_t i = 0; i < tables.size(); ++i) {
    if (result.tables.contains(tables[i].first)) {
      throw Error("ACPI: two tables with signature " + tables[i].first);
    }
    place(tables[i].first, offsets[i], tables[i].second);
  }
  return result;
}

}  // namespace ember::boot
