// A device's interrupt wire into KVM's in-kernel PIC/IOAPIC (KVM_IRQ_LINE on one GSI).
#pragma once

#include <spdlog/spdlog.h>

#include "devices/interrupt_line.hpp"
#include "vmm/error.hpp"
#include "vmm/kvm.hpp"

namespace ember {

class KvmInterruptLine : public InterruptLine {
 public:
  KvmInterruptLine(Vm& vm, uint32_t gsi) : vm_(vm), gsi_(gsi) {}
  void set_level(bool asserted) override {
    try {
      vm_.set_irq_line(gsi_, asserted);
    } catch (const Error& error) {
      spdlog::error("interrupt line {}: {}", gsi_, error.what());
    }
  }

 private:
  Vm& vm_;
  uint32_t gsi_;
};

}  // namespace ember
