// Time from the TSC (readable at CPL3: CR4.TSD is clear).
#pragma once

#include <stdint.h>

namespace guest {

inline uint64_t read_tsc() {
    uint32_t low, high;
    asm volatile("rdtsc" : "=a"(low), "=d"(high));
    return (uint64_t{high} << 32) | low;
}

// TSC frequency from CPUID (KVM leaf 0x40000010, then 0x15, then 0x16); a guess of 3 GHz otherwise.
// Only used for timeouts and reporting, so a wrong guess makes waits longer or shorter, never hangs.
void timing_init();
uint64_t tsc_khz();
const char* tsc_source();
uint64_t elapsed_us(uint64_t start_tsc);
void delay_us(uint64_t microseconds);

class Deadline {
public:
    explicit Deadline(uint64_t milliseconds);
    bool expired() const { return read_tsc() >= end_; }

private:
    uint64_t end_;
};

}  // namespace guest
