// `ember run [OPTIONS] IMAGE [-- CMD ARGS...]`: prepares the image, builds the initrd and the
// scratch disk, boots the VM with the image and scratch disks, virtio-rng and hvc0 as the protocol
// channel (COM1's output goes to the debug log), and plays ember's side of the protocol until the
// container's status is known. Exit status: the container's (docker's numbering), or 125 when
// ember, the VM or ember-init failed (one line on stderr says why).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace ember::run {

struct RunOptions {
  uint32_t cpus = 1;
  std::string memory = "512M";
  std::vector<std::string> env;        // -e K=V
  std::vector<std::string> env_files;  // --env-file
  std::string workdir;                 // -w
  std::string user;                    // -u
  std::vector<std::string> volumes;    // -v HOSTDIR:GUESTDIR[:ro]
  std::vector<std::string> ulimits;    // --ulimit NAME=SOFT[:HARD]
  std::string net = "none";            // --net none|tap
  std::vector<std::string> ports;      // -p HOSTPORT:GUESTPORT
  bool interactive = false;            // -i
  bool tty = false;                    // -t
  std::string name;                    // --name (the hostname)
  bool keep = false;                   // --keep (default --rm)
  uint32_t stop_timeout = 10;          // seconds between SIGINT/SIGTERM and SIGKILL
  std::string kernel;
  std::string kernel_args;
  std::string seccomp = "on";          // --seccomp on|off
  std::string jail;                    // --jail on|off (default: on as root)
  uint32_t uid = 0, gid = 0;           // --uid/--gid in the jail (0: one of its own)
  std::vector<std::string> image_and_command;  // IMAGE [--] CMD ARGS...
};

// Registers `run` on the app (its options fill `options`; --log-level fills `log_level`).
CLI::App* add_run_subcommand(CLI::App& app, RunOptions& options, std::string& log_level);

// --jail's setting: "on", "off", or "" for the default (on when ember runs as root).
bool jail_wanted(const std::string& setting);

// Runs the container; returns ember's exit status. Never throws.
int run_container(const RunOptions& options);

}  // namespace ember::run
