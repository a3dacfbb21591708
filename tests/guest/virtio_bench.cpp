#include "virtio_bench.hpp"

#include "base.hpp"
#include "cmdline.hpp"
#include "print.hpp"
#include "timing.hpp"
#include "virtio_transport.hpp"

namespace guest::virtio {
namespace {

constexpr uint64_t kDefaultMb = 64;
constexpr uint64_t kDefaultMs = 1000;
constexpr uint64_t kStallMs = 10000;  // no completion for this long: the case is abandoned
constexpr uint32_t kMiB = 1024 * 1024;
constexpr uint16_t kNoInterrupt = 1;  // VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.6)

uint64_t khz = 0;  // TSC kHz used for every number here

uint64_t tsc_us(uint64_t ticks) { return ticks * 1000 / khz; }
uint64_t ms_ticks(uint64_t ms) { return ms * khz; }

// Asks the device not to interrupt: pop_used() re-arms used_event, so this runs after every pop.
void quiet(Virtqueue& q) {
    if (q.event_idx) {
        q.avail[2 + q.size] = static_cast<uint16_t>(q.last_used + 0x8000);  // used_event, out of reach
    } else {
        q.avail[0] = kNoInterrupt;
    }
}

// An interrupt that came anyway is acknowledged (virtio-mmio's InterruptStatus) and otherwise ignored.
void ack_stray(Virtqueue& q) {
    uint64_t count = vector_irqs(q.vector_slot);
    if (count == q.irq_seen) return;
    q.irq_seen = count;
    if (q.device->transport == Transport::Mmio) mmio_transport::acknowledge(*q.device);
}

bool take(Virtqueue& q, uint32_t& length, void*& cookie) {
    if (!pop_used(q, length, cookie)) return false;
    quiet(q);
    return true;
}

// "12.34": value / 100 with two decimals.
struct Fixed2 {
    uint64_t whole, frac;
};
Fixed2 fixed2(uint64_t hundredths) { return Fixed2{hundredths / 100, hundredths % 100}; }

// ---------------------------------------------------------------------------------------------------------
// virtio-blk (§5.2)
constexpr uint64_t kBlkReadOnly = uint64_t{1} << 5;
constexpr uint64_t kBlkSegMax = uint64_t{1} << 2;
constexpr uint64_t kBlkBlockSize = uint64_t{1} << 6;
constexpr uint64_t kBlkFlush = uint64_t{1} << 9;
constexpr uint32_t kTypeIn = 0;
constexpr uint32_t kTypeOut = 1;
constexpr uint32_t kSector = 512;
constexpr uint32_t kMaxDepth = 32;
constexpr uint8_t kPending = 0xff;

struct BlkRequest {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
    volatile uint8_t status;
    uint8_t pad[7];
    uint64_t start_tsc;  // driver-only
    uint32_t slot;
};

struct BlkCase {
    const char* name;
    bool write;
    bool random;
    uint32_t block;
};

struct BlkBench {
    Virtqueue* q;
    BlkRequest* requests;  // kMaxDepth
    uint8_t* buffers;      // kMaxDepth * 1 MiB, or one shared 1 MiB buffer
    bool shared;
    uint64_t capacity_bytes;
    uint64_t budget_bytes;
    uint64_t budget_ms;
};

uint64_t xorshift(uint64_t& state) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

// Returns false if the queue stalled (the device is then left alone: its state is unknown).
bool run_blk_case(BlkBench& b, const BlkCase& c, uint32_t depth) {
    Virtqueue& q = *b.q;
    uint64_t blocks = b.capacity_bytes / c.block;
    uint64_t target = b.budget_bytes / c.block;
    if (target == 0) target = 1;
    uint32_t free_slots[kMaxDepth];
    uint32_t free_count = 0;
    for (uint32_t i = 0; i < depth; ++i) free_slots[free_count++] = depth - 1 - i;
    uint64_t started = 0, done = 0, errors = 0, next_block = 0, rng = 0x9e3779b97f4a7c15ull;
    uint64_t latency_ticks = 0;
    uint32_t in_flight = 0;
    bool time_up = false;
    const uint64_t begin_tsc = read_tsc();
    const uint64_t end_tsc = begin_tsc + ms_ticks(b.budget_ms);
    while (true) {
        bool queued = false;
        while (in_flight < depth && started < target && !time_up && free_count > 0) {
            uint32_t slot = free_slots[free_count - 1];
            BlkRequest& r = b.requests[slot];
            uint64_t block = c.random ? xorshift(rng) % blocks : next_block++ % blocks;
            r.type = c.write ? kTypeOut : kTypeIn;
            r.reserved = 0;
            r.sector = block * c.block / kSector;
            r.status = kPending;
            r.slot = slot;
            uint8_t* data = b.buffers + (b.shared ? 0 : uint64_t{slot} * kMiB);
            Buffer chain[3] = {
                {reinterpret_cast<uint64_t>(&r), 16, false},
                {reinterpret_cast<uint64_t>(data), c.block, !c.write},
                {reinterpret_cast<uint64_t>(&r.status), 1, true},
            };
            r.start_tsc = read_tsc();
            if (!submit(q, chain, 3, &r)) break;  // ring full: wait for a completion
            --free_count;
            ++started;
            ++in_flight;
            queued = true;
        }
        if (queued) kick(q);
        if (in_flight == 0) break;
        uint32_t length;
        void* cookie;
        uint64_t wait_start = read_tsc();
        while (!take(q, length, cookie)) {
            ack_stray(q);
            cpu_relax();
            if (read_tsc() - wait_start > ms_ticks(kStallMs)) {
                print("BENCH blk %s qd=%u failed: no completion within %lu ms (%lu of %lu requests done)\n", c.name,
                      depth, kStallMs, done, started);
                return false;
            }
        }
        uint64_t now = read_tsc();
        auto* r = static_cast<BlkRequest*>(cookie);
        latency_ticks += now - r->start_tsc;
        if (r->status != 0) ++errors;
        free_slots[free_count++] = r->slot;
        --in_flight;
        ++done;
        if (now >= end_tsc) time_up = true;
    }
    uint64_t us = tsc_us(read_tsc() - begin_tsc);
    if (us == 0) us = 1;
    uint64_t bytes = done * c.block;
    uint64_t iops = done * 1000000 / us;
    Fixed2 mbps = fixed2(bytes * 100 / us);
    uint64_t lat_tenths = done ? latency_ticks * 10000 / khz / done : 0;
    print("BENCH blk %s qd=%u bs=%u ops=%lu bytes=%lu us=%lu iops=%lu mbps=%lu.%02lu lat_us=%lu.%lu\n", c.name, depth,
          c.block, done, bytes, us, iops, mbps.whole, mbps.frac, lat_tenths / 10, lat_tenths % 10);
    if (errors != 0) print("BENCH blk %s qd=%u errors=%lu (requests with a non-OK status)\n", c.name, depth, errors);
    return true;
}

void bench_blk(const BootInfo& boot, Device* devices, uint32_t count) {
    Device* disk = nullptr;
    for (uint32_t i = 0; i < count && disk == nullptr; ++i) {
        if (devices[i].device_id != kDeviceBlock) continue;
        if (offered_features(devices[i]) & kBlkReadOnly) continue;
        disk = &devices[i];
    }
    if (disk == nullptr) {
        print("BENCH blk failed: no writable virtio-blk disk\n");
        return;
    }
    uint64_t mark = dma_mark();
    const char* error = "";
    Virtqueue q;
    if (!begin(*disk, kBlkSegMax | kBlkBlockSize | kBlkFlush, error) ||
        !queue_create(*disk, 0, kMaxQueueSize, 3, q, error)) {
        print("BENCH blk failed: %s set-up: %s\n", transport_name(*disk), error);
        return;
    }
    driver_ok(*disk);
    quiet(q);
    BlkBench b{};
    b.q = &q;
    b.requests = static_cast<BlkRequest*>(dma_alloc(sizeof(BlkRequest) * kMaxDepth));
    b.buffers = static_cast<uint8_t*>(dma_alloc(uint64_t{kMaxDepth} * kMiB, 4096));
    b.shared = b.buffers == nullptr;
    if (b.shared) b.buffers = static_cast<uint8_t*>(dma_alloc(kMiB, 4096));
    if (b.requests == nullptr || b.buffers == nullptr) {
        print("BENCH blk failed: out of DMA memory\n");
        reset(*disk);
        dma_release(mark);
        return;
    }
    uint64_t fill = b.shared ? kMiB : uint64_t{kMaxDepth} * kMiB;
    for (uint64_t i = 0; i < fill; ++i) b.buffers[i] = static_cast<uint8_t>(i * 131 + 17);
    b.capacity_bytes = config64(*disk, 0) * kSector;
    b.budget_bytes = kDefaultMb * kMiB;
    b.budget_ms = kDefaultMs;
    uint64_t value;
    if (cmdline_number(boot.cmdline, "test.bench.mb", value) && value > 0) b.budget_bytes = value * kMiB;
    if (cmdline_number(boot.cmdline, "test.bench.ms", value) && value > 0) b.budget_ms = value;
    print("BENCH blk start transport=%s disk_bytes=%lu budget_mb=%lu budget_ms=%lu queue=%u indirect=%u event_idx=%u "
          "buffers=%s completion=poll\n",
          transport_name(*disk), b.capacity_bytes, b.budget_bytes / kMiB, b.budget_ms, q.size,
          q.indirect != nullptr ? 1 : 0, q.event_idx ? 1 : 0, b.shared ? "shared" : "per-request");
    if (b.capacity_bytes < kMiB) {
        print("BENCH blk failed: disk smaller than 1 MiB\n");
        reset(*disk);
        dma_release(mark);
        return;
    }
    const BlkCase cases[] = {
        {"seq-read", false, false, kMiB},
        {"seq-write", true, false, kMiB},
        {"rand-read", false, true, 4096},
        {"rand-write", true, true, 4096},
    };
    const uint32_t depths[] = {1, kMaxDepth};
    uint64_t irqs_before = interrupts(q);
    bool ok = true;
    for (const BlkCase& c : cases) {
        for (uint32_t depth : depths) {
            if (ok) ok = run_blk_case(b, c, depth);
        }
    }
    print("BENCH blk end notifies=%lu stray_irqs=%lu\n", q.notifies, interrupts(q) - irqs_before);
    reset(*disk);
    dma_release(mark);
}

// ---------------------------------------------------------------------------------------------------------
// virtio-net (§5.1): MAC and STATUS only, no offloads, no MRG_RXBUF; ARP and UDP over IPv4.
constexpr uint64_t kNetMac = uint64_t{1} << 5;
constexpr uint64_t kNetStatus = uint64_t{1} << 16;
constexpr uint32_t kNetHeader = 12;
constexpr uint32_t kBufferSize = 2048;
constexpr uint32_t kEth = 14, kIp = 20, kUdp = 8, kArp = 28;
constexpr uint32_t kPayload = 1400;
constexpr uint16_t kMaxBuffers = 256;
constexpr uint16_t kArpBuffers = 4;
constexpr uint16_t kPortDone = 7777, kPortTx = 7778, kPortRx = 7779, kPortSource = 7000;
constexpr uint32_t kKickBatch = 32;

uint16_t load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t load32(const uint8_t* p) { return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3]; }
void store16(uint8_t* p, uint16_t v) {
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
}
void store32(uint8_t* p, uint32_t v) {
    store16(p, static_cast<uint16_t>(v >> 16));
    store16(p + 2, static_cast<uint16_t>(v));
}
uint16_t ip_checksum(const uint8_t* data, uint32_t length) {
    uint32_t sum = 0;
    for (uint32_t i = 0; i + 1 < length; i += 2) sum += load16(data + i);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum);
}

class BenchNic {
public:
    BenchNic(Device& d, Virtqueue& rx, Virtqueue& tx) : d_(d), rx_(rx), tx_(tx) {}

    bool init(uint32_t ip, uint32_t peer) {
        ip_ = ip;
        peer_ip_ = peer;
        rx_count_ = rx_.size < kMaxBuffers ? rx_.size : kMaxBuffers;
        tx_count_ = tx_.size < kMaxBuffers ? tx_.size : kMaxBuffers;
        rx_buffers_ = static_cast<uint8_t*>(dma_alloc(uint64_t{kBufferSize} * rx_count_, 4096));
        tx_buffers_ = static_cast<uint8_t*>(dma_alloc(uint64_t{kBufferSize} * tx_count_, 4096));
        arp_buffers_ = static_cast<uint8_t*>(dma_alloc(uint64_t{kBufferSize} * kArpBuffers, 4096));
        if (rx_buffers_ == nullptr || tx_buffers_ == nullptr || arp_buffers_ == nullptr) return false;
        for (uint16_t i = 0; i < rx_count_; ++i) post_rx(rx_buffers_ + uint64_t{i} * kBufferSize);
        if (d_.features & kNetMac) {
            for (uint32_t i = 0; i < 6; ++i) mac_[i] = config8(d_, i);
        } else {
            const uint8_t fallback[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
            memcpy(mac_, fallback, 6);
        }
        for (uint16_t i = 0; i < kArpBuffers; ++i) arp_free_[i] = true;
        return true;
    }

    void start() {
        quiet(rx_);
        quiet(tx_);
        kick(rx_);
    }
    const uint8_t* mac() const { return mac_; }
    bool peer_known() const { return peer_known_; }
    uint16_t tx_count() const { return tx_count_; }

    // Handles every pending received frame; returns how many.
    uint32_t poll_rx() {
        uint32_t handled = 0, length;
        void* cookie;
        while (take(rx_, length, cookie)) {
            auto* buffer = static_cast<uint8_t*>(cookie);
            if (length > kNetHeader) handle(buffer + kNetHeader, length - kNetHeader);
            post_rx(buffer);
            ++handled;
        }
        if (handled) kick(rx_);
        ack_stray(rx_);
        return handled;
    }

    // Takes back transmitted buffers: pool buffers go to `free_pool` (if given), ARP buffers are freed.
    uint32_t poll_tx(uint8_t** free_pool, uint32_t& free_count) {
        uint32_t returned = 0, length;
        void* cookie;
        while (take(tx_, length, cookie)) {
            auto* buffer = static_cast<uint8_t*>(cookie);
            if (buffer >= arp_buffers_ && buffer < arp_buffers_ + kBufferSize * kArpBuffers) {
                arp_free_[(buffer - arp_buffers_) / kBufferSize] = true;
            } else if (free_pool != nullptr) {
                free_pool[free_count++] = buffer;
                ++returned;
            }
        }
        ack_stray(tx_);
        return returned;
    }

    void send_arp(uint16_t operation, const uint8_t* target_mac, uint32_t target_ip) {
        uint8_t* buffer = nullptr;
        for (uint16_t i = 0; i < kArpBuffers && buffer == nullptr; ++i) {
            if (arp_free_[i]) {
                arp_free_[i] = false;
                buffer = arp_buffers_ + uint64_t{i} * kBufferSize;
            }
        }
        if (buffer == nullptr) return;  // all in flight: the peer asks again
        memset(buffer, 0, kNetHeader);
        uint8_t* f = buffer + kNetHeader;
        static const uint8_t kBroadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        memcpy(f, operation == 1 ? kBroadcast : target_mac, 6);
        memcpy(f + 6, mac_, 6);
        store16(f + 12, 0x0806);
        uint8_t* a = f + kEth;
        store16(a + 0, 1);
        store16(a + 2, 0x0800);
        a[4] = 6;
        a[5] = 4;
        store16(a + 6, operation);
        memcpy(a + 8, mac_, 6);
        store32(a + 14, ip_);
        if (operation == 1) memset(a + 18, 0, 6);
        else memcpy(a + 18, target_mac, 6);
        store32(a + 24, target_ip);
        Buffer b{reinterpret_cast<uint64_t>(buffer), kNetHeader + kEth + kArp, false};
        if (!submit(tx_, &b, 1, buffer)) {
            arp_free_[(buffer - arp_buffers_) / kBufferSize] = true;
            return;
        }
        kick(tx_);
    }

    // A whole UDP frame to the peer in `buffer` (virtio header first); returns the buffer's length.
    uint32_t build_udp(uint8_t* buffer, uint16_t port, uint32_t payload_length, uint8_t fill) {
        memset(buffer, 0, kNetHeader);
        uint8_t* f = buffer + kNetHeader;
        memcpy(f, peer_mac_, 6);
        memcpy(f + 6, mac_, 6);
        store16(f + 12, 0x0800);
        uint8_t* ip = f + kEth;
        ip[0] = 0x45;
        ip[1] = 0;
        store16(ip + 2, static_cast<uint16_t>(kIp + kUdp + payload_length));
        store16(ip + 4, 0);       // atomic datagram (DF): the ID is not used (RFC 6864)
        store16(ip + 6, 0x4000);  // don't fragment
        ip[8] = 64;
        ip[9] = 17;
        store16(ip + 10, 0);
        store32(ip + 12, ip_);
        store32(ip + 16, peer_ip_);
        store16(ip + 10, ip_checksum(ip, kIp));
        uint8_t* udp = ip + kIp;
        store16(udp + 0, kPortSource);
        store16(udp + 2, port);
        store16(udp + 4, static_cast<uint16_t>(kUdp + payload_length));
        store16(udp + 6, 0);  // no checksum (allowed over IPv4, RFC 768)
        for (uint32_t j = 0; j < payload_length; ++j) udp[kUdp + j] = static_cast<uint8_t>(fill + j);
        return kNetHeader + kEth + kIp + kUdp + payload_length;
    }

    Virtqueue& tx() { return tx_; }

    // Receive counters for the rx phase.
    uint64_t rx_datagrams = 0, rx_bytes = 0, rx_first_tsc = 0, rx_last_tsc = 0;
    bool done = false;

private:
    void post_rx(uint8_t* buffer) {
        Buffer b{reinterpret_cast<uint64_t>(buffer), kBufferSize, true};
        submit(rx_, &b, 1, buffer);
    }

    void handle(const uint8_t* f, uint32_t length) {
        if (length < kEth) return;
        if (memcmp(f, mac_, 6) != 0 && !(f[0] & 1)) return;
        uint16_t type = load16(f + 12);
        if (type == 0x0806 && length >= kEth + kArp) {
            const uint8_t* a = f + kEth;
            if (load16(a) != 1 || load16(a + 2) != 0x0800 || a[4] != 6 || a[5] != 4) return;
            uint32_t sender = load32(a + 14);
            if (sender == peer_ip_ && !peer_known_) {
                memcpy(peer_mac_, a + 8, 6);
                peer_known_ = true;
            }
            if (load16(a + 6) == 1 && load32(a + 24) == ip_) {
                uint8_t sender_mac[6];
                memcpy(sender_mac, a + 8, 6);
                send_arp(2, sender_mac, sender);
            }
        } else if (type == 0x0800 && length >= kEth + kIp + kUdp) {
            const uint8_t* ip = f + kEth;
            uint32_t header = (ip[0] & 0xf) * 4u;
            if ((ip[0] >> 4) != 4 || ip[9] != 17 || load32(ip + 16) != ip_ || length < kEth + header + kUdp) return;
            const uint8_t* udp = ip + header;
            uint16_t port = load16(udp + 2);
            uint32_t udp_length = load16(udp + 4);
            if (udp_length < kUdp || kEth + header + udp_length > length) return;
            if (port == kPortRx) {
                uint64_t now = read_tsc();
                if (rx_datagrams == 0) rx_first_tsc = now;
                rx_last_tsc = now;
                ++rx_datagrams;
                rx_bytes += udp_length - kUdp;
            } else if (port == kPortDone && udp_length - kUdp >= 4 && memcmp(udp + kUdp, "done", 4) == 0) {
                done = true;
            }
        }
    }

    Device& d_;
    Virtqueue& rx_;
    Virtqueue& tx_;
    uint8_t mac_[6] = {};
    uint8_t peer_mac_[6] = {};
    bool peer_known_ = false;
    uint32_t ip_ = 0, peer_ip_ = 0;
    uint16_t rx_count_ = 0, tx_count_ = 0;
    uint8_t* rx_buffers_ = nullptr;
    uint8_t* tx_buffers_ = nullptr;
    uint8_t* arp_buffers_ = nullptr;
    bool arp_free_[kArpBuffers] = {};

public:
    uint8_t* tx_buffer(uint16_t i) { return tx_buffers_ + uint64_t{i} * kBufferSize; }
};

bool resolve_peer(BenchNic& nic, uint32_t peer) {
    uint64_t end = read_tsc() + ms_ticks(3000);
    while (!nic.peer_known() && read_tsc() < end) {
        nic.send_arp(1, nullptr, peer);
        uint64_t retry = read_tsc() + ms_ticks(300);
        while (!nic.peer_known() && read_tsc() < retry) {
            uint32_t none = 0;
            nic.poll_tx(nullptr, none);
            if (nic.poll_rx() == 0) cpu_relax();
        }
    }
    return nic.peer_known();
}

void bench_tx(BenchNic& nic, uint64_t total_bytes) {
    Virtqueue& tx = nic.tx();
    uint16_t pool_size = nic.tx_count();
    uint8_t* pool[kMaxBuffers];
    uint32_t free_count = 0;
    uint32_t full_length = 0;
    for (uint16_t i = 0; i < pool_size; ++i) {
        full_length = nic.build_udp(nic.tx_buffer(i), kPortTx, kPayload, static_cast<uint8_t>(i));
        pool[free_count++] = nic.tx_buffer(i);
    }
    uint64_t datagrams = (total_bytes + kPayload - 1) / kPayload;
    uint64_t sent = 0, notifies_before = tx.notifies;
    uint32_t batch = 0;
    const uint64_t begin_tsc = read_tsc();
    uint64_t last_progress = begin_tsc;
    while (sent < datagrams) {
        if (free_count == 0) {
            if (batch) {
                kick(tx);
                batch = 0;
            }
            if (nic.poll_tx(pool, free_count) == 0) {
                if ((sent & 255) == 0) nic.poll_rx();
                if (read_tsc() - last_progress > ms_ticks(kStallMs)) {
                    print("BENCH net tx failed: transmit queue stalled for %lu ms after %lu datagrams\n", kStallMs,
                          sent);
                    return;
                }
                cpu_relax();
                continue;
            }
            last_progress = read_tsc();
        }
        uint8_t* buffer = pool[--free_count];
        Buffer b{reinterpret_cast<uint64_t>(buffer), full_length, false};
        if (!submit(tx, &b, 1, buffer)) {
            ++free_count;
            nic.poll_tx(pool, free_count);
            continue;
        }
        ++sent;
        if (++batch >= kKickBatch) {
            kick(tx);
            batch = 0;
            nic.poll_tx(pool, free_count);
        }
    }
    kick(tx);
    while (free_count < pool_size) {
        if (nic.poll_tx(pool, free_count) == 0) {
            if (read_tsc() - last_progress > ms_ticks(kStallMs)) {
                print("BENCH net tx failed: %u of %u transmit buffers not returned within %lu ms\n",
                      pool_size - free_count, pool_size, kStallMs);
                return;
            }
            cpu_relax();
        } else {
            last_progress = read_tsc();
        }
    }
    uint64_t us = tsc_us(read_tsc() - begin_tsc);
    if (us == 0) us = 1;
    uint64_t bytes = sent * kPayload;
    Fixed2 mbps = fixed2(bytes * 100 / us);
    print("BENCH net tx datagrams=%lu bytes=%lu us=%lu mbps=%lu.%02lu\n", sent, bytes, us, mbps.whole, mbps.frac);
    print("BENCH net tx-info notifies=%lu payload=%u frame=%u\n", tx.notifies - notifies_before, kPayload,
          full_length - kNetHeader);
}

void bench_rx(BenchNic& nic, uint64_t idle_ms) {
    print("BENCH net rx-ready\n");
    const uint64_t begin_tsc = read_tsc();
    const uint64_t give_up = begin_tsc + ms_ticks(20000);
    while (!nic.done) {
        uint32_t none = 0;
        nic.poll_tx(nullptr, none);
        if (nic.poll_rx() != 0) continue;
        uint64_t now = read_tsc();
        if (now > give_up) break;
        if (nic.rx_datagrams != 0 && now - nic.rx_last_tsc > ms_ticks(idle_ms)) break;
        cpu_relax();
    }
    uint64_t us = nic.rx_datagrams > 1 ? tsc_us(nic.rx_last_tsc - nic.rx_first_tsc) : 0;
    Fixed2 mbps = fixed2(us ? nic.rx_bytes * 100 / us : 0);
    print("BENCH net rx datagrams=%lu bytes=%lu us=%lu mbps=%lu.%02lu\n", nic.rx_datagrams, nic.rx_bytes, us, mbps.whole,
          mbps.frac);
    print("BENCH net rx-info ended_by=%s\n", nic.done ? "done" : nic.rx_datagrams ? "idle" : "timeout");
}

void bench_net(const BootInfo& boot, Device* devices, uint32_t count) {
    Device* d = nullptr;
    for (uint32_t i = 0; i < count && d == nullptr; ++i) {
        if (devices[i].device_id == kDeviceNet) d = &devices[i];
    }
    if (d == nullptr) {
        print("BENCH net failed: no virtio-net device\n");
        return;
    }
    uint32_t ip = 0x0a000202, peer = 0x0a000201;
    Str text;
    if (cmdline_value(boot.cmdline, "test.net.ip", text) && !parse_ipv4(text, ip)) {
        print("BENCH net failed: bad test.net.ip\n");
        return;
    }
    if (cmdline_value(boot.cmdline, "test.net.peer", text) && !parse_ipv4(text, peer)) {
        print("BENCH net failed: bad test.net.peer\n");
        return;
    }
    uint64_t megabytes = kDefaultMb, idle_ms = 3000;
    cmdline_number(boot.cmdline, "test.bench.mb", megabytes);
    cmdline_number(boot.cmdline, "test.bench.net_idle_ms", idle_ms);
    uint64_t mark = dma_mark();
    const char* error = "";
    Virtqueue rx, tx;
    if (!begin(*d, kNetMac | kNetStatus, error) || !queue_create(*d, 0, kMaxQueueSize, 0, rx, error) ||
        !queue_create(*d, 1, kMaxQueueSize, 0, tx, error)) {
        print("BENCH net failed: %s set-up: %s\n", transport_name(*d), error);
        return;
    }
    BenchNic nic(*d, rx, tx);
    if (!nic.init(ip, peer)) {
        print("BENCH net failed: out of DMA memory\n");
        reset(*d);
        dma_release(mark);
        return;
    }
    driver_ok(*d);
    nic.start();
    const uint8_t* m = nic.mac();
    print("BENCH net start transport=%s mac=%02x:%02x:%02x:%02x:%02x:%02x rx_queue=%u tx_queue=%u event_idx=%u mb=%lu "
          "completion=poll\n",
          transport_name(*d), m[0], m[1], m[2], m[3], m[4], m[5], rx.size, tx.size, tx.event_idx ? 1 : 0, megabytes);
    if (!resolve_peer(nic, peer)) {
        print("BENCH net failed: no ARP reply from the peer within 3000 ms\n");
    } else {
        bench_tx(nic, megabytes * kMiB);
    }
    bench_rx(nic, idle_ms);
    print("BENCH net end stray_irqs=%lu\n", interrupts(rx) + interrupts(tx));
    reset(*d);
    dma_release(mark);
}

}  // namespace

bool bench_requested(const BootInfo& boot) {
    Str which;
    return cmdline_value(boot.cmdline, "test.bench", which);
}

void run_bench(const BootInfo& boot, Device* devices, uint32_t count) {
    Str which;
    if (!cmdline_value(boot.cmdline, "test.bench", which)) return;
    khz = tsc_khz();
    const char* source = tsc_source();
    uint64_t override_khz;
    if (cmdline_number(boot.cmdline, "test.tsc_khz", override_khz) && override_khz > 0) {
        khz = override_khz;
        source = "test.tsc_khz";
    }
    print("BENCH info tsc_khz=%lu source=%s cpl=%u\n", khz, source, current_cpl());
    bool blk = false, net = false;
    // Comma-separated list of blk and net.
    size_t i = 0;
    while (i < which.size) {
        size_t j = i;
        while (j < which.size && which.data[j] != ',') ++j;
        Str word{which.data + i, j - i};
        if (word.equals("blk")) blk = true;
        else if (word.equals("net")) net = true;
        else print("BENCH failed: unknown benchmark '%.*s' (blk, net)\n", static_cast<int>(word.size), word.data);
        i = j + 1;
    }
    if (blk) bench_blk(boot, devices, count);
    if (net) bench_net(boot, devices, count);
    print("BENCH done\n");
}

}  // namespace guest::virtio
