#include "virtio_console.hpp"

#include "base.hpp"
#include "checks.hpp"
#include "cmdline.hpp"
#include "print.hpp"
#include "timing.hpp"

namespace guest::virtio {
namespace {

// Feature bits (§5.3.3); MULTIPORT is never accepted, so only port 0's queues exist (§5.3.2).
constexpr uint64_t kFeatureSize = uint64_t{1} << 0;
constexpr uint64_t kFeatureMultiport = uint64_t{1} << 1;
constexpr uint16_t kReceiveQueue = 0;
constexpr uint16_t kTransmitQueue = 1;

constexpr uint64_t kDefaultBytes = 1024 * 1024;
constexpr uint32_t kChunk = 64 * 1024;
constexpr uint32_t kChunks = 16;
constexpr uint32_t kRxBuffers = 8;
constexpr uint32_t kRxBufferSize = 256;
constexpr uint64_t kTimeoutMs = 10000;
constexpr uint64_t kInputTimeoutMs = 20000;
constexpr uint32_t kLineMax = 128;
// FNV-1a, 32 bits.
constexpr uint32_t kFnvOffset = 0x811c9dc5;
constexpr uint32_t kFnvPrime = 0x01000193;

uint8_t console_pattern(uint64_t i) { return static_cast<uint8_t>(i * 13 + 5); }

void transmit(Device& d, Virtqueue& tx, uint64_t total) {
    uint64_t start = read_tsc();
    auto* chunks = static_cast<uint8_t*>(dma_alloc(uint64_t{kChunk} * kChunks, 4096));
    if (chunks == nullptr) {
        check_fail("console_tx", "out of DMA memory");
        return;
    }
    uint8_t* free_chunks[kChunks];
    uint32_t free_count = 0;
    for (uint32_t i = 0; i < kChunks; ++i) free_chunks[free_count++] = chunks + uint64_t{i} * kChunk;
    uint32_t hash = kFnvOffset;
    uint64_t sent = 0;
    while (sent < total || free_count < kChunks) {
        bool queued = false;
        while (sent < total && free_count > 0) {
            uint8_t* chunk = free_chunks[free_count - 1];
            uint32_t length = total - sent < kChunk ? static_cast<uint32_t>(total - sent) : kChunk;
            for (uint32_t i = 0; i < length; ++i) {
                uint8_t byte = console_pattern(sent + i);
                chunk[i] = byte;
                hash = (hash ^ byte) * kFnvPrime;
            }
            Buffer buffer{reinterpret_cast<uint64_t>(chunk), length, false};
            if (!submit(tx, &buffer, 1, chunk)) break;
            --free_count;
            sent += length;
            queued = true;
        }
        if (queued) kick(tx);
        uint32_t length;
        void* cookie;
        if (!next_used(tx, kTimeoutMs, length, cookie)) {
            check_fail("console_tx", "no transmit completion within %lu ms (%lu of %lu bytes queued, status %x)",
                       kTimeoutMs, sent, total, status(d));
            return;
        }
        free_chunks[free_count++] = static_cast<uint8_t*>(cookie);
    }
    uint64_t time_us = elapsed_us(start);
    print("console_tx bytes=%lu fnv1a=%08x\n", total, hash);
    check_ok("console_tx", "bytes=%lu fnv1a=%08x chunk_bytes=%u wait=%s irqs=%lu notifies=%lu time_us=%lu", total, hash,
             kChunk, wait_summary(tx), interrupts(tx), tx.notifies, time_us);
}

void receive_line(Device& d, Virtqueue& rx) {
    auto* buffers = static_cast<uint8_t*>(dma_alloc(kRxBuffers * kRxBufferSize, 4096));
    if (buffers == nullptr) {
        check_fail("console_rx", "out of DMA memory");
        return;
    }
    for (uint32_t i = 0; i < kRxBuffers; ++i) {
        Buffer buffer{reinterpret_cast<uint64_t>(buffers + i * kRxBufferSize), kRxBufferSize, true};
        submit(rx, &buffer, 1, buffers + i * kRxBufferSize);
    }
    kick(rx);
    print("ember-test-guest: console ready-for-input\n");
    char line[kLineMax + 1];
    uint32_t line_length = 0;
    Deadline deadline(kInputTimeoutMs);
    while (!deadline.expired()) {
        uint32_t length;
        void* cookie;
        if (!pop_used(rx, length, cookie)) {
            wait_used(rx, 100);
            continue;
        }
        auto* data = static_cast<uint8_t*>(cookie);
        for (uint32_t i = 0; i < length && i < kRxBufferSize; ++i) {
            char c = static_cast<char>(data[i]);
            if (c == '\n' || c == '\r') {
                if (line_length == 0) continue;
                line[line_length] = '\0';
                print("console_rx got %s\n", line);
                check_ok("console_rx", "bytes=%u wait=%s irqs=%lu", line_length, wait_summary(rx), interrupts(rx));
                return;
            }
            if (line_length < kLineMax) line[line_length++] = c;
        }
        Buffer buffer{reinterpret_cast<uint64_t>(data), kRxBufferSize, true};
        submit(rx, &buffer, 1, data);
        kick(rx);
    }
    line[line_length] = '\0';
    check_fail("console_rx", "no line within %lu ms (partial: '%s', status %x)", kInputTimeoutMs, line, status(d));
}

}  // namespace

void check_console(Device& d, uint32_t number, const BootInfo& boot) {
    if (number > 0) {
        print("ember-test-guest: console%u skipped (only the first console is checked)\n", number);
        return;
    }
    uint64_t mark = dma_mark();
    const char* error = "";
    Virtqueue rx, tx;
    if (!begin(d, kFeatureSize, error) || !queue_create(d, kReceiveQueue, kMaxQueueSize, 0, rx, error) ||
        !queue_create(d, kTransmitQueue, kMaxQueueSize, 0, tx, error)) {
        check_fail("console", "%s set-up: %s", transport_name(d), error);
        return;
    }
    if (d.features & kFeatureMultiport) {  // begin() never accepts it; a device insisting fails FEATURES_OK
        check_fail("console", "MULTIPORT negotiated");
        return;
    }
    driver_ok(d);
    print("ember-test-guest: console %s features=%lx rx_queue=%u tx_queue=%u\n", transport_name(d), d.features, rx.size,
          tx.size);
    uint64_t total = kDefaultBytes;
    cmdline_number(boot.cmdline, "test.console.bytes", total);
    transmit(d, tx, total);
    if (cmdline_flag(boot.cmdline, "test.console.rx")) receive_line(d, rx);
    reset(d);
    dma_release(mark);
}

}  // namespace guest::virtio
