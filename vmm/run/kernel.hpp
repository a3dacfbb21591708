// Which kernel `ember run` boots, with what command line, and where its modules are.
//   --kernel PATH: that file; modules from PATH's directory's lib/modules/<release>/ if present (an
//     unpacked Debian kernel package, as tools/setup lays out debian-cloud-kernel/).
//   otherwise the host's default kernel, <cache>/default-kernel/: `kernel` (file or symlink),
//     optional `cmdline` (extra arguments this host needs), optional lib/modules/<release>/ (also
//     looked for next to the symlink's target).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace ember::run {

struct KernelChoice {
  std::filesystem::path kernel;
  std::string host_arguments;                    // The default kernel's `cmdline` file.
  std::optional<std::filesystem::path> modules;  // lib/modules/<release>
  std::string description;                       // For the info log: which kernel and why.
};

// ${EMBER_CACHE:-~/.cache/ember}
std::filesystem::path ember_cache_dir();

// One-line Error when the kernel is missing (naming tools/demo and --kernel for the default).
KernelChoice choose_kernel(const std::optional<std::filesystem::path>& explicit_kernel,
                           const std::filesystem::path& cache_dir);

// lib/modules/<release> under `root` for this kernel, if any: the only release there, or the one
// a bzImage's version string names. One-line Error when several match none.
std::optional<std::filesystem::path> find_modules(const std::filesystem::path& root,
                                                  const std::filesystem::path& kernel);

// console=ttyS0 quiet panic=-1, the host's arguments, the user's; tsc_early_khz= is added by the
// Machine (MachineConfig::tsc_khz_on_cmdline), which knows KVM's TSC frequency.
std::string kernel_command_line(const KernelChoice& kernel, const std::string& user_arguments);

}  // namespace ember::run
