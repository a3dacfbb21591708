// MSI-X for PCI functions through KVM: each (requester, vector) gets its own GSI with an MSI route
// and an irqfd, so raising it from the I/O thread is one eventfd write and KVM injects it.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>

#include "devices/pci/msi.hpp"
#include "vmm/kvm.hpp"
#include "vmm/unique_fd.hpp"

namespace ember {

class KvmMsiRoutes : public MsiSink {
 public:
  explicit KvmMsiRoutes(Vm& vm) : vm_(vm) {}

  void configure(uint32_t requester, uint16_t vector, uint64_t address, uint32_t data,
                 bool masked) override;
  void trigger(uint32_t requester, uint16_t vector) override;

 private:
  struct Route {
    uint32_t gsi = 0;
    UniqueFd eventfd;
    uint64_t address = 0;
    uint32_t data = 0;
    bool programmed = false;
  };

  Vm& vm_;
  std::mutex mutex_;
  std::map<uint64_t, Route> routes_;  // Keyed by requester << 16 | vector.
  uint32_t next_gsi_ = Vm::kFirstMsiGsi;
};

}  // namespace ember
