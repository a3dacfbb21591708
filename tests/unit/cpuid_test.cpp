#include "boot/cpuid.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace ember::boot {
namespace {

kvm_cpuid_entry2 leaf(uint32_t function, uint32_t eax, uint32_t ebx, uint32_t ecx, uint32_t edx) {
  kvm_cpuid_entry2 entry{};
  entry.function = function;
  entry.eax = eax;
  entry.ebx = ebx;
  entry.ecx = ecx;
  entry.edx = edx;
  return entry;
}

kvm_cpuid_entry2 vendor(const char* name) {
  kvm_cpuid_entry2 entry = leaf(0, 0xd, 0, 0, 0);
  std::memcpy(&entry.ebx, name, 4);
  std::memcpy(&entry.edx, name + 4, 4);
  std::memcpy(&entry.ecx, name + 8, 4);
  return entry;
}

const kvm_cpuid_entry2* find(const std::vector<kvm_cpuid_entry2>& entries, uint32_t function,
                             uint32_t index = 0) {
  for (const auto& entry : entries)
    if (entry.function == function && entry.index == index) return &entry;
  return nullptr;
}

std::vector<kvm_cpuid_entry2> supported(const char* vendor_name) {
  return {vendor(vendor_name), leaf(1, 0x800f12, 0x00000800, 0x1, 1u << 28),
          leaf(0x40000000, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d),
          leaf(0x80000008, 0x3030, 0, 0x7003, 0), leaf(0x8000001e, 5, 0x105, 3, 0)};
}

TEST(Cpuid, ApicIdAndCountInLeafOne) {
  const auto entries = vcpu_cpuid(supported("AuthenticAMD"), {3, 4, 0});
  const auto* features = find(entries, 1);
  ASSERT_NE(features, nullptr);
  EXPECT_EQ(features->ebx >> 24, 3u);
  EXPECT_EQ((features->ebx >> 16) & 0xff, 4u);
  EXPECT_EQ(features->ebx & 0xffff, 0x0800u);  // CLFLUSH line size kept.
  EXPECT_TRUE(features->ecx & kFeatureEcxHypervisor);
  EXPECT_TRUE(features->edx & kFeatureEdxHtt);
}

TEST(Cpuid, SingleCpuHasNoHtt) {
  const auto entries = vcpu_cpuid(supported("AuthenticAMD"), {0, 1, 0});
  EXPECT_FALSE(find(entries, 1)->edx & kFeatureEdxHtt);
}

TEST(Cpuid, AmdTopologyLeaves) {
  const auto entries = vcpu_cpuid(supported("AuthenticAMD"), {2, 3, 0});
  EXPECT_EQ(find(entries, 0x80000008)->ecx & 0xff, 2u);         // NC = cores - 1.
  EXPECT_EQ((find(entries, 0x80000008)->ecx >> 12) & 0xf, 2u);  // 2 bits of core ID.
  EXPECT_EQ(find(entries, 0x8000001e)->eax, 2u);
}

TEST(Cpuid, IntelExtendedTopology) {
  const auto entries = vcpu_cpuid(supported("GenuineIntel"), {5, 6, 0});
  const auto* smt = find(entries, 0xb, 0);
  const auto* core = find(entries, 0xb, 1);
  ASSERT_NE(smt, nullptr);
  ASSERT_NE(core, nullptr);
  EXPECT_EQ(smt->edx, 5u);
  EXPECT_EQ(smt->ebx, 1u);
  EXPECT_EQ((smt->ecx >> 8) & 0xff, 1u);
  EXPECT_EQ(core->ebx, 6u);
  EXPECT_EQ(core->eax, 3u);  // 6 cores need 3 bits.
  EXPECT_EQ((core->ecx >> 8) & 0xff, 2u);
  EXPECT_EQ((find(entries, 0xb, 2)->ecx >> 8) & 0xff, 0u);  // Invalid level ends the list.
}

TEST(Cpuid, TimingLeafCarriesTscFrequency) {
  const auto entries = vcpu_cpuid(supported("AuthenticAMD"), {0, 1, 2596142});
  EXPECT_EQ(find(entries, 0x40000000)->eax, 0x40000010u);
  EXPECT_EQ(find(entries, 0x40000010)->eax, 2596142u);
  EXPECT_EQ(find(entries, 0x40000010)->ebx, kLapicBusKhz);
  EXPECT_EQ(find(entries, 0x15), nullptr);  // Intel-only leaf not invented on AMD.

  const auto intel = vcpu_cpuid(supported("GenuineIntel"), {0, 1, 2596142});
  const auto* crystal = find(intel, 0x15);
  ASSERT_NE(crystal, nullptr);
  EXPECT_EQ(uint64_t{crystal->ecx} * crystal->ebx / crystal->eax, 2596142000u);
}

TEST(Cpuid, BootMsrsAndLapic) {
  const auto msrs = boot_msrs();
  bool mtrr = false;
  for (const auto& msr : msrs)
    if (msr.index == 0x2ff) mtrr = msr.data == ((1u << 11) | 6);
  EXPECT_TRUE(mtrr);

  kvm_lapic_state lapic{};
  const uint32_t masked = 0x10000;
  std::memcpy(lapic.regs + 0x350, &masked, 4);
  configure_lapic_lint(lapic);
  uint32_t lint0 = 0, lint1 = 0;
  std::memcpy(&lint0, lapic.regs + 0x350, 4);
  std::memcpy(&lint1, lapic.regs + 0x360, 4);
  EXPECT_EQ(lint0, 0x10700u);  // ExtINT, mask bit kept.
  EXPECT_EQ(lint1, 0x400u);    // NMI.
}

}  // namespace
}  // namespace ember::boot
