// test.hostile=1: attacks on ember's virtqueues and virtio transports (hostile.hpp). Everything here polls
// (no queue gets an interrupt vector), so an attack never waits on an interrupt ember may rightly not send.
#include "hostile.hpp"

#include "base.hpp"
#include "checks.hpp"
#include "cmdline.hpp"
#include "hostile_common.hpp"
#include "print.hpp"
#include "timing.hpp"
#include "virtio_transport.hpp"

namespace guest {
namespace hostile {
namespace {

using virtio::Buffer;
using virtio::Device;
using virtio::Transport;
using virtio::Virtqueue;

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr uint64_t k4GiB = 4 * kGiB;
constexpr uint16_t kQueueSize = 64;  // every attack queue: small, and room for 33-descriptor chains
constexpr uint64_t kRequestMs = 3000;
constexpr uint32_t kSector = 512;

// virtio_pci_common_cfg (virtio 1.2 §4.1.4.3); the driver's copies are private to virtio_pci.cpp.
constexpr uint64_t kPciDeviceFeatureSelect = 0x00;
constexpr uint64_t kPciDriverFeatureSelect = 0x08;
constexpr uint64_t kPciDriverFeature = 0x0c;
constexpr uint64_t kPciStatus = 0x14;
constexpr uint64_t kPciQueueSelect = 0x16;
constexpr uint64_t kPciQueueSize = 0x18;
constexpr uint64_t kPciQueueEnable = 0x1c;
constexpr uint64_t kPciQueueDesc = 0x20;
constexpr uint64_t kPciQueueDriver = 0x28;
constexpr uint64_t kPciQueueDevice = 0x30;
constexpr uint64_t kPciNotifyRegion = 0x1000;  // notify structure bytes (ember: 4 per queue, 1024 queues)
// virtio-mmio version 2 registers (§4.2.2).
constexpr uint64_t kMmioDriverFeatures = 0x020;
constexpr uint64_t kMmioDriverFeaturesSel = 0x024;
constexpr uint64_t kMmioQueueSel = 0x030;
constexpr uint64_t kMmioQueueNum = 0x038;
constexpr uint64_t kMmioQueueReady = 0x044;
constexpr uint64_t kMmioQueueNotify = 0x050;
constexpr uint64_t kMmioStatus = 0x070;
constexpr uint64_t kMmioQueueDescLow = 0x080;
constexpr uint64_t kMmioQueueDriverLow = 0x090;
constexpr uint64_t kMmioQueueDeviceLow = 0x0a0;

// Feature bits (§5.1.3, §5.2.3).
constexpr uint64_t kNetCsum = uint64_t{1} << 0;
constexpr uint64_t kNetMac = uint64_t{1} << 5;
constexpr uint64_t kNetHostTso4 = uint64_t{1} << 11;
constexpr uint64_t kNetMergeable = uint64_t{1} << 15;
constexpr uint64_t kNetStatus = uint64_t{1} << 16;
constexpr uint64_t kBlkSegMax = uint64_t{1} << 2;
constexpr uint64_t kBlkBlockSize = uint64_t{1} << 6;
constexpr uint64_t kBlkFlush = uint64_t{1} << 9;
constexpr uint64_t kBlkDiscard = uint64_t{1} << 13;
constexpr uint64_t kBlkWriteZeroes = uint64_t{1} << 14;

// virtio-blk requests (§5.2.6).
constexpr uint32_t kBlkIn = 0, kBlkOut = 1, kBlkFlushType = 4, kBlkGetId = 8, kBlkDiscardType = 11,
                   kBlkWriteZeroesType = 13;
constexpr int kBlkOk = 0, kBlkIoError = 1, kBlkUnsupported = 2;
constexpr uint8_t kPending = 0xff;
constexpr uint64_t kWritableSector = 4096;  // attacks that write the disk stay at or above this sector
constexpr uint32_t kNetHeader = 12;          // virtio_net_hdr with num_buffers (VERSION_1)
constexpr uint32_t kFuseInit = 26, kFuseMajor = 7, kFuseMinor = 31;  // include/uapi/linux/fuse.h
constexpr uint32_t kFuseInHeader = 40, kFuseInitIn = 64;

// What a device's first request queue carries, and which features the attacks negotiate.
struct Role {
    uint32_t device_id;
    uint16_t queues;
    uint16_t request;        // the queue the device processes on notification
    bool writable_payload;   // the device writes (rng, blk IN) or reads (console and net transmit)
    uint64_t features;
};

constexpr Role kRoles[] = {
    {virtio::kDeviceEntropy, 1, 0, true, 0},
    {virtio::kDeviceBlock, 1, 0, true, kBlkSegMax | kBlkBlockSize | kBlkFlush | kBlkDiscard | kBlkWriteZeroes},
    {virtio::kDeviceConsole, 2, 1, false, 0},
    {virtio::kDeviceNet, 2, 1, false, kNetMac | kNetStatus | kNetCsum | kNetHostTso4},
    {kDeviceFs, 2, 1, false, 0},  // hiprio 0, requests 1 (§5.11.2)
};

const Role* role_of(uint32_t device_id) {
    for (const Role& role : kRoles) {
        if (role.device_id == device_id) return &role;
    }
    return nullptr;
}

inline void barrier() { asm volatile("" ::: "memory"); }

struct BlkRequest {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
    volatile uint8_t status;
};

uint8_t disk_pattern(uint64_t i, uint64_t seed) { return static_cast<uint8_t>(i * 131 + i / 4096 + seed); }

// --- Raw transport access --------------------------------------------------------------------------------

bool is_pci(const Device& d) { return d.transport == Transport::Pci; }

void set_status(Device& d, uint8_t value) {
    if (is_pci(d)) write8(d.common + kPciStatus, value);
    else write32(d.mmio_base + kMmioStatus, value);
}

void select_queue(Device& d, uint32_t index) {
    if (is_pci(d)) write16(d.common + kPciQueueSelect, static_cast<uint16_t>(index));
    else write32(d.mmio_base + kMmioQueueSel, index);
}

void set_queue_size(Device& d, uint32_t size) {
    if (is_pci(d)) write16(d.common + kPciQueueSize, static_cast<uint16_t>(size));
    else write32(d.mmio_base + kMmioQueueNum, size);
}

uint32_t queue_size(Device& d) {
    return is_pci(d) ? read16(d.common + kPciQueueSize) : read32(d.mmio_base + kMmioQueueNum);
}

void write_address(Device& d, uint64_t pci_offset, uint64_t mmio_offset, uint64_t address) {
    uint64_t base = is_pci(d) ? d.common + pci_offset : d.mmio_base + mmio_offset;
    write32(base, static_cast<uint32_t>(address));
    write32(base + 4, static_cast<uint32_t>(address >> 32));
}

void set_rings(Device& d, uint64_t desc, uint64_t driver, uint64_t device) {
    write_address(d, kPciQueueDesc, kMmioQueueDescLow, desc);
    write_address(d, kPciQueueDriver, kMmioQueueDriverLow, driver);
    write_address(d, kPciQueueDevice, kMmioQueueDeviceLow, device);
}

uint64_t queue_desc(Device& d) {
    if (is_pci(d)) return read32(d.common + kPciQueueDesc) | uint64_t{read32(d.common + kPciQueueDesc + 4)} << 32;
    return 0;  // virtio-mmio's ring address registers are write-only
}

void enable_queue(Device& d) {
    if (is_pci(d)) write16(d.common + kPciQueueEnable, 1);
    else write32(d.mmio_base + kMmioQueueReady, 1);
}

void write_driver_features(Device& d, uint64_t features) {
    if (is_pci(d)) virtio::pci_transport::set_driver_features(d, features);
    else virtio::mmio_transport::set_driver_features(d, features);
}

// A notification of queue `index`: virtio-pci by the notify address (only inside ember's notify structure,
// so a missing queue's index never reaches another BAR), virtio-mmio by QueueNotify's value.
void notify_index(Device& d, uint32_t index) {
    if (is_pci(d)) {
        uint64_t offset = uint64_t{index} * d.notify_multiplier;
        if (offset + 2 <= kPciNotifyRegion) write16(d.notify + offset, static_cast<uint16_t>(index));
    } else {
        write32(d.mmio_base + kMmioQueueNotify, index);
    }
}

void ring_bell(Virtqueue& q) {
    asm volatile("mfence" ::: "memory");
    notify_index(*q.device, q.index);
    ++q.notifies;
}

// --- Ring writing ----------------------------------------------------------------------------------------

void put(Virtqueue& q, uint16_t index, uint64_t address, uint32_t length, uint16_t flags, uint16_t next) {
    volatile virtio::Descriptor& descriptor = q.desc[index];
    descriptor.address = address;
    descriptor.length = length;
    descriptor.flags = flags;
    descriptor.next = next;
}

void offer(Virtqueue& q, uint16_t head) {
    q.avail[2 + (q.avail_idx & (q.size - 1))] = head;
    barrier();
    q.avail_idx = static_cast<uint16_t>(q.avail_idx + 1);
    q.avail[1] = q.avail_idx;
}

// --- Sessions: a device set up for one attack --------------------------------------------------------------

struct Session {
    Target* target = nullptr;
    const Role* role = nullptr;
    Virtqueue queues[2];
    uint64_t mark = 0;

    Device& device() { return *target->device; }
    Context& context() { return *target->context; }
    Virtqueue& request() { return queues[role->request]; }
};

// Reset, ACKNOWLEDGE, DRIVER, features: VERSION_1 | (offered & (wanted | INDIRECT | EVENT_IDX)) minus `drop`.
bool negotiate(Device& d, uint64_t wanted, uint64_t drop, const char*& error) {
    virtio::reset(d);
    if (virtio::status(d) != 0) {
        error = "did not reset";
        return false;
    }
    set_status(d, virtio::kStatusAcknowledge);
    set_status(d, virtio::kStatusAcknowledge | virtio::kStatusDriver);
    uint64_t offered = virtio::offered_features(d);
    uint64_t accept = (virtio::kFeatureVersion1 |
                       (offered & (wanted | virtio::kFeatureIndirectDesc | virtio::kFeatureEventIdx))) & ~drop;
    write_driver_features(d, accept);
    set_status(d, virtio::kStatusAcknowledge | virtio::kStatusDriver | virtio::kStatusFeaturesOk);
    if (!(virtio::status(d) & virtio::kStatusFeaturesOk)) {
        error = "FEATURES_OK not accepted";
        return false;
    }
    d.features = accept;
    return true;
}

// Queues set up without interrupts (this file polls); false with `error` if the device refused.
bool create_queues(Session& s, const char*& error) {
    Device& d = s.device();
    for (uint16_t index = 0; index < s.role->queues; ++index) {
        d.next_msix_entry = d.msix_entries;  // no MSI-X vector: hostile_registers.cpp attacks those apart
        if (!virtio::queue_create(d, index, kQueueSize, 0, s.queues[index], error)) return false;
        s.queues[index].vector_slot = -1;
    }
    return true;
}

bool open(Target& t, Session& s, bool driver_ok, const char*& error, uint64_t extra = 0, uint64_t drop = 0) {
    s.target = &t;
    s.role = role_of(t.device->device_id);
    s.mark = virtio::dma_mark();
    if (!negotiate(*t.device, s.role->features | extra, drop, error) || !create_queues(s, error)) return false;
    if (driver_ok) virtio::driver_ok(*t.device);
    return true;
}

template <typename T>
T* alloc(size_t count = 1, size_t align = 64) {
    return static_cast<T*>(virtio::dma_alloc(sizeof(T) * count, align));
}

uint8_t* bytes(size_t count, size_t align = 64) { return static_cast<uint8_t*>(virtio::dma_alloc(count, align)); }

// Waits for ember's answer to what was just offered on `q`: NEEDS_RESET, a used element, or nothing.
Answer await(Session& s, Virtqueue& q, uint64_t ms, volatile uint8_t* status_byte = nullptr) {
    Answer answer;
    Deadline deadline(ms);
    for (;;) {
        if (virtio::status(s.device()) & virtio::kStatusNeedsReset) {
            answer.kind = kNeedsReset;
            return answer;
        }
        if (q.used[1] != q.last_used) {
            barrier();
            auto* element = reinterpret_cast<volatile uint32_t*>(q.used + 2) + 2 * (q.last_used & (q.size - 1));
            answer.kind = kUsed;
            answer.length = element[1];
            if (status_byte != nullptr) answer.status = *status_byte;
            return answer;
        }
        if (deadline.expired()) return answer;
        cpu_relax();
    }
}

// Where "nothing" is an acceptable answer only the short wait is spent on it.
uint64_t wait_for(const Context& c, uint8_t wanted) { return (wanted & kNothing) ? c.quiet_ms : c.answer_ms; }

// --- Chains on the request queue, framed as the device expects ----------------------------------------------

// Descriptors laid out at table indices 0, 1, 2, ... each NEXT to the following; for virtio-blk an IN
// header first and the status byte last (unless the attack builds those itself).
class Chain {
public:
    explicit Chain(Session& s, bool framed = true, uint32_t blk_type = kBlkIn, uint64_t sector = 0)
        : s_(s), q_(s.request()) {
        framed_ = framed && s.role->device_id == virtio::kDeviceBlock;
        if (framed_) {
            request_ = alloc<BlkRequest>();
            request_->type = blk_type;
            request_->sector = sector;
            request_->status = kPending;
            add(reinterpret_cast<uint64_t>(request_), 16, false);
        }
    }
    uint16_t add(uint64_t address, uint32_t length, bool writable) {
        uint16_t index = count_++;
        put(q_, index, address, length, static_cast<uint16_t>(writable ? virtio::kDescWrite : 0), 0);
        if (index > 0) {
            q_.desc[index - 1].flags = static_cast<uint16_t>(q_.desc[index - 1].flags | virtio::kDescNext);
            q_.desc[index - 1].next = index;
        }
        return index;
    }
    // In the device's payload direction (written by rng and blk IN, read by console and net transmit).
    uint16_t payload(uint64_t address, uint32_t length) { return add(address, length, s_.role->writable_payload); }
    // Ends the chain (blk: with the status byte) and offers it.
    void publish() {
        if (framed_) add(reinterpret_cast<uint64_t>(&request_->status), 1, true);
        offer(q_, 0);
        ring_bell(q_);
    }
    // The last descriptor points at `index` instead of ending the chain; offered as is.
    void publish_loop(uint16_t index) {
        q_.desc[count_ - 1].flags = static_cast<uint16_t>(q_.desc[count_ - 1].flags | virtio::kDescNext);
        q_.desc[count_ - 1].next = index;
        offer(q_, 0);
        ring_bell(q_);
    }
    Answer await(uint8_t wanted) {
        return hostile::await(s_, q_, wait_for(s_.context(), wanted), framed_ ? &request_->status : nullptr);
    }
    uint16_t count() const { return count_; }
    BlkRequest* request() { return request_; }

private:
    Session& s_;
    Virtqueue& q_;
    bool framed_ = false;
    BlkRequest* request_ = nullptr;
    uint16_t count_ = 0;
};

// Runs `build` (which fills and publishes a chain) on a fresh session and concludes with the answer.
template <typename Build>
void chain_attack(Target& t, const char* name, uint8_t wanted, int wanted_status, Build build) {
    Session s;
    const char* error = "";
    Answer answer;
    if (!open(t, s, true, error)) {
        format_to(answer.note, sizeof(answer.note), "set-up failed: %s", error);
        answer.kind = 0;
    } else {
        answer = build(s);
    }
    virtio::dma_release(s.mark);
    conclude(t, name, answer, wanted, wanted_status);
}

// A plain buffer in the device's direction, for attacks where only the chain's shape matters.
uint64_t small_buffer() { return reinterpret_cast<uint64_t>(bytes(512)); }

// --- Generic attacks on the request queue ------------------------------------------------------------------

void generic_attacks(Target& t) {
    Context& c = *t.context;
    const RamMap& ram = c.ram;
    bool is_blk = t.device->device_id == virtio::kDeviceBlock;
    uint32_t id = t.device->device_id;
    // What a well-formed chain with an empty or refused payload comes back as: rng, console and net return it
    // used with length 0; blk reads zero sectors fine (status OK).
    int empty_status = is_blk ? kBlkOk : -1;

    auto structural = [&](const char* name, auto shape) {
        chain_attack(t, name, kNeedsReset, -1, [&](Session& s) {
            Chain chain(s);
            shape(s, chain);
            return chain.await(kNeedsReset);
        });
    };
    auto bad_buffer = [&](const char* name, uint64_t address, uint32_t length) {
        structural(name, [&](Session&, Chain& chain) {
            chain.payload(address, length);
            chain.publish();
        });
    };

    structural("desc_self_loop", [&](Session&, Chain& chain) {
        uint16_t index = chain.payload(small_buffer(), 64);
        chain.publish_loop(index);
    });
    structural("desc_loop_to_head", [&](Session&, Chain& chain) {
        chain.payload(small_buffer(), 64);
        chain.payload(small_buffer(), 64);
        chain.publish_loop(0);
    });
    structural("chain_longer_than_queue", [&](Session& s, Chain& chain) {
        uint64_t buffer = small_buffer();
        while (chain.count() < s.request().size) chain.payload(buffer, 1);
        chain.publish_loop(0);
    });
    structural("next_out_of_range", [&](Session& s, Chain& chain) {
        uint16_t index = chain.payload(small_buffer(), 64);
        s.request().desc[index].flags = static_cast<uint16_t>(s.request().desc[index].flags | virtio::kDescNext);
        s.request().desc[index].next = static_cast<uint16_t>(s.request().size + 3);
        offer(s.request(), 0);
        ring_bell(s.request());
    });
    structural("head_out_of_range", [&](Session& s, Chain& chain) {
        chain.payload(small_buffer(), 64);
        offer(s.request(), static_cast<uint16_t>(s.request().size + 1));
        ring_bell(s.request());
    });
    structural("head_0xffff", [&](Session& s, Chain&) {
        offer(s.request(), 0xffff);
        ring_bell(s.request());
    });
    structural("avail_idx_jump", [&](Session& s, Chain& chain) {
        chain.payload(small_buffer(), 64);
        s.request().avail[1] = static_cast<uint16_t>(s.request().size + 1);  // no entries written
        ring_bell(s.request());
    });
    structural("avail_idx_half_wrap", [&](Session& s, Chain&) {
        s.request().avail[1] = 0x8000;
        ring_bell(s.request());
    });
    bad_buffer("buffer_outside_ram", ram.outside, 64);
    bad_buffer("buffer_at_ram_end", ram.low_end, 64);
    bad_buffer(ram.low_end == 0xc0000000 ? "buffer_straddles_ram_and_hole" : "buffer_straddles_ram_end",
               ram.low_end - 8, 16);
    if (ram.high_end != 0) {
        bad_buffer("buffer_straddles_high_ram_end", ram.high_end - 8, 16);
        bad_buffer("buffer_below_high_ram", ram.high_start - 8, 16);
    }
    bad_buffer("length_0xffffffff", ram.scratch, 0xffffffff);
    bad_buffer("length_near_4g_at_1mib", 0x100000, 0xfffff000);
    bad_buffer("address_overflows", 0xfffffffffffff000, 0x2000);
    bad_buffer("address_top_byte", 0xffffffffffffffff, 1);
    bad_buffer("address_beyond_52_bits", uint64_t{1} << 52, 64);
    structural("readable_after_writable", [&](Session&, Chain& chain) {
        chain.add(small_buffer(), 16, true);
        chain.add(small_buffer(), 16, false);
        chain.publish();
    });

    chain_attack(t, "length_zero", kUsed, empty_status, [&](Session& s) {
        Chain chain(s);
        chain.payload(small_buffer(), 0);
        chain.publish();
        return chain.await(kUsed);
    });

    // A chain of exactly the queue size: well formed, so the device handles it normally.
    {
        int status = is_blk ? kBlkOk : -1;
        chain_attack(t, "chain_of_queue_size", kUsed, status, [&](Session& s) {
            Chain chain(s);
            uint8_t* content = bytes(kQueueSize * kSector, 4096);
            if (id == virtio::kDeviceConsole) {  // 63 dots and a newline on ember's stdout
                memset(content, '.', kQueueSize);
                content[kQueueSize - 1] = '\n';
            } else if (id == virtio::kDeviceNet) {  // header, then a broadcast frame of a local ethertype
                memset(content + kNetHeader, 0xff, 6);
                content[kNetHeader + 12] = 0x88;
                content[kNetHeader + 13] = 0xb5;
            }
            uint16_t slots = is_blk ? static_cast<uint16_t>(s.request().size - 2) : s.request().size;
            for (uint16_t i = 0; i < slots; ++i) {
                if (is_blk) chain.payload(reinterpret_cast<uint64_t>(content) + i * kSector, kSector);
                else chain.payload(reinterpret_cast<uint64_t>(content) + i, 1);
            }
            chain.publish();
            return chain.await(kUsed);
        });
    }

    // Buffers aliasing the scratch RAM: more than 4 GiB in all (refused by pop()), and just under (well
    // formed: rng fills 64 KiB of the first, blk refuses the sectors, console and net drop the chain).
    uint64_t chunk = kGiB;
    while (chunk > kMiB && chunk > ram.scratch_end - ram.scratch) chunk /= 2;
    uint32_t over = static_cast<uint32_t>(k4GiB / chunk + 1);
    if (over + 2 <= kQueueSize) {
        structural("chain_over_4g_aliased", [&](Session&, Chain& chain) {
            for (uint32_t i = 0; i < over; ++i) chain.payload(ram.scratch, static_cast<uint32_t>(chunk));
            chain.publish();
        });
        uint8_t wanted = kUsed;
        int status = is_blk ? kBlkIoError : -1;
        chain_attack(t, "chain_under_4g_aliased", wanted, status, [&](Session& s) {
            Chain chain(s);
            for (uint32_t i = 0; i + 2 < over; ++i) chain.payload(ram.scratch, static_cast<uint32_t>(chunk));
            chain.publish();
            return chain.await(kUsed);
        });
    } else {
        print("hostile: %s: chain_over_4g_aliased skipped (scratch RAM %lu MiB too small)\n", t.name,
              (ram.scratch_end - ram.scratch) / kMiB);
    }

    // Buffers in the RAM region above 4 GiB, and one chain across both regions (well formed).
    if (ram.high_end != 0 && (id == virtio::kDeviceEntropy || is_blk)) {
        chain_attack(t, "buffers_across_ram_regions", kUsed, is_blk ? kBlkOk : -1, [&](Session& s) {
            Chain chain(s);
            chain.payload(ram.low_end - 4096, 4096);
            chain.payload(ram.high_start, 4096);
            chain.publish();
            return chain.await(kUsed);
        });
        chain_attack(t, "buffer_at_high_ram_end", kUsed, is_blk ? kBlkOk : -1, [&](Session& s) {
            Chain chain(s);
            chain.payload(ram.high_end - 4096, 4096);
            chain.publish();
            return chain.await(kUsed);
        });
    }
}

// --- Indirect descriptor tables (§2.7.5.3) ------------------------------------------------------------------

void indirect_attacks(Target& t) {
    Context& c = *t.context;
    uint32_t id = t.device->device_id;
    bool is_blk = id == virtio::kDeviceBlock;
    // The request queue's descriptor 0 names `table` (`length` bytes), optionally with extra flags.
    auto with_table = [&](const char* name, uint8_t wanted, int status, auto fill) {
        chain_attack(t, name, wanted, status, [&](Session& s) {
            Virtqueue& q = s.request();
            auto* table = alloc<virtio::Descriptor>(8, 16);
            uint64_t address = reinterpret_cast<uint64_t>(table);
            uint32_t length = 0;
            uint16_t flags = virtio::kDescIndirect;
            volatile uint8_t* status_byte = nullptr;
            fill(s, table, address, length, flags, status_byte);
            put(q, 0, address, length, flags, 1);
            offer(q, 0);
            ring_bell(q);
            return await(s, q, wait_for(c, wanted), status_byte);
        });
    };
    auto entry = [](virtio::Descriptor* table, uint16_t index, uint64_t address, uint32_t length, uint16_t flags,
                    uint16_t next) {
        table[index] = virtio::Descriptor{address, length, flags, next};
    };
    bool writable = role_of(id)->writable_payload;
    uint16_t payload_flags = writable ? virtio::kDescWrite : 0;

    with_table("indirect_nested", kNeedsReset, -1, [&](Session&, virtio::Descriptor* table, uint64_t&, uint32_t& length,
                                                       uint16_t&, volatile uint8_t*&) {
        auto* inner = alloc<virtio::Descriptor>(2, 16);
        entry(inner, 0, small_buffer(), 64, payload_flags, 0);
        entry(table, 0, reinterpret_cast<uint64_t>(inner), 16, virtio::kDescIndirect, 0);
        length = 16;
    });
    with_table("indirect_loop", kNeedsReset, -1, [&](Session&, virtio::Descriptor* table, uint64_t&, uint32_t& length,
                                                     uint16_t&, volatile uint8_t*&) {
        uint64_t buffer = small_buffer();
        entry(table, 0, buffer, 16, static_cast<uint16_t>(payload_flags | virtio::kDescNext), 1);
        entry(table, 1, buffer, 16, static_cast<uint16_t>(payload_flags | virtio::kDescNext), 0);
        length = 32;
    });
    with_table("indirect_with_next", kNeedsReset, -1, [&](Session& s, virtio::Descriptor* table, uint64_t&,
                                                          uint32_t& length, uint16_t& flags, volatile uint8_t*&) {
        entry(table, 0, small_buffer(), 16, payload_flags, 0);
        put(s.request(), 1, small_buffer(), 16, payload_flags, 0);
        length = 16;
        flags = static_cast<uint16_t>(flags | virtio::kDescNext);
    });
    with_table("indirect_length_24", kNeedsReset, -1, [&](Session&, virtio::Descriptor* table, uint64_t&,
                                                          uint32_t& length, uint16_t&, volatile uint8_t*&) {
        entry(table, 0, small_buffer(), 16, payload_flags, 0);
        length = 24;
    });
    with_table("indirect_length_0", kNeedsReset, -1, [&](Session&, virtio::Descriptor*, uint64_t&, uint32_t& length,
                                                         uint16_t&, volatile uint8_t*&) { length = 0; });
    with_table("indirect_table_outside_ram", kNeedsReset, -1,
               [&](Session&, virtio::Descriptor*, uint64_t& address, uint32_t& length, uint16_t&, volatile uint8_t*&) {
                   address = c.ram.outside;
                   length = 64;
               });
    with_table("indirect_table_straddles_ram_end", kNeedsReset, -1,
               [&](Session&, virtio::Descriptor*, uint64_t& address, uint32_t& length, uint16_t&, volatile uint8_t*&) {
                   address = c.ram.low_end - 16;
                   length = 32;
               });
    with_table("indirect_length_near_4g", kNeedsReset, -1,
               [&](Session&, virtio::Descriptor*, uint64_t& address, uint32_t& length, uint16_t&, volatile uint8_t*&) {
                   address = c.ram.scratch;
                   length = 0xfffffff0;
               });
    with_table("indirect_65537_entries", kNeedsReset, -1,
               [&](Session&, virtio::Descriptor*, uint64_t& address, uint32_t& length, uint16_t&, volatile uint8_t*&) {
                   address = c.ram.scratch;  // 1 MiB + 16 of scratch RAM: refused before it is read
                   length = (65536 + 1) * 16;
               });
    with_table("indirect_next_out_of_table", kNeedsReset, -1, [&](Session&, virtio::Descriptor* table, uint64_t&,
                                                                  uint32_t& length, uint16_t&, volatile uint8_t*&) {
        entry(table, 0, small_buffer(), 16, static_cast<uint16_t>(payload_flags | virtio::kDescNext), 5);
        entry(table, 1, small_buffer(), 16, payload_flags, 0);
        length = 32;
    });
    // A well-formed table of 65536 one-byte descriptors (ember's limit): rng fills them all; net refuses more
    // buffers than IOV_MAX; blk refuses a read that is not whole sectors. Not for the console: 64 KiB of
    // scratch RAM would go to ember's stdout.
    if (id != virtio::kDeviceConsole) {
        uint8_t wanted = kUsed;
        int status = is_blk ? kBlkIoError : -1;
        with_table("indirect_65536_entries", wanted, status,
                   [&](Session&, virtio::Descriptor*, uint64_t& address, uint32_t& length, uint16_t&,
                       volatile uint8_t*& status_byte) {
                       auto* big = reinterpret_cast<virtio::Descriptor*>(c.ram.scratch);
                       uint64_t data = c.ram.scratch + 65536 * sizeof(virtio::Descriptor);
                       uint32_t first = 0;
                       if (is_blk) {
                           auto* request = alloc<BlkRequest>();
                           *request = BlkRequest{kBlkIn, 0, 0, kPending};
                           entry(big, 0, reinterpret_cast<uint64_t>(request), 16, virtio::kDescNext, 1);
                           status_byte = &request->status;
                           first = 1;
                       }
                       for (uint32_t i = first; i < 65536; ++i) {
                           bool last = i == 65535;
                           uint64_t where = is_blk && last ? reinterpret_cast<uint64_t>(status_byte) : data + i;
                           entry(big, static_cast<uint16_t>(i), where, 1,
                                 static_cast<uint16_t>(payload_flags | (last ? 0 : virtio::kDescNext)),
                                 static_cast<uint16_t>(i + 1));
                       }
                       if (id == virtio::kDeviceNet) memset(reinterpret_cast<void*>(data), 0, kNetHeader);
                       address = c.ram.scratch;
                       length = 65536 * 16;
                   });
    }
    // INDIRECT_DESC not negotiated: the flag is a protocol violation.
    {
        Session s;
        const char* error = "";
        Answer answer;
        if (!open(t, s, true, error, 0, virtio::kFeatureIndirectDesc)) {
            format_to(answer.note, sizeof(answer.note), "set-up failed: %s", error);
            answer.kind = 0;
        } else {
            auto* table = alloc<virtio::Descriptor>(2, 16);
            entry(table, 0, small_buffer(), 64, payload_flags, 0);
            put(s.request(), 0, reinterpret_cast<uint64_t>(table), 16, virtio::kDescIndirect, 0);
            offer(s.request(), 0);
            ring_bell(s.request());
            answer = await(s, s.request(), c.answer_ms);
        }
        virtio::dma_release(s.mark);
        conclude(t, "indirect_not_negotiated", answer, kNeedsReset);
    }
}

// --- Device semantics ---------------------------------------------------------------------------------------

void rng_attacks(Target& t) {
    chain_attack(t, "rng_buffer_device_readable", kUsed, -1, [&](Session& s) {
        Chain chain(s);
        chain.add(small_buffer(), 64, false);
        chain.publish();
        return chain.await(kUsed);
    });
    chain_attack(t, "rng_readable_then_writable", kUsed, -1, [&](Session& s) {
        Chain chain(s);
        chain.add(small_buffer(), 16, false);
        chain.add(small_buffer(), 16, true);
        chain.publish();
        return chain.await(kUsed);
    });
    chain_attack(t, "rng_16mib_buffer", kUsed, -1, [&](Session& s) {
        Chain chain(s);
        chain.add(t.context->ram.scratch, 16 * kMiB, true);
        chain.publish();
        return chain.await(kUsed);
    });
}

// One virtio-blk request built from parts: header (`header_bytes` of it, readable unless `header_writable`),
// data descriptors, status byte (1 byte writable unless told otherwise).
struct BlkParts {
    uint32_t type = kBlkIn;
    uint64_t sector = 0;
    uint32_t header_bytes = 16;
    bool header_writable = false;
    bool split_header = false;
    uint64_t data = 0;
    uint32_t data_bytes = 0;
    bool data_writable = true;
    bool status_readonly = false;
    uint32_t status_bytes = 1;
};

void blk_request(Target& t, const char* name, BlkParts parts, uint8_t wanted, int wanted_status,
                 void (*prepare)(uint8_t* data) = nullptr) {
    chain_attack(t, name, wanted, wanted_status, [&](Session& s) {
        Chain chain(s, false);
        auto* request = alloc<BlkRequest>();
        *request = BlkRequest{parts.type, 0, parts.sector, kPending};
        uint64_t header = reinterpret_cast<uint64_t>(request);
        if (parts.data == 0 && parts.data_bytes != 0) {
            uint8_t* data = bytes(parts.data_bytes < 4096 ? 4096 : parts.data_bytes, 4096);
            if (prepare != nullptr) prepare(data);
            parts.data = reinterpret_cast<uint64_t>(data);
        }
        if (parts.split_header) {
            chain.add(header, 8, parts.header_writable);
            chain.add(header + 8, 8, parts.header_writable);
        } else {
            chain.add(header, parts.header_bytes, parts.header_writable);
        }
        if (parts.data_bytes != 0) chain.add(parts.data, parts.data_bytes, parts.data_writable);
        chain.add(reinterpret_cast<uint64_t>(&request->status), parts.status_bytes, !parts.status_readonly);
        offer(s.request(), 0);
        ring_bell(s.request());
        return await(s, s.request(), wait_for(*t.context, wanted), &request->status);
    });
}

void discard_segment(uint8_t* data, uint64_t sector, uint32_t sectors, uint32_t flags) {
    memcpy(data, &sector, 8);
    memcpy(data + 8, &sectors, 4);
    memcpy(data + 12, &flags, 4);
}

void blk_attacks(Target& t) {
    uint64_t capacity = virtio::config64(*t.device, 0);
    BlkParts p;
    p.data_bytes = kSector;
    p.header_writable = true;
    blk_request(t, "blk_header_device_writable", p, kUsed, kBlkIoError);
    p = BlkParts{};
    p.header_bytes = 8;
    p.data_bytes = kSector;
    blk_request(t, "blk_header_8_bytes", p, kUsed, kBlkIoError);
    p = BlkParts{};
    p.split_header = true;
    p.data_bytes = kSector;
    blk_request(t, "blk_header_split_in_two", p, kUsed, kBlkOk);  // well formed (§2.6.4: any framing)
    p = BlkParts{};
    p.data_bytes = kSector;
    p.data_writable = false;
    blk_request(t, "blk_read_into_device_readable", p, kUsed, kBlkIoError);
    p = BlkParts{};
    p.type = kBlkOut;
    p.sector = kWritableSector;
    p.data_bytes = kSector;
    p.data_writable = true;
    blk_request(t, "blk_write_from_device_writable", p, kUsed, kBlkIoError);
    p = BlkParts{};
    p.data_bytes = kSector;
    p.data_writable = false;
    p.status_readonly = true;
    blk_request(t, "blk_status_device_readable", p, kUsed, kPending);  // nowhere to put a status
    p = BlkParts{};
    p.data_bytes = kSector;
    p.status_bytes = 0;
    blk_request(t, "blk_status_length_0", p, kUsed, kPending);  // 511-byte read refused into data[511]
    p = BlkParts{};
    p.type = 0x7fffffff;
    p.data_bytes = kSector;
    blk_request(t, "blk_unknown_type", p, kUsed, kBlkUnsupported);
    p = BlkParts{};
    p.sector = capacity;
    p.data_bytes = kSector;
    blk_request(t, "blk_read_at_capacity", p, kUsed, kBlkIoError);
    p.sector = capacity - 1;
    p.data_bytes = 2 * kSector;
    blk_request(t, "blk_read_across_capacity", p, kUsed, kBlkIoError);
    p.sector = 0xffffffffffffffff;
    p.data_bytes = kSector;
    blk_request(t, "blk_sector_2^64-1", p, kUsed, kBlkIoError);
    p.sector = 0xffffffffffffffff / kSector;
    blk_request(t, "blk_byte_offset_overflows", p, kUsed, kBlkIoError);
    p = BlkParts{};
    p.data_bytes = 100;
    blk_request(t, "blk_read_100_bytes", p, kUsed, kBlkIoError);
    p = BlkParts{};
    p.type = kBlkGetId;
    blk_request(t, "blk_get_id_without_room", p, kUsed, kBlkIoError);
    p.data_bytes = 3;
    blk_request(t, "blk_get_id_3_bytes", p, kUsed, kBlkOk);
    p = BlkParts{};
    p.type = kBlkDiscardType;
    p.data_bytes = 16;
    p.data_writable = false;
    blk_request(t, "blk_discard_past_end", p, kUsed, kBlkIoError,
                [](uint8_t* data) { discard_segment(data, 0xfffffffffff0, 8, 0); });
    blk_request(t, "blk_discard_unknown_flags", p, kUsed, kBlkUnsupported,
                [](uint8_t* data) { discard_segment(data, kWritableSector, 8, 0xfffffffe); });
    p.data_bytes = 32;
    blk_request(t, "blk_discard_two_segments", p, kUsed, kBlkIoError, [](uint8_t* data) {
        discard_segment(data, kWritableSector, 8, 0);
        discard_segment(data + 16, kWritableSector + 8, 8, 0);
    });
    p.data_bytes = 8;
    blk_request(t, "blk_discard_8_byte_segment", p, kUsed, kBlkIoError);
    p.type = kBlkWriteZeroesType;
    p.data_bytes = 16;
    blk_request(t, "blk_write_zeroes_4g_sectors", p, kUsed, kBlkIoError,
                [](uint8_t* data) { discard_segment(data, kWritableSector, 0xffffffff, 0); });
    p = BlkParts{};
    p.type = kBlkFlushType;
    p.data_bytes = kSector;
    p.data_writable = false;
    blk_request(t, "blk_flush_with_data", p, kUsed, kBlkOk);

    // Data aimed at the rings themselves: legal for ember (all guest RAM), whatever it does to the driver.
    chain_attack(t, "blk_read_over_own_descriptors", kUsed, kBlkOk, [&](Session& s) {
        Chain chain(s, false);
        auto* request = alloc<BlkRequest>();
        *request = BlkRequest{kBlkIn, 0, 0, kPending};
        chain.add(reinterpret_cast<uint64_t>(request), 16, false);
        chain.add(reinterpret_cast<uint64_t>(s.request().desc), kSector, true);  // 32 of the 64 descriptors
        chain.add(reinterpret_cast<uint64_t>(&request->status), 1, true);
        offer(s.request(), 0);
        ring_bell(s.request());
        return await(s, s.request(), t.context->answer_ms, &request->status);
    });
    chain_attack(t, "blk_read_over_used_ring", kUsed, kBlkOk, [&](Session& s) {
        Chain chain(s, false);
        auto* request = alloc<BlkRequest>();
        *request = BlkRequest{kBlkIn, 0, 0, kPending};
        chain.add(reinterpret_cast<uint64_t>(request), 16, false);
        chain.add(reinterpret_cast<uint64_t>(s.request().used), kSector, true);
        chain.add(reinterpret_cast<uint64_t>(&request->status), 1, true);
        offer(s.request(), 0);
        ring_bell(s.request());
        // The disk's bytes land on used->idx before ember's own store: wait for the element it wrote.
        Deadline deadline(t.context->answer_ms);
        while (request->status == kPending && !deadline.expired()) cpu_relax();
        Answer answer = await(s, s.request(), 1, &request->status);
        if (answer.kind == kNothing && request->status != kPending) answer.kind = kUsed, answer.status = request->status;
        return answer;
    });
    chain_attack(t, "blk_write_from_own_descriptors", kUsed, kBlkOk, [&](Session& s) {
        Chain chain(s, false);
        auto* request = alloc<BlkRequest>();
        *request = BlkRequest{kBlkOut, 0, kWritableSector, kPending};
        chain.add(reinterpret_cast<uint64_t>(request), 16, false);
        chain.add(reinterpret_cast<uint64_t>(s.request().desc), kSector, false);
        chain.add(reinterpret_cast<uint64_t>(&request->status), 1, true);
        offer(s.request(), 0);
        ring_bell(s.request());
        return await(s, s.request(), t.context->answer_ms, &request->status);
    });
}

void console_attacks(Target& t) {
    chain_attack(t, "console_tx_device_writable", kUsed, -1, [&](Session& s) {
        Chain chain(s);
        chain.add(small_buffer(), 64, true);
        chain.publish();
        return chain.await(kUsed);
    });
    chain_attack(t, "console_tx_2mib", kUsed, -1, [&](Session& s) {  // over ember's 1 MiB: dropped unread
        Chain chain(s);
        chain.add(t.context->ram.scratch, 2 * kMiB, false);
        chain.publish();
        return chain.await(kUsed);
    });
    // The receive queue is only looked at when host input waits (the e2e test keeps ember's stdin full);
    // without input nothing happens, which is also right.
    auto receive = [&](const char* name, uint8_t wanted, auto shape) {
        chain_attack(t, name, wanted, -1, [&](Session& s) {
            Virtqueue& rx = s.queues[0];
            shape(rx);
            offer(rx, 0);
            ring_bell(rx);
            uint64_t ms = t.context->quiet_ms * 4 < t.context->answer_ms ? t.context->quiet_ms * 4 : t.context->answer_ms;
            return await(s, rx, ms);
        });
    };
    receive("console_rx_device_readable", kUsed | kNothing, [&](Virtqueue& rx) { put(rx, 0, small_buffer(), 64, 0, 0); });
    receive("console_rx_loop", kNeedsReset | kNothing, [&](Virtqueue& rx) {
        put(rx, 0, small_buffer(), 64, virtio::kDescWrite | virtio::kDescNext, 0);
    });
    receive("console_rx_outside_ram", kNeedsReset | kNothing,
            [&](Virtqueue& rx) { put(rx, 0, t.context->ram.outside, 64, virtio::kDescWrite, 0); });
}

// --- virtio-net: frames out, and receive buffers that a frame coming back must fill ----------------------------

// An ARP request for the peer, after the 12-byte virtio-net header; returns the total length.
uint32_t arp_request(Device& d, const Context& c, uint8_t* buffer) {
    memset(buffer, 0, kNetHeader + 42);
    uint8_t* f = buffer + kNetHeader;
    uint8_t mac[6];
    for (uint32_t i = 0; i < 6; ++i) mac[i] = virtio::config8(d, i);
    memset(f, 0xff, 6);
    memcpy(f + 6, mac, 6);
    f[12] = 0x08, f[13] = 0x06;
    f[14] = 0, f[15] = 1, f[16] = 0x08, f[17] = 0, f[18] = 6, f[19] = 4, f[20] = 0, f[21] = 1;
    memcpy(f + 22, mac, 6);
    for (int i = 0; i < 4; ++i) f[28 + i] = static_cast<uint8_t>(c.ip >> (24 - 8 * i));
    for (int i = 0; i < 4; ++i) f[38 + i] = static_cast<uint8_t>(c.peer_ip >> (24 - 8 * i));
    return kNetHeader + 42;
}

// Sends an ARP request on the transmit queue (descriptor 40, clear of attack chains) and waits for it to be used.
bool send_arp(Session& s) {
    Virtqueue& tx = s.queues[1];
    uint8_t* frame = bytes(128);
    uint32_t length = arp_request(s.device(), s.context(), frame);
    put(tx, 40, reinterpret_cast<uint64_t>(frame), length, 0, 0);
    offer(tx, 40);
    ring_bell(tx);
    Answer sent = await(s, tx, kRequestMs);
    if (sent.kind == kUsed) ++tx.last_used;
    return sent.kind == kUsed;
}

// Posts what `shape` put at receive descriptor 0, then draws a frame from the tap (an ARP reply) into it.
template <typename Shape>
void receive_attack(Target& t, const char* name, uint8_t wanted, Shape shape, uint64_t extra = 0) {
    Session s;
    const char* error = "";
    Answer answer;
    if (!open(t, s, true, error, extra)) {
        format_to(answer.note, sizeof(answer.note), "set-up failed: %s", error);
        answer.kind = 0;
    } else {
        Virtqueue& rx = s.queues[0];
        uint16_t posted = shape(rx);
        for (uint16_t i = 0; i < posted; ++i) offer(rx, i);
        ring_bell(rx);
        send_arp(s);
        ring_bell(rx);  // the reply may have come before the buffers: a notification reads the tap again
        answer = await(s, rx, t.context->net_rx ? wait_for(*t.context, wanted) : t.context->quiet_ms);
    }
    virtio::dma_release(s.mark);
    conclude(t, name, answer, t.context->net_rx ? wanted : static_cast<uint8_t>(wanted | kNothing));
}

void net_attacks(Target& t) {
    Context& c = *t.context;
    auto transmit = [&](const char* name, auto shape) {
        chain_attack(t, name, kUsed, -1, [&](Session& s) {
            Chain chain(s);
            shape(s, chain);
            chain.publish();
            return chain.await(kUsed);
        });
    };
    transmit("net_tx_device_writable", [&](Session&, Chain& chain) { chain.add(small_buffer(), 64, true); });
    transmit("net_tx_8_bytes", [&](Session&, Chain& chain) { chain.add(small_buffer(), 8, false); });
    transmit("net_tx_header_only", [&](Session&, Chain& chain) { chain.add(small_buffer(), kNetHeader, false); });
    transmit("net_tx_70000_bytes", [&](Session&, Chain& chain) { chain.add(c.ram.scratch, 70000, false); });
    transmit("net_tx_bogus_gso_header", [&](Session& s, Chain& chain) {
        uint8_t* frame = bytes(128);
        uint32_t length = arp_request(s.device(), c, frame);
        frame[0] = 1;     // NEEDS_CSUM
        frame[1] = 1;     // GSO TCPV4
        frame[2] = 0xff;  // hdr_len 0xffff
        frame[3] = 0xff;
        frame[4] = 1;     // gso_size 1
        frame[6] = 0xff;  // csum_start, csum_offset 0xffff: past the frame
        frame[7] = 0xff;
        frame[8] = 0xff;
        frame[9] = 0xff;
        chain.add(reinterpret_cast<uint64_t>(frame), length, false);
    });
    receive_attack(t, "net_rx_8_byte_buffer", kUsed, [&](Virtqueue& rx) {
        put(rx, 0, small_buffer(), 8, virtio::kDescWrite, 0);
        return uint16_t{1};
    });
    receive_attack(t, "net_rx_device_readable", kUsed, [&](Virtqueue& rx) {
        put(rx, 0, small_buffer(), 512, 0, 0);
        return uint16_t{1};
    });
    receive_attack(t, "net_rx_loop", kNeedsReset, [&](Virtqueue& rx) {
        put(rx, 0, small_buffer(), 512, virtio::kDescWrite | virtio::kDescNext, 0);
        return uint16_t{1};
    });
    receive_attack(t, "net_rx_outside_ram", kNeedsReset, [&](Virtqueue& rx) {
        put(rx, 0, c.ram.outside, 2048, virtio::kDescWrite, 0);
        return uint16_t{1};
    });
    receive_attack(
        t, "net_rx_mergeable_16_byte_buffers", kUsed,
        [&](Virtqueue& rx) {
            uint8_t* buffers = bytes(16 * 32);
            for (uint16_t i = 0; i < 32; ++i) put(rx, i, reinterpret_cast<uint64_t>(buffers + 16 * i), 16, virtio::kDescWrite, 0);
            return uint16_t{32};
        },
        kNetMergeable);
    receive_attack(t, "net_rx_frame_larger_than_buffer", kUsed | kNothing, [&](Virtqueue& rx) {
        put(rx, 0, small_buffer(), kNetHeader + 20, virtio::kDescWrite, 0);  // an ARP reply needs 42 bytes
        put(rx, 1, small_buffer(), 512, virtio::kDescWrite, 0);
        return uint16_t{2};
    });
}

// --- Transport attacks: set-up, features, notifications, registers ----------------------------------------------

// Opens without DRIVER_OK, lets `tamper` change the request queue's registers (queue selected), then sets
// DRIVER_OK: ember must refuse to start the queue (NEEDS_RESET) or, `wanted` permitting, ignore it.
template <typename Tamper>
void setup_attack(Target& t, const char* name, uint8_t wanted, Tamper tamper) {
    Session s;
    const char* error = "";
    Answer answer;
    s.target = &t;
    s.role = role_of(t.device->device_id);
    s.mark = virtio::dma_mark();
    Device& d = *t.device;
    if (!negotiate(d, s.role->features, 0, error)) {
        format_to(answer.note, sizeof(answer.note), "set-up failed: %s", error);
        answer.kind = 0;
    } else {
        for (uint16_t index = 0; index < s.role->queues; ++index) {
            d.next_msix_entry = d.msix_entries;
            uint16_t max = is_pci(d) ? virtio::pci_transport::queue_max(d, index) : virtio::mmio_transport::queue_max(d, index);
            auto* desc = bytes(16 * 256, 4096);
            auto* avail = bytes(4096, 4096);
            auto* used = bytes(4096, 4096);
            select_queue(d, index);
            set_queue_size(d, max < kQueueSize ? max : kQueueSize);
            set_rings(d, reinterpret_cast<uint64_t>(desc), reinterpret_cast<uint64_t>(avail),
                      reinterpret_cast<uint64_t>(used));
            if (index == s.role->request) tamper(d, max, desc, avail, used);
            select_queue(d, index);
            enable_queue(d);
        }
        set_status(d, virtio::kStatusAcknowledge | virtio::kStatusDriver | virtio::kStatusFeaturesOk |
                          virtio::kStatusDriverOk);
        notify_index(d, s.role->request);  // nothing offered: a queue ember wrongly started is only looked at
        Deadline deadline(wait_for(*t.context, wanted));
        uint8_t status = 0;
        while (!((status = virtio::status(d)) & virtio::kStatusNeedsReset) && !deadline.expired()) cpu_relax();
        answer.kind = status & virtio::kStatusNeedsReset ? kNeedsReset : kNothing;
        if (answer.kind == kNothing) format_to(answer.note, sizeof(answer.note), "status %x", status);
    }
    virtio::dma_release(s.mark);
    conclude(t, name, answer, wanted);
}

// A well-formed request on the request queue of a running session; its answer.
Answer ordinary(Session& s) {
    if (s.role->device_id == kDeviceFs) {
        Chain chain(s);
        uint8_t* buffer = bytes(1024);
        uint32_t length = fuse_init(buffer, 0x4854);
        chain.add(reinterpret_cast<uint64_t>(buffer), length, false);
        chain.add(reinterpret_cast<uint64_t>(buffer + length), kFuseOutHeader + kFuseReplyRoom, true);
        chain.publish();
        Answer answer = chain.await(kUsed);
        if (answer.kind == kUsed && !fuse_reply_ok(buffer + length, answer.length, 0x4854))
            format_to(answer.note, sizeof(answer.note), "malformed FUSE reply");
        return answer;
    }
    Chain chain(s);
    uint8_t* buffer = bytes(kSector, 4096);
    if (s.role->device_id == virtio::kDeviceConsole) buffer[0] = '\n';
    if (s.role->device_id == virtio::kDeviceNet) {
        chain.add(reinterpret_cast<uint64_t>(buffer), arp_request(s.device(), s.context(), buffer), false);
    } else {
        chain.payload(reinterpret_cast<uint64_t>(buffer), s.role->device_id == virtio::kDeviceConsole ? 1 : kSector);
    }
    chain.publish();
    return chain.await(kUsed);
}

void transport_attacks(Target& t) {
    Context& c = *t.context;
    Device& d = *t.device;
    bool pci = is_pci(d);
    setup_attack(t, "rings_outside_ram", kNeedsReset, [&](Device& dev, uint16_t, uint8_t*, uint8_t* avail, uint8_t* used) {
        set_rings(dev, c.ram.outside, reinterpret_cast<uint64_t>(avail), reinterpret_cast<uint64_t>(used));
    });
    setup_attack(t, "desc_table_misaligned", kNeedsReset, [&](Device& dev, uint16_t, uint8_t* desc, uint8_t* avail, uint8_t* used) {
        set_rings(dev, reinterpret_cast<uint64_t>(desc) + 8, reinterpret_cast<uint64_t>(avail), reinterpret_cast<uint64_t>(used));
    });
    setup_attack(t, "avail_ring_odd_address", kNeedsReset, [&](Device& dev, uint16_t, uint8_t* desc, uint8_t* avail, uint8_t* used) {
        set_rings(dev, reinterpret_cast<uint64_t>(desc), reinterpret_cast<uint64_t>(avail) + 1, reinterpret_cast<uint64_t>(used));
    });
    setup_attack(t, "used_ring_misaligned", kNeedsReset, [&](Device& dev, uint16_t, uint8_t* desc, uint8_t* avail, uint8_t* used) {
        set_rings(dev, reinterpret_cast<uint64_t>(desc), reinterpret_cast<uint64_t>(avail), reinterpret_cast<uint64_t>(used) + 2);
    });
    setup_attack(t, "used_ring_straddles_ram_end", kNeedsReset, [&](Device& dev, uint16_t, uint8_t* desc, uint8_t* avail, uint8_t*) {
        set_rings(dev, reinterpret_cast<uint64_t>(desc), reinterpret_cast<uint64_t>(avail), c.ram.low_end - 8);
    });
    setup_attack(t, "desc_table_wraps_address_space", kNeedsReset, [&](Device& dev, uint16_t, uint8_t*, uint8_t* avail, uint8_t* used) {
        set_rings(dev, 0xfffffffffffffc00, reinterpret_cast<uint64_t>(avail), reinterpret_cast<uint64_t>(used));
    });
    setup_attack(t, "queue_size_0", kNeedsReset, [&](Device& dev, uint16_t, uint8_t*, uint8_t*, uint8_t*) { set_queue_size(dev, 0); });
    setup_attack(t, "queue_size_3", kNeedsReset, [&](Device& dev, uint16_t, uint8_t*, uint8_t*, uint8_t*) { set_queue_size(dev, 3); });
    setup_attack(t, "queue_size_twice_max", kNeedsReset,
                 [&](Device& dev, uint16_t max, uint8_t*, uint8_t*, uint8_t*) { set_queue_size(dev, 2u * max); });
    setup_attack(t, "queue_size_0x8000", kNeedsReset, [&](Device& dev, uint16_t, uint8_t*, uint8_t*, uint8_t*) { set_queue_size(dev, 0x8000); });
    if (!pci) {
        setup_attack(t, "queue_num_0x10040", kNeedsReset, [&](Device& dev, uint16_t, uint8_t*, uint8_t*, uint8_t*) { set_queue_size(dev, 0x10040); });
    }

    // Feature negotiation.
    auto features_attack = [&](const char* name, uint64_t features) {
        Answer answer;
        virtio::reset(d);
        set_status(d, virtio::kStatusAcknowledge | virtio::kStatusDriver);
        write_driver_features(d, features);
        set_status(d, virtio::kStatusAcknowledge | virtio::kStatusDriver | virtio::kStatusFeaturesOk);
        uint8_t status = virtio::status(d);
        answer.kind = status & virtio::kStatusFeaturesOk ? kUsed : kRefused;
        format_to(answer.note, sizeof(answer.note), "FEATURES_OK %s", status & virtio::kStatusFeaturesOk ? "accepted" : "refused");
        conclude(t, name, answer, kRefused);
    };
    features_attack("features_not_offered", virtio::kFeatureVersion1 | (uint64_t{1} << 50));
    features_attack("features_without_version_1", 0);
    {
        Answer answer;
        virtio::reset(d);
        set_status(d, virtio::kStatusAcknowledge | virtio::kStatusDriver);
        write_driver_features(d, virtio::kFeatureVersion1);
        set_status(d, virtio::kStatusAcknowledge | virtio::kStatusDriver | virtio::kStatusDriverOk);
        uint8_t status = virtio::status(d);
        answer.kind = status & virtio::kStatusNeedsReset ? kNeedsReset : status & virtio::kStatusDriverOk ? kUsed : kRefused;
        format_to(answer.note, sizeof(answer.note), "status %x", status);
        conclude(t, "driver_ok_without_features_ok", answer, kNeedsReset | kRefused);
    }
    {
        Session s;
        const char* error = "";
        Answer answer;
        if (open(t, s, true, error)) {
            write_driver_features(d, virtio::kFeatureVersion1 | (uint64_t{1} << 50));
            uint64_t now = pci ? (write32(d.common + kPciDriverFeatureSelect, 1), uint64_t{read32(d.common + kPciDriverFeature)} << 32)
                               : virtio::kFeatureVersion1;
            answer = ordinary(s);
            if (pci && (now & (uint64_t{1} << 50))) {
                format_to(answer.note, sizeof(answer.note), "features changed after FEATURES_OK");
                answer.kind |= kRefused;  // outside the wanted set: shown as UNEXPECTED
            }
        }
        virtio::dma_release(s.mark);
        conclude(t, "features_rewritten_after_features_ok", answer, kUsed);
    }

    // Notifications.
    {
        Session s;
        const char* error = "";
        Answer answer;
        if (open(t, s, true, error)) {
            const uint32_t missing[] = {s.role->queues, s.role->queues + 1u, 0x3ff, 0xffff, 0x80000000};
            for (uint32_t index : missing) notify_index(d, index);
            if (!pci) write32(d.mmio_base + kMmioQueueNotify + 2, 0);  // misaligned: not a register access
            answer = ordinary(s);
        }
        virtio::dma_release(s.mark);
        conclude(t, "notify_missing_queues", answer, kUsed);
    }
    {
        Session s;
        const char* error = "";
        Answer answer;
        if (open(t, s, false, error)) {
            Chain chain(s);
            chain.payload(small_buffer(), 1);
            chain.publish();  // notifies before DRIVER_OK
            answer = chain.await(kNothing);
        }
        virtio::dma_release(s.mark);
        conclude(t, "notify_before_driver_ok", answer, kNothing);
    }
    // Queue registers after DRIVER_OK are frozen (§4.1.4.3.2, §4.2.3.2).
    {
        Session s;
        const char* error = "";
        Answer answer;
        if (open(t, s, true, error)) {
            Virtqueue& q = s.request();
            select_queue(d, q.index);
            uint64_t before = queue_desc(d);
            set_queue_size(d, 3);
            set_rings(d, c.ram.outside, c.ram.outside, c.ram.outside);
            if (pci) write16(d.common + kPciQueueEnable, 0);
            else write32(d.mmio_base + kMmioQueueReady, 0);
            uint32_t size = queue_size(d);
            answer = ordinary(s);
            if (pci && (size != q.size || queue_desc(d) != before)) {
                format_to(answer.note, sizeof(answer.note), "registers changed: size %u desc %lx", size, queue_desc(d));
                answer.kind = kUsed | kRefused;  // shown, and outside the wanted set
            }
        }
        virtio::dma_release(s.mark);
        conclude(t, "queue_registers_rewritten_while_running", answer, kUsed);
    }
    {
        Session s;
        const char* error = "";
        Answer answer;
        if (open(t, s, true, error)) {
            select_queue(d, 0x7fff);
            set_queue_size(d, 16);
            set_rings(d, c.ram.outside, c.ram.outside, c.ram.outside);
            enable_queue(d);
            uint32_t size = queue_size(d);
            select_queue(d, s.request().index);
            answer = ordinary(s);
            if (size != 0) format_to(answer.note, sizeof(answer.note), "queue 0x7fff reads size %u", size);
        }
        virtio::dma_release(s.mark);
        conclude(t, "queue_select_out_of_range", answer, kUsed);
    }
    // Status: bits cleared without a reset, NEEDS_RESET written by the driver.
    {
        Session s;
        const char* error = "";
        Answer answer;
        if (open(t, s, true, error)) {
            set_status(d, virtio::kStatusAcknowledge);
            answer = ordinary(s);
            format_to(answer.note, sizeof(answer.note), "status reads %x", virtio::status(d));
        }
        virtio::dma_release(s.mark);
        conclude(t, "status_bits_cleared_while_running", answer, kUsed);
    }
    {
        Session s;
        const char* error = "";
        Answer answer;
        if (open(t, s, true, error)) {
            set_status(d, static_cast<uint8_t>(virtio::status(d) | virtio::kStatusNeedsReset | virtio::kStatusFailed));
            answer = ordinary(s);
        }
        virtio::dma_release(s.mark);
        conclude(t, "driver_writes_needs_reset_and_failed", answer, kUsed | kNeedsReset | kNothing);
    }
    // Accesses of the wrong width: ignored (virtio-mmio §4.2.2.2; virtio-pci §4.1.3.1 fixes each field's width).
    {
        Session s;
        const char* error = "";
        Answer answer;
        if (open(t, s, false, error)) {
            if (pci) {
                write32(d.common + kPciStatus, 0);  // a 4-byte write over status, generation, queue_select
                write8(d.common + kPciQueueSelect, 0x55);
                write32(d.common + kPciQueueSize, 3);
                *physical<uint64_t>(d.common + kPciDeviceFeatureSelect) = 0xffffffffffffffff;
                write8(d.common + kPciQueueDesc + 1, 0x77);
                write16(d.common + kPciQueueDesc + 2, 0x77);
            } else {
                write8(d.mmio_base + kMmioStatus, 0);
                write16(d.mmio_base + kMmioQueueSel, 0x55);
                write32(d.mmio_base + kMmioQueueNum + 1, 3);
                *physical<uint64_t>(d.mmio_base + kMmioDriverFeaturesSel) = 0xffffffffffffffff;
                write8(d.mmio_base + kMmioQueueDescLow, 0x77);
            }
            virtio::driver_ok(d);
            answer = ordinary(s);
        }
        virtio::dma_release(s.mark);
        conclude(t, "wrong_width_register_writes", answer, kUsed);
    }
    // A broken device stays broken until reset: DRIVER_OK again does not revive it (not for virtio-fs,
    // whose rings only virtiofsd walks).
    if (d.device_id != kDeviceFs) {
        Session s;
        const char* error = "";
        Answer answer;
        if (open(t, s, true, error)) {
            Chain chain(s);
            uint16_t index = chain.payload(small_buffer(), 16);
            chain.publish_loop(index);
            hostile::await(s, s.request(), c.answer_ms);
            virtio::driver_ok(d);
            answer = ordinary(s);
            delay_us(c.quiet_ms * 1000);
            if (s.request().used[1] != s.request().last_used) answer.kind |= kUsed;  // processed while broken
        }
        virtio::dma_release(s.mark);
        conclude(t, "driver_ok_again_after_needs_reset", answer, kNeedsReset);
    }
    // Rings that overlap each other: legal for ember to accept or refuse; it must not fall over.
    setup_attack(t, "rings_overlap", kNeedsReset | kNothing, [&](Device& dev, uint16_t, uint8_t* desc, uint8_t*, uint8_t*) {
        uint64_t ring = reinterpret_cast<uint64_t>(desc);
        set_rings(dev, ring, ring, ring);
    });
}

// Device reset with requests in flight: afterwards no completion and no data may reach the rings and buffers,
// which a new session reuses at once (queue resets under load).
void reset_under_load(Target& t) {
    Context& c = *t.context;
    Session s;
    const char* error = "";
    Answer answer;
    uint32_t id = t.device->device_id;
    if (!open(t, s, true, error)) {
        format_to(answer.note, sizeof(answer.note), "set-up failed: %s", error);
        answer.kind = 0;
        conclude(t, "reset_with_requests_in_flight", answer, kNothing);
        return;
    }
    constexpr uint32_t kRequests = 20;
    constexpr uint32_t kBytes = 64 * 1024;
    Virtqueue& q = s.request();
    auto* data = bytes(kRequests * kBytes, 4096);
    auto* requests = alloc<BlkRequest>(kRequests);
    for (uint32_t i = 0; i < kRequests; ++i) {
        uint16_t head = static_cast<uint16_t>(3 * i);
        uint64_t buffer = reinterpret_cast<uint64_t>(data + uint64_t{i} * kBytes);
        if (id == virtio::kDeviceBlock) {
            requests[i] = BlkRequest{kBlkIn, 0, uint64_t{i} * (kBytes / kSector), kPending};
            put(q, head, reinterpret_cast<uint64_t>(&requests[i]), 16, virtio::kDescNext, static_cast<uint16_t>(head + 1));
            put(q, static_cast<uint16_t>(head + 1), buffer, kBytes, virtio::kDescWrite | virtio::kDescNext,
                static_cast<uint16_t>(head + 2));
            put(q, static_cast<uint16_t>(head + 2), reinterpret_cast<uint64_t>(&requests[i].status), 1, virtio::kDescWrite, 0);
        } else if (id == virtio::kDeviceNet) {
            put(q, head, buffer, arp_request(s.device(), c, data + uint64_t{i} * kBytes), 0, 0);
        } else if (id == virtio::kDeviceConsole) {
            data[uint64_t{i} * kBytes] = '\n';
            put(q, head, buffer, 1, 0, 0);
        } else if (id == kDeviceFs) {
            uint32_t length = fuse_init(data + uint64_t{i} * kBytes, i + 1);
            put(q, head, buffer, length, virtio::kDescNext, static_cast<uint16_t>(head + 1));
            put(q, static_cast<uint16_t>(head + 1), buffer + length, kFuseOutHeader + kFuseReplyRoom, virtio::kDescWrite, 0);
        } else {
            put(q, head, buffer, kBytes, virtio::kDescWrite, 0);
        }
        offer(q, head);
    }
    ring_bell(q);
    virtio::reset(*t.device);  // at once: blk reads are in flight in ember's io_uring
    // The same memory again, for a new session that offers nothing: it must stay as the driver left it.
    uint64_t data_address = reinterpret_cast<uint64_t>(data);
    memset(data, 0x5a, kRequests * kBytes);
    Session again;
    virtio::dma_release(s.mark);
    if (!open(t, again, true, error)) {
        format_to(answer.note, sizeof(answer.note), "set-up after reset failed: %s", error);
        answer.kind = 0;
    } else {
        delay_us(c.quiet_ms * 1000);
        uint32_t changed = 0;
        for (uint64_t i = 0; i < kRequests * kBytes; ++i) changed += read8(data_address + i) != 0x5a;
        Virtqueue& fresh = again.request();
        if (fresh.used[1] != 0) {
            answer.kind = kUsed;
            format_to(answer.note, sizeof(answer.note), "%u stale used elements after reset", fresh.used[1]);
        } else if (changed != 0) {
            answer.kind = kUsed;
            format_to(answer.note, sizeof(answer.note), "%u bytes written after reset", changed);
        } else {
            answer.kind = kNothing;
            format_to(answer.note, sizeof(answer.note), "no completion or DMA after reset");
        }
    }
    virtio::dma_release(again.mark);
    conclude(t, "reset_with_requests_in_flight", answer, kNothing);
}

// --- Recovery: the ordinary request that proves the device works ---------------------------------------------

bool recover_rng(Device&, Virtqueue* queues, uint64_t ms, char* why, uint32_t size) {
    uint8_t* buffer = bytes(64);
    Buffer request{reinterpret_cast<uint64_t>(buffer), 64, true};
    uint32_t length;
    void* cookie;
    if (!virtio::submit(queues[0], &request, 1, buffer)) return format_to(why, size, "submit failed"), false;
    virtio::kick(queues[0]);
    if (!virtio::next_used(queues[0], ms, length, cookie)) return format_to(why, size, "no rng bytes"), false;
    uint32_t nonzero = 0;
    for (uint32_t i = 0; i < 64; ++i) nonzero += buffer[i] != 0;
    if (length == 0 || nonzero == 0) return format_to(why, size, "rng gave %u bytes, %u non-zero", length, nonzero), false;
    return true;
}

bool recover_blk(Device&, Virtqueue* queues, uint64_t seed, uint64_t ms, char* why, uint32_t size) {
    auto* request = alloc<BlkRequest>();
    *request = BlkRequest{kBlkIn, 0, 0, kPending};
    uint8_t* data = bytes(kSector, 4096);
    Buffer chain[3] = {{reinterpret_cast<uint64_t>(request), 16, false},
                       {reinterpret_cast<uint64_t>(data), kSector, true},
                       {reinterpret_cast<uint64_t>(&request->status), 1, true}};
    uint32_t length;
    void* cookie;
    if (!virtio::submit(queues[0], chain, 3, request)) return format_to(why, size, "submit failed"), false;
    virtio::kick(queues[0]);
    if (!virtio::next_used(queues[0], ms, length, cookie)) return format_to(why, size, "no blk completion"), false;
    if (request->status != kBlkOk) return format_to(why, size, "blk read status %u", request->status), false;
    for (uint32_t i = 0; i < kSector; ++i) {
        if (data[i] != disk_pattern(i, seed))
            return format_to(why, size, "sector 0 byte %u is %02x, expected %02x", i, data[i], disk_pattern(i, seed)), false;
    }
    return true;
}

bool recover_console(Device&, Virtqueue* queues, uint64_t ms, char* why, uint32_t size) {
    uint8_t* text = bytes(8);
    text[0] = '\n';
    Buffer out{reinterpret_cast<uint64_t>(text), 1, false};
    uint32_t length;
    void* cookie;
    if (!virtio::submit(queues[1], &out, 1, text)) return format_to(why, size, "submit failed"), false;
    virtio::kick(queues[1]);
    if (!virtio::next_used(queues[1], ms, length, cookie)) return format_to(why, size, "hvc0 byte not used"), false;
    return true;
}

bool recover_net(Device& d, const Context& c, Virtqueue* queues, uint64_t ms, char* why, uint32_t size) {
    uint8_t* receive = bytes(8 * 2048, 4096);
    for (uint32_t i = 0; i < 8; ++i) {
        Buffer in{reinterpret_cast<uint64_t>(receive + i * 2048), 2048, true};
        virtio::submit(queues[0], &in, 1, receive + i * 2048);
    }
    virtio::kick(queues[0]);
    uint8_t* frame = bytes(128);
    Buffer out{reinterpret_cast<uint64_t>(frame), arp_request(d, c, frame), false};
    uint32_t length;
    void* cookie;
    if (!virtio::submit(queues[1], &out, 1, frame)) return format_to(why, size, "submit failed"), false;
    virtio::kick(queues[1]);
    if (!virtio::next_used(queues[1], ms, length, cookie)) return format_to(why, size, "frame not sent"), false;
    if (!c.net_rx) return true;
    Deadline deadline(ms);
    while (!virtio::has_used(queues[0]) && !deadline.expired()) {
        notify_index(d, 0);  // a frame that came while the queue had no buffers is read on notification
        delay_us(2000);
    }
    if (!virtio::has_used(queues[0])) return format_to(why, size, "no frame received (ARP reply)"), false;
    return true;
}

bool recover_fs(Device&, Virtqueue* queues, uint64_t ms, char* why, uint32_t size) {
    uint8_t* buffer = bytes(1024);
    uint32_t length = fuse_init(buffer, 0x52);
    Buffer chain[2] = {{reinterpret_cast<uint64_t>(buffer), length, false},
                       {reinterpret_cast<uint64_t>(buffer + length), kFuseOutHeader + kFuseReplyRoom, true}};
    uint32_t used;
    void* cookie;
    if (!virtio::submit(queues[1], chain, 2, buffer)) return format_to(why, size, "submit failed"), false;
    virtio::kick(queues[1]);
    if (!virtio::next_used(queues[1], ms, used, cookie)) return format_to(why, size, "no FUSE_INIT reply"), false;
    if (!fuse_reply_ok(buffer + length, used, 0x52)) return format_to(why, size, "malformed FUSE_INIT reply (%u bytes)", used), false;
    return true;
}

}  // namespace

uint32_t fuse_init(uint8_t* buffer, uint64_t unique) {
    memset(buffer, 0, kFuseInHeader + kFuseInitIn + kFuseOutHeader);
    uint32_t length = kFuseInHeader + kFuseInitIn;
    memcpy(buffer, &length, 4);
    memcpy(buffer + 4, &kFuseInit, 4);
    memcpy(buffer + 8, &unique, 8);
    memcpy(buffer + kFuseInHeader, &kFuseMajor, 4);
    memcpy(buffer + kFuseInHeader + 4, &kFuseMinor, 4);
    return length;
}

bool fuse_reply_ok(const uint8_t* reply, uint32_t used, uint64_t unique) {
    uint32_t length;
    uint64_t echoed;
    memcpy(&length, reply, 4);
    memcpy(&echoed, reply + 8, 8);
    return used >= kFuseOutHeader && length == used && echoed == unique;
}

const char* kinds_text(uint8_t kinds, char* buffer, uint32_t size) {
    static const char* const kNames[] = {"needs_reset", "used", "no completion", "refused"};
    size_t used = 0;
    buffer[0] = '\0';
    for (uint32_t bit = 0; bit < 4; ++bit) {
        if (!(kinds & (1u << bit))) continue;
        used += format_to(buffer + used, size - used, "%s%s", used ? "|" : "", kNames[bit]);
    }
    if (used == 0) format_to(buffer, size, "nothing (attack not run)");
    return buffer;
}

bool recover(Target& t, char* why, uint32_t why_size) {
    Device& d = *t.device;
    Context& c = *t.context;
    const Role* role = role_of(d.device_id);
    uint64_t mark = virtio::dma_mark();
    const char* error = "";
    Virtqueue queues[2];
    bool ok = false;
    if (!virtio::begin(d, role->features & ~(kBlkDiscard | kBlkWriteZeroes), error)) {
        format_to(why, why_size, "set-up: %s", error);
    } else {
        ok = true;
        for (uint16_t index = 0; index < role->queues && ok; ++index) {
            d.next_msix_entry = d.msix_entries;
            ok = virtio::queue_create(d, index, kQueueSize, 0, queues[index], error);
            queues[index].vector_slot = -1;
        }
        if (!ok) format_to(why, why_size, "queue set-up: %s", error);
    }
    if (ok) {
        virtio::driver_ok(d);
        if (virtio::status(d) & virtio::kStatusNeedsReset) {
            ok = false;
            format_to(why, why_size, "NEEDS_RESET right after DRIVER_OK");
        } else if (d.device_id == virtio::kDeviceEntropy) {
            ok = recover_rng(d, queues, c.request_ms, why, why_size);
        } else if (d.device_id == virtio::kDeviceBlock) {
            ok = recover_blk(d, queues, c.blk_seed, c.request_ms, why, why_size);
        } else if (d.device_id == virtio::kDeviceConsole) {
            ok = recover_console(d, queues, c.request_ms, why, why_size);
        } else if (d.device_id == hostile::kDeviceFs) {
            ok = recover_fs(d, queues, c.request_ms, why, why_size);
        } else {
            ok = recover_net(d, c, queues, c.request_ms, why, why_size);
        }
        if (ok && (virtio::status(d) & virtio::kStatusNeedsReset)) {
            ok = false;
            format_to(why, why_size, "NEEDS_RESET after an ordinary request");
        }
    }
    virtio::reset(d);
    virtio::dma_release(mark);
    return ok;
}

void conclude(Target& t, const char* attack, const Answer& answer, uint8_t wanted, int wanted_status) {
    char got[96];
    size_t length = 0;
    if (answer.kind & kNeedsReset) length += format_to(got + length, sizeof(got) - length, "needs_reset");
    if (answer.kind & kUsed) {
        length += format_to(got + length, sizeof(got) - length, "%sused len=%u", length ? " " : "", answer.length);
        if (answer.status >= 0) length += format_to(got + length, sizeof(got) - length, " status=%d", answer.status);
    }
    if (answer.kind & kNothing) length += format_to(got + length, sizeof(got) - length, "%sno completion", length ? " " : "");
    if (answer.kind & kRefused) length += format_to(got + length, sizeof(got) - length, "%srefused", length ? " " : "");
    if (answer.kind == 0) format_to(got, sizeof(got), "not run");
    bool expected = answer.kind != 0 && (answer.kind & ~wanted) == 0 &&
                    (wanted_status < 0 || !(answer.kind & kUsed) || answer.status == wanted_status);
    char why[96] = {};
    bool recovered = recover(t, why, sizeof(why));
    ++t.attacks;
    char line[400];
    size_t at = format_to(line, sizeof(line), "hostile: %s: %s: %s", t.name, attack, got);
    if (answer.note[0]) at += format_to(line + at, sizeof(line) - at, " (%s)", answer.note);
    if (!expected) {
        char wanted_text[64];
        at += format_to(line + at, sizeof(line) - at, " UNEXPECTED (wanted %s",
                        kinds_text(wanted, wanted_text, sizeof(wanted_text)));
        if (wanted_status >= 0) at += format_to(line + at, sizeof(line) - at, " status=%d", wanted_status);
        at += format_to(line + at, sizeof(line) - at, ")");
    }
    if (recovered) format_to(line + at, sizeof(line) - at, "; recovered");
    else format_to(line + at, sizeof(line) - at, "; NOT RECOVERED (%s)", why);
    print("%s\n", line);
    if (!expected) ++t.unexpected;
    if (!recovered) ++t.unrecovered;
}

}  // namespace hostile

namespace {

using hostile::Context;
using hostile::Target;

void read_ram_map(const BootInfo& boot, hostile::RamMap& ram) {
    for (uint32_t i = 0; i < boot.e820_count; ++i) {
        const E820Entry& e = boot.e820[i];
        if (e.type != kE820Ram) continue;
        uint64_t end = e.address + e.size;
        if (e.address >= 0x100000000) {
            if (ram.high_start == 0 || e.address < ram.high_start) ram.high_start = e.address;
            if (end > ram.high_end) ram.high_end = end;
        } else if (end > ram.low_end) {
            ram.low_end = end;
        }
    }
    ram.scratch = (virtio::dma_arena_end() + 0xfffff) & ~uint64_t{0xfffff};
    ram.scratch_end = ram.low_end;
    // The 32-bit MMIO hole when RAM reaches it, else the gap between RAM and the hole.
    ram.outside = ram.low_end < 0xb0000000 ? 0xb0000000 : 0xd0000000;
}

void pause(const Context& c, const char* name) {
    uint64_t ms = 0;
    cmdline_number(c.boot->cmdline, "test.hostile.pause_ms", ms);
    print("hostile: checkpoint %s (pausing %lu ms)\n", name, ms);
    if (ms) delay_us(ms * 1000);
}

void attack_device(Context& c, virtio::Device& d, uint32_t number) {
    Target t;
    t.context = &c;
    t.device = &d;
    const char* type = d.device_id == hostile::kDeviceFs ? "fs" : virtio::device_name(d.device_id);
    if (number > 0) format_to(t.name, sizeof(t.name), "%s%u/%s", type, number, virtio::transport_name(d));
    else format_to(t.name, sizeof(t.name), "%s/%s", type, virtio::transport_name(d));
    uint64_t start = read_tsc();
    if (d.device_id == hostile::kDeviceFs) {
        // virtiofsd, not ember, parses virtio-fs rings (vhost-user): only what ember checks is attacked here,
        // the transport and its registers (ember validates the rings it hands virtiofsd before DRIVER_OK).
        print("hostile: %s: descriptor-level attacks left out (virtiofsd walks these rings, not ember)\n", t.name);
    } else {
        hostile::generic_attacks(t);
        hostile::indirect_attacks(t);
    }
    if (d.device_id == virtio::kDeviceEntropy) hostile::rng_attacks(t);
    if (d.device_id == virtio::kDeviceBlock) hostile::blk_attacks(t);
    if (d.device_id == virtio::kDeviceConsole) hostile::console_attacks(t);
    if (d.device_id == virtio::kDeviceNet) hostile::net_attacks(t);
    hostile::transport_attacks(t);
    hostile::reset_under_load(t);
    if (d.transport == virtio::Transport::Pci) hostile::msix_attacks(t);
    hostile::fuzz_device_registers(t);
    hostile::concurrent_register_storm(t);
    print("hostile: %s: %u attacks, %u unexpected, %u not recovered, %lu ms\n", t.name, t.attacks, t.unexpected,
          t.unrecovered, elapsed_us(start) / 1000);
    char check[32];
    format_to(check, sizeof(check), "hostile_%s", type);
    if (t.unexpected == 0 && t.unrecovered == 0) check_ok(check, "attacks=%u transport=%s", t.attacks, virtio::transport_name(d));
    else check_fail(check, "%u of %u attacks answered unexpectedly, %u left the device broken", t.unexpected, t.attacks, t.unrecovered);
}

}  // namespace

void run_hostile(const BootInfo& boot, virtio::Device* devices, uint32_t count, bool pci) {
    Context c;
    c.boot = &boot;
    cmdline_number(boot.cmdline, "test.seed", c.seed);
    hostile::Prng prng(c.seed);
    c.prng = &prng;
    cmdline_number(boot.cmdline, "test.hostile.quiet_ms", c.quiet_ms);
    uint64_t fuzz = c.fuzz_accesses;
    if (cmdline_number(boot.cmdline, "test.hostile.fuzz", fuzz)) c.fuzz_accesses = static_cast<uint32_t>(fuzz);
    cmdline_number(boot.cmdline, "test.blk.seed", c.blk_seed);
    cmdline_number(boot.cmdline, "test.hostile.storm_ms", c.storm_ms);
    c.net_rx = cmdline_flag(boot.cmdline, "test.hostile.net_rx");
    Str text;
    if (cmdline_value(boot.cmdline, "test.net.ip", text)) parse_ipv4(text, c.ip);
    if (cmdline_value(boot.cmdline, "test.net.peer", text)) parse_ipv4(text, c.peer_ip);
    c.wild_slot = virtio::allocate_vector_slot();
    read_ram_map(boot, c.ram);
    print("hostile: seed=%lu transport=%s ram=0-%lx high=%lx-%lx scratch=%lx-%lx outside=%lx\n", c.seed,
          pci ? "pci" : "mmio", c.ram.low_end, c.ram.high_start, c.ram.high_end, c.ram.scratch, c.ram.scratch_end,
          c.ram.outside);
    if (c.ram.scratch_end <= c.ram.scratch + 16 * 1024 * 1024) {
        check_fail("hostile", "less than 16 MiB of RAM after the DMA arena (give the VM more memory)");
        return;
    }
    uint64_t start = read_tsc();
    // Every device once, so that what ember sets up lazily (MSI routes, loop registrations) exists before
    // the first checkpoint: the file descriptors and threads counted there must not grow afterwards.
    uint32_t attacked = 0;
    for (uint32_t i = 0; i < count; ++i) {
        if (hostile::role_of(devices[i].device_id) == nullptr) continue;
        Target t;
        t.context = &c;
        t.device = &devices[i];
        char why[96];
        if (!hostile::recover(t, why, sizeof(why))) check_fail("hostile", "%s/%s does not work before any attack: %s",
                                                               virtio::device_name(devices[i].device_id),
                                                               virtio::transport_name(devices[i]), why);
    }
    pause(c, "first");
    const uint32_t order[] = {virtio::kDeviceEntropy, virtio::kDeviceBlock, virtio::kDeviceConsole, virtio::kDeviceNet,
                              hostile::kDeviceFs};
    for (uint32_t type : order) {
        uint32_t number = 0;
        for (uint32_t i = 0; i < count; ++i) {
            if (devices[i].device_id != type) continue;
            attack_device(c, devices[i], number++);
            ++attacked;
        }
    }
    for (uint32_t i = 0; i < count; ++i) {
        if (hostile::role_of(devices[i].device_id) == nullptr)
            print("hostile: %s/%s: not attacked (no attacks for this device type)\n",
                  virtio::device_name(devices[i].device_id), virtio::transport_name(devices[i]));
    }
    // The platform's registers, then every device must still work.
    uint32_t accesses = 0;
    hostile::fuzz_platform(c, devices, count, pci, accesses);
    uint32_t broken = 0;
    for (uint32_t i = 0; i < count; ++i) {
        if (hostile::role_of(devices[i].device_id) == nullptr) continue;
        Target t;
        t.context = &c;
        t.device = &devices[i];
        char why[96] = {};
        if (!hostile::recover(t, why, sizeof(why))) {
            ++broken;
            print("hostile: platform/%s: %s/%s NOT RECOVERED (%s)\n", pci ? "pci" : "mmio",
                  virtio::device_name(devices[i].device_id), virtio::transport_name(devices[i]), why);
        }
    }
    print("hostile: platform/%s: fuzz accesses=%u; %s\n", pci ? "pci" : "mmio", accesses,
          broken == 0 ? "all devices recovered" : "devices broken");
    if (broken == 0) check_ok("hostile_platform", "accesses=%u devices=%u", accesses, attacked);
    else check_fail("hostile_platform", "%u devices broken after the register fuzz", broken);
    pause(c, "last");
    print("hostile: done: %u devices attacked in %lu ms\n", attacked, elapsed_us(start) / 1000);
}

}  // namespace guest
