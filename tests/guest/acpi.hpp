// ACPI tables (ACPI 6.5 chapter 5): RSDP, XSDT/RSDT, FADT, MADT, DSDT \_S5.
#pragma once

#include <stdint.h>

#include "bootinfo.hpp"
#include "layout.h"

namespace guest {

// Generic Address Structure (ACPI 6.5, 5.2.3.2).
struct GenericAddress {
    uint8_t space = 0;  // 0 SystemMemory, 1 SystemIO
    uint8_t bit_width = 0;
    uint64_t address = 0;
};
constexpr uint8_t kAddressSpaceMemory = 0;
constexpr uint8_t kAddressSpaceIo = 1;

struct AcpiInfo {
    uint64_t rsdp = 0;
    uint64_t fadt = 0;
    uint64_t madt = 0;
    uint64_t dsdt = 0;
    // FADT
    bool hardware_reduced = false;
    GenericAddress sleep_control;
    bool reset_supported = false;  // FADT flag RESET_REG_SUP
    GenericAddress reset_register;
    uint8_t reset_value = 0;
    uint32_t pm1a_control = 0;
    uint32_t pm1b_control = 0;
    uint32_t smi_command = 0;
    uint8_t acpi_enable = 0;
    // DSDT \_S5
    bool have_s5 = false;
    uint8_t s5_sleep_type = 0;
    // MADT
    uint64_t lapic_address = LAPIC_BASE;
    uint32_t enabled_cpus = 0;
    uint32_t apic_ids[MAX_CPUS] = {};  // enabled ones, in MADT order (first MAX_CPUS)
    bool have_ioapic = false;
    uint64_t ioapic_address = 0;
    uint32_t ioapic_gsi_base = 0;
    uint32_t uart_gsi = 4;  // ISA IRQ 4 unless an interrupt source override says otherwise
};

// Set by acpi_scan; read by the power-off path (also from the CPL0 exception handler).
extern AcpiInfo acpi_info;

// Finds and checks the tables, printing them; emits the acpi_* checks.
void acpi_scan(const BootInfo& boot);

}  // namespace guest
