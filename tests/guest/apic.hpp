// Local APIC (xAPIC MMIO, Intel SDM vol. 3A chapter 11) and I/O APIC (82093AA datasheet), driven from
// CPL3 through their user-mapped, uncached pages.
#pragma once

#include <stdint.h>

namespace guest::lapic {

uint32_t id();
// Software-enables the LAPIC with the spurious vector, TPR 0, LINT0 masked.
void enable();
void start_periodic_timer(uint8_t vector, uint32_t initial_count);
void stop_timer();
// Sends an IPI (ICR low word) to `apic_id` and waits for the delivery status to clear.
bool send_ipi(uint32_t apic_id, uint32_t command);

constexpr uint32_t kIcrInit = 0x00004500;     // delivery mode INIT, level assert
constexpr uint32_t kIcrStartup = 0x00004600;  // delivery mode start-up, vector in bits 7:0

}  // namespace guest::lapic

// Written by irq_timer (traps.S).
extern "C" volatile uint64_t timer_ticks;

namespace guest::ioapic {

// Programs a redirection entry: fixed delivery, physical destination, edge, active high, unmasked.
void route_edge(uint64_t base, uint32_t pin, uint8_t vector, uint32_t destination_apic_id);
// Same, with the pin's polarity (active low when the firmware's descriptor says so).
void route_edge_polarity(uint64_t base, uint32_t pin, uint8_t vector, uint32_t destination_apic_id, bool active_low);
void mask(uint64_t base, uint32_t pin);
uint32_t pin_count(uint64_t base);

}  // namespace guest::ioapic
