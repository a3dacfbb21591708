/* The KVM request numbers and layouts as C sees them, for kvm_abi_test.cpp to compare against
 * ember's C++ spelling (vmm/kvm_abi.hpp). */
#include <linux/kvm.h>
#include <stddef.h>

const unsigned long ember_c_get_msr_index_list = KVM_GET_MSR_INDEX_LIST;
const unsigned long ember_c_get_supported_cpuid = KVM_GET_SUPPORTED_CPUID;
const unsigned long ember_c_set_gsi_routing = KVM_SET_GSI_ROUTING;
const unsigned long ember_c_get_msrs = KVM_GET_MSRS;
const unsigned long ember_c_set_msrs = KVM_SET_MSRS;
const unsigned long ember_c_set_cpuid2 = KVM_SET_CPUID2;
const size_t ember_c_cpuid_entries_offset = offsetof(struct kvm_cpuid2, entries);
const size_t ember_c_msrs_entries_offset = offsetof(struct kvm_msrs, entries);
const size_t ember_c_msr_list_indices_offset = offsetof(struct kvm_msr_list, indices);
const size_t ember_c_irq_routing_entries_offset = offsetof(struct kvm_irq_routing, entries);
