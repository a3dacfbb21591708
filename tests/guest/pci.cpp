#include "pci.hpp"

#include "acpi.hpp"
#include "base.hpp"
#include "cmdline.hpp"
#include "iomap.hpp"
#include "portio.hpp"
#include "print.hpp"
#include "aml.hpp"

namespace guest::pci {
namespace {

// MCFG (PCI Firmware 3.2, 4.1.2): 36-byte header, 8 reserved bytes, then 16-byte allocations.
constexpr uint64_t kMcfgAllocations = 44;
constexpr uint64_t kMcfgAllocationSize = 16;
// Configuration mechanism #1 (PCI 3.0, 3.2.2.3.2).
constexpr uint16_t kConfigAddressPort = 0xcf8;
constexpr uint16_t kConfigDataPort = 0xcfc;
constexpr uint32_t kConfigEnable = 0x80000000;
// ECAM: 4 KiB per function, 1 MiB per bus (PCIe 4.0, 7.2.2).
constexpr uint64_t kEcamBusSize = 1u << 20;
constexpr uint32_t kMaxBuses = 256;
constexpr int kMaxBridgeDepth = 8;
// BAR bits (PCI 3.0, 6.2.5.1).
constexpr uint32_t kBarIo = 0x1;
constexpr uint32_t kBarTypeMask = 0x6;
constexpr uint32_t kBarType64 = 0x4;
constexpr uint32_t kBarMemoryMask = 0xfffffff0;
// AML / resource descriptors (ACPI 6.5, 19.6 and 20.2).
constexpr uint8_t kAmlBufferOp = 0x11;
constexpr uint8_t kAmlReturnOp = 0xa4;
constexpr uint8_t kAmlDWordPrefix = 0x0c;
constexpr uint8_t kAmlQWordPrefix = 0x0e;
constexpr uint8_t kResourceLarge = 0x80;
constexpr uint8_t kResourceDWordAddress = 0x87;
constexpr uint8_t kResourceWordAddress = 0x88;
constexpr uint8_t kResourceQWordAddress = 0x8a;
constexpr uint8_t kResourceEndTag = 0x79;
constexpr uint8_t kAddressSpaceMemoryRange = 0;
constexpr uint8_t kAddressSpaceBusRange = 2;

bool have_ecam;
const char* ecam_source = "MCFG";
uint64_t ecam_base;
uint8_t ecam_start_bus, ecam_end_bus;
bool ecam_bus_mapped[kMaxBuses];
uint64_t window_next, window_end;
const char* window_source = "none";

uint64_t find_acpi_table(const char* signature) {
    uint64_t rsdp = acpi_info.rsdp;
    if (rsdp == 0) return 0;
    uint64_t xsdt = guest::read8(rsdp + 15) >= 2 ? guest::read64(rsdp + 24) : 0;
    uint64_t root = xsdt != 0 ? xsdt : guest::read32(rsdp + 16);
    uint32_t entry_size = xsdt != 0 ? 8 : 4;
    uint32_t count = (guest::read32(root + 4) - 36) / entry_size;
    for (uint32_t i = 0; i < count; ++i) {
        uint64_t entry = root + 36 + i * entry_size;
        uint64_t table = entry_size == 8 ? guest::read64(entry) : guest::read32(entry);
        if (table != 0 && memcmp(reinterpret_cast<const void*>(table), signature, 4) == 0) return table;
    }
    return 0;
}

void find_ecam() {
    uint64_t mcfg = find_acpi_table("MCFG");
    if (mcfg == 0) return;
    uint32_t length = guest::read32(mcfg + 4);
    for (uint64_t entry = mcfg + kMcfgAllocations; entry + kMcfgAllocationSize <= mcfg + length;
         entry += kMcfgAllocationSize) {
        if (guest::read16(entry + 8) != 0) continue;  // PCI segment group 0 only
        ecam_base = guest::read64(entry);
        ecam_start_bus = guest::read8(entry + 10);
        ecam_end_bus = guest::read8(entry + 11);
        have_ecam = true;
        return;
    }
}

// The host bridge's resource template: the first Name(_CRS, Buffer) in the DSDT that produces a bus
// number range (every PCI root bridge _CRS has one: PCI Firmware 3.2, 4.1.5); its largest 32-bit memory
// range is the window. (The EisaId("PNP0A08") device's _CRS may sit in a later Scope, as in QEMU's q35.)
bool window_from_crs(uint64_t& base, uint64_t& size, uint32_t& bus_count) {
    uint64_t dsdt = acpi_info.dsdt;
    if (dsdt == 0) return false;
    uint64_t end = dsdt + guest::read32(dsdt + 4);
    for (uint64_t p = dsdt + 36; p + 8 < end; ++p) {
        if (memcmp(reinterpret_cast<const void*>(p), "_CRS", 4) != 0 || guest::read8(p + 4) != kAmlBufferOp) continue;
        AmlBuffer buffer;
        if (!aml_buffer(p + 4, end, buffer)) continue;
        bool bus_range = false;
        uint64_t best_base = 0, best_size = 0;
        for (uint64_t r = buffer.data; r + 3 <= buffer.data + buffer.size;) {
            uint8_t tag = guest::read8(r);
            if (tag == kResourceEndTag) break;
            if (!(tag & kResourceLarge)) {
                r += 1 + (tag & 7);
                continue;
            }
            uint16_t length = guest::read16(r + 1);
            bool address_space = tag == kResourceWordAddress || tag == kResourceDWordAddress || tag == kResourceQWordAddress;
            if (address_space && guest::read8(r + 3) == kAddressSpaceBusRange) {
                bus_range = true;
                if (tag == kResourceWordAddress) bus_count = guest::read16(r + 14);
            }
            if (tag == kResourceDWordAddress && guest::read8(r + 3) == kAddressSpaceMemoryRange) {
                uint64_t range_min = guest::read32(r + 10);
                uint64_t range_length = guest::read32(r + 22);
                if (range_length > best_size) {
                    best_base = range_min;
                    best_size = range_length;
                }
            }
            r += 3 + length;
        }
        if (bus_range && best_size != 0) {
            base = best_base;
            size = best_size;
            return true;
        }
    }
    return false;
}

// No MCFG (QEMU 7.2's microvm,pcie=on has none): the host bridge's _CBA method, `Method(_CBA) {Return(base)}`
// (PCI Firmware 3.2, 4.1.3), with the bus count of its _CRS.
void ecam_from_cba() {
    uint64_t dsdt = acpi_info.dsdt;
    if (dsdt == 0) return;
    uint64_t end = dsdt + guest::read32(dsdt + 4);
    for (uint64_t p = dsdt + 36; p + 16 < end; ++p) {
        if (memcmp(reinterpret_cast<const void*>(p), "_CBA", 4) != 0 || guest::read8(p + 5) != kAmlReturnOp) continue;
        uint8_t prefix = guest::read8(p + 6);
        uint64_t base = prefix == kAmlDWordPrefix ? guest::read32(p + 7)
                        : prefix == kAmlQWordPrefix ? guest::read64(p + 7)
                                                    : 0;
        if (base == 0) continue;
        uint64_t window_base = 0, window_size = 0;
        uint32_t buses = 0;
        window_from_crs(window_base, window_size, buses);
        ecam_base = base;
        ecam_start_bus = 0;
        ecam_end_bus = static_cast<uint8_t>(buses == 0 || buses > kMaxBuses ? 0 : buses - 1);
        have_ecam = true;
        ecam_source = "dsdt _CBA";
        return;
    }
}

void find_window(const BootInfo& boot) {
    uint64_t base = 0, size = 0;
    uint32_t buses = 0;
    if (cmdline_hex(boot.cmdline, "test.pci_window", base)) {
        window_source = "cmdline";
        window_next = base;
        window_end = base + 0x10000000;  // 256 MiB unless the command line says otherwise
        uint64_t window_size;
        if (cmdline_hex(boot.cmdline, "test.pci_window_size", window_size)) window_end = base + window_size;
    } else if (window_from_crs(base, size, buses)) {
        window_source = "dsdt-crs";
        window_next = base;
        window_end = base + size;
    }
}

uint64_t ecam_address(const Function& f, uint16_t offset) {
    return ecam_base + (uint64_t{static_cast<uint8_t>(f.bus - ecam_start_bus)} << 20) + (uint64_t{f.device} << 15) +
           (uint64_t{f.function} << 12) + offset;
}

bool bus_reachable(uint8_t bus) {
    if (!have_ecam) return bus == 0;
    if (bus < ecam_start_bus || bus > ecam_end_bus) return false;
    if (!ecam_bus_mapped[bus]) {
        if (!map_uncached(ecam_base + uint64_t{static_cast<uint8_t>(bus - ecam_start_bus)} * kEcamBusSize, kEcamBusSize))
            return false;
        ecam_bus_mapped[bus] = true;
    }
    return true;
}

uint32_t legacy_address(const Function& f, uint16_t offset) {
    return kConfigEnable | (uint32_t{f.bus} << 16) | (uint32_t{f.device} << 11) | (uint32_t{f.function} << 8) |
           (offset & 0xfc);
}

void scan_bus(uint8_t bus, int depth, Function* out, uint32_t capacity, uint32_t& count) {
    if (!bus_reachable(bus)) return;
    for (uint8_t device = 0; device < 32; ++device) {
        for (uint8_t function = 0; function < 8; ++function) {
            Function f;
            f.bus = bus;
            f.device = device;
            f.function = function;
            uint32_t id = read32(f, kVendorId);
            if ((id & 0xffff) == 0xffff) {
                if (function == 0) break;
                continue;
            }
            f.vendor = static_cast<uint16_t>(id);
            f.device_id = static_cast<uint16_t>(id >> 16);
            f.class_code = read32(f, kRevisionClass) >> 8;
            uint8_t header = read8(f, kHeaderType);
            if (count < capacity) out[count] = f;
            ++count;
            if ((header & kHeaderTypeMask) == kHeaderBridge && depth < kMaxBridgeDepth) {
                uint8_t secondary = read8(f, kSecondaryBus);
                if (secondary > bus) scan_bus(secondary, depth + 1, out, capacity, count);
            }
            if (function == 0 && !(header & kHeaderMultiFunction)) break;
        }
    }
}

}  // namespace

bool init(const BootInfo& boot) {
    find_ecam();
    if (!have_ecam) ecam_from_cba();
    find_window(boot);
    if (have_ecam) {
        print("ember-test-guest: pci ecam at %lx buses %u-%u (%s)\n", ecam_base, ecam_start_bus, ecam_end_bus,
              ecam_source);
    } else {
        print("ember-test-guest: pci no MCFG: configuration mechanism #1 on bus 0\n");
        Function host_bridge;
        if ((read32(host_bridge, kVendorId) & 0xffff) == 0xffff) return false;
    }
    if (window_next != 0) {
        print("ember-test-guest: pci window for unassigned BARs %lx-%lx (%s)\n", window_next, window_end - 1,
              window_source);
    }
    return true;
}

const char* access_method() { return have_ecam ? "ecam" : "cf8"; }
uint64_t ecam_base_address() { return have_ecam && ecam_start_bus == 0 && bus_reachable(0) ? ecam_base : 0; }

uint32_t read32(const Function& f, uint16_t offset) {
    if (have_ecam) return guest::read32(ecam_address(f, offset));
    outl(kConfigAddressPort, legacy_address(f, offset));
    return inl(kConfigDataPort);
}

uint16_t read16(const Function& f, uint16_t offset) {
    if (have_ecam) return guest::read16(ecam_address(f, offset));
    return static_cast<uint16_t>(read32(f, offset & ~3) >> ((offset & 2) * 8));
}

uint8_t read8(const Function& f, uint16_t offset) {
    if (have_ecam) return guest::read8(ecam_address(f, offset));
    return static_cast<uint8_t>(read32(f, offset & ~3) >> ((offset & 3) * 8));
}

void write32(const Function& f, uint16_t offset, uint32_t value) {
    if (have_ecam) {
        guest::write32(ecam_address(f, offset), value);
        return;
    }
    outl(kConfigAddressPort, legacy_address(f, offset));
    outl(kConfigDataPort, value);
}

void write16(const Function& f, uint16_t offset, uint16_t value) {
    if (have_ecam) {
        guest::write16(ecam_address(f, offset), value);
        return;
    }
    outl(kConfigAddressPort, legacy_address(f, offset));
    outw(static_cast<uint16_t>(kConfigDataPort + (offset & 2)), value);
}

uint32_t enumerate(Function* out, uint32_t capacity) {
    uint32_t count = 0;
    scan_bus(have_ecam ? ecam_start_bus : 0, 0, out, capacity, count);
    return count < capacity ? count : capacity;
}

uint8_t find_capability(const Function& f, uint8_t id, uint8_t start) {
    if (!(read16(f, kStatus) & kStatusCapabilities)) return 0;
    uint8_t position = start == 0 ? read8(f, kCapabilitiesPointer) : read8(f, start + 1);
    for (int guard = 0; position >= 0x40 && guard < 48; ++guard) {
        position &= 0xfc;
        if (read8(f, position) == id) return position;
        position = read8(f, position + 1);
    }
    return 0;
}

uint64_t memory_bar(const Function& f, uint8_t index, uint64_t needed, const char*& error) {
    if (index > 5) {
        error = "BAR index out of range";
        return 0;
    }
    uint16_t offset = static_cast<uint16_t>(kBar0 + 4 * index);
    uint32_t low = read32(f, offset);
    if (low & kBarIo) {
        error = "BAR is an I/O BAR";
        return 0;
    }
    bool is64 = (low & kBarTypeMask) == kBarType64;
    uint64_t address = low & kBarMemoryMask;
    if (is64) address |= uint64_t{read32(f, offset + 4)} << 32;
    uint16_t command = read16(f, kCommand);
    if (address == 0) {
        // Size it with decoding off (PCI 3.0, 6.2.5.1), then place it, naturally aligned, in the window.
        write16(f, kCommand, command & ~(kCommandMemory | kCommandIo));
        write32(f, offset, 0xffffffff);
        uint64_t mask = read32(f, offset) & kBarMemoryMask;
        if (is64) {
            write32(f, offset + 4, 0xffffffff);
            mask |= uint64_t{read32(f, offset + 4)} << 32;
        } else {
            mask |= 0xffffffff00000000;
        }
        uint64_t size = ~mask + 1;
        uint64_t base = (window_next + size - 1) & ~(size - 1);
        if (mask == 0 || window_next == 0 || base + size > window_end) {
            write32(f, offset, low);
            if (is64) write32(f, offset + 4, 0);
            write16(f, kCommand, command);
            error = window_next == 0 ? "BAR unassigned and no window (test.pci_window=)" : "window exhausted";
            return 0;
        }
        window_next = base + size;
        write32(f, offset, static_cast<uint32_t>(base) | (low & ~kBarMemoryMask));
        if (is64) write32(f, offset + 4, static_cast<uint32_t>(base >> 32));
        address = base;
        print("ember-test-guest: pci %02x:%02x.%u BAR%u assigned %lx size %lx\n", f.bus, f.device, f.function, index,
              base, size);
    }
    write16(f, kCommand, command | kCommandMemory | kCommandBusMaster);
    if (!map_uncached(address, needed)) {
        error = "cannot map the BAR";
        return 0;
    }
    return address;
}

}  // namespace guest::pci
