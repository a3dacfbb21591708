// Where a PCI function's MSI-X messages go. The machine implements it with one KVM MSI route and
// one irqfd per vector (KVM_SET_GSI_ROUTING + KVM_IRQFD); tests implement it with a recorder.
//
// Calls are made with the function's MSI-X lock held, from vCPU threads (table and capability
// writes, pending vectors delivered on unmask) and from the I/O thread (device interrupts). A sink
// must not call back into the PCI function.
#pragma once

#include <cstdint>

namespace ember {

class MsiSink {
 public:
  virtual ~MsiSink() = default;
  // Vector `vector` of the function with PCI requester ID `requester` (bus << 8 | device << 3 |
  // function) now sends MSI (address, data); `masked` covers the entry's mask bit, the function
  // mask and MSI-X being disabled. Called whenever any of the four changes, also while masked, so
  // the sink may program its route ahead of the unmask.
  virtual void configure(uint32_t requester, uint16_t vector, uint64_t address, uint32_t data,
                         bool masked) = 0;
  // Send the message last configured for `vector`. Only called for vectors that are unmasked.
  virtual void trigger(uint32_t requester, uint16_t vector) = 0;
};

}  // namespace ember
