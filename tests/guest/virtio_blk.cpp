#include "virtio_blk.hpp"

#include "base.hpp"
#include "checks.hpp"
#include "print.hpp"
#include "timing.hpp"

namespace guest::virtio {
namespace {

// Feature bits (§5.2.3).
constexpr uint64_t kFeatureSegMax = uint64_t{1} << 2;
constexpr uint64_t kFeatureReadOnly = uint64_t{1} << 5;
constexpr uint64_t kFeatureBlockSize = uint64_t{1} << 6;
constexpr uint64_t kFeatureFlush = uint64_t{1} << 9;
// Configuration layout (§5.2.4).
constexpr uint32_t kConfigCapacity = 0;
constexpr uint32_t kConfigSegMax = 12;
// Requests (§5.2.6).
constexpr uint32_t kTypeIn = 0;
constexpr uint32_t kTypeOut = 1;
constexpr uint32_t kTypeFlush = 4;
constexpr uint32_t kTypeGetId = 8;
constexpr uint8_t kStatusOk = 0;
constexpr uint8_t kStatusIoError = 1;
constexpr uint32_t kIdBytes = 20;  // VIRTIO_BLK_ID_BYTES
constexpr uint32_t kSector = 512;

constexpr uint16_t kRequestQueue = 0;
constexpr uint64_t kTimeoutMs = 10000;
constexpr uint32_t kMiB = 1024 * 1024;
constexpr uint64_t kWriteSector = 2048;
constexpr uint32_t kWriteBytes = kMiB;
constexpr uint16_t kChainSegments = 64;
constexpr uint16_t kMaxIndirect = kChainSegments + 2;
constexpr uint32_t kDepth = 32;
constexpr uint32_t kDepthBytes = 4096;
constexpr uint8_t kStatusPending = 0xff;

struct RequestHeader {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};
static_assert(sizeof(RequestHeader) == 16);

// Header and status byte of one request, in DMA memory.
struct Request {
    RequestHeader header;
    volatile uint8_t status;
};

uint8_t host_pattern(uint64_t i, uint64_t seed) { return static_cast<uint8_t>(i * 131 + i / 4096 + seed); }
uint8_t guest_pattern(uint64_t i) { return static_cast<uint8_t>(i * 71 + 3); }

// Returns the offset of the first byte of `data` (disk bytes from `disk_offset`) that is not the host's
// pattern, or `size` if all are.
uint64_t first_host_mismatch(const uint8_t* data, uint64_t size, uint64_t disk_offset, uint64_t seed) {
    for (uint64_t i = 0; i < size; ++i) {
        if (data[i] != host_pattern(disk_offset + i, seed)) return i;
    }
    return size;
}

class Disk {
public:
    Disk(Virtqueue& queue, Request* requests) : q_(queue), requests_(requests) {}

    // Queues a request: header, the data buffers, status. False if the ring is full.
    bool start(uint32_t slot, uint32_t type, uint64_t sector, const Buffer* data, uint16_t data_count) {
        Request& r = requests_[slot];
        r.header = RequestHeader{type, 0, sector};
        r.status = kStatusPending;
        Buffer buffers[kMaxIndirect];
        uint16_t count = 0;
        buffers[count++] = Buffer{reinterpret_cast<uint64_t>(&r.header), sizeof(RequestHeader), false};
        for (uint16_t i = 0; i < data_count; ++i) buffers[count++] = data[i];
        buffers[count++] = Buffer{reinterpret_cast<uint64_t>(&r.status), 1, true};
        return submit(q_, buffers, count, &r);
    }

    // Waits for one completion; returns the finished request or nullptr on timeout.
    Request* finish_one() {
        uint32_t length;
        void* cookie;
        return next_used(q_, kTimeoutMs, length, cookie) ? static_cast<Request*>(cookie) : nullptr;
    }

    // One request, synchronously; returns its status, or kStatusPending on timeout/full ring.
    uint8_t run(uint32_t type, uint64_t sector, const Buffer* data, uint16_t data_count) {
        if (!start(0, type, sector, data, data_count)) return kStatusPending;
        kick(q_);
        Request* done = finish_one();
        return done == nullptr ? kStatusPending : done->status;
    }

    uint8_t run_one(uint32_t type, uint64_t sector, void* data, uint32_t length, bool device_writes) {
        Buffer buffer{reinterpret_cast<uint64_t>(data), length, device_writes};
        return run(type, sector, &buffer, length == 0 ? 0 : 1);
    }

private:
    Virtqueue& q_;
    Request* requests_;
};

void check_write(Disk& disk, Device& d, Virtqueue& q, uint8_t* buffer, uint64_t capacity, const char* name) {
    if (capacity < kWriteSector + kWriteBytes / kSector) {
        check_fail(name, "disk too small for the write test (%lu sectors)", capacity);
        return;
    }
    uint64_t start = read_tsc();
    // 1. One request with one 1 MiB descriptor: the complement of the guest pattern, then read back.
    for (uint32_t i = 0; i < kWriteBytes; ++i) buffer[i] = static_cast<uint8_t>(~guest_pattern(i));
    uint8_t status = disk.run_one(kTypeOut, kWriteSector, buffer, kWriteBytes, false);
    if (status != kStatusOk) {
        check_fail(name, "1 MiB write: status %u", status);
        return;
    }
    memset(buffer, 0, kWriteBytes);
    status = disk.run_one(kTypeIn, kWriteSector, buffer, kWriteBytes, true);
    if (status != kStatusOk) {
        check_fail(name, "1 MiB read-back: status %u", status);
        return;
    }
    for (uint32_t i = 0; i < kWriteBytes; ++i) {
        if (buffer[i] != static_cast<uint8_t>(~guest_pattern(i))) {
            check_fail(name, "1 MiB write read back wrong at byte %u: %02x", i, buffer[i]);
            return;
        }
    }
    uint64_t big_us = elapsed_us(start);
    // 2. The guest pattern as chains of 64 descriptors of 512 bytes (32 KiB per request), as many in flight
    //    as the ring holds.
    for (uint32_t i = 0; i < kWriteBytes; ++i) buffer[i] = guest_pattern(i);
    constexpr uint32_t kChainBytes = kChainSegments * kSector;
    constexpr uint32_t kChains = kWriteBytes / kChainBytes;
    uint32_t started = 0, finished = 0;
    uint64_t chain_start = read_tsc();
    while (finished < kChains) {
        bool queued = false;
        while (started < kChains) {
            Buffer segments[kChainSegments];
            for (uint16_t s = 0; s < kChainSegments; ++s) {
                segments[s] = Buffer{reinterpret_cast<uint64_t>(buffer + started * kChainBytes + s * kSector), kSector, false};
            }
            if (!disk.start(started, kTypeOut, kWriteSector + started * kChainSegments, segments, kChainSegments)) break;
            ++started;
            queued = true;
        }
        if (queued) kick(q);
        Request* done = disk.finish_one();
        if (done == nullptr) {
            check_fail(name, "chained write: no completion within %lu ms (%u/%u done)", kTimeoutMs, finished, kChains);
            return;
        }
        if (done->status != kStatusOk) {
            check_fail(name, "chained write: status %u", done->status);
            return;
        }
        ++finished;
    }
    uint64_t chain_us = elapsed_us(chain_start);
    // 3. FLUSH (§5.2.6.1), then read everything back.
    bool flushed = (d.features & kFeatureFlush) != 0;
    if (flushed) {
        status = disk.run_one(kTypeFlush, 0, nullptr, 0, false);
        if (status != kStatusOk) {
            check_fail(name, "flush: status %u", status);
            return;
        }
    }
    memset(buffer, 0, kWriteBytes);
    status = disk.run_one(kTypeIn, kWriteSector, buffer, kWriteBytes, true);
    if (status != kStatusOk) {
        check_fail(name, "read-back: status %u", status);
        return;
    }
    for (uint32_t i = 0; i < kWriteBytes; ++i) {
        if (buffer[i] != guest_pattern(i)) {
            check_fail(name, "chained write read back wrong at byte %u: %02x, expected %02x", i, buffer[i],
                       guest_pattern(i));
            return;
        }
    }
    check_ok(name, "bytes=%u sector=%lu big_request_us=%lu chains=%ux%u indirect=%u flush=%u wait=%s time_us=%lu",
             kWriteBytes, kWriteSector, big_us, kChains, kChainSegments, q.indirect != nullptr ? 1 : 0,
             flushed ? 1 : 0, wait_summary(q), chain_us);
    print("ember-test-guest: %s interrupts=%lu notifies=%lu indirect_requests=%lu\n", name, interrupts(q), q.notifies,
          q.indirect_used);
}

void check_queue_depth(Disk& disk, Virtqueue& q, uint8_t* buffer, uint64_t seed, uint64_t capacity, const char* name) {
    if (capacity < kDepth * kDepthBytes / kSector) {
        check_fail(name, "disk too small (%lu sectors)", capacity);
        return;
    }
    memset(buffer, 0, kDepth * kDepthBytes);
    uint64_t start = read_tsc();
    uint32_t started = 0;
    for (; started < kDepth; ++started) {
        Buffer data{reinterpret_cast<uint64_t>(buffer + started * kDepthBytes), kDepthBytes, true};
        if (!disk.start(started, kTypeIn, uint64_t{started} * kDepthBytes / kSector, &data, 1)) break;
    }
    if (started != kDepth) {
        check_fail(name, "only %u of %u requests fit the ring (size %u)", started, kDepth, q.size);
        return;
    }
    kick(q);
    uint64_t notifies_before = q.notifies;
    uint32_t done = 0;
    uint32_t max_pending = 0;
    while (done < kDepth) {
        Request* r = disk.finish_one();
        if (r == nullptr) {
            check_fail(name, "%u of %u requests completed within %lu ms", done, kDepth, kTimeoutMs);
            return;
        }
        if (r->status != kStatusOk) {
            check_fail(name, "request status %u", r->status);
            return;
        }
        ++done;
        uint32_t pending = kDepth - done;
        if (pending > max_pending) max_pending = pending;
    }
    uint64_t bad = first_host_mismatch(buffer, kDepth * kDepthBytes, 0, seed);
    if (bad != kDepth * kDepthBytes) {
        check_fail(name, "data wrong at disk byte %lu: %02x, expected %02x", bad, buffer[bad], host_pattern(bad, seed));
        return;
    }
    check_ok(name, "requests=%u bytes=%u notifies=%lu wait=%s irqs=%lu time_us=%lu", kDepth, kDepthBytes,
             q.notifies - notifies_before + 1, wait_summary(q), interrupts(q), elapsed_us(start));
}

}  // namespace

void check_blk(Device& d, uint32_t number, uint64_t seed) {
    char name[32];
    format_to(name, sizeof(name), "blk%u", number);
    uint64_t mark = dma_mark();
    const char* error = "";
    Virtqueue q;
    if (!begin(d, kFeatureSegMax | kFeatureReadOnly | kFeatureBlockSize | kFeatureFlush, error) ||
        !queue_create(d, kRequestQueue, kMaxQueueSize, kMaxIndirect, q, error)) {
        check_fail(name, "%s set-up: %s", transport_name(d), error);
        return;
    }
    driver_ok(d);
    auto* requests = static_cast<Request*>(dma_alloc(sizeof(Request) * kDepth));
    auto* buffer = static_cast<uint8_t*>(dma_alloc(kWriteBytes, 4096));
    auto* id = static_cast<char*>(dma_alloc(kIdBytes + 1));
    if (requests == nullptr || buffer == nullptr || id == nullptr) {
        check_fail(name, "out of DMA memory");
        return;
    }
    Disk disk(q, requests);
    uint64_t capacity = config64(d, kConfigCapacity);
    bool read_only = (d.features & kFeatureReadOnly) != 0;
    uint32_t seg_max = (d.features & kFeatureSegMax) ? config32(d, kConfigSegMax) : 0;
    uint8_t status = disk.run_one(kTypeGetId, 0, id, kIdBytes, true);
    if (status != kStatusOk) format_to(id, kIdBytes + 1, "(status-%u)", status);
    id[kIdBytes] = '\0';
    print("blk%u id=%s sectors=%lu ro=%u\n", number, id, capacity, read_only ? 1 : 0);
    print("ember-test-guest: blk%u %s features=%lx queue=%u seg_max=%u indirect=%u event_idx=%u\n", number,
          transport_name(d), d.features, q.size, seg_max, q.indirect != nullptr ? 1 : 0, q.event_idx ? 1 : 0);

    format_to(name, sizeof(name), "blk%u_read", number);
    memset(buffer, 0, 8 * kSector);
    status = disk.run_one(kTypeIn, 0, buffer, 8 * kSector, true);
    uint64_t bad = first_host_mismatch(buffer, 8 * kSector, 0, seed);
    if (status != kStatusOk) {
        check_fail(name, "status %u", status);
    } else if (bad != 8 * kSector) {
        check_fail(name, "byte %lu is %02x, expected %02x (seed %lu)", bad, buffer[bad], host_pattern(bad, seed), seed);
    } else {
        check_ok(name, "sectors=0-7 seed=%lu wait=%s", seed, wait_summary(q));
    }

    if (!read_only) {
        format_to(name, sizeof(name), "blk%u_write", number);
        check_write(disk, d, q, buffer, capacity, name);
    } else {
        memset(buffer, 0, kSector);
        status = disk.run_one(kTypeOut, kWriteSector, buffer, kSector, false);
        if (status == kStatusIoError) {
            check_ok("blk_ro_write", "status=%u disk=%u", status, number);
        } else {
            check_fail("blk_ro_write", "status=%u disk=%u (expected %u, IOERR)", status, number, kStatusIoError);
        }
    }

    format_to(name, sizeof(name), "blk%u_queue_depth", number);
    check_queue_depth(disk, q, buffer, seed, capacity, name);
    reset(d);
    dma_release(mark);
}

}  // namespace guest::virtio
