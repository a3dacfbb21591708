// Port I/O. At CPL0 it is done directly; at CPL3 (where the development hosts never grant I/O
// privilege) it traps with int3 into io_trap (traps.S), operation in registers.
#pragma once

#include <stdint.h>

#include "layout.h"

namespace guest {

uint8_t inb(uint16_t port);
uint16_t inw(uint16_t port);
uint32_t inl(uint16_t port);
void outb(uint16_t port, uint8_t value);
void outw(uint16_t port, uint16_t value);
void outl(uint16_t port, uint32_t value);

// Runs popcnt on value at CPL0 (through the trap); an emulating KVM ends the VM there instead.
uint32_t cpl0_popcount(uint32_t value);

// Reloads CR3 at CPL0 (through the trap) after CPL3 code changed the page tables.
void flush_tlb();

// Stops the calling CPU for good (cli; hlt at CPL0).
[[noreturn]] void park_cpu();

}  // namespace guest
