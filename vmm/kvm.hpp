// Owners for /dev/kvm, a VM and its vCPUs: each wraps one fd and the ioctls made on it.
// Every failure at setup throws Error naming the ioctl; KVM_RUN reports through its return value.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/unique_fd.hpp"

namespace ember {

class Kvm {
 public:
  // Opens path (normally /dev/kvm) and checks the API version and the capabilities ember needs.
  explicit Kvm(const std::string& path = "/dev/kvm");

  int fd() const { return fd_.get(); }
  int check_extension(long capability) const;
  int max_vcpus() const;
  size_t vcpu_mmap_size() const;
  std::vector<kvm_cpuid_entry2> supported_cpuid() const;
  std::vector<uint32_t> msr_index_list() const;

 private:
  UniqueFd fd_;
};

class Vm {
 public:
  explicit Vm(const Kvm& kvm);

  int fd() const { return fd_.get(); }
  const Kvm& kvm() const { return kvm_; }

  void set_user_memory_region(uint32_t slot, uint64_t guest_address, uint64_t size, void* host);
  // In-kernel LAPIC/IOAPIC/PIC and PIT, with GSI routing as a PC: GSI 0 (the PIT) -> IOAPIC pin 2.
  void create_irqchip_and_pit();
  void set_irq_line(uint32_t gsi, bool level);

  // Routes `gsi` to an MSI (address, data); replaces an earlier route of the same GSI. Thread-safe.
  void set_msi_route(uint32_t gsi, uint64_t address, uint32_t data);
  // Writing `eventfd` injects `gsi` (an edge for IOAPIC pins; the MSI for MSI routes).
  void add_irqfd(int eventfd, uint32_t gsi);
  // A guest write of `length` bytes to `address` (port I/O if `pio`) signals `eventfd` in the
  // kernel, without an exit to ember; with `datamatch`, only writes of that value.
  void add_ioeventfd(int eventfd, uint64_t address, uint32_t length, bool pio,
                     std::optional<uint64_t> datamatch = std::nullopt);
  void remove_ioeventfd(int eventfd, uint64_t address, uint32_t length, bool pio,
                        std::optional<uint64_t> datamatch = std::nullopt);
  // First GSI above the IOAPIC's pins: where MSI routes start.
  static constexpr uint32_t kFirstMsiGsi = 24;
  // TSC frequency KVM gives guests, in kHz (KVM_GET_TSC_KHZ on a vCPU fd, or on the VM when supported).
  uint32_t tsc_khz() const { return tsc_khz_; }
  void set_tsc_khz(uint32_t khz) { tsc_khz_ = khz; }

 private:
  void submit_routes();  // With routes_mutex_ held.

  const Kvm& kvm_;
  UniqueFd fd_;
  uint32_t tsc_khz_ = 0;
  std::mutex routes_mutex_;
  std::vector<kvm_irq_routing_entry> routes_;  // KVM_SET_GSI_ROUTING replaces the whole table.
};

class Vcpu {
 public:
  Vcpu(const Vm& vm, uint32_t index);
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;
  ~Vcpu();

  uint32_t index() const { return index_; }
  int fd() const { return fd_.get(); }
  kvm_run* run_state() const { return run_; }

  kvm_regs regs() const;
  void set_regs(const kvm_regs& regs);
  kvm_sregs sregs() const;
  void set_sregs(const kvm_sregs& sregs);
  void set_fpu(const kvm_fpu& fpu);
  void set_cpuid(std::span<const kvm_cpuid_entry2> entries);
  // Sets each MSR; throws Error naming the first one KVM refused.
  void set_msrs(std::span<const kvm_msr_entry> entries);
  kvm_lapic_state lapic() const;
  void set_lapic(const kvm_lapic_state& state);
  uint32_t tsc_khz() const;
  // Guest-linear to guest-physical through the vCPU's current page tables; nullopt if unmapped.
  bool translate(uint64_t linear, uint64_t& physical) const;

 private:
  uint32_t index_;
  UniqueFd fd_;
  kvm_run* run_ = nullptr;
  size_t run_size_ = 0;
};

}  // namespace ember
