// A wire from a device to the interrupt controller. Edge-triggered lines fire on a rising level.
#pragma once

namespace ember {

class InterruptLine {
 public:
  virtual ~InterruptLine() = default;
  virtual void set_level(bool asserted) = 0;
};

}  // namespace ember
