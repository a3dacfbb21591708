// The command line: `ember boot`, `ember host`. Fills a MachineConfig; knows nothing of KVM.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace CLI {
class App;
}

namespace ember {

// ember's exit statuses (`ember boot`).
inline constexpr int kExitOk = 0;           // Guest powered off or rebooted.
inline constexpr int kExitFailure = 1;      // The VMM failed; one line on stderr says why.
inline constexpr int kExitUsage = 2;        // Bad command line.
inline constexpr int kExitGuestPanic = 3;   // The guest kernel panicked (pvpanic).
// Stopped by a host signal: 128 + the signal number, as a shell reports it.

// "512M", "2G", "65536K", "1073741824B"; a bare number is MiB. nullopt if it is not a size.
std::optional<uint64_t> parse_memory_size(const std::string& text);

struct DiskConfig;
struct NetConfig;
struct ShareConfig;
// Parse one --disk / --net / --share value; on error return nullopt and set `error` to a one-line
// reason.
std::optional<DiskConfig> parse_disk(const std::string& text, std::string& error);
std::optional<NetConfig> parse_net(const std::string& text, std::string& error);
std::optional<ShareConfig> parse_share(const std::string& text, std::string& error);

// --seccomp on|off on a subcommand (boot, run); seccomp::wanted() reads the value.
void add_seccomp_option(CLI::App& command, std::string& setting);
// --log-file PATH: the log into a file instead of stderr.
void add_log_file_option(CLI::App& command, std::string& path);
// --jail on|off, --uid, --gid (vmm/jail.hpp); `default_text` says what the default is.
void add_jail_options(CLI::App& command, std::string& setting, uint32_t& uid, uint32_t& gid,
                      const char* default_text);

int run_cli(int argc, char** argv);

}  // namespace ember
