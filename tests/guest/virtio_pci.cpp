#include "virtio_pci.hpp"

#include "base.hpp"
#include "checks.hpp"
#include "layout.h"
#include "pci.hpp"
#include "print.hpp"
#include "virtio_transport.hpp"

namespace guest::virtio {
namespace {

// PCI IDs (§4.1.2): modern 0x1040 + device id; transitional 0x1000-0x103f with the id in the subsystem.
constexpr uint16_t kVendorVirtio = 0x1af4;
constexpr uint16_t kModernBase = 0x1040;
constexpr uint16_t kModernLast = 0x107f;
constexpr uint16_t kTransitionalFirst = 0x1000;
constexpr uint16_t kTransitionalLast = 0x103f;

// struct virtio_pci_cap (§4.1.4) and its cfg_type values.
constexpr uint8_t kCapLength = 2;
constexpr uint8_t kCapType = 3;
constexpr uint8_t kCapBar = 4;
constexpr uint8_t kCapOffset = 8;
constexpr uint8_t kCapLengthField = 12;
constexpr uint8_t kCapNotifyMultiplier = 16;  // struct virtio_pci_notify_cap (§4.1.4.4)
constexpr uint8_t kCapCommon = 1;
constexpr uint8_t kCapNotify = 2;
constexpr uint8_t kCapIsr = 3;
constexpr uint8_t kCapDevice = 4;

// struct virtio_pci_common_cfg (§4.1.4.3).
constexpr uint64_t kDeviceFeatureSelect = 0;
constexpr uint64_t kDeviceFeature = 4;
constexpr uint64_t kDriverFeatureSelect = 8;
constexpr uint64_t kDriverFeature = 12;
constexpr uint64_t kConfigMsixVector = 16;
constexpr uint64_t kDeviceStatus = 20;
constexpr uint64_t kConfigGeneration = 21;
constexpr uint64_t kQueueSelect = 22;
constexpr uint64_t kQueueSize = 24;
constexpr uint64_t kQueueMsixVector = 26;
constexpr uint64_t kQueueEnable = 28;
constexpr uint64_t kQueueNotifyOff = 30;
constexpr uint64_t kQueueDesc = 32;
constexpr uint64_t kQueueDriver = 40;
constexpr uint64_t kQueueDevice = 48;

// MSI-X capability and table (PCI 3.0, 6.8.2).
constexpr uint8_t kMsixControl = 2;
constexpr uint8_t kMsixTable = 4;
constexpr uint16_t kMsixTableSizeMask = 0x7ff;
constexpr uint16_t kMsixFunctionMask = 1u << 14;
constexpr uint16_t kMsixEnable = 1u << 15;
constexpr uint32_t kMsixBirMask = 0x7;
constexpr uint64_t kMsixEntrySize = 16;
constexpr uint64_t kMsixAddressLow = 0;
constexpr uint64_t kMsixAddressHigh = 4;
constexpr uint64_t kMsixData = 8;
constexpr uint64_t kMsixVectorControl = 12;
constexpr uint32_t kMsixEntryMasked = 1;
// MSI message address (SDM vol. 3A, 11.11.1): 0xfee00000 | destination APIC id << 12, physical, fixed.
constexpr uint32_t kMsiAddressBase = LAPIC_BASE;
constexpr uint32_t kMsiDestinationShift = 12;

void write64_split(uint64_t address, uint64_t value) {  // §4.1.3.1: 64-bit fields as two 32-bit writes
    write32(address, static_cast<uint32_t>(value));
    write32(address + 4, static_cast<uint32_t>(value >> 32));
}

uint32_t device_type(const pci::Function& f) {
    if (f.device_id >= kModernBase && f.device_id <= kModernLast) return f.device_id - kModernBase;
    if (f.device_id >= kTransitionalFirst && f.device_id <= kTransitionalLast) return pci::read16(f, pci::kSubsystemId);
    return 0;
}

// Maps the structure a virtio_pci_cap at `cap` describes; 0 on failure.
uint64_t map_structure(const pci::Function& f, uint8_t cap, const char*& error) {
    uint8_t bar = pci::read8(f, cap + kCapBar);
    uint32_t offset = pci::read32(f, cap + kCapOffset);
    uint32_t length = pci::read32(f, cap + kCapLengthField);
    uint64_t base = pci::memory_bar(f, bar, uint64_t{offset} + length, error);
    return base == 0 ? 0 : base + offset;
}

bool setup_msix(Device& d, const char*& error) {
    uint8_t cap = pci::find_capability(d.function, pci::kCapabilityMsix);
    if (cap == 0) return true;  // no MSI-X: the queues are polled
    uint16_t control = pci::read16(d.function, cap + kMsixControl);
    uint32_t table = pci::read32(d.function, cap + kMsixTable);
    uint16_t entries = static_cast<uint16_t>((control & kMsixTableSizeMask) + 1);
    uint64_t bar = pci::memory_bar(d.function, static_cast<uint8_t>(table & kMsixBirMask),
                                   (table & ~kMsixBirMask) + entries * kMsixEntrySize, error);
    if (bar == 0) return false;
    d.msix_table = bar + (table & ~kMsixBirMask);
    d.msix_entries = entries;
    d.msix_capability = cap;
    for (uint16_t i = 0; i < entries; ++i) write32(d.msix_table + i * kMsixEntrySize + kMsixVectorControl, kMsixEntryMasked);
    // MSI-X on (which also turns INTx off for the function), no function mask.
    pci::write16(d.function, cap + kMsixControl, static_cast<uint16_t>((control | kMsixEnable) & ~kMsixFunctionMask));
    pci::write16(d.function, pci::kCommand, pci::read16(d.function, pci::kCommand) | pci::kCommandIntxDisable);
    return true;
}

bool probe(const pci::Function& f, Device& d, const char*& error) {
    d = Device{};
    d.transport = Transport::Pci;
    d.function = f;
    d.device_id = device_type(f);
    for (uint8_t cap = pci::find_capability(f, pci::kCapabilityVendor); cap != 0;
         cap = pci::find_capability(f, pci::kCapabilityVendor, cap)) {
        uint8_t type = pci::read8(f, cap + kCapType);
        // The first structure of each type is the preferred one (§4.1.4).
        uint64_t* slot = type == kCapCommon ? &d.common
                         : type == kCapNotify ? &d.notify
                         : type == kCapIsr    ? &d.isr
                         : type == kCapDevice ? &d.device_config
                                              : nullptr;
        if (slot == nullptr || *slot != 0) continue;
        if (type == kCapNotify && pci::read8(f, cap + kCapLength) >= kCapNotifyMultiplier + 4) {
            d.notify_multiplier = pci::read32(f, cap + kCapNotifyMultiplier);
        }
        *slot = map_structure(f, cap, error);
        if (*slot == 0) return false;
    }
    if (d.common == 0 || d.notify == 0) {
        error = "no common/notify capability (legacy-only device)";
        return false;
    }
    return setup_msix(d, error);
}

}  // namespace

uint32_t discover_pci(Device* out, uint32_t capacity) {
    constexpr uint32_t kMaxFunctions = 64;
    pci::Function functions[kMaxFunctions];
    uint32_t count = pci::enumerate(functions, kMaxFunctions);
    uint32_t found = 0;
    for (uint32_t i = 0; i < count && found < capacity; ++i) {
        const pci::Function& f = functions[i];
        if (f.vendor != kVendorVirtio || device_type(f) == 0) continue;
        const char* error = "";
        Device& d = out[found];
        if (!probe(f, d, error)) {
            check_fail("virtio_pci_probe", "%02x:%02x.%u id %04x: %s", f.bus, f.device, f.function, f.device_id, error);
            continue;
        }
        print("ember-test-guest: virtio-pci %02x:%02x.%u %s (type %u, id %04x) common=%lx notify=%lx*%u device=%lx "
              "msix=%u\n",
              f.bus, f.device, f.function, device_name(d.device_id), d.device_id, f.device_id, d.common, d.notify,
              d.notify_multiplier, d.device_config, d.msix_entries);
        ++found;
    }
    return found;
}

namespace pci_transport {

void reset(Device& d) { write8(d.common + kDeviceStatus, 0); }
uint8_t status(Device& d) { return read8(d.common + kDeviceStatus); }
void set_status(Device& d, uint8_t value) { write8(d.common + kDeviceStatus, value); }
uint8_t config_generation(Device& d) { return read8(d.common + kConfigGeneration); }

uint64_t device_features(Device& d) {
    return read_feature_words(d.common + kDeviceFeatureSelect, d.common + kDeviceFeature);
}

void set_driver_features(Device& d, uint64_t features) {
    write_feature_words(d.common + kDriverFeatureSelect, d.common + kDriverFeature, features);
    write16(d.common + kConfigMsixVector, kNoMsixVector);  // no configuration-change interrupts
}

uint16_t queue_max(Device& d, uint16_t index) {
    write16(d.common + kQueueSelect, index);
    return read16(d.common + kQueueSize);
}

bool queue_setup(Device& d, Virtqueue& q, const char*& error) {
    write16(d.common + kQueueSelect, q.index);
    write16(d.common + kQueueSize, q.size);
    write64_split(d.common + kQueueDesc, reinterpret_cast<uint64_t>(q.desc));
    write64_split(d.common + kQueueDriver, reinterpret_cast<uint64_t>(q.avail));
    write64_split(d.common + kQueueDevice, reinterpret_cast<uint64_t>(q.used));
    q.notify_address = d.notify + uint64_t{read16(d.common + kQueueNotifyOff)} * d.notify_multiplier;
    // One MSI-X table entry and one counting vector per queue, when both are left (§4.1.5.1.2).
    if (d.msix_table != 0 && d.next_msix_entry < d.msix_entries) {
        int slot = allocate_vector_slot();
        if (slot >= 0) {
            uint16_t entry = d.next_msix_entry++;
            uint64_t e = d.msix_table + entry * kMsixEntrySize;
            write32(e + kMsixAddressLow, kMsiAddressBase | (interrupt_destination() << kMsiDestinationShift));
            write32(e + kMsixAddressHigh, 0);
            write32(e + kMsixData, static_cast<uint32_t>(VECTOR_VIRTIO_FIRST + slot));  // fixed, edge
            write32(e + kMsixVectorControl, 0);
            write16(d.common + kQueueMsixVector, entry);
            if (read16(d.common + kQueueMsixVector) == entry) {
                q.vector_slot = slot;
            } else {
                write16(d.common + kQueueMsixVector, kNoMsixVector);  // device refused: poll this queue
            }
        }
    }
    write16(d.common + kQueueEnable, 1);
    if (read16(d.common + kQueueEnable) != 1) {
        error = "queue_enable did not stick";
        return false;
    }
    return true;
}

void notify(Virtqueue& q) { write16(q.notify_address, q.index); }  // §4.1.5.2: the queue index

}  // namespace pci_transport

}  // namespace guest::virtio
