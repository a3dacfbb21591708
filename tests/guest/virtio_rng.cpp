#include "virtio_rng.hpp"

#include "base.hpp"
#include "checks.hpp"
#include "print.hpp"
#include "timing.hpp"

namespace guest::virtio {
namespace {

constexpr uint16_t kRequestQueue = 0;  // §5.4.2
constexpr uint32_t kReadSize = 64;
constexpr uint64_t kTimeoutMs = 5000;

// Fills `buffer` with kReadSize bytes, in as many requests as the device needs; false on timeout.
bool read_entropy(Virtqueue& q, uint8_t* buffer) {
    uint32_t filled = 0;
    while (filled < kReadSize) {
        Buffer request{reinterpret_cast<uint64_t>(buffer + filled), kReadSize - filled, true};
        if (!submit(q, &request, 1, buffer)) return false;
        kick(q);
        uint32_t length;
        void* cookie;
        if (!next_used(q, kTimeoutMs, length, cookie)) return false;
        filled += length;
    }
    return true;
}

bool all_zero(const uint8_t* bytes, uint32_t size) {
    for (uint32_t i = 0; i < size; ++i) {
        if (bytes[i] != 0) return false;
    }
    return true;
}

}  // namespace

void check_rng(Device& d, uint32_t number) {
    char name[16];
    format_to(name, sizeof(name), number == 0 ? "rng" : "rng%u", number);
    uint64_t start = read_tsc();
    const char* error = "";
    Virtqueue q;
    if (!begin(d, 0, error) || !queue_create(d, kRequestQueue, kMaxQueueSize, 0, q, error)) {
        check_fail(name, "%s set-up: %s", transport_name(d), error);
        return;
    }
    driver_ok(d);
    auto* first = static_cast<uint8_t*>(dma_alloc(kReadSize));
    auto* second = static_cast<uint8_t*>(dma_alloc(kReadSize));
    if (first == nullptr || second == nullptr) {
        check_fail(name, "out of DMA memory");
        return;
    }
    if (!read_entropy(q, first) || !read_entropy(q, second)) {
        check_fail(name, "no completion within %lu ms (status %x)", kTimeoutMs, status(d));
        return;
    }
    if (all_zero(first, kReadSize) || all_zero(second, kReadSize) || memcmp(first, second, kReadSize) == 0) {
        check_fail(name, "entropy looks wrong: %02x%02x%02x%02x.. / %02x%02x%02x%02x..", first[0], first[1], first[2],
                   first[3], second[0], second[1], second[2], second[3]);
        return;
    }
    check_ok(name, "bytes=%u+%u wait=%s irqs=%lu notifies=%lu features=%lx time_us=%lu", kReadSize, kReadSize,
             wait_summary(q), interrupts(q), q.notifies, d.features, elapsed_us(start));
    reset(d);
}

}  // namespace guest::virtio
