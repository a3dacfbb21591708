#include "virtio.hpp"

#include "base.hpp"
#include "layout.h"
#include "timing.hpp"
#include "virtio_transport.hpp"

extern "C" {
volatile uint64_t virtio_irq_counts[VIRTIO_VECTOR_COUNT];
extern uint8_t _end[];
}

namespace guest::virtio {
namespace {

constexpr uint64_t kArenaAlign = 2 * 1024 * 1024;
constexpr uint64_t kArenaSize = 48 * 1024 * 1024;
constexpr uint64_t kResetTimeoutMs = 1000;
// How long a completed request may wait for its interrupt before the queue counts it as missing, and
// how many misses switch the queue to polling.
constexpr uint64_t kIrqGraceMs = 20;
constexpr uint32_t kMissesBeforePolling = 2;
constexpr uint64_t kReadyGraceUs = 500;

uint64_t arena_next, arena_end;
uint32_t destination_apic_id;
int vector_slots_used;

// Ring layout offsets, in 16-bit units (§2.7.6, §2.7.8).
constexpr uint32_t kRingFlags = 0;
constexpr uint32_t kRingIdx = 1;
constexpr uint32_t kRingEntries = 2;

volatile uint32_t* used_element(const Virtqueue& q, uint16_t slot) {
    return reinterpret_cast<volatile uint32_t*>(q.used + kRingEntries) + 2 * slot;
}
volatile uint16_t& used_event(Virtqueue& q) { return q.avail[kRingEntries + q.size]; }
volatile uint16_t& avail_event(Virtqueue& q) {
    return *reinterpret_cast<volatile uint16_t*>(reinterpret_cast<volatile uint8_t*>(q.used) + 4 + 8 * q.size);
}

inline void barrier() { asm volatile("" ::: "memory"); }
inline void full_barrier() { asm volatile("mfence" ::: "memory"); }

void set_status(Device& d, uint8_t value) {
    if (d.transport == Transport::Pci) pci_transport::set_status(d, value);
    else mmio_transport::set_status(d, value);
}

uint64_t config_base(const Device& d) {
    return d.transport == Transport::Pci ? d.device_config : d.mmio_base + 0x100;  // §4.2.2 Config
}

uint8_t generation(Device& d) {
    return d.transport == Transport::Pci ? pci_transport::config_generation(d) : mmio_transport::config_generation(d);
}

}  // namespace

uint64_t read_feature_words(uint64_t select, uint64_t window) {
    write32(select, 0);
    uint64_t low = read32(window);
    write32(select, 1);
    return low | uint64_t{read32(window)} << 32;
}

void write_feature_words(uint64_t select, uint64_t window, uint64_t features) {
    write32(select, 0);
    write32(window, static_cast<uint32_t>(features));
    write32(select, 1);
    write32(window, static_cast<uint32_t>(features >> 32));
}

bool dma_init(const BootInfo& boot) {
    uint64_t start = (reinterpret_cast<uint64_t>(_end) + kArenaAlign - 1) & ~(kArenaAlign - 1);
    if (!e820_is_ram(boot, start, kArenaSize)) return false;
    arena_next = start;
    arena_end = start + kArenaSize;
    return true;
}

void* dma_alloc(size_t size, size_t align) {
    uint64_t base = (arena_next + align - 1) & ~(uint64_t{align} - 1);
    if (arena_next == 0 || base + size > arena_end) return nullptr;
    arena_next = base + size;
    memset(reinterpret_cast<void*>(base), 0, size);
    return reinterpret_cast<void*>(base);
}

uint64_t dma_mark() { return arena_next; }
void dma_release(uint64_t mark) { arena_next = mark; }
uint64_t dma_arena_end() { return arena_end; }

void set_interrupt_destination(uint32_t apic_id) { destination_apic_id = apic_id; }
uint32_t interrupt_destination() { return destination_apic_id; }

int allocate_vector_slot() {
    if (vector_slots_used == VIRTIO_VECTOR_COUNT) return -1;
    return vector_slots_used++;
}

void reset(Device& d) {
    if (d.transport == Transport::Pci) pci_transport::reset(d);
    else mmio_transport::reset(d);
    // §2.4.2 / §4.1.4.3.2: the device is reset once status reads 0 again.
    Deadline deadline(kResetTimeoutMs);
    while (status(d) != 0 && !deadline.expired()) cpu_relax();
}

uint8_t status(Device& d) {
    return d.transport == Transport::Pci ? pci_transport::status(d) : mmio_transport::status(d);
}

uint64_t offered_features(Device& d) {
    return d.transport == Transport::Pci ? pci_transport::device_features(d) : mmio_transport::device_features(d);
}

bool begin(Device& d, uint64_t wanted, const char*& error) {
    reset(d);
    if (status(d) != 0) {
        error = "device did not reset";
        return false;
    }
    set_status(d, kStatusAcknowledge);
    set_status(d, kStatusAcknowledge | kStatusDriver);
    uint64_t offered = offered_features(d);
    if (!(offered & kFeatureVersion1)) {
        error = "VERSION_1 not offered (legacy device)";
        fail(d);
        return false;
    }
    uint64_t accept = kFeatureVersion1 | (offered & (wanted | kFeatureIndirectDesc | kFeatureEventIdx));
    if (d.transport == Transport::Pci) pci_transport::set_driver_features(d, accept);
    else mmio_transport::set_driver_features(d, accept);
    set_status(d, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    if (!(status(d) & kStatusFeaturesOk)) {
        error = "FEATURES_OK not accepted";
        fail(d);
        return false;
    }
    d.features = accept;
    return true;
}

void driver_ok(Device& d) {
    set_status(d, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
    // virtio-mmio: a line left high (a configuration change before routing) would never give an edge.
    if (d.transport == Transport::Mmio) mmio_transport::acknowledge(d);
}

void fail(Device& d) { set_status(d, static_cast<uint8_t>(status(d) | kStatusFailed)); }

bool queue_create(Device& d, uint16_t index, uint16_t max_size, uint16_t max_indirect, Virtqueue& q,
                  const char*& error) {
    uint16_t device_max =
        d.transport == Transport::Pci ? pci_transport::queue_max(d, index) : mmio_transport::queue_max(d, index);
    if (device_max == 0) {
        error = "queue not available";
        return false;
    }
    uint16_t size = 1;
    while (size * 2 <= device_max && size * 2 <= max_size) size = static_cast<uint16_t>(size * 2);
    q = Virtqueue{};
    q.device = &d;
    q.index = index;
    q.size = size;
    q.event_idx = (d.features & kFeatureEventIdx) != 0;
    // §2.7: descriptor table 16-byte aligned, available ring 2, used ring 4; we use whole pages.
    q.desc = static_cast<volatile Descriptor*>(dma_alloc(sizeof(Descriptor) * size, 4096));
    q.avail = static_cast<volatile uint16_t*>(dma_alloc(2 * (3 + size), 4096));
    q.used = static_cast<volatile uint16_t*>(dma_alloc(6 + 8 * size, 4096));
    q.cookies = static_cast<void**>(dma_alloc(sizeof(void*) * size));
    if ((d.features & kFeatureIndirectDesc) && max_indirect > 1) {
        q.max_indirect = max_indirect;
        q.indirect = static_cast<Descriptor*>(dma_alloc(sizeof(Descriptor) * max_indirect * size, 16));
    }
    if (q.desc == nullptr || q.avail == nullptr || q.used == nullptr || q.cookies == nullptr ||
        (q.max_indirect != 0 && q.indirect == nullptr)) {
        error = "out of DMA memory";
        return false;
    }
    for (uint16_t i = 0; i < size; ++i) q.desc[i].next = static_cast<uint16_t>(i + 1);
    q.free_head = 0;
    q.num_free = size;
    if (d.transport == Transport::Pci) {
        if (!pci_transport::queue_setup(d, q, error)) return false;
    } else {
        q.vector_slot = d.vector_slot;
        if (!mmio_transport::queue_setup(d, q, error)) return false;
    }
    q.irq_seen = vector_irqs(q.vector_slot);
    q.irq_base = q.irq_seen;
    return true;
}

uint8_t config8(Device& d, uint32_t offset) { return read8(config_base(d) + offset); }
uint16_t config16(Device& d, uint32_t offset) { return read16(config_base(d) + offset); }
uint32_t config32(Device& d, uint32_t offset) { return read32(config_base(d) + offset); }

uint64_t config64(Device& d, uint32_t offset) {
    for (;;) {
        uint8_t before = generation(d);
        uint64_t value = read32(config_base(d) + offset) | uint64_t{read32(config_base(d) + offset + 4)} << 32;
        if (generation(d) == before) return value;
    }
}

const char* transport_name(const Device& d) { return d.transport == Transport::Pci ? "pci" : "mmio"; }

const char* device_name(uint32_t device_id) {
    switch (device_id) {
    case kDeviceNet: return "net";
    case kDeviceBlock: return "blk";
    case kDeviceConsole: return "console";
    case kDeviceEntropy: return "rng";
    default: return "other";
    }
}

bool submit(Virtqueue& q, const Buffer* buffers, uint16_t count, void* cookie) {
    if (count == 0) return false;
    bool use_indirect = q.indirect != nullptr && count > 1 && count <= q.max_indirect;
    uint16_t needed = use_indirect ? 1 : count;
    if (q.num_free < needed) return false;
    uint16_t head = q.free_head;
    if (use_indirect) {
        // §2.7.5.3: the table's descriptors chain by index within the table.
        Descriptor* table = q.indirect + uint32_t{head} * q.max_indirect;
        for (uint16_t i = 0; i < count; ++i) {
            table[i].address = buffers[i].address;
            table[i].length = buffers[i].length;
            table[i].flags = static_cast<uint16_t>((buffers[i].writable ? kDescWrite : 0) | (i + 1 < count ? kDescNext : 0));
            table[i].next = static_cast<uint16_t>(i + 1);
        }
        q.free_head = q.desc[head].next;
        q.desc[head].address = reinterpret_cast<uint64_t>(table);
        q.desc[head].length = static_cast<uint32_t>(sizeof(Descriptor) * count);
        q.desc[head].flags = kDescIndirect;
        ++q.indirect_used;
    } else {
        // The free list is linked through `next`, so a chain taken from its head is already linked.
        uint16_t slot = head;
        for (uint16_t i = 0; i < count; ++i) {
            q.desc[slot].address = buffers[i].address;
            q.desc[slot].length = buffers[i].length;
            q.desc[slot].flags =
                static_cast<uint16_t>((buffers[i].writable ? kDescWrite : 0) | (i + 1 < count ? kDescNext : 0));
            if (i + 1 < count) slot = q.desc[slot].next;
        }
        q.free_head = q.desc[slot].next;
    }
    q.num_free = static_cast<uint16_t>(q.num_free - needed);
    q.cookies[head] = cookie;
    q.avail[kRingEntries + (q.avail_idx & (q.size - 1))] = head;
    barrier();  // §2.7.13.2: ring entry before idx (x86 keeps stores in order)
    q.avail_idx = static_cast<uint16_t>(q.avail_idx + 1);
    q.avail[kRingIdx] = q.avail_idx;
    return true;
}

void kick(Virtqueue& q) {
    full_barrier();  // §2.7.13.3.1: idx store before reading the device's suppression fields
    uint16_t new_idx = q.avail_idx;
    uint16_t old_idx = q.kicked_idx;
    if (new_idx == old_idx) return;
    q.kicked_idx = new_idx;
    bool needed;
    if (q.event_idx) {
        // vring_need_event (§2.7.10): notify if avail_event lies in [old, new).
        uint16_t event = avail_event(q);
        needed = static_cast<uint16_t>(new_idx - event - 1) < static_cast<uint16_t>(new_idx - old_idx);
    } else {
        needed = !(q.used[kRingFlags] & kUsedNoNotify);
    }
    if (!needed) return;
    ++q.notifies;
    if (q.device->transport == Transport::Pci) pci_transport::notify(q);
    else mmio_transport::notify(q);
}

bool has_used(const Virtqueue& q) { return q.used[kRingIdx] != q.last_used; }

uint16_t free_descriptors(const Virtqueue& q) { return q.num_free; }

bool pop_used(Virtqueue& q, uint32_t& length, void*& cookie) {
    if (!has_used(q)) return false;
    barrier();  // idx before the element (§2.7.14)
    volatile uint32_t* element = used_element(q, q.last_used & (q.size - 1));
    uint16_t head = static_cast<uint16_t>(element[0]);
    length = element[1];
    cookie = q.cookies[head];
    uint16_t slot = head;
    uint16_t freed = 1;
    while ((q.desc[slot].flags & kDescNext) && freed < q.size) {
        slot = q.desc[slot].next;
        ++freed;
    }
    q.desc[slot].next = q.free_head;
    q.free_head = head;
    q.num_free = static_cast<uint16_t>(q.num_free + freed);
    q.last_used = static_cast<uint16_t>(q.last_used + 1);
    // EVENT_IDX: interrupt again as soon as the next element is used (§2.7.10).
    if (q.event_idx) used_event(q) = q.last_used;
    return true;
}

Wait wait_used(Virtqueue& q, uint64_t timeout_ms) {
    bool got_irq = false;
    auto check_irq = [&] {
        uint64_t count = vector_irqs(q.vector_slot);
        if (count == q.irq_seen) return;
        q.irq_seen = count;
        got_irq = true;
        if (q.device->transport == Transport::Mmio) mmio_transport::acknowledge(*q.device);
    };
    if (q.event_idx) {
        used_event(q) = q.last_used;
        full_barrier();
    }
    // Already used when we start: its interrupt may be on its way (an asynchronous device writes the ring
    // first) or suppressed (EVENT_IDX before we moved used_event): a short look, no penalty.
    check_irq();
    if (has_used(q)) {
        uint64_t grace_end = read_tsc() + kReadyGraceUs * tsc_khz() / 1000;
        while (!got_irq && read_tsc() < grace_end) {
            cpu_relax();
            check_irq();
        }
        if (got_irq) ++q.irq_waits;
        return got_irq ? Wait::Irq : Wait::Ready;
    }
    Deadline deadline(timeout_ms);
    for (;;) {
        check_irq();
        if (has_used(q)) break;
        if (deadline.expired()) return Wait::Timeout;
        cpu_relax();
    }
    if (!got_irq && q.vector_slot >= 0 && !q.polling) {
        Deadline grace(kIrqGraceMs);
        while (!got_irq && !grace.expired()) {
            cpu_relax();
            check_irq();
        }
        if (!got_irq && q.poll_waits + 1 >= kMissesBeforePolling) q.polling = true;
        if (!got_irq && q.device->transport == Transport::Mmio) mmio_transport::acknowledge(*q.device);
    }
    if (got_irq) {
        ++q.irq_waits;
        return Wait::Irq;
    }
    ++q.poll_waits;
    return Wait::Poll;
}

bool next_used(Virtqueue& q, uint64_t timeout_ms, uint32_t& length, void*& cookie) {
    if (pop_used(q, length, cookie)) return true;
    if (wait_used(q, timeout_ms) == Wait::Timeout) return false;
    return pop_used(q, length, cookie);
}

const char* wait_summary(const Virtqueue& q) {
    if (q.poll_waits == 0) return q.irq_waits == 0 ? "none" : "irq";
    return q.irq_waits == 0 ? "poll" : "irq+poll";
}

}  // namespace guest::virtio
