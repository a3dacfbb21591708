#include "vmm/machine.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstring>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "boot/acpi.hpp"
#include "boot/cpuid.hpp"
#include "boot/e820.hpp"
#include "boot/kernel_loader.hpp"
#include "boot/layout.hpp"
#include "devices/interrupt_line.hpp"
#include "devices/legacy/acpi_pm.hpp"
#include "devices/legacy/i8042.hpp"
#include "devices/legacy/pvpanic.hpp"
#include "devices/legacy/serial.hpp"
#include "vmm/error.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/kvm_interrupt_line.hpp"
#include "vmm/seccomp.hpp"
#include "vmm/terminal.hpp"
#include "vmm/virtio_devices.hpp"

namespace ember {

namespace {

// The signal that kicks a vCPU thread out of KVM_RUN. Its handler does nothing: the point is the
// EINTR. A real-time signal, so that SIGUSR1/SIGUSR2 stay free for `ember run` to forward.
int kick_signal() { return SIGRTMIN; }

void install_kick_handler() {
  struct sigaction action {};
  action.sa_handler = [](int) {};
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // No SA_RESTART: KVM_RUN must return EINTR.
  ::sigaction(kick_signal(), &action, nullptr);
}

std::vector<std::byte> read_file(const std::string& role, const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw system_error(role + " " + path);
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) throw system_error(role + " " + path);
  if (S_ISDIR(info.st_mode)) throw Error(role + " " + path + ": is a directory");
  std::vector<std::byte> bytes;
  std::byte chunk[1 << 16];
  while (true) {
    const ssize_t count = ::read(fd.get(), chunk, sizeof(chunk));
    if (count < 0) {
      if (errno == EINTR) continue;
      throw system_error(role + " " + path);
    }
    if (count == 0) break;
    bytes.insert(bytes.end(), chunk, chunk + count);
  }
  if (bytes.empty()) throw Error(role + " " + path + ": file is empty");
  return bytes;
}

uint64_t host_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page_size > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size)
                                    : 0;
}

std::string mebibytes(uint64_t bytes) { return std::to_string(bytes / kMiB) + " MiB"; }

void write_all(int fd, std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      return;  // The console went away (EPIPE, closed terminal): drop output, keep the VM running.
    }
    bytes = bytes.subspan(static_cast<size_t>(written));
  }
}

std::string hex(uint64_t value) {
  std::ostringstream out;
  out << "0x" << std::hex << value;
  return out.str();
}

}  // namespace

Machine::Machine(MachineConfig config)
    : config_(std::move(config)), io_loop_(std::make_unique<EventLoop>()) {
  // Everything that needs no KVM comes first: the user's files and options are the likelier
  // mistakes, and a host without /dev/kvm still says what is wrong with them.
  kernel_ = read_file("kernel", config_.kernel_path);
  if (!config_.initrd_path.empty()) initrd_ = read_file("initrd", config_.initrd_path);
  validate();
  memory_ = std::make_unique<GuestMemory>(boot::ram_regions(config_.memory_bytes));
  image_ = boot::load_kernel_image(*memory_, boot_spec());
  virtio_ = std::make_unique<VirtioDevices>(*memory_, *io_loop_, pio_bus_, mmio_bus_);
  virtio_->create(config_, config_.virtio_console_sink ? config_.virtio_console_sink
                                                      : console_output());
  kvm_ = std::make_unique<Kvm>(config_.kvm_path);
  validate_cpus();
  vm_ = std::make_unique<Vm>(*kvm_);
  uint32_t slot = 0;
  for (const auto& region : memory_->regions())
    vm_->set_user_memory_region(slot++, region.guest_address, region.size, region.host);
  vm_->create_irqchip_and_pit();
  for (uint32_t index = 0; index < config_.cpus; ++index)
    vcpus_.push_back(std::make_unique<Vcpu>(*vm_, index));
  vm_->set_tsc_khz(vcpus_.front()->tsc_khz());
  create_devices();
  load_guest();
  configure_vcpus();
}

Machine::~Machine() {
  kick_vcpus();
  vcpu_threads_.clear();  // Joins.
}

void Machine::validate() const {
  if (config_.cpus == 0) throw Error("--cpus 0: a VM needs at least one vCPU");
  if (config_.memory_bytes < kMinimumMemory)
    throw Error("--memory " + mebibytes(config_.memory_bytes) + ": below the minimum of " +
                mebibytes(kMinimumMemory));
  const uint64_t host = host_memory_bytes();
  if (host != 0 && config_.memory_bytes > host)
    throw Error("--memory " + mebibytes(config_.memory_bytes) + ": more than the host's " +
                mebibytes(host));
  if (config_.memory_bytes % 4096 != 0)
    throw Error("--memory " + std::to_string(config_.memory_bytes) +
                " bytes: not a multiple of 4 KiB");
}

void Machine::validate_cpus() const {
  const auto max_vcpus = static_cast<uint32_t>(std::min(kvm_->max_vcpus(), 254));
  if (config_.cpus > max_vcpus)
    throw Error("--cpus " + std::to_string(config_.cpus) + ": more than the " +
                std::to_string(max_vcpus) + " vCPUs KVM allows here");
}

MachineConfig::ByteSink Machine::console_output() const {
  // COM1 and hvc0 both write to the host console, unless `ember run` takes their output.
  const int output = config_.console_output;
  return [output](std::span<const uint8_t> bytes) {
    if (output >= 0) write_all(output, bytes);
  };
}

boot::BootSpec Machine::boot_spec() const {
  boot::BootSpec spec;
  spec.kernel_path = config_.kernel_path;
  spec.kernel = kernel_;
  spec.initrd_path = config_.initrd_path;
  spec.initrd = initrd_;
  return spec;
}

void Machine::create_devices() {
  StopHandler stop = [this](StopReason reason) { on_device_stop(reason); };
  serial_ = std::make_shared<Serial>(std::make_shared<KvmInterruptLine>(*vm_, layout::kCom1Irq),
                                     config_.serial_sink ? config_.serial_sink : console_output());
  pio_bus_.insert(layout::kCom1Port, 8, serial_);
  pio_bus_.insert(layout::kI8042DataPort, 5, std::make_shared<I8042>(stop));
  pio_bus_.insert(layout::kPvpanicPort, 1, std::make_shared<Pvpanic>(stop));
  pio_bus_.insert(layout::kAcpiPmPort, 3, std::make_shared<AcpiPm>(stop));

  virtio_->attach(*vm_);
}

void Machine::load_guest() {
  boot::AcpiConfig acpi_config;
  acpi_config.cpu_count = config_.cpus;
  virtio_->describe(acpi_config);
  const auto acpi = boot::build_acpi_tables(acpi_config);
  memory_->write_or_throw(acpi.base, acpi.bytes);

  boot::BootSpec spec = boot_spec();
  spec.cmdline = config_.cmdline + virtio_->command_line_additions();
  if (config_.tsc_khz_on_cmdline) spec.cmdline += " tsc_early_khz=" + std::to_string(vm_->tsc_khz());
  spec.rsdp_address = acpi.rsdp_address;
  const auto boot_info = boot::write_boot_structures(*memory_, spec, image_);
  kernel_ = {};  // Copied into guest memory; the host copy is no longer needed.
  initrd_ = {};
  spdlog::info("kernel {}: {} entry at {}", config_.kernel_path,
               boot_info.mode == boot::EntryMode::kPvh32 ? "PVH 32-bit" : "64-bit Linux",
               hex(boot_info.entry));

  auto& boot_vcpu = *vcpus_.front();
  boot_regs_ = boot_vcpu.regs();
  boot_sregs_ = boot_vcpu.sregs();
  boot::setup_boot_cpu(*memory_, boot_info, boot_regs_, boot_sregs_);
}

void Machine::configure_vcpus() {
  const auto supported = kvm_->supported_cpuid();
  const auto msrs = boot::boot_msrs();
  for (auto& vcpu : vcpus_) {
    boot::CpuTopology topology{vcpu->index(), config_.cpus, vm_->tsc_khz()};
    vcpu->set_cpuid(boot::vcpu_cpuid(supported, topology));
    vcpu->set_msrs(msrs);
    kvm_fpu fpu{};
    fpu.fcw = 0x37f;      // x87 default control word (FNINIT).
    fpu.mxcsr = 0x1f80;   // SSE default: all exceptions masked.
    vcpu->set_fpu(fpu);
    auto lapic = vcpu->lapic();
    boot::configure_lapic_lint(lapic);
    vcpu->set_lapic(lapic);
  }
  // Only the boot vCPU gets registers; the others wait for INIT/SIPI from the guest.
  vcpus_.front()->set_sregs(boot_sregs_);
  vcpus_.front()->set_regs(boot_regs_);
  spdlog::info("{} vCPU(s), {} of RAM, TSC {} kHz", config_.cpus,
               mebibytes(config_.memory_bytes), vm_->tsc_khz());
}

MachineExit Machine::run() {
  install_kick_handler();
  // SIGINT/SIGTERM/SIGHUP (and with a host_signal hook the others it forwards) are read through a
  // signalfd by the I/O loop; every thread blocks them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  if (config_.host_signal) {
    for (int number : {SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH}) sigaddset(&stop_signals, number);
  }
  sigset_t previous_mask;
  pthread_sigmask(SIG_BLOCK, &stop_signals, &previous_mask);
  ::signal(SIGPIPE, SIG_IGN);
  UniqueFd signals(::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals) throw system_error("signalfd");

  auto& loop = *io_loop_;
  loop.add(signals.get(), EPOLLIN, [&](uint32_t) {
    signalfd_siginfo info{};
    while (::read(signals.get(), &info, sizeof(info)) == sizeof(info)) {
      const int number = static_cast<int>(info.ssi_signo);
      if (config_.host_signal) {
        config_.host_signal(number);
        continue;
      }
      request_stop({MachineExit::Kind::kInterrupted, number,
                    std::string("stopped by SIG") + sigabbrev_np(number) + " on the host"});
    }
  });

  // Console input: read a chunk when the UART has room, hand it over as the guest drains it.
  std::unique_ptr<TerminalMode> terminal;
  const int input = config_.console_input;
  std::vector<uint8_t> pending;
  bool input_watched = false;
  auto deliver_pending = [&] {
    // With --console virtio, input goes to hvc0; the UART stays output-only for early messages.
    const size_t taken = virtio_->has_console() ? virtio_->console_input(pending)
                                                : serial_->enqueue_input(pending);
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(taken));
  };
  std::function<void(uint32_t)> read_input = [&](uint32_t events) {
    uint8_t buffer[4096];
    const ssize_t count = ::read(input, buffer, sizeof(buffer));
    if (count > 0) {
      pending.assign(buffer, buffer + count);
      deliver_pending();
      if (!pending.empty()) {  // The guest is slower than the host: stop reading for now.
        loop.remove(input);
        input_watched = false;
        loop.enable_idle_timer(true);
      }
    } else if (count == 0 || (errno != EINTR && errno != EAGAIN) || (events & EPOLLHUP)) {
      loop.remove(input);  // End of input: the guest simply gets no more bytes.
      input_watched = false;
    }
  };
  if (input >= 0) {
    terminal = std::make_unique<TerminalMode>(input);
    try {
      loop.add(input, EPOLLIN, read_input);
      input_watched = true;
    } catch (const Error& error) {
      // A regular file or /dev/null cannot be polled; the guest gets no console input.
      spdlog::debug("console input not pollable: {}", error.what());
    }
    loop.set_idle(std::chrono::milliseconds(10), [&] {
      if (pending.empty()) return;
      deliver_pending();
      if (pending.empty() && !input_watched) {
        loop.add(input, EPOLLIN, read_input);
        input_watched = true;
        loop.enable_idle_timer(false);
      }
    });
  }

  if (config_.seccomp) {
#if defined(__SANITIZE_ADDRESS__)
    // LeakSanitizer's scan at exit clones a thread that ptraces the others: nothing a confined VMM
    // may do. In ASan builds leaks are checked here instead, up to the guest's start.
    __lsan_do_leak_check();
#endif
    seccomp::prepare();  // Once, before the vCPU threads each load theirs.
  }
  for (auto& vcpu : vcpus_) {
    Vcpu* raw = vcpu.get();
    vcpu_threads_.emplace_back([this, raw] { vcpu_loop(*raw); });
  }
  // After the vCPU threads exist (they must not inherit it): the I/O loop's and the clean-up's calls.
  if (config_.seccomp) {
    try {
      seccomp::confine_this_thread(seccomp::ThreadKind::kMain, "main");
    } catch (const Error& error) {
      request_stop({MachineExit::Kind::kFailure, 0, error.what()});
    }
  }
  if (!stopping_.load()) loop.run();

  kick_vcpus();
  vcpu_threads_.clear();  // Joins every vCPU thread.
  terminal.reset();
  spdlog::debug("guest RAM touched: {} KiB", memory_->resident_bytes() / 1024);
  pthread_sigmask(SIG_SETMASK, &previous_mask, nullptr);
  std::lock_guard lock(exit_mutex_);
  return exit_;
}

size_t Machine::console_input(std::span<const uint8_t> bytes) {
  return virtio_->console_input(bytes);
}

void Machine::request_stop(MachineExit exit) {
  {
    std::lock_guard lock(exit_mutex_);
    if (stopping_.exchange(true)) return;
    exit_ = std::move(exit);
  }
  kick_vcpus();
  io_loop_->stop();
}

void Machine::kick_vcpus() {
  for (size_t index = 0; index < vcpus_.size(); ++index) {
    vcpus_[index]->run_state()->immediate_exit = 1;
    if (index < vcpu_threads_.size() && vcpu_threads_[index].joinable())
      pthread_kill(vcpu_threads_[index].native_handle(), kick_signal());
  }
}

void Machine::on_device_stop(StopReason reason) {
  switch (reason) {
    case StopReason::kPowerOff:
      request_stop({MachineExit::Kind::kPowerOff, 0, "guest powered off"});
      break;
    case StopReason::kReset:
      request_stop({MachineExit::Kind::kReset, 0, "guest requested a reset"});
      break;
    case StopReason::kGuestPanic:
      request_stop({MachineExit::Kind::kGuestPanic, 0, "guest kernel panicked (pvpanic)"});
      break;
  }
}

void Machine::vcpu_loop(Vcpu& vcpu) {
  auto* run = vcpu.run_state();
  if (vcpu.index() == 0) {
    // For tools/bench-boot: when the guest's first instruction is about to run, on the clock a
    // parent process can read too.
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    spdlog::debug("first KVM_RUN at CLOCK_MONOTONIC {}.{:09}", now.tv_sec, now.tv_nsec);
  }
  try {
    if (config_.seccomp)
      seccomp::confine_this_thread(seccomp::ThreadKind::kVcpu, "vcpu" + std::to_string(vcpu.index()));
    while (!stopping_.load(std::memory_order_acquire)) {
      if (::ioctl(vcpu.fd(), KVM_RUN, 0) < 0) {
        // EINTR: kicked (or a stray signal); EAGAIN: an AP woke up for INIT/SIPI. Both: go round.
        if (errno == EINTR || errno == EAGAIN) {
          run->immediate_exit = 0;
          continue;
        }
        request_stop({MachineExit::Kind::kFailure, 0,
                      "vCPU " + std::to_string(vcpu.index()) + ": KVM_RUN: " + std::strerror(errno)});
        return;
      }
      if (!handle_exit(vcpu)) return;
    }
  } catch (const std::exception& error) {
    request_stop({MachineExit::Kind::kFailure, 0,
                  "vCPU " + std::to_string(vcpu.index()) + ": " + error.what()});
  }
}

bool Machine::handle_exit(Vcpu& vcpu) {
  auto* run = vcpu.run_state();
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      auto* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
      const size_t size = run->io.size;
      for (uint32_t i = 0; i < run->io.count; ++i, data += size) {
        if (run->io.direction == KVM_EXIT_IO_OUT) {
          pio_bus_.write(run->io.port, std::span<const uint8_t>(data, size));
        } else {
          pio_bus_.read(run->io.port, std::span<uint8_t>(data, size));
        }
      }
      return true;
    }
    case KVM_EXIT_MMIO: {
      const size_t length = std::min<size_t>(run->mmio.len, sizeof(run->mmio.data));
      if (run->mmio.is_write) {
        mmio_bus_.write(run->mmio.phys_addr, std::span<const uint8_t>(run->mmio.data, length));
      } else {
        mmio_bus_.read(run->mmio.phys_addr, std::span<uint8_t>(run->mmio.data, length));
      }
      return true;
    }
    case KVM_EXIT_HLT:
      // With the in-kernel LAPIC, HLT is handled inside KVM; an exit here means no interrupt can
      // ever wake this vCPU.
      request_stop({MachineExit::Kind::kPowerOff, 0, "guest halted"});
      return false;
    case KVM_EXIT_SHUTDOWN:
      spdlog::info("vCPU {}: triple fault (shutdown exit): treating as a reset", vcpu.index());
      request_stop({MachineExit::Kind::kReset, 0, "guest reset (triple fault)"});
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      switch (run->system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN:
          on_device_stop(StopReason::kPowerOff);
          break;
        case KVM_SYSTEM_EVENT_RESET:
          on_device_stop(StopReason::kReset);
          break;
        case KVM_SYSTEM_EVENT_CRASH:
          on_device_stop(StopReason::kGuestPanic);
          break;
        default:
          request_stop({MachineExit::Kind::kFailure, 0,
                        "unknown KVM system event " + std::to_string(run->system_event.type)});
      }
      return false;
    case KVM_EXIT_INTERNAL_ERROR:
      report_internal_error(vcpu, "KVM internal error");
      return false;
    case KVM_EXIT_FAIL_ENTRY:
      request_stop({MachineExit::Kind::kFailure, 0,
                    "vCPU " + std::to_string(vcpu.index()) +
                        ": KVM could not enter the guest (hardware entry failure reason " +
                        hex(run->fail_entry.hardware_entry_failure_reason) + ")"});
      return false;
    case KVM_EXIT_INTR:
      return true;
    default:
      request_stop({MachineExit::Kind::kFailure, 0,
                    "vCPU " + std::to_string(vcpu.index()) + ": unexpected KVM exit reason " +
                        std::to_string(run->exit_reason)});
      return false;
  }
}

void Machine::report_internal_error(Vcpu& vcpu, const char* what) {
  auto* run = vcpu.run_state();
  static constexpr const char* kSuberrors[] = {
      "", "emulation failure", "simultaneous exception", "delivery event failure",
      "unexpected exit reason"};
  const uint32_t suberror = run->internal.suberror;
  std::ostringstream message;
  message << "vCPU " << vcpu.index() << ": " << what << ": "
          << (suberror < std::size(kSuberrors) && suberror != 0 ? kSuberrors[suberror] : "unknown")
          << " (suberror " << suberror << ")";
  try {
    const auto regs = vcpu.regs();
    const auto sregs = vcpu.sregs();
    message << " at RIP " << hex(regs.rip) << " (CPL" << static_cast<int>(sregs.cs.dpl)
            << (sregs.efer & (1u << 10) ? ", long mode" : (sregs.cr0 & 1 ? ", protected mode" : ", real mode"))
            << ")";
    uint64_t physical = 0;
    const uint64_t linear = sregs.cs.base + regs.rip;
    std::array<std::byte, 15> bytes{};
    if (vcpu.translate(linear, physical) && memory_->read(physical, bytes)) {
      message << ": instruction bytes";
      for (auto byte : bytes)
        message << ' ' << std::hex << std::setw(2) << std::setfill('0') << static_cast<int>(byte);
    } else {
      message << ": instruction bytes unreadable (RIP not in guest RAM)";
    }
  } catch (const Error& error) {
    message << " (registers unreadable: " << error.what() << ")";
  }
  const uint32_t count = std::min<uint32_t>(run->internal.ndata, std::size(run->internal.data));
  if (count > 0) {
    message << "; data";
    for (uint32_t i = 0; i < count; ++i) message << ' ' << hex(run->internal.data[i]);
  }
  request_stop({MachineExit::Kind::kFailure, 0, message.str()});
}

}  // namespace ember
