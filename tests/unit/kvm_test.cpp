// The KVM owners against the host's real /dev/kvm (the tests run as root, as CI does).
#include "vmm/kvm.hpp"

#include <gtest/gtest.h>
#include <sys/eventfd.h>

#include "vmm/error.hpp"

namespace ember {
namespace {

TEST(Kvm, OpensAndReportsCapabilities) {
  Kvm kvm;
  EXPECT_GE(kvm.max_vcpus(), 1);
  EXPECT_GT(kvm.vcpu_mmap_size(), sizeof(kvm_run));
  const auto cpuid = kvm.supported_cpuid();
  EXPECT_GT(cpuid.size(), 4u);
  EXPECT_FALSE(kvm.msr_index_list().empty());
}

TEST(Kvm, MissingDeviceIsOneLineError) {
  try {
    Kvm kvm("/nonexistent/kvm");
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("/nonexistent/kvm: no such device"), std::string::npos);
  }
}

TEST(Kvm, RoutesIrqfdsAndIoeventfds) {
  Kvm kvm;
  Vm vm(kvm);
  vm.create_irqchip_and_pit();
  Vcpu vcpu(vm, 0);
  EXPECT_GT(vcpu.tsc_khz(), 0u);
  UniqueFd interrupt(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  UniqueFd notify(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  vm.set_msi_route(Vm::kFirstMsiGsi, 0xfee00000, 0x4041);
  vm.set_msi_route(Vm::kFirstMsiGsi, 0xfee00000, 0x4042);  // Replacing a route is fine.
  EXPECT_NO_THROW(vm.add_irqfd(interrupt.get(), Vm::kFirstMsiGsi));
  EXPECT_NO_THROW(vm.add_ioeventfd(notify.get(), 0xd0000000, 4, false));
  EXPECT_NO_THROW(vm.add_ioeventfd(notify.get(), 0xd0001050, 4, false, 1));
  EXPECT_THROW(vm.add_ioeventfd(notify.get(), 0xd0000000, 4, false), Error);  // Twice: EEXIST.
  EXPECT_NO_THROW(vm.remove_ioeventfd(notify.get(), 0xd0000000, 4, false));
}

}  // namespace
}  // namespace ember
