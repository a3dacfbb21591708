#include "vmm/cli.hpp"

#include <cpuid.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "vmm/error.hpp"
#include "vmm/kvm.hpp"
#include "vmm/machine.hpp"
#include "vmm/jail.hpp"
#include "vmm/seccomp.hpp"
#include "vmm/run/run_command.hpp"
#include "guest/image/prepare.hpp"

namespace ember {

std::optional<uint64_t> parse_memory_size(const std::string& text) {
  if (text.empty()) return std::nullopt;
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 15) return std::nullopt;
  const uint64_t number = std::stoull(text.substr(0, digits));
  // Units: K, M, G with an optional "B" or "iB" (all binary), or B for bytes.
  std::string unit = text.substr(digits);
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (unit.size() == 3 && unit.ends_with("ib")) unit.resize(1);
  if (unit.size() == 2 && unit.ends_with('b')) unit.resize(1);
  uint64_t multiplier = 0;
  if (unit.empty() || unit == "m") multiplier = kMiB;
  else if (unit == "g") multiplier = 1024 * kMiB;
  else if (unit == "k") multiplier = 1024;
  else if (unit == "b") multiplier = 1;
  else return std::nullopt;
  return number * multiplier;
}

namespace {

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string::npos) return parts;
    start = end + 1;
  }
}

std::optional<std::array<uint8_t, 6>> parse_mac(const std::string& text) {
  const auto parts = split(text, ':');
  if (parts.size() != 6) return std::nullopt;
  std::array<uint8_t, 6> mac{};
  for (size_t i = 0; i < 6; ++i) {
    if (parts[i].size() != 2 || !std::isxdigit(static_cast<unsigned char>(parts[i][0])) ||
        !std::isxdigit(static_cast<unsigned char>(parts[i][1])))
      return std::nullopt;
    mac[i] = static_cast<uint8_t>(std::stoul(parts[i], nullptr, 16));
  }
  if (mac[0] & 1) return std::nullopt;  // A multicast address cannot be a NIC's.
  return mac;
}

}  // namespace

std::optional<DiskConfig> parse_disk(const std::string& text, std::string& error) {
  const auto parts = split(text, ',');
  DiskConfig disk;
  disk.path = parts[0];
  if (disk.path.empty()) {
    error = "--disk " + text + ": no file given (use --disk PATH[,ro][,id=NAME][,direct])";
    return std::nullopt;
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const auto& option = parts[i];
    if (option == "ro") {
      disk.read_only = true;
    } else if (option == "direct") {
      disk.direct = true;
    } else if (option.starts_with("id=")) {
      disk.id = option.substr(3);
      if (disk.id.empty() || disk.id.size() > 20) {
        error = "--disk " + text + ": id must be 1 to 20 characters (virtio-blk GET_ID)";
        return std::nullopt;
      }
    } else {
      error = "--disk " + text + ": unknown option '" + option + "' (use ro, id=NAME, direct)";
      return std::nullopt;
    }
  }
  return disk;
}

std::optional<NetConfig> parse_net(const std::string& text, std::string& error) {
  NetConfig net;
  for (const auto& option : split(text, ',')) {
    if (option.starts_with("tap=")) {
      net.tap = option.substr(4);
      if (net.tap.empty() || net.tap.size() >= 16) {
        error = "--net " + text + ": a tap name has 1 to 15 characters";
        return std::nullopt;
      }
    } else if (option.starts_with("mac=")) {
      net.mac = parse_mac(option.substr(4));
      if (!net.mac) {
        error = "--net " + text + ": mac must be six hex pairs like 52:54:00:12:34:56, unicast";
        return std::nullopt;
      }
    } else {
      error = "--net " + text + ": unknown option '" + option + "' (use tap=NAME[,mac=..])";
      return std::nullopt;
    }
  }
  if (net.tap.empty()) {
    error = "--net " + text + ": tap=NAME is required";
    return std::nullopt;
  }
  return net;
}

// HOSTDIR:TAG[:ro]; HOSTDIR may itself contain ':' (the tag and the option are taken from the end).
std::optional<ShareConfig> parse_share(const std::string& text, std::string& error) {
  const std::string usage = " (use --share HOSTDIR:TAG[:ro])";
  ShareConfig share;
  std::string rest = text;
  if (rest.ends_with(":ro")) {
    share.read_only = true;
    rest.resize(rest.size() - 3);
  }
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    error = "--share " + text + ": HOSTDIR and TAG are required" + usage;
    return std::nullopt;
  }
  share.host_dir = rest.substr(0, colon);
  share.tag = rest.substr(colon + 1);
  if (share.tag.empty() || share.tag.size() > 36) {
    error = "--share " + text + ": the tag must be 1 to 36 bytes (virtio-fs)" + usage;
    return std::nullopt;
  }
  return share;
}

namespace {

int print_prepared_image(const std::string& reference) {
  const auto prepared = image::prepare_image(reference, image::default_cache_dir());
  std::error_code error;
  std::printf("digest: %s\ndisk: %s\nsize: %ju\nstate: %s\n", prepared.digest.c_str(),
              prepared.disk.c_str(), static_cast<uintmax_t>(std::filesystem::file_size(prepared.disk, error)),
              prepared.converted ? "converted" : "cached");
  return 0;
}

void configure_logging(const std::string& level, const std::string& file) {
  std::shared_ptr<spdlog::logger> logger;
  if (file.empty()) {
    logger = spdlog::stderr_color_mt("ember");
    logger->set_pattern("ember: %^%l%$: %v");
  } else {
    // spdlog would make missing directories: a mistyped path should be an error instead.
    const auto directory = std::filesystem::path(file).parent_path();
    if (!directory.empty() && !std::filesystem::is_directory(directory))
      throw spdlog::spdlog_ex("no such directory: " + directory.string());
    // Appended to, opened before any jail: the jailed VMM writes through the inherited fd.
    logger = spdlog::basic_logger_mt("ember", file);
    logger->set_pattern("%H:%M:%S.%f ember[%P]: %l: %v");
    logger->flush_on(spdlog::level::trace);
  }
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

int exit_status(const MachineExit& exit) {
  switch (exit.kind) {
    case MachineExit::Kind::kPowerOff:
    case MachineExit::Kind::kReset:
      spdlog::info("{}", exit.message);
      return kExitOk;
    case MachineExit::Kind::kGuestPanic:
      std::fprintf(stderr, "ember: %s\n", exit.message.c_str());
      return kExitGuestPanic;
    case MachineExit::Kind::kInterrupted:
      std::fprintf(stderr, "ember: %s\n", exit.message.c_str());
      return 128 + exit.signal;
    case MachineExit::Kind::kFailure:
      break;
  }
  std::fprintf(stderr, "ember: error: %s\n", exit.message.c_str());
  return kExitFailure;
}

// The hypervisor ember's host itself runs under, from CPUID 0x40000000 when CPUID.1:ECX[31] says
// there is one: "TCGTCGTCGTCG" is QEMU's emulator (the lab of ../shared/HOSTS.md), "KVMKVMKVM" a
// KVM host (nested virtualization), and so on. Empty on bare metal.
std::string host_hypervisor() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  __cpuid(1, eax, ebx, ecx, edx);
  if (!(ecx & (1u << 31))) return "";
  __cpuid(0x40000000, eax, ebx, ecx, edx);
  char signature[13] = {};
  std::memcpy(signature, &ebx, 4);
  std::memcpy(signature + 4, &ecx, 4);
  std::memcpy(signature + 8, &edx, 4);
  std::string text(signature);
  for (char& c : text)
    if (!std::isprint(static_cast<unsigned char>(c))) c = '?';
  return text.empty() ? "unnamed" : text;
}

// `ember host`: what this host's KVM offers, for scripts and for people debugging a boot. The
// three kinds of ../shared/HOSTS.md: hardware (VMX/SVM, possibly nested), emulating (kvm_pvm) and
// none (no usable /dev/kvm: exit 1 with one line saying why).
int print_host(const std::string& kvm_path) {
  const bool pvm_module = ::access("/sys/module/kvm_pvm", F_OK) == 0;
  if (::access(kvm_path.c_str(), F_OK) != 0) {
    std::printf("kvm-kind: none\n");
    std::fflush(stdout);
    std::fprintf(stderr, "ember: %s: %s\n", kvm_path.c_str(),
                 pvm_module ? "missing: kvm_pvm is loaded but offers no KVM device (it does not bind "
                              "where the kernel is itself a kvm-pvm guest); run ember in tools/lab"
                            : "missing: no KVM module is loaded (kvm_intel or kvm_amd need VMX/SVM, "
                              "which this CPU does not offer); run ember in tools/lab");
    return kExitFailure;
  }
  const std::string hypervisor = host_hypervisor();
  if (pvm_module) {
    std::printf("kvm-kind: emulating (kvm_pvm): guest CPL0 code is emulated, guest user space cannot "
                "make system calls\n");
  } else if (hypervisor.starts_with("TCGTCGTCG")) {
    std::printf("kvm-kind: hardware (nested under QEMU TCG: the lab; guests run at emulator "
                "speed)\n");
  } else {
    std::printf("kvm-kind: hardware\n");
  }
  if (!hypervisor.empty()) std::printf("host-hypervisor: %s\n", hypervisor.c_str());
  Kvm kvm(kvm_path);
  Vm vm(kvm);
  Vcpu vcpu(vm, 0);
  std::printf("kvm-api: 12\nmax-vcpus: %d\ntsc-khz: %u\n", kvm.max_vcpus(), vcpu.tsc_khz());
  return kExitOk;
}

}  // namespace

void add_log_file_option(CLI::App& command, std::string& path) {
  command.add_option("--log-file", path,
                     "append the log to this file (with times) instead of writing it to stderr; "
                     "one-line errors still go to stderr");
}

void add_seccomp_option(CLI::App& command, std::string& setting) {
  command
      .add_option("--seccomp", setting,
                  "on (default): each VMM thread confined to the system calls it needs; off: for "
                  "debugging only")
      ->check(CLI::IsMember({"on", "off"}));
}

void add_jail_options(CLI::App& command, std::string& setting, uint32_t& uid, uint32_t& gid,
                      const char* default_text) {
  command
      .add_option("--jail", setting,
                  std::string("on: the VMM in namespaces of its own, a cgroup, an empty root, "
                              "without capabilities, as --uid/--gid (default: ") +
                      default_text + ")")
      ->check(CLI::IsMember({"on", "off"}));
  command.add_option("--uid", uid, "the jailed VMM's uid (default: one of its own per VM)")
      ->check(CLI::Range(1u, 0xfffffffeu));
  command.add_option("--gid", gid, "the jailed VMM's gid (default: as --uid's default)")
      ->check(CLI::Range(1u, 0xfffffffeu));
}

int run_cli(int argc, char** argv) {
  CLI::App app{"ember: a microVM monitor on Linux KVM"};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  std::string log_file;
  add_log_file_option(app, log_file);

  MachineConfig config;
  std::string memory = "256M";
  auto* boot = app.add_subcommand("boot", "Boot a Linux kernel in a microVM");
  boot->add_option("--kernel", config.kernel_path, "bzImage or ELF vmlinux (PVH entry if present)")
      ->required();
  boot->add_option("--initrd", config.initrd_path, "initial ramdisk");
  boot->add_option("--cmdline", config.cmdline, "kernel command line")->default_str("");
  boot->add_option("--cpus", config.cpus, "number of vCPUs")->default_val(1);
  boot->add_option("--memory", memory, "guest RAM, e.g. 512M or 2G (plain numbers are MiB)")
      ->default_val("256M");
  boot->add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  add_log_file_option(*boot, log_file);
  boot->add_option("--kvm", config.kvm_path, "KVM device")->default_val("/dev/kvm");
  std::vector<std::string> disks, nets;
  boot->add_option("--disk", disks, "virtio-blk disk: PATH[,ro][,id=NAME][,direct] (repeatable)");
  boot->add_option("--net", nets, "virtio-net on a tap: tap=NAME[,mac=52:54:00:..] (repeatable)");
  std::vector<std::string> shares;
  boot->add_option("--share", shares,
                   "virtio-fs share served by virtiofsd: HOSTDIR:TAG[:ro], mounted in the guest "
                   "with mount -t virtiofs TAG DIR (repeatable)");
  std::string console = "serial", transport = "pci";
  boot->add_option("--console", console,
                   "serial (COM1, ttyS0) or virtio (hvc0 gets input; COM1 keeps early output)")
      ->check(CLI::IsMember({"serial", "virtio"}));
  boot->add_option("--transport", transport,
                   "virtio transport: pci (default), mmio (described in ACPI) or mmio-cmdline "
                   "(virtio_mmio.device= appended to the kernel command line)")
      ->check(CLI::IsMember({"pci", "mmio", "mmio-cmdline"}));
  bool no_rng = false;
  boot->add_flag("--no-rng", no_rng, "no virtio-rng device");
  std::string seccomp = "on";
  add_seccomp_option(*boot, seccomp);
  std::string jail_setting = "off";
  uint32_t jail_uid = 0, jail_gid = 0;
  add_jail_options(*boot, jail_setting, jail_uid, jail_gid, "off");

  run::RunOptions run_options;
  auto* run = run::add_run_subcommand(app, run_options, log_level);
  add_log_file_option(*run, log_file);

  auto* image = app.add_subcommand("image", "Prepare container images for ember run");
  image->require_subcommand(1);
  std::string image_reference;
  auto* image_prepare = image->add_subcommand(
      "prepare", "Convert IMAGE (OCI layout, oci-archive, docker-archive or root directory) into its "
                 "cached erofs disk; prints digest, disk, size and state (converted or cached)");
  image_prepare->add_option("IMAGE", image_reference, "the image")->required();

  std::string host_kvm = "/dev/kvm";
  auto* host = app.add_subcommand("host", "Show what this host's KVM offers");
  host->add_option("--kvm", host_kvm, "KVM device")->default_val("/dev/kvm");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& error) {
    std::fprintf(stderr, "ember: usage error: %s (see ember --help)\n", error.what());
    return kExitUsage;
  }
  try {
    configure_logging(log_level, log_file);
  } catch (const spdlog::spdlog_ex& error) {
    std::fprintf(stderr, "ember: usage error: --log-file %s: %s\n", log_file.c_str(), error.what());
    return kExitUsage;
  }

  try {
    if (*host) return print_host(host_kvm);
    if (*run) return run::run_container(run_options);
    if (*image_prepare) return print_prepared_image(image_reference);
    const auto bytes = parse_memory_size(memory);
    if (!bytes) {
      std::fprintf(stderr, "ember: usage error: --memory %s: not a size (use e.g. 512M or 2G)\n",
                   memory.c_str());
      return kExitUsage;
    }
    config.memory_bytes = *bytes;
    for (const auto& text : disks) {
      std::string error;
      auto disk = parse_disk(text, error);
      if (!disk) {
        std::fprintf(stderr, "ember: usage error: %s\n", error.c_str());
        return kExitUsage;
      }
      config.disks.push_back(*disk);
    }
    for (const auto& text : nets) {
      std::string error;
      auto net = parse_net(text, error);
      if (!net) {
        std::fprintf(stderr, "ember: usage error: %s\n", error.c_str());
        return kExitUsage;
      }
      config.nets.push_back(*net);
    }
    for (const auto& text : shares) {
      std::string error;
      auto share = parse_share(text, error);
      if (!share) {
        std::fprintf(stderr, "ember: usage error: %s\n", error.c_str());
        return kExitUsage;
      }
      config.shares.push_back(*share);
    }
    config.console = console == "virtio" ? ConsoleKind::kVirtio : ConsoleKind::kSerial;
    config.transport = transport == "mmio"           ? Transport::kMmio
                       : transport == "mmio-cmdline" ? Transport::kMmioCommandLine
                                                     : Transport::kPci;
    config.entropy = !no_rng;
    config.seccomp = seccomp::wanted(seccomp);
    if (jail_setting != "on") {
      Machine machine(config);
      return exit_status(machine.run());
    }
    jail::Options jail_options;
    jail_options.name = "boot";
    jail_options.uid = jail_uid;
    jail_options.gid = jail_gid;
    jail_options.network_namespace = config.nets.empty();
    jail_options.memory_bytes = config.memory_bytes;
    jail_options.cpus = config.cpus;
    jail_options.shares = static_cast<uint32_t>(config.shares.size());
    jail_options.failure_status = kExitFailure;
    return jail::run_jailed(jail_options, [&](jail::Jail& jail) {
      try {
        Machine machine(config);
        jail.lock();
        return exit_status(machine.run());
      } catch (const std::exception& error) {
        std::fprintf(stderr, "ember: error: %s\n", error.what());
        return kExitFailure;
      }
    });
  } catch (const std::exception& error) {
    std::fprintf(stderr, "ember: error: %s\n", error.what());
    return kExitFailure;
  }
}

}  // namespace ember
