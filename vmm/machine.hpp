// The one place that assembles a microVM from a validated MachineConfig: guest memory, KVM VM and
// vCPUs, legacy devices, ACPI, the loaded kernel; then runs it until the guest or the host stops it.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "devices/stop_reason.hpp"
#include "boot/kernel_loader.hpp"
#include "vmm/machine_config.hpp"
#include "vmm/bus.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/kvm.hpp"

namespace ember {

class Serial;
class VirtioDevices;

// How a run ended. The CLI turns this into ember's exit status.
struct MachineExit {
  enum class Kind {
    kPowerOff,     // The guest powered off (ACPI S5).
    kReset,        // The guest asked for a reset (reboot) or triple-faulted.
    kGuestPanic,   // pvpanic told us the guest kernel panicked.
    kInterrupted,  // SIGINT/SIGTERM/SIGHUP on the host.
    kFailure,      // The VMM could not go on (KVM internal error, failed entry, ...).
  };
  Kind kind = Kind::kFailure;
  int signal = 0;       // For kInterrupted.
  std::string message;  // One line for the user.
};

class Machine {
 public:
  // Validates the config against the host and builds everything; throws Error with one line.
  explicit Machine(MachineConfig config);
  ~Machine();

  // Runs the vCPUs and, on the calling thread, the I/O loop; returns when the VM has stopped and
  // every vCPU thread has been joined.
  MachineExit run();

  // Thread-safe; the first request wins.
  void request_stop(MachineExit exit);

  const GuestMemory& memory() const { return *memory_; }
  // The I/O loop run() runs: `ember run` adds its fds (stdin, timers) and, when console_input is -1,
  // owns its idle callback.
  EventLoop& io_loop() { return *io_loop_; }
  // Host bytes for hvc0 (I/O thread only, never from virtio_console_sink); returns bytes taken.
  size_t console_input(std::span<const uint8_t> bytes);

 private:
  // Options checked before KVM is opened (--cpus 0, --memory range) and after (KVM's vCPU limit).
  void validate() const;
  void validate_cpus() const;
  MachineConfig::ByteSink console_output() const;
  boot::BootSpec boot_spec() const;  // Kernel and initrd; no command line yet.
  void create_devices();
  void load_guest();
  void configure_vcpus();
  void vcpu_loop(Vcpu& vcpu);
  bool handle_exit(Vcpu& vcpu);
  void report_internal_error(Vcpu& vcpu, const char* what);
  void kick_vcpus();
  void on_device_stop(StopReason reason);

  MachineConfig config_;
  // The I/O thread's loop (run by run() on the calling thread): console input, host signals,
  // virtqueue notifications and device backends. Declared before the devices so it outlives them.
  std::unique_ptr<EventLoop> io_loop_;
  std::vector<std::byte> kernel_;  // File contents, until loaded into guest memory.
  std::vector<std::byte> initrd_;
  boot::LoadedImage image_;  // What load_kernel_image placed in guest memory.
  std::unique_ptr<Kvm> kvm_;
  std::unique_ptr<Vm> vm_;
  std::unique_ptr<GuestMemory> memory_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  Bus pio_bus_{"port I/O"};
  Bus mmio_bus_{"MMIO"};
  std::shared_ptr<Serial> serial_;
  std::unique_ptr<VirtioDevices> virtio_;
  kvm_regs boot_regs_{};
  kvm_sregs boot_sregs_{};

  std::vector<std::jthread> vcpu_threads_;
  std::atomic<bool> stopping_{false};
  std::mutex exit_mutex_;
  MachineExit exit_;
};

}  // namespace ember
