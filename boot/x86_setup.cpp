#include "boot/x86_setup.hpp"

#include <array>

#include "boot/layout.hpp"
#include "boot/little_endian.hpp"

namespace ember::boot {
namespace {

constexpr uint64_t kTwoMiB = 2 << 20;
constexpr uint64_t kPageTableSize = 4096;
constexpr uint64_t kEntriesPerTable = 512;
constexpr uint64_t kPageDirectoryCount = 4;  // Each maps 1 GiB.

// Segment types (SDM vol. 3, 3.4.5.1), with the accessed bit set so the CPU never writes the GDT.
constexpr uint8_t kTypeCodeReadAccessed = 0xb;
constexpr uint8_t kTypeDataWriteAccessed = 0x3;
constexpr uint8_t kTypeTss64Busy = 0xb;
constexpr uint8_t kTypeLdt = 0x2;

// One flat segment, described once and turned into both a GDT descriptor and a kvm_segment so the
// two always agree.
struct FlatSegment {
  uint16_t selector;
  uint8_t type;
  bool long_mode;   // L
  bool default_32;  // D/B
};

constexpr std::array<FlatSegment, 4> kBootSegments{{
    {kCode64Selector, kTypeCodeReadAccessed, true, false},
    {kDataSelector, kTypeDataWriteAccessed, false, true},
    {kCode32Selector, kTypeCodeReadAccessed, false, true},
    {kData32Selector, kTypeDataWriteAccessed, false, true},
}};

// Base 0, limit 0xfffff in 4 KiB units, present, DPL 0, code/data (S=1).
constexpr uint64_t descriptor(const FlatSegment& segment) {
  return uint64_t{0xffff}                                    // limit 15:0
         | uint64_t{segment.type} << 40 | uint64_t{1} << 44  // S
         | uint64_t{1} << 47                                 // P
         | uint64_t{0xf} << 48                               // limit 19:16
         | uint64_t{segment.long_mode} << 53 | uint64_t{segment.default_32} << 54 |
         uint64_t{1} << 55;  // G
}
static_assert(descriptor(kBootSegments[0]) == 0x00af9b000000ffff);
static_assert(descriptor(kBootSegments[1]) == 0x00cf93000000ffff);
static_assert(descriptor(kBootSegments[2]) == 0x00cf9b000000ffff);

kvm_segment kvm_flat_segment(const FlatSegment& segment) {
  kvm_segment result{};
  result.base = 0;
  result.limit = 0xffffffff;
  result.selector = segment.selector;
  result.type = segment.type;
  result.present = 1;
  result.dpl = 0;
  result.db = segment.default_32;
  result.s = 1;
  result.l = segment.long_mode;
  result.g = 1;
  result.avl = 0;
  result.unusable = 0;
  return result;
}

// The GDT's first two entries are null, so selector 0x10 is kBootSegments[0].
constexpr const FlatSegment& boot_segment(uint16_t selector) {
  return kBootSegments[selector / 8 - 2];
}
static_assert(boot_segment(kCode64Selector).selector == kCode64Selector);
static_assert(boot_segment(kDataSelector).selector == kDataSelector);
static_assert(boot_segment(kCode32Selector).selector == kCode32Selector);
static_assert(boot_segment(kData32Selector).selector == kData32Selector);
static_assert(kBootSegments.size() + 2 == kBootGdtEntries);

// Long mode and VMX need a usable TR; ember has no TSS, so it is an empty busy one at 0.
void set_system_segments(kvm_sregs& sregs) {
  sregs.tr = kvm_segment{};
  sregs.tr.limit = 0xffff;
  sregs.tr.type = kTypeTss64Busy;
  sregs.tr.present = 1;
  sregs.ldt = kvm_segment{};
  sregs.ldt.limit = 0xffff;
  sregs.ldt.type = kTypeLdt;
  sregs.ldt.present = 1;
  sregs.gdt.base = layout::kBootGdt;
  sregs.gdt.limit = kBootGdtEntries * 8 - 1;
  sregs.idt.base = 0;
  sregs.idt.limit = 0;  // Interrupts stay off until the kernel loads its own IDT.
}

void set_segments(kvm_sregs& sregs, uint16_t code, uint16_t data) {
  sregs.cs = kvm_flat_segment(boot_segment(code));
  const kvm_segment data_segment = kvm_flat_segment(boot_segment(data));
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data_segment;
  set_system_segments(sregs);
}

}  // namespace

void write_boot_gdt(const GuestMemory& memory) {
  std::array<std::byte, kBootGdtEntries * 8> gdt{};
  for (const auto& segment : kBootSegments)
    store_le<uint64_t>(gdt, segment.selector, descriptor(segment));
  memory.write_or_throw(layout::kBootGdt, gdt);
}

void write_identity_page_tables(const GuestMemory& memory) {
  std::array<std::byte, kPageTableSize> table{};
  store_le<uint64_t>(table, 0, layout::kPdpt | kPtePresent | kPteWritable);
  memory.write_or_throw(layout::kPml4, table);

  table = {};
  for (uint64_t i = 0; i < kPageDirectoryCount; ++i)
    store_le<uint64_t>(
        table, i * 8, (layout::kPageDirectories + i * kPageTableSize) | kPtePresent | kPteWritable);
  memory.write_or_throw(layout::kPdpt, table);

  for (uint64_t directory = 0; directory < kPageDirectoryCount; ++directory) {
    table = {};
    for (uint64_t i = 0; i < kEntriesPerTable; ++i) {
      const uint64_t address = (directory * kEntriesPerTable + i) * kTwoMiB;
      store_le<uint64_t>(table, i * 8, address | kPtePresent | kPteWritable | kPtePageSize);
    }
    memory.write_or_throw(layout::kPageDirectories + directory * kPageTableSize, table);
  }
}

void setup_long_mode(const GuestMemory& memory, uint64_t entry, uint64_t boot_params,
                     kvm_regs& regs, kvm_sregs& sregs) {
  write_boot_gdt(memory);
  write_identity_page_tables(memory);
  regs = kvm_regs{};
  regs.rip = entry;
  regs.rsi = boot_params;
  regs.rsp = layout::kBootStackTop;
  regs.rflags = kRflagsReserved;  // IF clear: the boot protocol wants interrupts off.
  set_segments(sregs, kCode64Selector, kDataSelector);
  sregs.cr0 = kCr0Pe | kCr0Et | kCr0Ne | kCr0Pg;
  sregs.cr3 = layout::kPml4;
  sregs.cr4 = kCr4Pae;
  sregs.efer = kEferLme | kEferLma;
}

void setup_pvh(const GuestMemory& memory, uint64_t entry, uint64_t start_info, kvm_regs& regs,
               kvm_sregs& sregs) {
  write_boot_gdt(memory);
  regs = kvm_regs{};
  regs.rip = entry;
  regs.rbx = start_info;
  regs.rsp = layout::kBootStackTop;
  regs.rflags = kRflagsReserved;
  set_segments(sregs, kCode32Selector, kData32Selector);
  // PVH: CR0.PE set, every other writable bit clear; CR4 and EFER clear, so paging is off.
  sregs.cr0 = kCr0Pe | kCr0Et;
  sregs.cr3 = 0;
  sregs.cr4 = 0;
  sregs.efer = 0;
}

}  // namespace ember::boot
