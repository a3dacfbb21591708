// The BSP's checks, run at CPL3 (native speed on the development hosts), in order:
// boot info, ACPI, memory, LAPIC timer, UART interrupt, SMP, optional UART input, optional virtio
// devices (test.virtio=pci|mmio, virtio_checks.hpp); then RESULT and
// ACPI power-off (or pvpanic with test.panic=1). With test.init_stub=1 it plays ember-init for
// `ember run` instead (init_stub.hpp).
#include "acpi.hpp"
#include "apic.hpp"
#include "base.hpp"
#include "bootinfo.hpp"
#include "checks.hpp"
#include "cmdline.hpp"
#include "cpu.hpp"
#include "init_stub.hpp"
#include "portio.hpp"
#include "power.hpp"
#include "print.hpp"
#include "smp.hpp"
#include "timing.hpp"
#include "uart.hpp"
#include "virtio_checks.hpp"

extern "C" {
extern uint8_t __bss_start[];
extern uint8_t __bss_end[];
}

namespace guest {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint32_t kTimerInitialCount = 62500;  // 1 ms with a 1 GHz APIC bus (KVM) and divide-by-16
constexpr uint64_t kTimerTicksWanted = 5;
constexpr uint64_t kTimerTimeoutMs = 2000;
constexpr uint64_t kUartIrqTimeoutMs = 1000;
constexpr uint64_t kUartInputTimeoutMs = 20000;
constexpr size_t kInputLineMax = 128;

constinit BootInfo boot;

void print_boot_info() {
    print("ember-test-guest: cmdline: %s\n", boot.cmdline);
    for (uint32_t i = 0; i < boot.e820_count; ++i) {
        const E820Entry& entry = boot.e820[i];
        print("ember-test-guest: e820 %016lx-%016lx type %u\n", entry.address, entry.address + entry.size - 1,
              entry.type);
    }
    if (!boot.valid) {
        check_fail("boot_info", "%s", boot.error);
    } else if (boot.e820_count == 0) {
        check_fail("boot_info", "no e820 map");
    } else {
        check_ok("boot_info", "e820_entries=%u rsdp_hint=%lx", boot.e820_count, boot.rsdp_hint);
    }
}

void check_memory() {
    uint64_t expected_mib;
    uint64_t ram = e820_ram_bytes(boot);
    if (!cmdline_number(boot.cmdline, "expect.mem_mib", expected_mib)) {
        print("ember-test-guest: e820 RAM %lu KiB (no expect.mem_mib)\n", ram / 1024);
        return;
    }
    if (ram > (expected_mib - 1) * kMiB && ram <= expected_mib * kMiB) {
        check_ok("memory", "ram_kib=%lu expected_mib=%lu", ram / 1024, expected_mib);
    } else {
        check_fail("memory", "ram_kib=%lu expected_mib=%lu", ram / 1024, expected_mib);
    }
}

void check_madt_cpus() {
    uint64_t expected;
    if (!cmdline_number(boot.cmdline, "expect.cpus", expected)) return;
    if (acpi_info.enabled_cpus == expected) {
        check_ok("madt_cpus", "count=%u", acpi_info.enabled_cpus);
    } else {
        check_fail("madt_cpus", "MADT lists %u enabled CPUs, expected %lu", acpi_info.enabled_cpus, expected);
    }
}

void check_timer() {
    uint64_t start_ticks = timer_ticks;
    uint64_t start_tsc = read_tsc();
    lapic::start_periodic_timer(VECTOR_TIMER, kTimerInitialCount);
    Deadline deadline(kTimerTimeoutMs);
    while (timer_ticks - start_ticks < kTimerTicksWanted && !deadline.expired()) cpu_relax();
    lapic::stop_timer();
    uint64_t ticks = timer_ticks - start_ticks;
    uint64_t time_us = elapsed_us(start_tsc);
    if (ticks >= kTimerTicksWanted) {
        check_ok("timer", "ticks=%lu time_us=%lu", ticks, time_us);
    } else {
        check_fail("timer", "ticks=%lu after %lu us", ticks, time_us);
    }
}

// Routes COM1's IRQ through the IOAPIC to this CPU; false (with a FAIL) if the MADT gives no way to.
bool route_uart_irq(uint32_t bsp_apic_id, const char* check_name) {
    if (!acpi_info.have_ioapic) {
        check_fail(check_name, "no IOAPIC in the MADT");
        return false;
    }
    uint32_t pin = acpi_info.uart_gsi - acpi_info.ioapic_gsi_base;
    uint32_t pins = ioapic::pin_count(acpi_info.ioapic_address);
    if (acpi_info.uart_gsi < acpi_info.ioapic_gsi_base || pin >= pins) {
        check_fail(check_name, "GSI %u is not on the IOAPIC (%u pins)", acpi_info.uart_gsi, pins);
        return false;
    }
    ioapic::route_edge(acpi_info.ioapic_address, pin, VECTOR_UART, bsp_apic_id);
    return true;
}

void check_uart_irq(uint32_t bsp_apic_id) {
    if (!route_uart_irq(bsp_apic_id, "uart_irq")) return;
    uint64_t before = uart_irqs;
    uint64_t start_tsc = read_tsc();
    uart::set_interrupts(uart::kIerTransmitterEmpty);
    Deadline deadline(kUartIrqTimeoutMs);
    while (uart_irqs == before && !deadline.expired()) cpu_relax();
    uart::set_interrupts(0);
    uint64_t time_us = elapsed_us(start_tsc);
    if (uart_irqs != before) {
        check_ok("uart_irq", "irqs=%lu iir=%x time_us=%lu", uart_irqs - before, uart_last_iir, time_us);
    } else {
        check_fail("uart_irq", "no THRE interrupt in %lu us", time_us);
    }
}

// Reads one line from the RX ring the UART interrupt fills, from position `tail` on; false on timeout.
bool read_input_line(uint64_t tail, char* line, size_t capacity) {
    size_t length = 0;
    Deadline deadline(kUartInputTimeoutMs);
    while (!deadline.expired()) {
        if (tail == uart_rx_head) {
            cpu_relax();
            continue;
        }
        char c = static_cast<char>(uart_rx_ring[tail++ % UART_RX_RING_SIZE]);
        if (c == '\r' || c == '\n') {
            if (length == 0) continue;
            line[length] = '\0';
            return true;
        }
        if (length + 1 < capacity) line[length++] = c;
    }
    line[length] = '\0';
    return false;
}

void check_uart_input(uint32_t bsp_apic_id) {
    if (!route_uart_irq(bsp_apic_id, "uart_rx")) return;
    print("ember-test-guest: ready-for-input\n");
    uint64_t tail = uart_rx_head;  // before enabling: bytes may arrive at once
    uart::set_interrupts(uart::kIerReceivedData);
    char line[kInputLineMax];
    bool got_line = read_input_line(tail, line, sizeof(line));
    uart::set_interrupts(0);
    if (got_line) {
        print("ember-test-guest: got-input %s\n", line);
        check_ok("uart_rx", "irqs=%lu", uart_irqs);
    } else {
        check_fail("uart_rx", "no input line within %lu ms (partial: '%s')", kUartInputTimeoutMs, line);
    }
}

void check_smp(uint32_t bsp_apic_id) {
    uint32_t online = start_application_processors(boot, bsp_apic_id);
    uint64_t expected;
    if (cmdline_number(boot.cmdline, "expect.cpus", expected) && online != expected) {
        check_fail("cpus_online", "%u CPUs reported in, expected %lu", online, expected);
    }
}

[[noreturn]] void finish() {
    print("ember-test-guest: RESULT pass=%u fail=%u\n", checks_passed(), checks_failed());
    if (cmdline_flag(boot.cmdline, "test.panic")) report_panic();
    Str method;
    if (cmdline_value(boot.cmdline, "test.reset", method)) {
        reset_machine(method.size > 0 && method.data[0] == 'a' ? "acpi" : "i8042");
    }
    power_off();
}

}  // namespace
}  // namespace guest

using namespace guest;

extern "C" [[noreturn]] void user_main(uint64_t entry_kind, uint64_t boot_info) {
    memset(__bss_start, 0, static_cast<size_t>(__bss_end - __bss_start));
    uint64_t start_tsc = read_tsc();
    uart::init();
    timing_init();
    print("\nember-test-guest: entry=%s\n", entry_kind_name(entry_kind));
    read_boot_info(entry_kind, boot_info, boot);
    print_boot_info();
    Str token;
    if (cmdline_value(boot.cmdline, "expect.cmdline_token", token)) {
        print("ember-test-guest: cmdline_token %.*s\n", static_cast<int>(token.size), token.data);
    }
    print("ember-test-guest: tsc_khz=%lu (%s)\n", tsc_khz(), tsc_source());

    lapic::enable();
    uint32_t bsp_apic_id = lapic::id();
    acpi_scan(boot);
    // test.init_stub=1: ember-init's side of `ember run` instead of the checks (init_stub.hpp).
    if (cmdline_flag(boot.cmdline, "test.init_stub")) run_init_stub(boot, bsp_apic_id);
    check_madt_cpus();
    check_memory();
    check_timer();
    check_uart_irq(bsp_apic_id);
    check_smp(bsp_apic_id);
    if (cmdline_flag(boot.cmdline, "test.uart_rx")) check_uart_input(bsp_apic_id);
    if (cmdline_flag(boot.cmdline, "test.cpl0_popcnt")) {
        print("ember-test-guest: running popcnt at CPL0\n");
        uint32_t bits = cpl0_popcount(0xf0f0);
        if (bits == 8) check_ok("cpl0_popcnt", "value=%u", bits);
        else check_fail("cpl0_popcnt", "popcnt(0xf0f0) gave %u", bits);
    }
    run_virtio_checks(boot, bsp_apic_id);
    print("ember-test-guest: checks took %lu us\n", elapsed_us(start_tsc));
    finish();
}
