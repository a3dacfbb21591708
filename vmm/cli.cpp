#include "vmm/cli.hpp"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <fstream>

#include "vmm/error.hpp"
#include "vmm/kvm.hpp"
#include "vmm/machine.hpp"

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

void configure_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("ember");
  logger->set_pattern("ember: %^%l%$: %v");
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

// `ember host`: what this host's KVM offers, for scripts and for people debugging a boot.
int print_host(const std::string& kvm_path) {
  const bool emulating = ::access("/sys/module/kvm_pvm", F_OK) == 0;
  std::printf("kvm-kind: %s\n", emulating ? "emulating (kvm_pvm): guest CPL0 code is emulated, "
                                            "guest user space cannot make system calls"
                                          : "hardware");
  Kvm kvm(kvm_path);
  Vm vm(kvm);
  Vcpu vcpu(vm, 0);
  std::printf("kvm-api: 12\nmax-vcpus: %d\ntsc-khz: %u\n", kvm.max_vcpus(), vcpu.tsc_khz());
  return kExitOk;
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"ember: a microVM monitor on Linux KVM"};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

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
  boot->add_option("--kvm", config.kvm_path, "KVM device")->default_val("/dev/kvm");

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
  configure_logging(log_level);

  try {
    if (*host) return print_host(host_kvm);
    const auto bytes = parse_memory_size(memory);
    if (!bytes) {
      std::fprintf(stderr, "ember: usage error: --memory %s: not a size (use e.g. 512M or 2G)\n",
                   memory.c_str());
      return kExitUsage;
    }
    config.memory_bytes = *bytes;
    Machine machine(config);
    return exit_status(machine.run());
  } catch (const std::exception& error) {
    std::fprintf(stderr, "ember: error: %s\n", error.what());
    return kExitFailure;
  }
}

}  // namespace ember
