// Transport-independent virtio (virtio 1.2): device status and feature negotiation (§2.1, §2.2, §3.1),
// the split virtqueue (§2.7) with INDIRECT_DESC (§2.7.5.3) and EVENT_IDX (§2.7.7, §2.7.10), interrupt
// vectors, and the DMA memory the drivers hand to devices (guest-physical == virtual here).
// The transports are virtio_pci.* (§4.1, modern only) and virtio_mmio.* (§4.2, version 2 only).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "bootinfo.hpp"
#include "pci.hpp"

// Written by irq_virtio_stubs (traps.S): one counter per vector VECTOR_VIRTIO_FIRST + n.
extern "C" volatile uint64_t virtio_irq_counts[];

namespace guest::virtio {

// Device status bits (§2.1).
constexpr uint8_t kStatusAcknowledge = 1;
constexpr uint8_t kStatusDriver = 2;
constexpr uint8_t kStatusDriverOk = 4;
constexpr uint8_t kStatusFeaturesOk = 8;
constexpr uint8_t kStatusNeedsReset = 64;
constexpr uint8_t kStatusFailed = 128;

// Reserved feature bits (§6).
constexpr uint64_t kFeatureIndirectDesc = uint64_t{1} << 28;
constexpr uint64_t kFeatureEventIdx = uint64_t{1} << 29;
constexpr uint64_t kFeatureVersion1 = uint64_t{1} << 32;

// Device IDs (§5).
constexpr uint32_t kDeviceNet = 1;
constexpr uint32_t kDeviceBlock = 2;
constexpr uint32_t kDeviceConsole = 3;
constexpr uint32_t kDeviceEntropy = 4;

// Split virtqueue descriptor flags and ring flags (§2.7.5, §2.7.6, §2.7.8).
constexpr uint16_t kDescNext = 1;
constexpr uint16_t kDescWrite = 2;
constexpr uint16_t kDescIndirect = 4;
constexpr uint16_t kUsedNoNotify = 1;

constexpr uint16_t kMaxQueueSize = 256;
constexpr uint16_t kNoMsixVector = 0xffff;  // §4.1.4.3 VIRTIO_MSI_NO_VECTOR

enum class Transport : uint8_t { Pci, Mmio };

struct Device {
    Transport transport = Transport::Pci;
    uint32_t device_id = 0;
    uint64_t features = 0;  // negotiated
    int vector_slot = -1;   // virtio-mmio: the device's one interrupt (counter index); -1 none
    // virtio-pci (§4.1.4): capability structures, already mapped.
    pci::Function function;
    uint64_t common = 0, notify = 0, isr = 0, device_config = 0;
    uint32_t notify_multiplier = 0;
    uint64_t msix_table = 0;
    uint16_t msix_entries = 0, msix_capability = 0, next_msix_entry = 0;
    // virtio-mmio (§4.2.2).
    uint64_t mmio_base = 0;
    uint32_t mmio_gsi = 0;
    bool mmio_active_low = false, mmio_level = false;
};

struct Descriptor {
    uint64_t address;
    uint32_t length;
    uint16_t flags;
    uint16_t next;
};
static_assert(sizeof(Descriptor) == 16);

// One buffer of a request: device-readable, or device-writable when `writable`.
struct Buffer {
    uint64_t address;
    uint32_t length;
    bool writable;
};

// Ready: an element was already pending (no wait). Irq: its interrupt came. Poll: found by polling.
enum class Wait : uint8_t { Ready, Irq, Poll, Timeout };

struct Virtqueue {
    Device* device = nullptr;
    uint16_t index = 0;
    uint16_t size = 0;
    volatile Descriptor* desc = nullptr;
    volatile uint16_t* avail = nullptr;  // flags, idx, ring[size], used_event
    volatile uint16_t* used = nullptr;   // flags, idx, {le32 id, le32 len}[size], avail_event
    uint64_t notify_address = 0;         // virtio-pci: notify BAR + queue_notify_off * multiplier
    uint16_t free_head = 0, num_free = 0, last_used = 0, avail_idx = 0, kicked_idx = 0;
    bool event_idx = false;
    Descriptor* indirect = nullptr;  // size tables of max_indirect descriptors each (null: direct only)
    uint16_t max_indirect = 0;
    void** cookies = nullptr;
    int vector_slot = -1;  // counter watched for this queue's interrupts; -1: polling only
    uint64_t irq_seen = 0;
    uint64_t irq_base = 0;  // the vector's count when the queue was set up
    bool polling = false;  // interrupts stopped coming: poll without waiting for them
    // Statistics, for the check lines.
    uint64_t irq_waits = 0, poll_waits = 0, notifies = 0, indirect_used = 0;
};

// --- Platform ------------------------------------------------------------------------------------------
// DMA memory: a bump allocator over e820 RAM after the image. Must be called first.
// The 64 feature bits both transports show through a select register and a 32-bit window
// (§4.1.4.3 device_feature_select/device_feature, §4.2.2 DeviceFeaturesSel/DeviceFeatures).
uint64_t read_feature_words(uint64_t select, uint64_t window);
void write_feature_words(uint64_t select, uint64_t window, uint64_t features);

bool dma_init(const BootInfo& boot);
// Zeroed, `align`-aligned memory; nullptr when exhausted.
void* dma_alloc(size_t size, size_t align = 64);
uint64_t dma_mark();
void dma_release(uint64_t mark);  // frees everything allocated after dma_mark() returned `mark`
uint64_t dma_arena_end();         // RAM from here on is never used by the guest (test.hostile's scratch)
// The LAPIC id that MSI-X messages and IOAPIC entries target.
void set_interrupt_destination(uint32_t apic_id);
uint32_t interrupt_destination();
// A free counting vector (index n for vector VECTOR_VIRTIO_FIRST + n), or -1.
int allocate_vector_slot();
inline uint64_t vector_irqs(int slot) { return slot < 0 ? 0 : virtio_irq_counts[slot]; }

// --- Device set-up (§3.1.1) ----------------------------------------------------------------------------
// Reset, ACKNOWLEDGE, DRIVER, then negotiate: VERSION_1 (required) | (`wanted` & offered), plus
// INDIRECT_DESC and EVENT_IDX when offered; FEATURES_OK must stick. `error` says what failed.
bool begin(Device& device, uint64_t wanted, const char*& error);
// Sets up queue `index` with min(device maximum, max_size) entries, an interrupt vector when the
// transport has one, and (if INDIRECT_DESC was negotiated and max_indirect > 0) indirect tables.
bool queue_create(Device& device, uint16_t index, uint16_t max_size, uint16_t max_indirect, Virtqueue& queue,
                  const char*& error);
void driver_ok(Device& device);
void fail(Device& device);  // sets FAILED (§3.1.1 step 8)
void reset(Device& device);
uint8_t status(Device& device);
uint64_t offered_features(Device& device);

// Device-specific configuration space (§2.5), little-endian.
uint8_t config8(Device& device, uint32_t offset);
uint16_t config16(Device& device, uint32_t offset);
uint32_t config32(Device& device, uint32_t offset);
uint64_t config64(Device& device, uint32_t offset);  // re-read until the generation is stable (§2.5.1)

const char* transport_name(const Device& device);
const char* device_name(uint32_t device_id);

// --- Split virtqueue (§2.7) ----------------------------------------------------------------------------
// Adds one request (a chain of `count` buffers, readable ones first) to the available ring; uses an
// indirect table when negotiated and count > 1. False if there is no room. Does not notify.
bool submit(Virtqueue& queue, const Buffer* buffers, uint16_t count, void* cookie);
// Notifies the device of new available buffers unless it asked not to be (EVENT_IDX: §2.7.10).
void kick(Virtqueue& queue);
// Takes one used element (frees its descriptors); false if none is pending.
bool pop_used(Virtqueue& queue, uint32_t& length, void*& cookie);
bool has_used(const Virtqueue& queue);
// Waits until a used element is pending: by interrupt (the queue's vector counter moves), else by
// polling the used ring (an interrupt that does not come within a grace period marks the queue as
// polling). Returns how it ended.
Wait wait_used(Virtqueue& queue, uint64_t timeout_ms);
// For the check lines, from the queue's statistics: "irq" (every wait ended by the queue's interrupt),
// "poll" (none did: the used ring was polled), "irq+poll" (some of each), "none" (every completion was
// already in the used ring when the driver looked: no wait; `irqs=` still counts the interrupts).
const char* wait_summary(const Virtqueue& queue);
uint16_t free_descriptors(const Virtqueue& queue);
// Interrupts counted on the queue's vector since it was set up (shared with the device's other queues
// on virtio-mmio).
inline uint64_t interrupts(const Virtqueue& queue) { return vector_irqs(queue.vector_slot) - queue.irq_base; }
// Pops one used element, waiting for one first if none is pending; false on timeout.
bool next_used(Virtqueue& queue, uint64_t timeout_ms, uint32_t& length, void*& cookie);

}  // namespace guest::virtio
