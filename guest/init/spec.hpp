// The launch spec as ember-init reads it (kStart's payload; guest/protocol/protocol.hpp describes
// every key), and the two lookups the payload's start needs: rlimit names and args[0] in the spec's
// PATH.
#pragma once

#include <sys/resource.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "guest/init/network.hpp"

namespace ember::init {

struct Rlimit {
  int resource = 0;  // RLIMIT_*
  rlim_t soft = 0;
  rlim_t hard = 0;
};

struct DiskSpec {
  std::string serial;  // /sys/block/vdX/serial
  std::string fstype;
};

struct MountSpec {
  std::string type;    // "virtiofs"
  std::string source;  // the virtio-fs tag
  std::string target;  // absolute path inside the container
  bool readonly = false;
};

struct LaunchSpec {
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string cwd = "/";
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> groups;
  std::string hostname;
  bool tty = false;
  bool stdin_open = false;
  std::vector<Rlimit> rlimits;
  DiskSpec root;
  std::optional<DiskSpec> scratch;  // nullopt: the writable layer lives on a tmpfs
  std::vector<MountSpec> mounts;
  std::optional<NetworkSpec> network;
  int stop_signal = 15;
};

// Parses and checks kStart's JSON. Throws ember::Error with one line naming the key and the
// problem.
LaunchSpec parse_launch_spec(std::string_view json);

// RLIMIT_* for a docker/ulimit resource name ("nofile", "nproc", "core", ...); nullopt if unknown.
std::optional<int> rlimit_resource(std::string_view name);

// The value of `key` in a K=V environment; nullopt when it has none.
std::optional<std::string> env_value(const std::vector<std::string>& env, std::string_view key);

// Where args[0] is, as execvp would find it. A name with '/' is returned as it is. Otherwise each
// directory of `path` (":"-separated, an empty entry meaning the current directory) is tried in
// order; the first regular file there that access(X_OK) accepts wins.
struct CommandLookup {
  std::string path;  // empty when not found
  int error = 0;     // when not found: EACCES (a match exists but cannot be executed) or ENOENT
};
CommandLookup find_command(const std::string& name, const std::string& path);

}  // namespace ember::init
