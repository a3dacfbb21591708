// What a microVM is made of: the plain struct the CLI (and later an API) fills in and
// Machine builds from.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ember {

inline constexpr uint64_t kMiB = 1024 * 1024;
inline constexpr uint64_t kMinimumMemory = 64 * kMiB;

// `--disk PATH[,ro][,id=NAME][,direct]`
struct DiskConfig {
  std::string path;
  bool read_only = false;
  std::string id;       // VIRTIO_BLK_T_GET_ID; empty: the file name.
  bool direct = false;  // O_DIRECT: bypass the host page cache.
};

// `--net tap=NAME[,mac=52:54:00:12:34:56]`
struct NetConfig {
  std::string tap;  // Attached if it exists, created otherwise.
  std::optional<std::array<uint8_t, 6>> mac;  // Default: derived from the tap name.
};

// `--share HOSTDIR:TAG[:ro]` (`ember run -v HOSTDIR:GUESTDIR[:ro]` maps onto it): a virtio-fs
// device served by a virtiofsd on HOSTDIR; the guest mounts it with `mount -t virtiofs TAG DIR`.
struct ShareConfig {
  std::string host_dir;
  std::string tag;         // 1 to 36 bytes, unique per machine.
  bool read_only = false;  // Enforced on the host: virtiofsd sees a read-only bind mount.
};

// virtio transport: PCI; MMIO described in the DSDT; or MMIO given to the kernel on its command line
// (virtio_mmio.device=, for kernels built with VIRTIO_MMIO_CMDLINE_DEVICES and no ACPI devices).
enum class Transport { kPci, kMmio, kMmioCommandLine };
enum class ConsoleKind { kSerial, kVirtio };

struct MachineConfig {
  std::string kernel_path;
  std::string initrd_path;  // Empty: no initrd.
  std::string cmdline;
  uint32_t cpus = 1;
  uint64_t memory_bytes = 256 * kMiB;
  std::string kvm_path = "/dev/kvm";
  int console_input = 0;   // Host fd whose bytes the UART receives (-1: none).
  int console_output = 1;  // Host fd the UART transmits to.
  ConsoleKind console = ConsoleKind::kSerial;  // kVirtio: hvc0 gets the console input.
  Transport transport = Transport::kPci;
  std::vector<DiskConfig> disks;
  std::vector<NetConfig> nets;
  std::vector<ShareConfig> shares;  // virtio-fs, one virtiofsd each.
  bool entropy = true;  // virtio-rng
  // Each thread confines itself with its seccomp filter (vmm/seccomp.hpp) before the guest runs.
  bool seccomp = true;

  // Hooks for `ember run` (left empty, `ember boot` behaves as before). Each runs on the I/O thread.
  using ByteSink = std::function<void(std::span<const uint8_t>)>;
  ByteSink serial_sink;  // COM1's output goes here instead of console_output.
  // hvc0's output goes here instead of console_output. Called with the console's lock held: it must
  // not call Machine::console_input (queue the reply and send it from the loop's idle callback).
  ByteSink virtio_console_sink;
  // When set, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH on the host are handed
  // to it instead of stopping the VM.
  std::function<void(int signal)> host_signal;
  bool tsc_khz_on_cmdline = false;  // Appends tsc_early_khz=<KVM's TSC kHz> to the command line.
};

}  // namespace ember
