#include "boot/x86_setup.hpp"

#include <gtest/gtest.h>

#include "boot/layout.hpp"

namespace ember::boot {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// What KVM_GET_SREGS returns for a fresh vCPU in the fields ember must keep.
kvm_sregs fresh_sregs() {
  kvm_sregs sregs{};
  sregs.apic_base = 0xfee00900;
  sregs.cs.selector = 0xf000;
  sregs.cs.base = 0xffff0000;
  return sregs;
}

void expect_flat(const kvm_segment& segment, uint16_t selector, uint8_t type, bool long_mode,
                 bool db) {
  EXPECT_EQ(segment.selector, selector);
  EXPECT_EQ(segment.base, 0u);
  EXPECT_EQ(segment.limit, 0xffffffffu);
  EXPECT_EQ(segment.type, type);
  EXPECT_EQ(segment.present, 1);
  EXPECT_EQ(segment.dpl, 0);
  EXPECT_EQ(segment.s, 1);
  EXPECT_EQ(segment.g, 1);
  EXPECT_EQ(segment.l, long_mode ? 1 : 0);
  EXPECT_EQ(segment.db, db ? 1 : 0);
  EXPECT_EQ(segment.unusable, 0);
}

TEST(X86Setup, BootGdtHasLinuxSelectorsAndFlat32BitPair) {
  GuestMemory memory({{0, 16 * kMiB}});
  write_boot_gdt(memory);
  EXPECT_EQ(memory.read_value<uint64_t>(layout::kBootGdt), 0u);
  EXPECT_EQ(memory.read_value<uint64_t>(layout::kBootGdt + 8), 0u);
  EXPECT_EQ(memory.read_value<uint64_t>(layout::kBootGdt + 0x10), 0x00af9b000000ffffu);
  EXPECT_EQ(memory.read_value<uint64_t>(layout::kBootGdt + 0x18), 0x00cf93000000ffffu);
  EXPECT_EQ(memory.read_value<uint64_t>(layout::kBootGdt + 0x20), 0x00cf9b000000ffffu);
  EXPECT_EQ(memory.read_value<uint64_t>(layout::kBootGdt + 0x28), 0x00cf93000000ffffu);
}

TEST(X86Setup, PageTablesIdentityMapFourGiB) {
  GuestMemory memory({{0, 16 * kMiB}});
  write_identity_page_tables(memory);
  EXPECT_EQ(memory.read_value<uint64_t>(layout::kPml4), layout::kPdpt | 0x3);
  EXPECT_EQ(memory.read_value<uint64_t>(layout::kPml4 + 8), 0u);
  for (uint64_t i = 0; i < 4; ++i)
    EXPECT_EQ(memory.read_value<uint64_t>(layout::kPdpt + i * 8),
              (layout::kPageDirectories + i * 4096) | 0x3);
  EXPECT_EQ(memory.read_value<uint64_t>(layout::kPdpt + 4 * 8), 0u);
  // Walk every 2 MiB page: 2048 entries, each with P, RW and PS, mapping itself.
  for (uint64_t page = 0; page < 2048; ++page) {
    const auto entry = memory.read_value<uint64_t>(layout::kPageDirectories + page * 8);
    ASSERT_TRUE(entry);
    ASSERT_EQ(*entry, page * 2 * kMiB | 0x83) << page;
  }
  EXPECT_EQ(layout::kPageDirectories + 4 * 4096, 0xf000u);  // Clear of the command line at 0x20000.
}

TEST(X86Setup, LongModeRegisters) {
  GuestMemory memory({{0, 16 * kMiB}});
  kvm_regs regs{};
  regs.rax = 123;
  kvm_sregs sregs = fresh_sregs();
  setup_long_mode(memory, 0x100200, layout::kBootParams, regs, sregs);
  EXPECT_EQ(regs.rip, 0x100200u);
  EXPECT_EQ(regs.rsi, layout::kBootParams);
  EXPECT_EQ(regs.rsp, layout::kBootStackTop);
  EXPECT_EQ(regs.rflags, 0x2u);
  EXPECT_EQ(regs.rax, 0u);
  expect_flat(sregs.cs, 0x10, 0xb, true, false);
  for (const auto* segment : {&sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss})
    expect_flat(*segment, 0x18, 0x3, false, true);
  EXPECT_EQ(sregs.cr0, 0x80000031u);  // PG | NE | ET | PE.
  EXPECT_EQ(sregs.cr3, layout::kPml4);
  EXPECT_EQ(sregs.cr4, 0x20u);    // PAE.
  EXPECT_EQ(sregs.efer, 0x500u);  // LMA | LME.
  EXPECT_EQ(sregs.gdt.base, layout::kBootGdt);
  EXPECT_EQ(sregs.gdt.limit, 47);
  EXPECT_EQ(sregs.tr.type, 0xb);
  EXPECT_EQ(sregs.tr.present, 1);
  EXPECT_EQ(sregs.apic_base, 0xfee00900u);
  EXPECT_EQ(memory.read_value<uint64_t>(layout::kPml4), layout::kPdpt | 0x3);
}

TEST(X86Setup, PvhRegisters) {
  GuestMemory memory({{0, 16 * kMiB}});
  kvm_regs regs{};
  kvm_sregs sregs = fresh_sregs();
  sregs.efer = 0x500;
  sregs.cr4 = 0x20;
  setup_pvh(memory, 0x1000040, layout::kPvhStartInfo, regs, sregs);
  EXPECT_EQ(regs.rip, 0x1000040u);
  EXPECT_EQ(regs.rbx, layout::kPvhStartInfo);
  EXPECT_EQ(regs.rflags, 0x2u);
  expect_flat(sregs.cs, 0x20, 0xb, false, true);
  for (const auto* segment : {&sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss})
    expect_flat(*segment, 0x28, 0x3, false, true);
  EXPECT_EQ(sregs.cr0, 0x11u);  // ET | PE.
  EXPECT_EQ(sregs.cr3, 0u);
  EXPECT_EQ(sregs.cr4, 0u);
  EXPECT_EQ(sregs.efer, 0u);
  EXPECT_EQ(sregs.gdt.base, layout::kBootGdt);
  EXPECT_EQ(memory.read_value<uint64_t>(layout::kBootGdt + 0x20), 0x00cf9b000000ffffu);
  EXPECT_EQ(sregs.apic_base, 0xfee00900u);
}

}  // namespace
}  // namespace ember::boot
