// The launch spec (kStart's payload, guest/protocol/protocol.hpp) and the docker rules for what
// goes into it: the environment (image Env, then --env-file, then -e, later values winning;
// HOSTNAME, HOME and a default PATH added as docker does), the working directory and the hostname.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ember::run {

// docker's PATH for images that set none.
inline constexpr const char* kDefaultPath =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// "K=V" from -e: one-line Error (naming the option) without '=' or with an empty key.
void check_env_assignment(const std::string& assignment, const std::string& where);
// The K=V lines of an --env-file: blank lines and '#' comments skipped; one-line Error naming
// file:line for anything else without '='.
std::vector<std::string> read_env_file(const std::filesystem::path& path);

// Later assignments replace earlier ones of the same key in place; new keys are appended.
std::vector<std::string> merge_env(std::span<const std::vector<std::string>> layers);
// Adds HOSTNAME (first), HOME and PATH where the environment has none.
std::vector<std::string> with_defaults(std::vector<std::string> env, const std::string& hostname,
                                       const std::string& home);

// --name as a hostname: 1-63 letters, digits, '-' (not first or last), '.', '_'; one-line Error.
void check_name(const std::string& name);
// "ember-" and 6 random hex digits.
std::string random_hostname();

struct LaunchSpec {
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string cwd = "/";
  uint32_t uid = 0, gid = 0;
  std::vector<uint32_t> groups;
  std::string hostname;
  bool tty = false;
  bool stdin_open = false;
  std::string root_fstype = "erofs";
  bool scratch = true;  // An ext4 scratch disk (else tmpfs holds the writable layer).
  nlohmann::json mounts = nlohmann::json::array();
  nlohmann::json network = nullptr;
  // nofile 1048576 as docker's default; --ulimit replaces the list.
  nlohmann::json rlimits =
      nlohmann::json::array({{{"resource", "nofile"}, {"soft", 1048576}, {"hard", 1048576}}});
};

// -v HOSTDIR:GUESTDIR[:ro]: HOSTDIR an existing directory (made absolute), GUESTDIR absolute.
struct Volume {
  std::string host_dir;
  std::string guest_dir;
  bool read_only = false;
};
Volume parse_volume(const std::string& text);

// --ulimit NAME=SOFT[:HARD] (HARD defaults to SOFT; "unlimited" allowed) as a launch spec rlimit.
nlohmann::json parse_ulimit(const std::string& text);

// Every key of protocol.hpp's launch spec. Throws a one-line Error naming the key when a string is
// not UTF-8 (the JSON could not be sent).
nlohmann::json spec_json(const LaunchSpec& spec);

}  // namespace ember::run
