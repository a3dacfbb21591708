#include "vmm/kvm_abi.hpp"

#include <gtest/gtest.h>

extern "C" {
extern const unsigned long ember_c_get_msr_index_list, ember_c_get_supported_cpuid,
    ember_c_set_gsi_routing, ember_c_get_msrs, ember_c_set_msrs, ember_c_set_cpuid2;
extern const size_t ember_c_cpuid_entries_offset, ember_c_msrs_entries_offset,
    ember_c_msr_list_indices_offset, ember_c_irq_routing_entries_offset;
}

namespace ember::kvm_abi {
namespace {

TEST(KvmAbi, RequestNumbersMatchC) {
  EXPECT_EQ(kGetMsrIndexList, ember_c_get_msr_index_list);
  EXPECT_EQ(kGetSupportedCpuid, ember_c_get_supported_cpuid);
  EXPECT_EQ(kSetGsiRouting, ember_c_set_gsi_routing);
  EXPECT_EQ(kGetMsrs, ember_c_get_msrs);
  EXPECT_EQ(kSetMsrs, ember_c_set_msrs);
  EXPECT_EQ(kSetCpuid2, ember_c_set_cpuid2);
}

TEST(KvmAbi, HeadersEndWhereCPutsTheEntries) {
  EXPECT_EQ(sizeof(CpuidHeader), ember_c_cpuid_entries_offset);
  EXPECT_EQ(sizeof(MsrsHeader), ember_c_msrs_entries_offset);
  EXPECT_EQ(sizeof(MsrListHeader), ember_c_msr_list_indices_offset);
  EXPECT_EQ(sizeof(IrqRoutingHeader), ember_c_irq_routing_entries_offset);
}

TEST(KvmAbi, PackPutsEntriesRightAfterTheHeader) {
  const std::vector<uint32_t> indices{0x10, 0x20};
  auto buffer = pack(MsrListHeader{2}, std::span<const uint32_t>(indices));
  ASSERT_EQ(buffer.size(), 12u);
  EXPECT_EQ((unpack<MsrListHeader, uint32_t>(buffer, 2)), indices);
}

}  // namespace
}  // namespace ember::kvm_abi
