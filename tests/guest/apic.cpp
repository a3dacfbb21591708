#include "apic.hpp"

#include "base.hpp"
#include "layout.h"

extern "C" {
volatile uint64_t timer_ticks;
}

namespace guest::lapic {
namespace {

// Register offsets (SDM vol. 3A, table 11-1).
constexpr uint64_t kId = 0x020;
constexpr uint64_t kTaskPriority = 0x080;
constexpr uint64_t kSpuriousVector = 0x0f0;
constexpr uint64_t kIcrLow = 0x300;
constexpr uint64_t kIcrHigh = 0x310;
constexpr uint64_t kLvtTimer = 0x320;
constexpr uint64_t kLvtLint0 = 0x350;
constexpr uint64_t kTimerInitialCount = 0x380;
constexpr uint64_t kTimerDivide = 0x3e0;

constexpr uint32_t kSoftwareEnable = 1u << 8;
constexpr uint32_t kLvtMasked = 1u << 16;
constexpr uint32_t kLvtTimerPeriodic = 1u << 17;
constexpr uint32_t kIcrDeliveryPending = 1u << 12;
constexpr uint32_t kDivideBy16 = 0x3;
constexpr int kIpiWaitLimit = 1000000;

uint32_t read(uint64_t offset) { return read32(LAPIC_BASE + offset); }
void write(uint64_t offset, uint32_t value) { write32(LAPIC_BASE + offset, value); }

}  // namespace

uint32_t id() { return read(kId) >> 24; }

void enable() {
    write(kTaskPriority, 0);
    write(kLvtLint0, kLvtMasked);
    write(kSpuriousVector, kSoftwareEnable | VECTOR_SPURIOUS);
}

void start_periodic_timer(uint8_t vector, uint32_t initial_count) {
    write(kTimerDivide, kDivideBy16);
    write(kLvtTimer, kLvtTimerPeriodic | vector);
    write(kTimerInitialCount, initial_count);
}

void stop_timer() {
    write(kLvtTimer, kLvtMasked);
    write(kTimerInitialCount, 0);
}

bool send_ipi(uint32_t apic_id, uint32_t command) {
    write(kIcrHigh, apic_id << 24);
    write(kIcrLow, command);
    for (int i = 0; i < kIpiWaitLimit; ++i) {
        if (!(read(kIcrLow) & kIcrDeliveryPending)) return true;
        cpu_relax();
    }
    return false;
}

}  // namespace guest::lapic

namespace guest::ioapic {
namespace {

// Indirect registers (82093AA, 3.1 and 3.2).
constexpr uint64_t kRegisterSelect = 0x00;
constexpr uint64_t kWindow = 0x10;
constexpr uint32_t kVersion = 0x01;
constexpr uint32_t kRedirectionTable = 0x10;
constexpr uint32_t kMasked = 1u << 16;
constexpr uint32_t kActiveLow = 1u << 13;

void write_register(uint64_t base, uint32_t index, uint32_t value) {
    write32(base + kRegisterSelect, index);
    write32(base + kWindow, value);
}

uint32_t read_register(uint64_t base, uint32_t index) {
    write32(base + kRegisterSelect, index);
    return read32(base + kWindow);
}

}  // namespace

void route_edge(uint64_t base, uint32_t pin, uint8_t vector, uint32_t destination_apic_id) {
    route_edge_polarity(base, pin, vector, destination_apic_id, false);
}

void route_edge_polarity(uint64_t base, uint32_t pin, uint8_t vector, uint32_t destination_apic_id, bool active_low) {
    uint32_t low_index = kRedirectionTable + 2 * pin;
    write_register(base, low_index, kMasked);
    write_register(base, low_index + 1, destination_apic_id << 24);
    // fixed, physical, edge, unmasked; active high unless asked
    write_register(base, low_index, vector | (active_low ? kActiveLow : 0));
}

void mask(uint64_t base, uint32_t pin) { write_register(base, kRedirectionTable + 2 * pin, kMasked); }

uint32_t pin_count(uint64_t base) { return ((read_register(base, kVersion) >> 16) & 0xff) + 1; }

}  // namespace guest::ioapic
