#include "acpi.hpp"

#include "checks.hpp"
#include "print.hpp"

namespace guest {

constinit AcpiInfo acpi_info;

namespace {

// RSDP (ACPI 6.5, 5.2.5.3).
constexpr uint64_t kRsdpRevision = 15;
constexpr uint64_t kRsdpRsdt = 16;
constexpr uint64_t kRsdpLength = 20;
constexpr uint64_t kRsdpXsdt = 24;
constexpr uint64_t kRsdpV1Size = 20;
constexpr uint64_t kBiosAreaStart = 0xe0000;
constexpr uint64_t kBiosAreaEnd = 0x100000;
constexpr uint64_t kEbdaSegmentPointer = 0x40e;

// System description table header (5.2.6).
constexpr uint64_t kHeaderLength = 4;
constexpr uint64_t kHeaderOemId = 10;
constexpr uint64_t kHeaderSize = 36;
constexpr uint32_t kMaxTableLength = 16u << 20;

// FADT (5.2.9).
constexpr uint64_t kFadtDsdt = 40;
constexpr uint64_t kFadtSmiCommand = 48;
constexpr uint64_t kFadtAcpiEnable = 52;
constexpr uint64_t kFadtPm1aControl = 64;
constexpr uint64_t kFadtPm1bControl = 68;
constexpr uint64_t kFadtFlags = 112;
constexpr uint32_t kFadtFlagHardwareReduced = 1u << 20;
constexpr uint32_t kFadtFlagResetRegister = 1u << 10;
constexpr uint64_t kFadtResetRegister = 116;
constexpr uint64_t kFadtResetValue = 128;
constexpr uint64_t kFadtXDsdt = 140;
constexpr uint64_t kFadtXPm1aControl = 172;
constexpr uint64_t kFadtSleepControl = 244;

// MADT (5.2.12).
constexpr uint64_t kMadtLapicAddress = 36;
constexpr uint64_t kMadtEntries = 44;
constexpr uint8_t kMadtLocalApic = 0;
constexpr uint8_t kMadtIoApic = 1;
constexpr uint8_t kMadtSourceOverride = 2;
constexpr uint8_t kMadtLapicOverride = 5;
constexpr uint8_t kMadtLocalX2Apic = 9;
constexpr uint32_t kMadtEnabled = 1;
constexpr uint8_t kUartIsaIrq = 4;

// AML opcodes (20.3).
constexpr uint8_t kAmlZeroOp = 0x00;
constexpr uint8_t kAmlOneOp = 0x01;
constexpr uint8_t kAmlBytePrefix = 0x0a;
constexpr uint8_t kAmlWordPrefix = 0x0b;
constexpr uint8_t kAmlPackageOp = 0x12;
constexpr uint8_t kAmlOnesOp = 0xff;

uint8_t checksum(uint64_t address, uint64_t length) {
    uint8_t sum = 0;
    for (uint64_t i = 0; i < length; ++i) sum = static_cast<uint8_t>(sum + read8(address + i));
    return sum;
}

bool signature_is(uint64_t address, const char* signature) {
    return memcmp(reinterpret_cast<const void*>(address), signature, string_length(signature)) == 0;
}

bool rsdp_valid(uint64_t address) {
    if (!signature_is(address, "RSD PTR ") || checksum(address, kRsdpV1Size) != 0) return false;
    if (read8(address + kRsdpRevision) < 2) return true;
    uint32_t length = read32(address + kRsdpLength);
    return length >= kRsdpXsdt + 8 && length < 4096 && checksum(address, length) == 0;
}

uint64_t scan_for_rsdp(uint64_t start, uint64_t end) {
    for (uint64_t address = start; address < end; address += 16) {
        if (rsdp_valid(address)) return address;
    }
    return 0;
}

// The RSDP: from the loader's hint, else the first KiB of the EBDA and the BIOS area (5.2.5.1).
uint64_t find_rsdp(uint64_t hint, const char*& source) {
    if (hint != 0 && rsdp_valid(hint)) {
        source = "boot-info";
        return hint;
    }
    source = "scan";
    uint64_t ebda = uint64_t{read16(kEbdaSegmentPointer)} << 4;
    if (ebda >= 0x80000 && ebda < 0xa0000) {
        if (uint64_t found = scan_for_rsdp(ebda, ebda + 1024)) return found;
    }
    return scan_for_rsdp(kBiosAreaStart, kBiosAreaEnd);
}

uint32_t table_length(uint64_t table) { return read32(table + kHeaderLength); }

// Prints the table and checks its checksum; false (and a FAIL) if it is broken.
bool check_table(uint64_t table, uint32_t& bad_tables) {
    uint32_t length = table_length(table);
    const char* signature = reinterpret_cast<const char*>(table);
    const char* oem = reinterpret_cast<const char*>(table + kHeaderOemId);
    print("ember-test-guest: acpi %.*s at %lx len=%u oem=%.*s\n", 4, signature, table, length, 6, oem);
    if (length < kHeaderSize || length > kMaxTableLength) {
        check_fail("acpi_table", "%.*s bad length %u", 4, signature, length);
        ++bad_tables;
        return false;
    }
    if (checksum(table, length) != 0) {
        check_fail("acpi_table", "%.*s bad checksum", 4, signature);
        ++bad_tables;
        return false;
    }
    return true;
}

GenericAddress read_gas(uint64_t address) {
    return GenericAddress{read8(address), read8(address + 1), read64(address + 4)};
}

void parse_fadt(uint64_t fadt) {
    uint32_t length = table_length(fadt);
    acpi_info.fadt = fadt;
    acpi_info.hardware_reduced = length > kFadtFlags && (read32(fadt + kFadtFlags) & kFadtFlagHardwareReduced);
    acpi_info.smi_command = read32(fadt + kFadtSmiCommand);
    acpi_info.acpi_enable = read8(fadt + kFadtAcpiEnable);
    acpi_info.pm1a_control = read32(fadt + kFadtPm1aControl);
    acpi_info.pm1b_control = read32(fadt + kFadtPm1bControl);
    if (acpi_info.pm1a_control == 0 && length >= kFadtXPm1aControl + 12) {
        GenericAddress x_pm1a = read_gas(fadt + kFadtXPm1aControl);
        if (x_pm1a.space == kAddressSpaceIo) acpi_info.pm1a_control = static_cast<uint32_t>(x_pm1a.address);
    }
    if (length >= kFadtSleepControl + 12) acpi_info.sleep_control = read_gas(fadt + kFadtSleepControl);
    if (length > kFadtResetValue) {
        acpi_info.reset_supported = read32(fadt + kFadtFlags) & kFadtFlagResetRegister;
        acpi_info.reset_register = read_gas(fadt + kFadtResetRegister);
        acpi_info.reset_value = read8(fadt + kFadtResetValue);
    }
    uint64_t x_dsdt = length >= kFadtXDsdt + 8 ? read64(fadt + kFadtXDsdt) : 0;
    acpi_info.dsdt = x_dsdt != 0 ? x_dsdt : read32(fadt + kFadtDsdt);
}

void add_cpu(uint32_t flags, uint32_t apic_id) {
    if (!(flags & kMadtEnabled)) return;
    if (acpi_info.enabled_cpus < MAX_CPUS) acpi_info.apic_ids[acpi_info.enabled_cpus] = apic_id;
    ++acpi_info.enabled_cpus;
}

void parse_madt(uint64_t madt) {
    acpi_info.madt = madt;
    acpi_info.lapic_address = read32(madt + kMadtLapicAddress);
    uint64_t end = madt + table_length(madt);
    for (uint64_t entry = madt + kMadtEntries; entry + 2 <= end;) {
        uint8_t type = read8(entry);
        uint8_t length = read8(entry + 1);
        if (length < 2 || entry + length > end) break;
        if (type == kMadtLocalApic) {
            add_cpu(read32(entry + 4), read8(entry + 3));
        } else if (type == kMadtLocalX2Apic) {
            add_cpu(read32(entry + 8), read32(entry + 4));
        } else if (type == kMadtIoApic && !acpi_info.have_ioapic) {
            acpi_info.have_ioapic = true;
            acpi_info.ioapic_address = read32(entry + 4);
            acpi_info.ioapic_gsi_base = read32(entry + 8);
        } else if (type == kMadtSourceOverride && read8(entry + 3) == kUartIsaIrq) {
            acpi_info.uart_gsi = read32(entry + 4);
        } else if (type == kMadtLapicOverride) {
            acpi_info.lapic_address = read64(entry + 4);
        }
        entry += length;
    }
}

// Decodes the first element of Name(_S5_, Package(){...}) in the DSDT: the PM1a SLP_TYP for S5 (7.4.2).
bool find_s5_sleep_type(uint64_t dsdt, uint8_t& sleep_type) {
    uint64_t end = dsdt + table_length(dsdt);
    for (uint64_t p = dsdt + kHeaderSize; p + 8 < end; ++p) {
        if (!signature_is(p, "_S5_") || read8(p + 4) != kAmlPackageOp) continue;
        uint64_t q = p + 5;
        q += 1 + (read8(q) >> 6);  // PkgLength: lead byte bits 7:6 = number of following bytes
        q += 1;                    // NumElements
        uint8_t op = read8(q);
        if (op == kAmlZeroOp) {
            sleep_type = 0;
        } else if (op == kAmlOneOp) {
            sleep_type = 1;
        } else if (op == kAmlBytePrefix || op == kAmlWordPrefix) {
            sleep_type = read8(q + 1);
        } else if (op == kAmlOnesOp) {
            sleep_type = 0xff;
        } else {
            return false;
        }
        return true;
    }
    return false;
}

void walk_root_table(uint64_t root, bool is_xsdt, uint32_t& tables, uint32_t& bad_tables) {
    uint32_t entry_size = is_xsdt ? 8 : 4;
    uint32_t count = (table_length(root) - kHeaderSize) / entry_size;
    for (uint32_t i = 0; i < count; ++i) {
        uint64_t entry = root + kHeaderSize + i * entry_size;
        uint64_t table = is_xsdt ? read64(entry) : read32(entry);
        ++tables;
        if (!check_table(table, bad_tables)) continue;
        if (signature_is(table, "FACP") && acpi_info.fadt == 0) parse_fadt(table);
        if (signature_is(table, "APIC") && acpi_info.madt == 0) parse_madt(table);
    }
}

void check_dsdt() {
    if (acpi_info.dsdt == 0) {
        check_fail("acpi_dsdt", "FADT has no DSDT");
        return;
    }
    uint32_t bad = 0;
    if (!signature_is(acpi_info.dsdt, "DSDT")) {
        check_fail("acpi_dsdt", "signature at %lx is not DSDT", acpi_info.dsdt);
        return;
    }
    if (!check_table(acpi_info.dsdt, bad)) return;
    check_ok("acpi_dsdt", "len=%u", table_length(acpi_info.dsdt));
    acpi_info.have_s5 = find_s5_sleep_type(acpi_info.dsdt, acpi_info.s5_sleep_type);
    if (acpi_info.have_s5) {
        check_ok("acpi_s5", "slp_typ=%u", acpi_info.s5_sleep_type);
    } else {
        check_fail("acpi_s5", "no \\_S5 package in the DSDT");
    }
}

}  // namespace

void acpi_scan(const BootInfo& boot) {
    const char* source = "";
    uint64_t rsdp = find_rsdp(boot.rsdp_hint, source);
    if (rsdp == 0) {
        check_fail("acpi_rsdp", "no valid RSDP (hint %lx)", boot.rsdp_hint);
        return;
    }
    acpi_info.rsdp = rsdp;
    uint8_t revision = read8(rsdp + kRsdpRevision);
    uint64_t xsdt = revision >= 2 ? read64(rsdp + kRsdpXsdt) : 0;
    uint64_t rsdt = read32(rsdp + kRsdpRsdt);
    bool use_xsdt = xsdt != 0;
    uint64_t root = use_xsdt ? xsdt : rsdt;
    check_ok("acpi_rsdp", "at %lx from %s revision %u %s at %lx", rsdp, source, revision, use_xsdt ? "XSDT" : "RSDT", root);

    uint32_t tables = 0;
    uint32_t bad_tables = 0;
    if (root == 0 || !signature_is(root, use_xsdt ? "XSDT" : "RSDT") || !check_table(root, bad_tables)) {
        check_fail("acpi_root", "bad %s at %lx", use_xsdt ? "XSDT" : "RSDT", root);
        return;
    }
    walk_root_table(root, use_xsdt, tables, bad_tables);
    if (bad_tables == 0) check_ok("acpi_tables", "count=%u checksums ok", tables);

    if (acpi_info.fadt != 0) {
        check_ok("acpi_fadt", "hw_reduced=%d pm1a_cnt=%x sleep_ctl=%u:%lx", acpi_info.hardware_reduced ? 1 : 0,
                 acpi_info.pm1a_control, acpi_info.sleep_control.space, acpi_info.sleep_control.address);
    } else {
        check_fail("acpi_fadt", "no FACP table");
    }
    if (acpi_info.madt != 0) {
        check_ok("acpi_madt", "cpus=%u ioapic=%lx gsi_base=%u uart_gsi=%u", acpi_info.enabled_cpus,
                 acpi_info.ioapic_address, acpi_info.ioapic_gsi_base, acpi_info.uart_gsi);
    } else {
        check_fail("acpi_madt", "no APIC table");
    }
    check_dsdt();
}

}  // namespace guest
