#include "power.hpp"

#include "acpi.hpp"
#include "base.hpp"
#include "portio.hpp"
#include "print.hpp"
#include "timing.hpp"

namespace guest {
namespace {

constexpr uint8_t kSleepControlTypeShift = 2;  // SLEEP_CONTROL_REG SLP_TYPx, bits 4:2 (4.8.3.7)
constexpr uint8_t kSleepControlEnable = 1u << 5;
constexpr uint16_t kPm1SleepTypeShift = 10;  // PM1 control SLP_TYPx, bits 12:10 (4.8.3.2.1)
constexpr uint16_t kPm1SleepTypeMask = 7u << 10;
constexpr uint16_t kPm1SleepEnable = 1u << 13;
constexpr uint16_t kPm1SciEnable = 1u << 0;
constexpr uint64_t kAcpiEnableTimeoutMs = 1000;
constexpr uint64_t kPowerOffWaitUs = 500000;
constexpr uint16_t kI8042Command = 0x64;       // i8042 status (read) / command (write) port
constexpr uint8_t kI8042InputFull = 1u << 1;    // status: controller has not taken the last byte
constexpr uint8_t kI8042PulseReset = 0xfe;      // command: pulse output line 0 (CPU reset)
constexpr uint16_t kPvpanicPort = 0x505;
constexpr uint8_t kPvpanicPanicked = 1;

void sleep_control_write(const GenericAddress& reg, uint8_t value) {
    if (reg.space == kAddressSpaceIo) {
        outb(static_cast<uint16_t>(reg.address), value);
    } else if (reg.space == kAddressSpaceMemory) {
        write8(reg.address, value);
    }
}

// Legacy (non hardware-reduced) platforms start in legacy mode: ask the firmware for ACPI mode.
void enable_acpi_mode() {
    auto pm1a = static_cast<uint16_t>(acpi_info.pm1a_control);
    if ((inw(pm1a) & kPm1SciEnable) || acpi_info.smi_command == 0 || acpi_info.acpi_enable == 0) return;
    outb(static_cast<uint16_t>(acpi_info.smi_command), acpi_info.acpi_enable);
    Deadline deadline(kAcpiEnableTimeoutMs);
    while (!(inw(pm1a) & kPm1SciEnable) && !deadline.expired()) cpu_relax();
}

void pm1_write_sleep(uint32_t port, uint8_t sleep_type) {
    if (port == 0) return;
    auto pm1 = static_cast<uint16_t>(port);
    uint16_t value = static_cast<uint16_t>(inw(pm1) & ~(kPm1SleepTypeMask | kPm1SleepEnable));
    value = static_cast<uint16_t>(value | ((sleep_type & 7u) << kPm1SleepTypeShift) | kPm1SleepEnable);
    outw(pm1, value);
}

void try_s5() {
    if (acpi_info.fadt == 0 || !acpi_info.have_s5) return;
    uint8_t sleep_type = acpi_info.s5_sleep_type & 7u;
    if (acpi_info.hardware_reduced) {
        sleep_control_write(acpi_info.sleep_control,
                            static_cast<uint8_t>((sleep_type << kSleepControlTypeShift) | kSleepControlEnable));
        return;
    }
    if (acpi_info.pm1a_control == 0) return;
    enable_acpi_mode();
    pm1_write_sleep(acpi_info.pm1a_control, sleep_type);
    pm1_write_sleep(acpi_info.pm1b_control, sleep_type);
}

}  // namespace

[[noreturn]] void power_off() {
    try_s5();
    delay_us(kPowerOffWaitUs);
    print("ember-test-guest: poweroff failed\n");
    park_cpu();
}

[[noreturn]] void power_off_after_failure() { power_off(); }

[[noreturn]] void reset_machine(const char* method) {
    if (method[0] == 'a') {  // "acpi"
        if (!acpi_info.reset_supported) {
            print("ember-test-guest: no FADT reset register\n");
        } else if (acpi_info.reset_register.space == kAddressSpaceIo) {
            outb(static_cast<uint16_t>(acpi_info.reset_register.address), acpi_info.reset_value);
        } else if (acpi_info.reset_register.space == kAddressSpaceMemory) {
            write8(acpi_info.reset_register.address, acpi_info.reset_value);
        }
    } else {
        Deadline deadline(kAcpiEnableTimeoutMs);
        while ((inb(kI8042Command) & kI8042InputFull) && !deadline.expired()) cpu_relax();
        outb(kI8042Command, kI8042PulseReset);
    }
    delay_us(kPowerOffWaitUs);
    print("ember-test-guest: reset failed\n");
    park_cpu();
}

[[noreturn]] void report_panic() {
    outb(kPvpanicPort, kPvpanicPanicked);
    print("ember-test-guest: pvpanic written, halting\n");
    park_cpu();
}

}  // namespace guest
