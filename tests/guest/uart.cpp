#include "uart.hpp"

#include "layout.h"
#include "portio.hpp"

extern "C" {
volatile uint64_t uart_irqs;
volatile uint8_t uart_last_iir;
volatile uint64_t uart_rx_head;
volatile uint8_t uart_rx_ring[UART_RX_RING_SIZE];
}

namespace guest::uart {
namespace {

constexpr uint8_t kLcrDivisorLatch = 0x80;
constexpr uint8_t kLcr8N1 = 0x03;
constexpr uint8_t kFcrEnableAndClear = 0x07;
constexpr uint8_t kMcrDtrRtsOut2 = 0x0b;
constexpr uint8_t kDivisor115200 = 1;
constexpr int kTransmitWaitLimit = 100000;

void write_register(uint16_t offset, uint8_t value) { outb(static_cast<uint16_t>(COM1_BASE + offset), value); }
uint8_t read_register(uint16_t offset) { return inb(static_cast<uint16_t>(COM1_BASE + offset)); }

}  // namespace

void init() {
    write_register(kInterruptEnable, 0);
    write_register(kLineControl, kLcrDivisorLatch);
    write_register(kTransmit, kDivisor115200);
    write_register(kInterruptEnable, 0);
    write_register(kLineControl, kLcr8N1);
    write_register(kInterruptId, kFcrEnableAndClear);
    write_register(kModemControl, kMcrDtrRtsOut2);
}

void put_char(char c) {
    for (int i = 0; i < kTransmitWaitLimit; ++i) {
        if (read_register(kLineStatus) & kLsrTransmitterEmpty) break;
    }
    write_register(kTransmit, static_cast<uint8_t>(c));
}

void write(const char* text, size_t size) {
    for (size_t i = 0; i < size; ++i) {
        if (text[i] == '\n') put_char('\r');
        put_char(text[i]);
    }
}

void set_interrupts(uint8_t ier_bits) { write_register(kInterruptEnable, ier_bits); }

}  // namespace guest::uart
