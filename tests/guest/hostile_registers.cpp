// test.hostile=1: bad MSI-X programming and random-sized reads and writes of every register ember emulates
// (hostile.hpp). Values are random except where a write could make ember, on the guest's own orders, scribble
// over the guest's code and data (ring address registers get scratch or non-RAM addresses) or deliver an
// interrupt the guest cannot take (MSI-X message data is always the counting vector Context::wild_slot), and
// except the writes that end the VM by design (ACPI sleep/reset, i8042 reset pulse, pvpanic "panicked"):
// those are turned into their harmless neighbours, as each site says.
#include "base.hpp"
#include "hostile_common.hpp"
#include "iomap.hpp"
#include "layout.h"
#include "pci.hpp"
#include "portio.hpp"
#include "print.hpp"
#include "smp.hpp"
#include "timing.hpp"
#include "uart.hpp"
#include "virtio_transport.hpp"

namespace guest::hostile {
namespace {

using virtio::Device;

// virtio-pci BAR layout of ember (devices/virtio/pci_transport.hpp): common 0x0000, ISR 0x1000, device 0x2000,
// notify 0x3000, MSI-X table 0x4000, PBA on the next 4 KiB boundary; the BAR is at least 32 KiB.
constexpr uint64_t kBarFuzzBytes = 0x6000;
constexpr uint64_t kPciQueueMsixVector = 0x1a;
constexpr uint64_t kPciConfigMsixVector = 0x10;
constexpr uint64_t kPciRingFirst = 0x20, kPciRingEnd = 0x38;  // queue_desc, queue_driver, queue_device
constexpr uint64_t kMmioRingFirst = 0x80, kMmioRingEnd = 0xa8;
constexpr uint64_t kMmioFuzzBytes = 0x1000;  // the whole 4 KiB slot (ember decodes the first 0x200)
constexpr uint16_t kNoVector = 0xffff;

// MSI-X (PCI 3.0 §6.8.2).
constexpr uint16_t kMsixControl = 2;
constexpr uint16_t kMsixTableField = 4;
constexpr uint16_t kMsixPbaField = 8;
constexpr uint16_t kMsixEnable = 1u << 15;
constexpr uint16_t kMsixFunctionMask = 1u << 14;
constexpr uint32_t kEntryMasked = 1;
constexpr uint64_t kEntrySize = 16;

constexpr uint8_t kVendorCapability = 0x09;
constexpr uint8_t kCapPciConfigType = 5;  // VIRTIO_PCI_CAP_PCI_CFG (§4.1.4.9)

inline void barrier() { asm volatile("" ::: "memory"); }

uint64_t read_sized(uint64_t address, uint32_t size) {
    switch (size) {
    case 1: return read8(address);
    case 2: return read16(address);
    case 4: return read32(address);
    default: return read64(address);
    }
}

void write_sized(uint64_t address, uint32_t size, uint64_t value) {
    switch (size) {
    case 1: write8(address, static_cast<uint8_t>(value)); break;
    case 2: write16(address, static_cast<uint16_t>(value)); break;
    case 4: write32(address, static_cast<uint32_t>(value)); break;
    default: *physical<uint64_t>(address) = value; break;
    }
}

uint32_t random_size(Prng& prng) { return 1u << prng.below(4); }

// A 32-bit half of a ring address that is harmless on its own: scratch RAM, or the 32-bit MMIO hole.
uint32_t safe_low_half(const Context& c, Prng& prng) {
    if (prng.below(2) == 0) {
        uint64_t span = c.ram.scratch_end - c.ram.scratch - 0x100000;
        return static_cast<uint32_t>(c.ram.scratch + (prng.next() % span & ~uint64_t{0xf}));
    }
    return 0xc0000000u | static_cast<uint32_t>(prng.next() & 0x3ffffff0);
}

uint32_t wild_message_data(const Context& c) { return static_cast<uint32_t>(VECTOR_VIRTIO_FIRST + c.wild_slot); }

// Replaces, in `value` (an access of `size` bytes at `offset`), the bytes that fall on dangerous fields.
// `field` tells for a byte offset whether it belongs to a ring address low half (1), a high half (2), MSI-X
// message data (3), or nothing (0).
template <typename Field>
uint64_t sanitise(const Context& c, Prng& prng, uint64_t offset, uint32_t size, uint64_t value, Field field) {
    uint32_t low = safe_low_half(c, prng);
    uint32_t data = wild_message_data(c);
    for (uint32_t i = 0; i < size; ++i) {
        uint64_t at = offset + i;
        int kind = field(at);
        if (kind == 0) continue;
        uint32_t replacement = kind == 1 ? low : kind == 2 ? static_cast<uint32_t>(prng.next()) : data;
        uint64_t byte = (replacement >> (8 * (at % 4))) & 0xff;
        value = (value & ~(uint64_t{0xff} << (8 * i))) | byte << (8 * i);
    }
    return value;
}

// Dangerous fields of ember's virtio-pci BAR and of virtio-mmio.
int pci_bar_field(uint64_t at, uint16_t msix_entries) {
    if (at >= kPciRingFirst && at < kPciRingEnd) return (at - kPciRingFirst) % 8 < 4 ? 1 : 2;
    uint64_t table = 0x4000;
    if (at >= table && at < table + msix_entries * kEntrySize && (at - table) % kEntrySize >= 8 &&
        (at - table) % kEntrySize < 12)
        return 3;
    return 0;
}

int mmio_field(uint64_t at) {
    if (at >= kMmioRingFirst && at < kMmioRingEnd) {
        uint64_t within = (at - kMmioRingFirst) % 0x10;
        return within < 4 ? 1 : within < 8 ? 2 : 0;
    }
    return 0;
}

// --- PCI configuration: what must be put back after random writes --------------------------------------------

struct SavedFunction {
    uint32_t bars[6];
    uint16_t command;
    uint16_t msix_control;
};

void save_function(const Device& d, SavedFunction& saved) {
    for (uint16_t i = 0; i < 6; ++i) saved.bars[i] = pci::read32(d.function, static_cast<uint16_t>(pci::kBar0 + 4 * i));
    saved.command = pci::read16(d.function, pci::kCommand);
    saved.msix_control = d.msix_capability ? pci::read16(d.function, d.msix_capability + kMsixControl) : 0;
}

void mask_all_entries(const Device& d) {
    for (uint16_t i = 0; i < d.msix_entries; ++i) write32(d.msix_table + i * kEntrySize + 12, kEntryMasked);
}

void restore_function(const Device& d, const SavedFunction& saved) {
    pci::write16(d.function, pci::kCommand, 0);
    for (uint16_t i = 0; i < 6; ++i) pci::write32(d.function, static_cast<uint16_t>(pci::kBar0 + 4 * i), saved.bars[i]);
    if (d.msix_capability) pci::write16(d.function, d.msix_capability + kMsixControl, saved.msix_control);
    pci::write16(d.function, pci::kCommand, saved.command);
    if (d.msix_table) mask_all_entries(d);
}

uint8_t find_pci_cfg_capability(const Device& d) {
    for (uint8_t cap = pci::find_capability(d.function, kVendorCapability); cap != 0;
         cap = pci::find_capability(d.function, kVendorCapability, cap)) {
        if (pci::read8(d.function, cap + 3) == kCapPciConfigType) return cap;
    }
    return 0;
}

uint64_t bar_base(const Device& d) {
    uint32_t table = pci::read32(d.function, d.msix_capability + kMsixTableField);
    return d.msix_table - (table & ~uint32_t{7});
}

// --- Small helpers for the MSI-X attacks ------------------------------------------------------------------------

struct Running {
    explicit Running(Target& target) : t(target) {}
    Target& t;
    virtio::Virtqueue queues[2];
    uint64_t mark = 0;
    bool ok = false;
};

// The device running with its request queue on MSI-X entry 0 (messages to the wild vector, masked).
bool start(Running& r, uint16_t& request) {
    Device& d = *r.t.device;
    r.mark = virtio::dma_mark();
    const char* error = "";
    uint16_t queues =
        d.device_id == virtio::kDeviceConsole || d.device_id == virtio::kDeviceNet || d.device_id == kDeviceFs ? 2 : 1;
    request = queues == 2 ? 1 : 0;
    if (!virtio::begin(d, uint64_t{1} << 5, error)) return false;  // net: MAC (other devices: not offered)
    for (uint16_t index = 0; index < queues; ++index) {
        d.next_msix_entry = d.msix_entries;
        if (!virtio::queue_create(d, index, 64, 0, r.queues[index], error)) return false;
        r.queues[index].vector_slot = -1;
    }
    virtio::driver_ok(d);
    r.ok = true;
    return true;
}

void finish(Running& r) {
    virtio::reset(*r.t.device);
    virtio::dma_release(r.mark);
}

// One ordinary request on the request queue (rng: 64 bytes; blk: an IN of sector 0; console: "\n"; net: a
// broadcast frame of a local ethertype). True if it was used.
bool request_once(Running& r, uint16_t request) {
    Device& d = *r.t.device;
    virtio::Virtqueue& q = r.queues[request];
    auto* buffer = static_cast<uint8_t*>(virtio::dma_alloc(1024));
    if (buffer == nullptr) return false;
    virtio::Buffer chain[3];
    uint16_t count = 0;
    if (d.device_id == virtio::kDeviceBlock) {
        buffer[0] = 0;  // IN, sector 0; status at 528
        buffer[528] = 0xff;
        chain[count++] = {reinterpret_cast<uint64_t>(buffer), 16, false};
        chain[count++] = {reinterpret_cast<uint64_t>(buffer + 16), 512, true};
        chain[count++] = {reinterpret_cast<uint64_t>(buffer + 528), 1, true};
    } else if (d.device_id == virtio::kDeviceEntropy) {
        chain[count++] = {reinterpret_cast<uint64_t>(buffer), 64, true};
    } else if (d.device_id == virtio::kDeviceConsole) {
        buffer[0] = '\n';
        chain[count++] = {reinterpret_cast<uint64_t>(buffer), 1, false};
    } else if (d.device_id == kDeviceFs) {
        uint32_t length = fuse_init(buffer, 7);
        chain[count++] = {reinterpret_cast<uint64_t>(buffer), length, false};
        chain[count++] = {reinterpret_cast<uint64_t>(buffer + length), kFuseOutHeader + kFuseReplyRoom, true};
    } else {
        memset(buffer + 12, 0xff, 6);
        buffer[12 + 12] = 0x88;
        buffer[12 + 13] = 0xb5;
        chain[count++] = {reinterpret_cast<uint64_t>(buffer), 12 + 60, false};
    }
    if (!virtio::submit(q, chain, count, buffer)) return false;
    virtio::kick(q);
    uint32_t length;
    void* cookie;
    return virtio::next_used(q, 3000, length, cookie);
}

void set_queue_vector(Device& d, uint16_t queue, uint16_t vector) {
    write16(d.common + 0x16, queue);
    write16(d.common + kPciQueueMsixVector, vector);
}

uint16_t queue_vector(Device& d, uint16_t queue) {
    write16(d.common + 0x16, queue);
    return read16(d.common + kPciQueueMsixVector);
}

void program_entry(const Device& d, uint16_t entry, uint64_t address, uint32_t data, bool masked) {
    uint64_t e = d.msix_table + entry * kEntrySize;
    write32(e + 12, kEntryMasked);
    write32(e, static_cast<uint32_t>(address));
    write32(e + 4, static_cast<uint32_t>(address >> 32));
    write32(e + 8, data);
    write32(e + 12, masked ? kEntryMasked : 0);
}

uint16_t msix_control(const Device& d) { return pci::read16(d.function, d.msix_capability + kMsixControl); }
void set_msix_control(const Device& d, uint16_t value) { pci::write16(d.function, d.msix_capability + kMsixControl, value); }

// What the AP hammers while the BSP uses the same device (concurrent_register_storm).
struct Storm {
    const Context* context;
    const Device* device;
    uint64_t base, span, seed;
    volatile bool stop;
    volatile uint64_t accesses;
};

// On the AP: resets (status 0), odd statuses, notifications, queue selects and random accesses anywhere in
// the device's registers, sanitised like the single-CPU fuzz, until told to stop.
void storm_work(void* argument) {
    Storm& storm = *static_cast<Storm*>(argument);
    const Context& c = *storm.context;
    const Device& d = *storm.device;
    const bool pci = d.transport == virtio::Transport::Pci;
    const uint16_t entries = d.msix_entries;
    auto field = [pci, entries](uint64_t at) { return pci ? pci_bar_field(at, entries) : mmio_field(at); };
    Prng prng(storm.seed);
    uint64_t count = 0;
    while (!storm.stop) {
        uint32_t what = prng.below(8);
        uint64_t offset;
        uint32_t size;
        if (what == 0) {  // device status: a reset half the time
            offset = pci ? 0x14 : 0x70;
            size = pci ? 1 : 4;
        } else if (what == 1) {  // a notification of queue 0 or 1
            offset = pci ? 0x3000 + 4 * prng.below(2) : 0x50;
            size = pci ? 2 : 4;
        } else if (what == 2) {  // queue_select / QueueSel
            offset = pci ? 0x16 : 0x30;
            size = pci ? 2 : 4;
        } else {
            size = random_size(prng);
            offset = prng.below(static_cast<uint32_t>(storm.span - size + 1));
        }
        uint64_t value = what == 0 && prng.below(2) ? 0 : what == 1 ? prng.below(2) : prng.next();
        if (prng.below(4) == 0) read_sized(storm.base + offset, size);
        else write_sized(storm.base + offset, size, sanitise(c, prng, offset, size, value, field));
        ++count;
    }
    storm.accesses = count;
}

}  // namespace

void concurrent_register_storm(Target& t) {
    Device& d = *t.device;
    Context& c = *t.context;
    Storm storm{&c, &d, 0, 0, c.prng->next(), false, 0};
    if (d.transport == virtio::Transport::Pci) {
        storm.base = bar_base(d);
        storm.span = kBarFuzzBytes;
    } else {
        storm.base = d.mmio_base;
        storm.span = 0x200;
    }
    if (!run_on_ap(1, storm_work, &storm)) {
        print("hostile: %s: concurrent_register_storm skipped (no second CPU waiting; boot with --cpus 2)\n", t.name);
        return;
    }
    // Meanwhile the BSP keeps setting the device up and using it; most tries fail, some must not crash ember.
    uint32_t tries = 0, worked = 0;
    const uint64_t request_ms = c.request_ms;
    c.request_ms = c.quiet_ms;  // a request the other CPU's reset swallowed is not waited for long
    Deadline deadline(c.storm_ms);
    while (!deadline.expired()) {
        char why[96];
        ++tries;
        worked += recover(t, why, sizeof(why)) ? 1 : 0;
    }
    c.request_ms = request_ms;
    storm.stop = true;
    Deadline stopping(5000);
    while (!ap_work_done(1) && !stopping.expired()) cpu_relax();
    Answer answer;
    answer.kind = ap_work_done(1) ? kNothing : 0;
    format_to(answer.note, sizeof(answer.note), "bsp_uses=%u/%u ap_accesses=%lu", worked, tries, storm.accesses);
    if (d.transport == virtio::Transport::Pci) mask_all_entries(d);
    conclude(t, "concurrent_register_storm", answer, kNothing | kNeedsReset | kUsed | kRefused);
}

uint64_t safe_ring_address(Context& c) {
    return safe_low_half(c, *c.prng) | (c.prng->below(2) ? c.prng->next() << 32 : 0);
}

void msix_attacks(Target& t) {
    Device& d = *t.device;
    Context& c = *t.context;
    if (d.msix_table == 0 || d.msix_capability == 0) {
        print("hostile: %s: no MSI-X table: MSI-X attacks skipped\n", t.name);
        return;
    }
    uint16_t request = 0;
    const uint32_t data = wild_message_data(c);
    const uint64_t here = LAPIC_BASE | (uint64_t{virtio::interrupt_destination()} << 12);

    // Vectors the table does not have read back as NO_VECTOR (§4.1.5.1.2).
    {
        Running r(t);
        Answer answer;
        if (start(r, request)) {
            uint16_t readings[3];
            set_queue_vector(d, request, d.msix_entries);
            readings[0] = queue_vector(d, request);
            set_queue_vector(d, request, 0x7ff);
            readings[1] = queue_vector(d, request);
            write16(d.common + kPciConfigMsixVector, 0x1234);
            readings[2] = read16(d.common + kPciConfigMsixVector);
            bool refused = readings[0] == kNoVector && readings[1] == kNoVector && readings[2] == kNoVector;
            answer.kind = refused ? kRefused : kUsed;
            format_to(answer.note, sizeof(answer.note), "read back %x %x %x", readings[0], readings[1], readings[2]);
        }
        finish(r);
        conclude(t, "msix_vectors_out_of_range", answer, kRefused);
    }
    // Table accesses of odd sizes and offsets, past the end, into the PBA: none may change entry 0.
    {
        Running r(t);
        Answer answer;
        if (start(r, request)) {
            const uint64_t e = d.msix_table;
            program_entry(d, 0, 0xfee00000, 0x11223344 & 0xffffff00u, true);
            uint32_t before[4] = {read32(e), read32(e + 4), read32(e + 8), read32(e + 12)};
            for (uint64_t offset = 0; offset < 16; ++offset) {
                write8(e + offset, 0xa5);
                if (offset + 2 <= 16) write16(e + offset, 0xa5a5);
                if (offset % 4 != 0 && offset + 4 <= 16) write32(e + offset, 0xa5a5a5a5);
                if (offset % 8 != 0 && offset + 8 <= 16) *physical<uint64_t>(e + offset) = 0xa5a5a5a5a5a5a5a5;
            }
            uint32_t table = pci::read32(d.function, d.msix_capability + kMsixTableField);
            uint32_t pba = pci::read32(d.function, d.msix_capability + kMsixPbaField);
            uint64_t base = d.msix_table - (table & ~uint32_t{7});
            uint64_t end = d.msix_table + d.msix_entries * kEntrySize;
            write32(end, 0xa5a5a5a5);                 // one past the last entry
            *physical<uint64_t>(end + 8) = ~uint64_t{0};
            write32(base + (pba & ~uint32_t{7}), 0xffffffff);  // the PBA is read-only
            *physical<uint64_t>(base + (pba & ~uint32_t{7})) = ~uint64_t{0};
            uint32_t after[4] = {read32(e), read32(e + 4), read32(e + 8), read32(e + 12)};
            uint64_t pending = read64(base + (pba & ~uint32_t{7}));
            bool same = memcmp(before, after, sizeof(before)) == 0;
            answer.kind = same ? kRefused : kUsed;
            format_to(answer.note, sizeof(answer.note), "entry 0 %s, pba %lx", same ? "unchanged" : "changed", pending);
        }
        finish(r);
        conclude(t, "msix_table_odd_sizes_and_offsets", answer, kRefused);
    }
    // Message addresses anywhere (RAM, 0, above 4 GiB, broadcast, no such APIC, the IOAPIC), data fixed to
    // the counting vector: the requests complete, the messages go wherever KVM sends them.
    {
        static const uint64_t kAddresses[] = {0,          0x1000,     0xfffffffffffffff0, 0xfeeff000,
                                              0xfee55000, 0xfec00000, 0x100000000,        0xfee00000 | (1u << 2)};
        Running r(t);
        Answer answer;
        uint32_t done = 0;
        uint64_t before = virtio::vector_irqs(c.wild_slot);
        if (start(r, request)) {
            for (uint64_t address : kAddresses) {
                program_entry(d, 0, address, data | (static_cast<uint32_t>(c.prng->next()) & 0xffff0000u), false);
                set_queue_vector(d, request, 0);
                done += request_once(r, request) ? 1 : 0;
            }
            program_entry(d, 0, here, data, true);
        }
        finish(r);
        answer.kind = done == sizeof(kAddresses) / sizeof(kAddresses[0]) ? kUsed : kNothing;
        format_to(answer.note, sizeof(answer.note), "requests=%u wild_irqs=%lu", done,
                  virtio::vector_irqs(c.wild_slot) - before);
        conclude(t, "msix_message_addresses_anywhere", answer, kUsed);
    }
    // Masking toggled while requests complete: entry mask, function mask, MSI-X enable; a masked vector's
    // message waits in the PBA and comes at unmasking.
    {
        Running r(t);
        Answer answer;
        uint32_t done = 0, rounds = 48;
        uint64_t before = virtio::vector_irqs(c.wild_slot);
        uint64_t pending_seen = 0;
        if (start(r, request)) {
            uint32_t pba = pci::read32(d.function, d.msix_capability + kMsixPbaField);
            uint64_t pba_address = bar_base(d) + (pba & ~uint32_t{7});
            uint16_t control = msix_control(d);
            program_entry(d, 0, here, data, false);
            set_queue_vector(d, request, 0);
            for (uint32_t i = 0; i < rounds; ++i) {
                uint32_t what = c.prng->below(4);
                if (what == 0) write32(d.msix_table + 12, c.prng->below(2) ? kEntryMasked : 0);
                if (what == 1) set_msix_control(d, static_cast<uint16_t>(control ^ (c.prng->below(2) ? kMsixFunctionMask : 0)));
                if (what == 2) set_msix_control(d, static_cast<uint16_t>(control & ~kMsixEnable));
                if (what == 3) set_msix_control(d, control);
                done += request_once(r, request) ? 1 : 0;
                pending_seen |= read64(pba_address);
            }
            set_msix_control(d, control);
            write32(d.msix_table + 12, 0);
            delay_us(1000);
            program_entry(d, 0, here, data, true);
        }
        finish(r);
        answer.kind = done == rounds ? kUsed : kNothing;
        format_to(answer.note, sizeof(answer.note), "requests=%u/%u irqs=%lu pba_seen=%lx", done, rounds,
                  virtio::vector_irqs(c.wild_slot) - before, pending_seen);
        conclude(t, "msix_masking_toggled_under_load", answer, kUsed);
    }
    // Configuration vector and queue vector on one entry; a broken queue then raises the configuration
    // interrupt there (not for virtio-fs: virtiofsd, not ember, would find the broken ring).
    if (d.device_id != kDeviceFs) {
        Running r(t);
        Answer answer;
        uint64_t before = virtio::vector_irqs(c.wild_slot);
        if (start(r, request)) {
            program_entry(d, 0, here, data, false);
            set_queue_vector(d, request, 0);
            write16(d.common + kPciConfigMsixVector, 0);
            virtio::Virtqueue& q = r.queues[request];
            q.desc[0].length = 16;
            q.desc[0].flags = virtio::kDescNext;  // next 0: a loop
            q.desc[0].next = 0;
            q.avail[2] = 0;
            barrier();
            q.avail[1] = 1;
            write16(q.notify_address, q.index);
            Deadline deadline(c.answer_ms);
            while (!(virtio::status(d) & virtio::kStatusNeedsReset) && !deadline.expired()) cpu_relax();
            answer.kind = virtio::status(d) & virtio::kStatusNeedsReset ? kNeedsReset : kNothing;
            delay_us(2000);
            format_to(answer.note, sizeof(answer.note), "config irqs=%lu", virtio::vector_irqs(c.wild_slot) - before);
            program_entry(d, 0, here, data, true);
        }
        finish(r);
        conclude(t, "msix_config_and_queue_share_a_vector", answer, kNeedsReset);
    }
}

void fuzz_device_registers(Target& t) {
    Device& d = *t.device;
    Context& c = *t.context;
    Prng& prng = *c.prng;
    virtio::reset(d);
    uint32_t accesses = 0;
    Answer answer;
    answer.kind = kNothing;
    if (d.transport == virtio::Transport::Mmio) {
        const uint64_t base = d.mmio_base;
        // Every 32-bit register and configuration byte once in order, then random accesses anywhere in the slot.
        for (uint64_t offset = 0; offset < 0x200; offset += 4, accesses += 2) {
            read32(base + offset);
            write32(base + offset, static_cast<uint32_t>(sanitise(c, prng, offset, 4, prng.next(), mmio_field)));
        }
        for (uint32_t i = 0; i < c.fuzz_accesses; ++i, ++accesses) {
            uint32_t size = random_size(prng);
            uint64_t offset = prng.below(static_cast<uint32_t>(kMmioFuzzBytes - size + 1));
            if (prng.below(2)) read_sized(base + offset, size);
            else write_sized(base + offset, size, sanitise(c, prng, offset, size, prng.next(), mmio_field));
        }
    } else {
        SavedFunction saved;
        save_function(d, saved);
        const uint64_t base = bar_base(d);
        const uint16_t entries = d.msix_entries;
        auto bar_field = [entries](uint64_t at) { return pci_bar_field(at, entries); };
        // Every register in order (each structure and a little past its end), then random accesses anywhere.
        uint32_t pba = pci::read32(d.function, d.msix_capability + kMsixPbaField) & ~uint32_t{7};
        const uint64_t sweeps[][2] = {{0, 0x40},          {0x1000, 0x1010}, {0x2000, 0x2100}, {0x3000, 0x3100},
                                      {0x4000, 0x4000 + (entries + 1u) * kEntrySize}, {pba, pba + 16}};
        for (const auto& sweep : sweeps) {
            for (uint64_t offset = sweep[0]; offset < sweep[1] && offset + 4 <= kBarFuzzBytes; offset += 4, accesses += 2) {
                read32(base + offset);
                write32(base + offset, static_cast<uint32_t>(sanitise(c, prng, offset, 4, prng.next(), bar_field)));
            }
        }
        for (uint32_t i = 0; i < c.fuzz_accesses; ++i, ++accesses) {
            uint32_t size = random_size(prng);
            uint64_t offset = prng.below(static_cast<uint32_t>(kBarFuzzBytes - size + 1));
            if (prng.below(2)) read_sized(base + offset, size);
            else write_sized(base + offset, size, sanitise(c, prng, offset, size, prng.next(), bar_field));
        }
        mask_all_entries(d);
        // The VIRTIO_PCI_CAP_PCI_CFG window (§4.1.4.9): BAR accesses through configuration space, with
        // random BAR numbers, lengths and offsets.
        uint8_t cap = find_pci_cfg_capability(d);
        for (uint32_t i = 0; cap != 0 && i < c.fuzz_accesses / 4; ++i, accesses += 2) {
            uint32_t length = prng.below(4) == 0 ? prng.below(9) : random_size(prng) & 7;
            uint64_t offset = prng.below(8) == 0 ? prng.next() & 0xffffffff : prng.below(static_cast<uint32_t>(kBarFuzzBytes));
            pci::write32(d.function, cap + 4, prng.below(8) == 0 ? prng.below(256) : 0);  // bar (+ padding)
            pci::write32(d.function, cap + 8, static_cast<uint32_t>(offset));
            pci::write32(d.function, cap + 12, length);
            if (prng.below(2)) {
                pci::read32(d.function, cap + 16);
            } else {
                uint32_t size = length == 1 || length == 2 || length == 4 ? length : 4;
                pci::write32(d.function, cap + 16, static_cast<uint32_t>(sanitise(c, prng, offset, size, prng.next(), bar_field)));
            }
        }
        // Configuration space itself, through ECAM where there is one (the port fuzz does 0xcf8/0xcfc).
        uint64_t ecam = pci::ecam_base_address();
        if (ecam != 0) {
            uint64_t function = ecam + (uint64_t{d.function.device} << 15) + (uint64_t{d.function.function} << 12);
            for (uint32_t i = 0; i < c.fuzz_accesses; ++i, ++accesses) {
                uint32_t size = random_size(prng);
                uint64_t offset = prng.below(static_cast<uint32_t>(0x1000 - size + 1));
                if (prng.below(2)) read_sized(function + offset, size);
                else write_sized(function + offset, size, prng.next());
            }
        }
        restore_function(d, saved);
    }
    format_to(answer.note, sizeof(answer.note), "accesses=%u seed=%lu", accesses, c.seed);
    conclude(t, "register_fuzz", answer, kNothing | kNeedsReset | kUsed | kRefused);
}

void fuzz_platform(Context& c, Device* devices, uint32_t count, bool pci, uint32_t& accesses) {
    Prng& prng = *c.prng;
    SavedFunction saved[16];
    uint32_t saved_count = count < 16 ? count : 16;
    if (pci) {
        for (uint32_t i = 0; i < saved_count; ++i) save_function(devices[i], saved[i]);
        // One device's BAR moved onto another's and back, over and over: the notify addresses (ioeventfds)
        // collide every time.
        for (uint32_t round = 0; saved_count >= 2 && round < 100; ++round, accesses += 4) {
            const Device& mover = devices[round % saved_count];
            const SavedFunction& target = saved[(round + 1) % saved_count];
            pci::write32(mover.function, pci::kBar0, target.bars[0]);
            pci::write32(mover.function, pci::kBar0 + 4, target.bars[1]);
            pci::write32(mover.function, pci::kBar0, saved[round % saved_count].bars[0]);
            pci::write32(mover.function, pci::kBar0 + 4, saved[round % saved_count].bars[1]);
        }
        // Configuration mechanism #1: random CONFIG_ADDRESS values (enable bit, bus, device, function,
        // register), then random accesses at CONFIG_DATA and the ports around it.
        for (uint32_t i = 0; i < c.fuzz_accesses; ++i, accesses += 2) {
            uint32_t address = static_cast<uint32_t>(prng.next());
            if (prng.below(4) != 0) address &= 0x8000fffc;  // mostly bus 0, where the devices are
            uint32_t port_size = random_size(prng) & 7;
            if (port_size == 8) port_size = 4;
            outl(0xcf8, address);
            uint16_t port = static_cast<uint16_t>(0xcf8 + prng.below(8));
            if (prng.below(2)) {
                if (port_size == 1) inb(port);
                else if (port_size == 2) inw(port);
                else inl(port);
            } else {
                uint32_t value = static_cast<uint32_t>(prng.next());
                if (port_size == 1) outb(port, static_cast<uint8_t>(value));
                else if (port_size == 2) outw(port, static_cast<uint16_t>(value));
                else outl(port, value);
            }
        }
        // ECAM: every slot of bus 0, all 8 functions.
        uint64_t ecam = pci::ecam_base_address();
        for (uint32_t i = 0; ecam != 0 && i < c.fuzz_accesses; ++i, ++accesses) {
            uint32_t size = random_size(prng);
            uint64_t offset = prng.below(static_cast<uint32_t>((1u << 20) - size + 1));
            if (prng.below(2)) read_sized(ecam + offset, size);
            else write_sized(ecam + offset, size, prng.next());
        }
        // The BAR window where no BAR is (ember places them from its start).
        constexpr uint64_t kEmptyWindow = 0xd0000000, kEmptyWindowSize = 0x10000000;
        if (map_uncached(kEmptyWindow, kEmptyWindowSize)) {
            for (uint32_t i = 0; i < c.fuzz_accesses / 4; ++i, ++accesses) {
                uint32_t size = random_size(prng);
                uint64_t address = kEmptyWindow + (prng.next() % (kEmptyWindowSize - 8));
                if (prng.below(2)) read_sized(address, size);
                else write_sized(address, size, prng.next());
            }
        }
        for (uint32_t i = 0; i < saved_count; ++i) restore_function(devices[i], saved[i]);
    } else {
        // Empty virtio-mmio slots after the devices (0xfe000000 + n * 4 KiB; mapped uncached by entry.S).
        for (uint32_t i = 0; i < c.fuzz_accesses / 4; ++i, ++accesses) {
            uint32_t size = random_size(prng);
            uint64_t address = 0xfe000000 + (count + prng.below(32 - count)) * 0x1000ull + prng.below(0x1000 - 8);
            if (prng.below(2)) read_sized(address, size);
            else write_sized(address, size, prng.next());
        }
    }
    // Port I/O: COM1, i8042, pvpanic, ACPI PM, and unassigned ports nearby. Not the ports KVM emulates
    // itself (PIC 0x20/0xa0, PIT 0x40-0x43 and 0x61, ELCR 0x4d0): those are not ember's.
    struct Ports {
        uint16_t first;
        uint16_t count;
    };
    static const Ports kPorts[] = {{0x3f8, 8}, {0x60, 1}, {0x62, 3},  {0x505, 1}, {0x600, 3}, {0x80, 1},
                                   {0x2f8, 8}, {0x3e8, 8}, {0x504, 1}, {0x506, 2}, {0x510, 2}, {0x603, 5},
                                   {0x92, 1}};
    uint32_t port_count = 0;
    for (const Ports& p : kPorts) port_count += p.count;
    for (uint32_t i = 0; i < c.fuzz_accesses; ++i, ++accesses) {
        uint32_t pick = prng.below(port_count);
        uint16_t port = 0;
        for (const Ports& p : kPorts) {
            if (pick < p.count) {
                port = static_cast<uint16_t>(p.first + pick);
                break;
            }
            pick -= p.count;
        }
        uint32_t size = random_size(prng) & 7;
        if (size == 8) size = 1;
        if (prng.below(2)) {
            if (size == 1) inb(port);
            else if (size == 2) inw(port);
            else inl(port);
            continue;
        }
        uint32_t value = static_cast<uint32_t>(prng.next());
        uint8_t first = static_cast<uint8_t>(value);
        // Each device acts on the first byte of a write of any size (devices/legacy/byte_register.hpp).
        if (port == 0x3f8) first = static_cast<uint8_t>(0x20 + first % 0x5f);  // THR: printable bytes only
        if (port == 0x64) {
            if (first == 0xd1) first = 0xd0;           // write output port (reset line) -> read it
            if ((first & 0xf0) == 0xf0) first |= 1;    // pulse without the reset line
        }
        if (port == 0x505) first &= static_cast<uint8_t>(~1u);  // not "panicked"
        if (port == 0x600 && (first & 0x20) && ((first >> 2) & 7) == 5) first &= static_cast<uint8_t>(~0x20u);  // not S5
        if (port == 0x602 && first == 1) first = 0;    // not the reset value
        value = (value & ~0xffu) | first;
        if (size == 1) outb(port, static_cast<uint8_t>(value));
        else if (size == 2) outw(port, static_cast<uint16_t>(value));
        else outl(port, value);
    }
    uart::init();  // the fuzz left COM1 in whatever mode (loopback, divisor latch)
    uart::set_interrupts(0);
    print("\n");
}

}  // namespace guest::hostile
