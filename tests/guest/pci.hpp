// PCI configuration space and BARs (PCI Local Bus 3.0 chapter 6, PCI Express Base 4.0 7.2.2 for ECAM,
// PCI Firmware 3.2 4.1.2 for the ACPI MCFG table), from CPL3.
// Config space goes through ECAM (memory-mapped, found in the MCFG table, else from the host bridge's _CBA
// method in the DSDT) when there is one, else configuration mechanism #1 (ports 0xcf8/0xcfc, through the
// port I/O trap) on bus 0.
#pragma once

#include <stdint.h>

#include "bootinfo.hpp"

namespace guest::pci {

// Configuration header offsets (PCI 3.0, 6.1).
constexpr uint16_t kVendorId = 0x00;
constexpr uint16_t kDeviceId = 0x02;
constexpr uint16_t kCommand = 0x04;
constexpr uint16_t kStatus = 0x06;
constexpr uint16_t kRevisionClass = 0x08;
constexpr uint16_t kHeaderType = 0x0e;
constexpr uint16_t kBar0 = 0x10;
constexpr uint16_t kSubsystemId = 0x2e;
constexpr uint16_t kCapabilitiesPointer = 0x34;
constexpr uint16_t kSecondaryBus = 0x19;  // type 1 (bridge) header
constexpr uint16_t kCommandIo = 1u << 0;
constexpr uint16_t kCommandMemory = 1u << 1;
constexpr uint16_t kCommandBusMaster = 1u << 2;
constexpr uint16_t kCommandIntxDisable = 1u << 10;
constexpr uint16_t kStatusCapabilities = 1u << 4;
constexpr uint8_t kHeaderMultiFunction = 0x80;
constexpr uint8_t kHeaderTypeMask = 0x7f;
constexpr uint8_t kHeaderBridge = 1;
constexpr uint8_t kCapabilityMsix = 0x11;    // PCI 3.0, 6.8.2
constexpr uint8_t kCapabilityVendor = 0x09;  // vendor-specific (virtio uses it, virtio 1.2 4.1.4)

struct Function {
    uint8_t bus = 0, device = 0, function = 0;
    uint16_t vendor = 0, device_id = 0;
    uint32_t class_code = 0;  // class << 16 | subclass << 8 | prog-if
};

// Finds ECAM through the MCFG table (or the legacy ports) and the host bridge window for unassigned BARs
// (command line `test.pci_window=0x<base>` [`test.pci_window_size=0x<size>`, default 256 MiB], else
// the largest 32-bit memory range of the host bridge's _CRS in the DSDT).
// Prints what it found. False if there is no config space at all.
bool init(const BootInfo& boot);
const char* access_method();  // "ecam" or "cf8"
uint64_t ecam_base_address();  // bus 0's ECAM window (mapped uncached), 0 without ECAM

uint8_t read8(const Function& f, uint16_t offset);
uint16_t read16(const Function& f, uint16_t offset);
uint32_t read32(const Function& f, uint16_t offset);
void write16(const Function& f, uint16_t offset, uint16_t value);
void write32(const Function& f, uint16_t offset, uint32_t value);

// Lists the functions on bus 0 and behind configured bridges, in bus/device/function order.
uint32_t enumerate(Function* out, uint32_t capacity);

// Offset of the first capability with `id` at or after `start` (0: from the list head); 0 if none.
uint8_t find_capability(const Function& f, uint8_t id, uint8_t start = 0);

// The CPU address of memory BAR `index` (64-bit BARs: the lower index), assigning one from the host bridge
// window if firmware left it at 0, and mapped uncached for at least `needed` bytes. 0 on failure
// (`error` says why). Enables memory decoding and bus mastering.
uint64_t memory_bar(const Function& f, uint8_t index, uint64_t needed, const char*& error);

}  // namespace guest::pci
