// GDT TSS descriptors, TSS, IDT and the drop to CPL3 (Intel SDM vol. 3A, chapters 6 and 7).
#include "cpu.hpp"

#include "base.hpp"
#include "portio.hpp"
#include "power.hpp"
#include "print.hpp"

extern "C" {
extern uint8_t gdt[];
extern const uint8_t exception_stubs[];
extern const uint8_t irq_virtio_stubs[];
void io_trap();
void irq_timer();
void irq_uart();
void irq_spurious();
[[noreturn]] void enter_user(void (*rip)(uint64_t, uint64_t), uint64_t rsp, uint64_t arg0, uint64_t arg1);

volatile uint64_t ap_boot_kernel_stack;
volatile uint32_t ap_boot_cpu;
}

namespace guest {
namespace {

struct [[gnu::packed]] TaskState {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t io_map_base;
};
static_assert(sizeof(TaskState) == 104);

struct [[gnu::packed]] IdtGate {
    uint16_t offset_low;
    uint16_t selector;
    uint8_t ist;
    uint8_t type_attributes;
    uint16_t offset_middle;
    uint32_t offset_high;
    uint32_t reserved;
};
static_assert(sizeof(IdtGate) == 16);

struct [[gnu::packed]] TablePointer {
    uint16_t limit;
    uint64_t base;
};

constexpr uint8_t kInterruptGateKernel = 0x8e;  // present, DPL0, 64-bit interrupt gate
constexpr uint8_t kInterruptGateUser = 0xee;    // present, DPL3: reachable by int3 from CPL3
constexpr uint8_t kTssAvailable = 0x89;         // present, 64-bit TSS (available)
constexpr int kExceptionStubSize = 16;
constexpr int kExceptionVectors = 32;

// Zero-initialised and never cleared by user_main (filled before .bss is cleared).
[[gnu::section(".bss.noclear.idt")]] alignas(16) IdtGate idt[256];
[[gnu::section(".bss.noclear.tss")]] alignas(16) TaskState tss[MAX_CPUS];
[[gnu::section(".bss.noclear.ap_stacks")]] alignas(16) uint8_t ap_kernel_stacks[MAX_CPUS][AP_KERNEL_STACK_SIZE];
[[gnu::section(".bss.noclear.bsp_user_stack")]] alignas(16) uint8_t bsp_user_stack[BSP_USER_STACK_SIZE];
[[gnu::section(".bss.noclear.ap_user_stacks")]] alignas(16) uint8_t ap_user_stacks[MAX_CPUS][AP_USER_STACK_SIZE];

extern "C" uint8_t bsp_kernel_stack_top[];

void set_gate(uint8_t vector, const void* handler, uint8_t type_attributes) {
    auto address = reinterpret_cast<uint64_t>(handler);
    IdtGate& gate = idt[vector];
    gate.offset_low = static_cast<uint16_t>(address);
    gate.selector = GDT_CODE64;
    gate.ist = 0;
    gate.type_attributes = type_attributes;
    gate.offset_middle = static_cast<uint16_t>(address >> 16);
    gate.offset_high = static_cast<uint32_t>(address >> 32);
}

void build_idt() {
    for (int vector = 0; vector < kExceptionVectors; ++vector) {
        set_gate(static_cast<uint8_t>(vector), exception_stubs + vector * kExceptionStubSize, kInterruptGateKernel);
    }
    set_gate(VECTOR_IO_TRAP, reinterpret_cast<const void*>(io_trap), kInterruptGateUser);
    set_gate(VECTOR_TIMER, reinterpret_cast<const void*>(irq_timer), kInterruptGateKernel);
    set_gate(VECTOR_UART, reinterpret_cast<const void*>(irq_uart), kInterruptGateKernel);
    for (int n = 0; n < VIRTIO_VECTOR_COUNT; ++n) {
        set_gate(static_cast<uint8_t>(VECTOR_VIRTIO_FIRST + n), irq_virtio_stubs + n * VIRTIO_STUB_SIZE,
                 kInterruptGateKernel);
    }
    set_gate(VECTOR_SPURIOUS, reinterpret_cast<const void*>(irq_spurious), kInterruptGateKernel);
}

void load_idt() {
    TablePointer pointer{sizeof(idt) - 1, reinterpret_cast<uint64_t>(idt)};
    asm volatile("lidt %0" ::"m"(pointer));
}

// Writes this CPU's 16-byte TSS descriptor into the GDT and loads TR.
void load_task_register(uint32_t cpu, uint64_t kernel_stack_top) {
    TaskState& task = tss[cpu];
    task.rsp[0] = kernel_stack_top;
    task.io_map_base = sizeof(TaskState);  // no I/O permission bitmap
    auto base = reinterpret_cast<uint64_t>(&task);
    uint64_t limit = sizeof(TaskState) - 1;
    uint64_t low = (limit & 0xffff) | ((base & 0xffffff) << 16) | (uint64_t{kTssAvailable} << 40) |
                   (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    uint16_t selector = static_cast<uint16_t>(GDT_TSS_FIRST + 16 * cpu);
    auto* descriptor = reinterpret_cast<volatile uint64_t*>(gdt + selector);
    descriptor[0] = low;
    descriptor[1] = base >> 32;
    asm volatile("ltr %0" ::"r"(selector));
}

// The 8259 PICs may still route the PIT (at vectors the firmware chose) through LINT0: mask both
// PICs and LINT0 before interrupts are enabled at CPL3.
void mask_legacy_interrupts() {
    constexpr uint16_t kPicMasterData = 0x21;
    constexpr uint16_t kPicSlaveData = 0xa1;
    constexpr uint64_t kLapicLvtLint0 = LAPIC_BASE + 0x350;
    constexpr uint32_t kLvtMasked = 1u << 16;
    outb(kPicMasterData, 0xff);
    outb(kPicSlaveData, 0xff);
    write32(kLapicLvtLint0, kLvtMasked);
}

}  // namespace

uint64_t ap_kernel_stack_top(uint32_t cpu) { return reinterpret_cast<uint64_t>(ap_kernel_stacks[cpu + 1]); }

}  // namespace guest

using namespace guest;

extern "C" [[noreturn]] void kernel_entry(uint64_t entry_kind, uint64_t boot_info) {
    if (entry_kind == ENTRY_AP) {
        uint32_t cpu = ap_boot_cpu;
        load_idt();
        load_task_register(cpu, ap_kernel_stack_top(cpu));
        enter_user(ap_user_main, reinterpret_cast<uint64_t>(ap_user_stacks[cpu + 1]) - 8, cpu, 0);
    }
    build_idt();
    load_idt();
    load_task_register(0, reinterpret_cast<uint64_t>(bsp_kernel_stack_top));
    mask_legacy_interrupts();
    enter_user(user_main, reinterpret_cast<uint64_t>(bsp_user_stack + sizeof(bsp_user_stack)) - 8, entry_kind,
               boot_info);
}

extern "C" [[noreturn]] void exception_handler(ExceptionFrame* frame) {
    print("ember-test-guest: EXCEPTION vector=%lu rip=%lx err=%lx cs=%lx rsp=%lx\n", frame->vector, frame->rip,
          frame->error_code, frame->cs, frame->rsp);
    uint64_t cr2;
    asm volatile("mov %%cr2, %0" : "=r"(cr2));
    if (frame->vector == 14) print("ember-test-guest: page fault address=%lx\n", cr2);
    power_off_after_failure();
}
