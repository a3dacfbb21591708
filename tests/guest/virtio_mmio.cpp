#include "virtio_mmio.hpp"

#include "acpi.hpp"
#include "aml.hpp"
#include "apic.hpp"
#include "base.hpp"
#include "checks.hpp"
#include "cmdline.hpp"
#include "iomap.hpp"
#include "layout.h"
#include "print.hpp"
#include "virtio_transport.hpp"

namespace guest::virtio {
namespace {

// Register layout of the version 2 (non-legacy) interface (§4.2.2).
constexpr uint64_t kMagicValue = 0x000;
constexpr uint64_t kVersion = 0x004;
constexpr uint64_t kDeviceId = 0x008;
constexpr uint64_t kDeviceFeatures = 0x010;
constexpr uint64_t kDeviceFeaturesSel = 0x014;
constexpr uint64_t kDriverFeatures = 0x020;
constexpr uint64_t kDriverFeaturesSel = 0x024;
constexpr uint64_t kQueueSel = 0x030;
constexpr uint64_t kQueueNumMax = 0x034;
constexpr uint64_t kQueueNum = 0x038;
constexpr uint64_t kQueueReady = 0x044;
constexpr uint64_t kQueueNotify = 0x050;
constexpr uint64_t kInterruptStatus = 0x060;
constexpr uint64_t kInterruptAck = 0x064;
constexpr uint64_t kStatus = 0x070;
constexpr uint64_t kQueueDescLow = 0x080;
constexpr uint64_t kQueueDescHigh = 0x084;
constexpr uint64_t kQueueDriverLow = 0x090;
constexpr uint64_t kQueueDriverHigh = 0x094;
constexpr uint64_t kQueueDeviceLow = 0x0a0;
constexpr uint64_t kQueueDeviceHigh = 0x0a4;
constexpr uint64_t kConfigGeneration = 0x0fc;
constexpr uint32_t kMagic = 0x74726976;  // "virt"
constexpr uint32_t kVersionModern = 2;
constexpr uint32_t kVersionLegacy = 1;
constexpr uint64_t kWindowSize = 0x200;

// ACPI: _HID "LNRO0005" (virtio-mmio), resource descriptors (ACPI 6.5, 6.4.3.4 and 6.4.3.6).
constexpr char kMmioHid[] = "LNRO0005";
constexpr uint8_t kResourceLarge = 0x80;
constexpr uint8_t kResourceMemory32Fixed = 0x86;
constexpr uint8_t kResourceExtendedInterrupt = 0x89;
constexpr uint8_t kResourceEndTag = 0x79;
constexpr uint8_t kInterruptEdge = 1u << 1;
constexpr uint8_t kInterruptActiveLow = 1u << 2;
constexpr uint64_t kCrsSearchLimit = 512;
// MADT I/O APIC structure (ACPI 6.5, 5.2.12.3).
constexpr uint8_t kMadtIoApic = 1;
constexpr uint64_t kMadtEntries = 44;

struct Window {
    uint64_t base = 0, size = 0;
    uint32_t gsi = 0;
    bool has_irq = false, edge = false, active_low = false;
};

constexpr uint32_t kMaxWindows = 32;

// Name(_HID, "LNRO0005") followed by Name(_CRS, ResourceTemplate(){Memory32Fixed, Interrupt}).
uint32_t windows_from_dsdt(Window* out, uint32_t capacity) {
    uint64_t dsdt = acpi_info.dsdt;
    if (dsdt == 0) return 0;
    uint64_t end = dsdt + read32(dsdt + 4);
    uint32_t count = 0;
    for (uint64_t p = dsdt + 36; p + sizeof(kMmioHid) + 1 < end && count < capacity; ++p) {
        if (read8(p) != kAmlStringPrefix || memcmp(reinterpret_cast<const void*>(p + 1), kMmioHid, sizeof(kMmioHid)) != 0)
            continue;
        uint64_t limit = p + kCrsSearchLimit < end ? p + kCrsSearchLimit : end;
        uint64_t q = p;
        while (q + 5 < limit && !(memcmp(reinterpret_cast<const void*>(q), "_CRS", 4) == 0 && read8(q + 4) == 0x11)) ++q;
        AmlBuffer buffer;
        if (q + 5 >= limit || !aml_buffer(q + 4, end, buffer)) continue;
        Window w;
        for (uint64_t r = buffer.data; r + 3 <= buffer.data + buffer.size;) {
            uint8_t tag = read8(r);
            if (tag == kResourceEndTag) break;
            if (!(tag & kResourceLarge)) {
                r += 1 + (tag & 7);
                continue;
            }
            if (tag == kResourceMemory32Fixed) {
                w.base = read32(r + 4);
                w.size = read32(r + 8);
            } else if (tag == kResourceExtendedInterrupt && read8(r + 4) >= 1) {
                uint8_t flags = read8(r + 3);
                w.has_irq = true;
                w.edge = flags & kInterruptEdge;
                w.active_low = flags & kInterruptActiveLow;
                w.gsi = read32(r + 5);
            }
            r += 3 + read16(r + 1);
        }
        if (w.base != 0) out[count++] = w;
        p = q;
    }
    return count;
}

// virtio_mmio.device=<size>@<base>:<irq>[:<id>] words (Linux's virtio_mmio module parameter syntax).
uint32_t windows_from_cmdline(const char* cmdline, Window* out, uint32_t capacity) {
    static constexpr char kKey[] = "virtio_mmio.device=";
    uint32_t count = 0;
    for (const char* p = cmdline; *p != '\0' && count < capacity;) {
        while (*p == ' ') ++p;
        const char* word = p;
        while (*p != '\0' && *p != ' ') ++p;
        Str token{word, static_cast<size_t>(p - word)};
        if (!token.starts_with(kKey)) continue;
        Str rest{token.data + sizeof(kKey) - 1, token.size - (sizeof(kKey) - 1)};
        Window w;
        if (!parse_number(rest, w.size)) continue;
        if (!rest.empty() && (rest.data[0] == 'K' || rest.data[0] == 'k')) w.size <<= 10, rest = Str{rest.data + 1, rest.size - 1};
        else if (!rest.empty() && (rest.data[0] == 'M' || rest.data[0] == 'm')) w.size <<= 20, rest = Str{rest.data + 1, rest.size - 1};
        if (rest.empty() || rest.data[0] != '@') continue;
        rest = Str{rest.data + 1, rest.size - 1};
        if (!parse_number(rest, w.base) || rest.empty() || rest.data[0] != ':') continue;
        rest = Str{rest.data + 1, rest.size - 1};
        uint64_t irq;
        if (!parse_number(rest, irq)) continue;
        w.gsi = static_cast<uint32_t>(irq);
        w.has_irq = true;
        w.edge = true;  // Linux treats these as edge, active high
        out[count++] = w;
    }
    return count;
}

// The I/O APIC whose GSI range holds `gsi` (MADT: there may be several, e.g. QEMU microvm's second one).
bool find_ioapic(uint32_t gsi, uint64_t& address, uint32_t& pin) {
    uint64_t madt = acpi_info.madt;
    if (madt == 0) return false;
    uint64_t end = madt + read32(madt + 4);
    for (uint64_t entry = madt + kMadtEntries; entry + 2 <= end;) {
        uint8_t type = read8(entry);
        uint8_t length = read8(entry + 1);
        if (length < 2) break;
        if (type == kMadtIoApic) {
            uint64_t base = read32(entry + 4);
            uint32_t gsi_base = read32(entry + 8);
            if (gsi >= gsi_base && gsi < gsi_base + ioapic::pin_count(base)) {
                address = base;
                pin = gsi - gsi_base;
                return true;
            }
        }
        entry += length;
    }
    return false;
}

bool probe(const Window& w, Device& d) {
    if (!map_uncached(w.base, w.size < kWindowSize ? kWindowSize : w.size)) {
        check_fail("virtio_mmio_probe", "%lx: cannot map", w.base);
        return false;
    }
    uint32_t magic = read32(w.base + kMagicValue);
    uint32_t version = read32(w.base + kVersion);
    uint32_t device_id = read32(w.base + kDeviceId);
    if (magic != kMagic) {
        check_fail("virtio_mmio_probe", "%lx: magic %x", w.base, magic);
        return false;
    }
    if (device_id == 0) return false;  // an empty transport (§4.2.3.1.1)
    if (version != kVersionModern) {
        check_fail("virtio_mmio_probe", "%lx: version %u%s", w.base, version,
                   version == kVersionLegacy ? " (legacy; QEMU: -global virtio-mmio.force-legacy=false)" : "");
        return false;
    }
    d = Device{};
    d.transport = Transport::Mmio;
    d.device_id = device_id;
    d.mmio_base = w.base;
    d.mmio_gsi = w.gsi;
    d.mmio_active_low = w.active_low;
    d.mmio_level = !w.edge;
    uint64_t ioapic_address;
    uint32_t pin;
    if (w.has_irq && find_ioapic(w.gsi, ioapic_address, pin)) {
        d.vector_slot = allocate_vector_slot();
        if (d.vector_slot >= 0) {
            // Edge even where the descriptor says level: this host's KVM EOIs at injection, so a level
            // entry would fire twice per assertion (HOSTS.md); we ACK InterruptStatus before looking at the
            // ring again, so no edge is lost.
            ioapic::route_edge_polarity(ioapic_address, pin, static_cast<uint8_t>(VECTOR_VIRTIO_FIRST + d.vector_slot),
                                        interrupt_destination(), w.active_low);
        }
    }
    print("ember-test-guest: virtio-mmio %lx %s (type %u) gsi=%u %s/%s vector=%s%x\n", w.base, device_name(device_id),
          device_id, w.gsi, w.edge ? "edge" : "level", w.active_low ? "active-low" : "active-high",
          d.vector_slot >= 0 ? "0x" : "none:", d.vector_slot >= 0 ? VECTOR_VIRTIO_FIRST + d.vector_slot : 0);
    return true;
}

}  // namespace

uint32_t discover_mmio(const BootInfo& boot, Device* out, uint32_t capacity) {
    Window windows[kMaxWindows];
    const char* source = "dsdt";
    uint32_t count = windows_from_dsdt(windows, kMaxWindows);
    if (count == 0) {
        source = "cmdline";
        count = windows_from_cmdline(boot.cmdline, windows, kMaxWindows);
    }
    print("ember-test-guest: virtio-mmio %u transports from the %s\n", count, source);
    uint32_t found = 0;
    for (uint32_t i = 0; i < count && found < capacity; ++i) {
        if (probe(windows[i], out[found])) ++found;
    }
    return found;
}

namespace mmio_transport {

void reset(Device& d) { write32(d.mmio_base + kStatus, 0); }
uint8_t status(Device& d) { return static_cast<uint8_t>(read32(d.mmio_base + kStatus)); }
void set_status(Device& d, uint8_t value) { write32(d.mmio_base + kStatus, value); }
uint8_t config_generation(Device& d) { return static_cast<uint8_t>(read32(d.mmio_base + kConfigGeneration)); }

uint64_t device_features(Device& d) {
    return read_feature_words(d.mmio_base + kDeviceFeaturesSel, d.mmio_base + kDeviceFeatures);
}

void set_driver_features(Device& d, uint64_t features) {
    write_feature_words(d.mmio_base + kDriverFeaturesSel, d.mmio_base + kDriverFeatures, features);
}

uint16_t queue_max(Device& d, uint16_t index) {
    write32(d.mmio_base + kQueueSel, index);
    if (read32(d.mmio_base + kQueueReady) != 0) return 0;  // §4.2.3.2: must not be in use
    uint32_t max = read32(d.mmio_base + kQueueNumMax);
    return static_cast<uint16_t>(max > 0x8000 ? 0x8000 : max);
}

bool queue_setup(Device& d, Virtqueue& q, const char*& error) {
    uint64_t b = d.mmio_base;
    write32(b + kQueueSel, q.index);
    write32(b + kQueueNum, q.size);
    auto desc = reinterpret_cast<uint64_t>(q.desc);
    auto driver = reinterpret_cast<uint64_t>(q.avail);
    auto device = reinterpret_cast<uint64_t>(q.used);
    write32(b + kQueueDescLow, static_cast<uint32_t>(desc));
    write32(b + kQueueDescHigh, static_cast<uint32_t>(desc >> 32));
    write32(b + kQueueDriverLow, static_cast<uint32_t>(driver));
    write32(b + kQueueDriverHigh, static_cast<uint32_t>(driver >> 32));
    write32(b + kQueueDeviceLow, static_cast<uint32_t>(device));
    write32(b + kQueueDeviceHigh, static_cast<uint32_t>(device >> 32));
    write32(b + kQueueReady, 1);
    if (read32(b + kQueueReady) != 1) {
        error = "QueueReady did not stick";
        return false;
    }
    return true;
}

void notify(Virtqueue& q) { write32(q.device->mmio_base + kQueueNotify, q.index); }

uint32_t acknowledge(Device& d) {
    uint32_t pending = read32(d.mmio_base + kInterruptStatus);
    if (pending != 0) write32(d.mmio_base + kInterruptAck, pending);
    return pending;
}

}  // namespace mmio_transport

}  // namespace guest::virtio
