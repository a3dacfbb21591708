#include "timing.hpp"

#include "base.hpp"

namespace guest {
namespace {

constexpr uint64_t kFallbackTscKhz = 3000000;
uint64_t frequency_khz = kFallbackTscKhz;
const char* frequency_source = "guess";

struct Cpuid {
    uint32_t eax, ebx, ecx, edx;
};

Cpuid cpuid(uint32_t leaf) {
    Cpuid r;
    asm volatile("cpuid" : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx) : "a"(leaf), "c"(0));
    return r;
}

bool from_kvm_leaf() {
    constexpr uint32_t kHypervisorBase = 0x40000000;
    constexpr uint32_t kTimingLeaf = 0x40000010;  // EAX = TSC kHz (VMware/KVM timing leaf)
    Cpuid base = cpuid(kHypervisorBase);
    char signature[13];
    memcpy(signature + 0, &base.ebx, 4);
    memcpy(signature + 4, &base.ecx, 4);
    memcpy(signature + 8, &base.edx, 4);
    signature[12] = '\0';
    if (memcmp(signature, "KVMKVMKVM", 9) != 0 || base.eax < kTimingLeaf) return false;
    Cpuid timing = cpuid(kTimingLeaf);
    if (timing.eax == 0) return false;
    frequency_khz = timing.eax;
    frequency_source = "cpuid-0x40000010";
    return true;
}

bool from_standard_leaves() {
    uint32_t max_leaf = cpuid(0).eax;
    if (max_leaf >= 0x15) {
        Cpuid tsc = cpuid(0x15);  // TSC/crystal ratio EBX/EAX, crystal Hz in ECX
        if (tsc.eax != 0 && tsc.ebx != 0 && tsc.ecx != 0) {
            frequency_khz = uint64_t{tsc.ecx} * tsc.ebx / tsc.eax / 1000;
            frequency_source = "cpuid-0x15";
            return true;
        }
    }
    if (max_leaf >= 0x16) {
        Cpuid base = cpuid(0x16);  // processor base frequency in MHz
        if ((base.eax & 0xffff) != 0) {
            frequency_khz = uint64_t{base.eax & 0xffff} * 1000;
            frequency_source = "cpuid-0x16";
            return true;
        }
    }
    return false;
}

}  // namespace

void timing_init() {
    if (!from_kvm_leaf()) from_standard_leaves();
}

uint64_t tsc_khz() { return frequency_khz; }
const char* tsc_source() { return frequency_source; }

uint64_t elapsed_us(uint64_t start_tsc) { return (read_tsc() - start_tsc) * 1000 / frequency_khz; }

void delay_us(uint64_t microseconds) {
    uint64_t end = read_tsc() + microseconds * frequency_khz / 1000;
    while (read_tsc() < end) cpu_relax();
}

Deadline::Deadline(uint64_t milliseconds) : end_(read_tsc() + milliseconds * frequency_khz) {}

}  // namespace guest
