#include "portio.hpp"

#include "base.hpp"

namespace guest {
namespace {

uint32_t io_trap(uint64_t operation, uint16_t port, uint32_t value) {
    uint64_t result;
    uint64_t data = value;
    asm volatile("int3" : "=a"(result), "+d"(data) : "D"(operation), "S"(uint64_t{port}) : "memory");
    return static_cast<uint32_t>(result);
}

bool privileged() { return current_cpl() == 0; }

}  // namespace

uint32_t cpl0_popcount(uint32_t value) { return io_trap(IO_OP_CPL0_POPCNT, 0, value); }

void flush_tlb() {
    if (!privileged()) {
        io_trap(IO_OP_FLUSH_TLB, 0, 0);
        return;
    }
    uint64_t cr3;
    asm volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3)::"memory");
}

uint8_t inb(uint16_t port) {
    if (!privileged()) return static_cast<uint8_t>(io_trap(IO_OP_INB, port, 0));
    uint8_t value;
    asm volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

uint16_t inw(uint16_t port) {
    if (!privileged()) return static_cast<uint16_t>(io_trap(IO_OP_INW, port, 0));
    uint16_t value;
    asm volatile("inw %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

uint32_t inl(uint16_t port) {
    if (!privileged()) return io_trap(IO_OP_INL, port, 0);
    uint32_t value;
    asm volatile("inl %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

void outb(uint16_t port, uint8_t value) {
    if (!privileged()) {
        io_trap(IO_OP_OUTB, port, value);
        return;
    }
    asm volatile("outb %0, %1" ::"a"(value), "Nd"(port));
}

void outw(uint16_t port, uint16_t value) {
    if (!privileged()) {
        io_trap(IO_OP_OUTW, port, value);
        return;
    }
    asm volatile("outw %0, %1" ::"a"(value), "Nd"(port));
}

void outl(uint16_t port, uint32_t value) {
    if (!privileged()) {
        io_trap(IO_OP_OUTL, port, value);
        return;
    }
    asm volatile("outl %0, %1" ::"a"(value), "Nd"(port));
}

[[noreturn]] void park_cpu() {
    if (!privileged()) io_trap(IO_OP_PARK, 0, 0);
    for (;;) asm volatile("cli; hlt");
}

}  // namespace guest
