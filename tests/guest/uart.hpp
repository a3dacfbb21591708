// COM1, a 16550 at I/O port 0x3f8 (register layout: National Semiconductor PC16550D datasheet).
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace guest::uart {

// Register offsets from COM1_BASE.
constexpr uint16_t kTransmit = 0;          // THR (write), RBR (read), DLL with DLAB
constexpr uint16_t kInterruptEnable = 1;   // IER, DLM with DLAB
constexpr uint16_t kInterruptId = 2;       // IIR (read), FCR (write)
constexpr uint16_t kLineControl = 3;       // LCR
constexpr uint16_t kModemControl = 4;      // MCR
constexpr uint16_t kLineStatus = 5;        // LSR

constexpr uint8_t kIerReceivedData = 0x01;     // IER bit 0: received data available
constexpr uint8_t kIerTransmitterEmpty = 0x02; // IER bit 1: THR empty
constexpr uint8_t kLsrTransmitterEmpty = 0x20; // LSR bit 5: THR empty

// 115200 8N1, FIFOs on, MCR = DTR | RTS | OUT2 (OUT2 gates the IRQ line on PCs), no interrupts.
void init();
void put_char(char c);
void write(const char* text, size_t size);
void set_interrupts(uint8_t ier_bits);

}  // namespace guest::uart

// Written by irq_uart (traps.S).
extern "C" {
extern volatile uint64_t uart_irqs;
extern volatile uint8_t uart_last_iir;
extern volatile uint64_t uart_rx_head;
extern volatile uint8_t uart_rx_ring[];
}
