#include "smp.hpp"

#include "acpi.hpp"
#include "apic.hpp"
#include "checks.hpp"
#include "cpu.hpp"
#include "portio.hpp"
#include "print.hpp"
#include "timing.hpp"

extern "C" {
extern const uint8_t ap_trampoline_start[];
extern const uint8_t ap_trampoline_end[];
}

namespace guest {
namespace {

constexpr uint64_t kInitDelayUs = 10000;     // after INIT (SDM 9.4.4.1)
constexpr uint64_t kStartupDelayUs = 200;    // between the two SIPIs
constexpr uint64_t kReportTimeoutMs = 2000;  // per AP
constexpr uint64_t kTrampolinePageSize = 4096;

// Index = cpu number, value = APIC id + 1 once that CPU has reached CPL3.
volatile uint32_t reported_apic_ids[MAX_CPUS];

// run_on_ap(): what an AP does after reporting in, before it parks.
struct ApSlot {
    ApWork work;
    void* argument;
    uint32_t done;
};
ApSlot ap_slots[MAX_CPUS];
uint32_t started_apic_ids[MAX_CPUS];  // APIC id + 1 of each AP started, for starting it again

bool wait_for_report(uint32_t cpu) {
    Deadline deadline(kReportTimeoutMs);
    while (!deadline.expired()) {
        if (__atomic_load_n(&reported_apic_ids[cpu], __ATOMIC_ACQUIRE) != 0) return true;
        cpu_relax();
    }
    return false;
}

bool start_one(uint32_t cpu, uint32_t apic_id) {
    ap_boot_cpu = cpu;
    ap_boot_kernel_stack = ap_kernel_stack_top(cpu);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint32_t startup = lapic::kIcrStartup | (TRAMPOLINE_BASE >> 12);
    if (!lapic::send_ipi(apic_id, lapic::kIcrInit)) return false;
    delay_us(kInitDelayUs);
    if (!lapic::send_ipi(apic_id, startup)) return false;
    delay_us(kStartupDelayUs);
    if (__atomic_load_n(&reported_apic_ids[cpu], __ATOMIC_ACQUIRE) == 0) lapic::send_ipi(apic_id, startup);
    return wait_for_report(cpu);
}

}  // namespace

uint32_t start_application_processors(const BootInfo& boot, uint32_t bsp_apic_id) {
    uint64_t start_tsc = read_tsc();
    auto trampoline_size = static_cast<size_t>(ap_trampoline_end - ap_trampoline_start);
    if (!e820_is_ram(boot, TRAMPOLINE_BASE, kTrampolinePageSize)) {
        check_fail("smp", "trampoline page %x is not RAM in the e820 map", TRAMPOLINE_BASE);
        return 1;
    }
    memcpy(reinterpret_cast<void*>(TRAMPOLINE_BASE), ap_trampoline_start, trampoline_size);

    uint32_t online = 1;
    uint32_t next_cpu = 1;
    uint32_t listed = acpi_info.enabled_cpus < MAX_CPUS ? acpi_info.enabled_cpus : MAX_CPUS;
    bool all_ok = true;
    for (uint32_t i = 0; i < listed; ++i) {
        uint32_t apic_id = acpi_info.apic_ids[i];
        if (apic_id == bsp_apic_id) continue;
        uint32_t cpu = next_cpu++;
        if (!start_one(cpu, apic_id)) {
            check_fail("smp", "cpu %u (apic id %u) did not report in", cpu, apic_id);
            all_ok = false;
            continue;
        }
        uint32_t reported = reported_apic_ids[cpu] - 1;
        started_apic_ids[cpu] = apic_id + 1;
        print("ember-test-guest: cpu %u online apic_id=%u\n", cpu, reported);
        if (reported != apic_id) {
            check_fail("smp", "cpu %u reported apic id %u, MADT says %u", cpu, reported, apic_id);
            all_ok = false;
            continue;
        }
        ++online;
    }
    if (all_ok) check_ok("smp", "cpus=%u time_us=%lu", online, elapsed_us(start_tsc));
    return online;
}

bool run_on_ap(uint32_t cpu, ApWork work, void* argument) {
    if (cpu == 0 || cpu >= MAX_CPUS || started_apic_ids[cpu] == 0) return false;
    ap_slots[cpu].argument = argument;
    __atomic_store_n(&ap_slots[cpu].done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&ap_slots[cpu].work, work, __ATOMIC_RELEASE);
    __atomic_store_n(&reported_apic_ids[cpu], 0, __ATOMIC_RELEASE);
    if (start_one(cpu, started_apic_ids[cpu] - 1)) return true;
    __atomic_store_n(&ap_slots[cpu].work, static_cast<ApWork>(nullptr), __ATOMIC_RELEASE);
    return false;
}

bool ap_work_done(uint32_t cpu) { return cpu < MAX_CPUS && __atomic_load_n(&ap_slots[cpu].done, __ATOMIC_ACQUIRE) != 0; }

}  // namespace guest

// An AP at CPL3: report the APIC id the LAPIC gives, then the work run_on_ap() left it, if any, then stop.
extern "C" [[noreturn]] void ap_user_main(uint64_t cpu, uint64_t) {
    uint32_t apic_id = guest::lapic::id();
    __atomic_store_n(&guest::reported_apic_ids[cpu], apic_id + 1, __ATOMIC_RELEASE);
    guest::ApSlot& slot = guest::ap_slots[cpu];
    if (guest::ApWork work = __atomic_load_n(&slot.work, __ATOMIC_ACQUIRE)) {
        work(slot.argument);
        __atomic_store_n(&slot.work, static_cast<guest::ApWork>(nullptr), __ATOMIC_RELEASE);
        __atomic_store_n(&slot.done, 1, __ATOMIC_RELEASE);
    }
    guest::park_cpu();
}
