#include "vmm/run/spec.hpp"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <limits>
#include <random>

#include "vmm/error.hpp"

namespace ember::run {

namespace {

std::string key_of(const std::string& assignment) {
  return assignment.substr(0, assignment.find('='));
}

bool has_key(const std::vector<std::string>& env, const std::string& key) {
  for (const auto& entry : env)
    if (key_of(entry) == key) return true;
  return false;
}

// The guest protocol carries the spec as UTF-8 JSON. Text that is not UTF-8 (a home directory from
// the image's /etc/passwd, an argument from the command line) is a one-line Error naming the key,
// not the JSON library's exception when the spec is sent.
void check_utf8(const nlohmann::json& value, const std::string& key) {
  if (value.is_structured()) {
    for (const auto& item : value) check_utf8(item, key);
    return;
  }
  if (!value.is_string()) return;
  try {
    static_cast<void>(value.dump());
  } catch (const nlohmann::json::type_error&) {
    std::string shown = value.get<std::string>();
    for (char& c : shown)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
    throw Error("launch spec: \"" + key + "\" holds text that is not UTF-8 (" + shown +
                "); the guest protocol carries UTF-8");
  }
}

}  // namespace

void check_env_assignment(const std::string& assignment, const std::string& where) {
  const size_t equals = assignment.find('=');
  if (equals == std::string::npos) throw Error(where + " " + assignment + ": expected KEY=VALUE");
  if (equals == 0) throw Error(where + " " + assignment + ": empty variable name");
  if (assignment.find('\0') != std::string::npos)
    throw Error(where + ": NUL byte in " + key_of(assignment));
}

std::vector<std::string> read_env_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw Error("--env-file " + path.string() + ": cannot read it");
  std::vector<std::string> env;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    check_env_assignment(line.substr(first),
                         "--env-file " + path.string() + ":" + std::to_string(number) + ":");
    env.push_back(line.substr(first));
  }
  return env;
}

std::vector<std::string> merge_env(std::span<const std::vector<std::string>> layers) {
  std::vector<std::string> merged;
  for (const auto& layer : layers) {
    for (const auto& assignment : layer) {
      const std::string key = key_of(assignment);
      bool replaced = false;
      for (auto& existing : merged) {
        if (key_of(existing) == key) {
          existing = assignment;
          replaced = true;
          break;
        }
      }
      if (!replaced) merged.push_back(assignment);
    }
  }
  return merged;
}

std::vector<std::string> with_defaults(std::vector<std::string> env, const std::string& hostname,
                                       const std::string& home) {
  if (!has_key(env, "PATH")) env.insert(env.begin(), kDefaultPath);
  if (!has_key(env, "HOSTNAME")) env.insert(env.begin(), "HOSTNAME=" + hostname);
  if (!has_key(env, "HOME")) env.push_back("HOME=" + (home.empty() ? std::string("/") : home));
  return env;
}

void check_name(const std::string& name) {
  bool valid = !name.empty() && name.size() <= 63 && name.front() != '-' && name.back() != '-';
  for (char c : name)
    valid =
        valid && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_');
  if (!valid)
    throw Error("--name " + name +
                ": use 1 to 63 letters, digits, '-', '.' or '_' (it is the hostname)");
}

std::string random_hostname() {
  std::random_device random;
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string name = "ember-";
  for (uint32_t bits = random(), i = 0; i < 6; ++i, bits >>= 4) name += kDigits[bits & 15];
  return name;
}

Volume parse_volume(const std::string& text) {
  const std::string usage = " (use -v HOSTDIR:GUESTDIR[:ro])";
  std::string rest = text;
  Volume volume;
  if (rest.ends_with(":ro")) {
    volume.read_only = true;
    rest.resize(rest.size() - 3);
  } else if (rest.ends_with(":rw")) {
    rest.resize(rest.size() - 3);
  }
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size())
    throw Error("-v " + text + ": HOSTDIR and GUESTDIR are required" + usage);
  volume.guest_dir = rest.substr(colon + 1);
  if (volume.guest_dir.front() != '/')
    throw Error("-v " + text + ": GUESTDIR must be an absolute path" + usage);
  std::error_code error;
  const std::filesystem::path host = std::filesystem::absolute(rest.substr(0, colon), error);
  if (error || !std::filesystem::is_directory(host, error))
    throw Error("-v " + text + ": " + rest.substr(0, colon) + " is not a directory");
  volume.host_dir = host.lexically_normal().string();
  return volume;
}

nlohmann::json parse_ulimit(const std::string& text) {
  static constexpr const char* kNames[] = {"as",     "core",   "cpu",     "data",       "fsize",
                                           "locks",  "memlock", "msgqueue", "nice",     "nofile",
                                           "nproc",  "rss",    "rtprio",  "rttime",     "sigpending",
                                           "stack"};
  const std::string usage = " (use --ulimit NAME=SOFT[:HARD], e.g. nofile=1024:4096)";
  const auto equals = text.find('=');
  if (equals == std::string::npos) throw Error("--ulimit " + text + ": no '='" + usage);
  const std::string name = text.substr(0, equals);
  if (std::find_if(std::begin(kNames), std::end(kNames), [&](const char* known) { return name == known; }) ==
      std::end(kNames))
    throw Error("--ulimit " + text + ": unknown resource '" + name + "'" + usage);
  const std::string values = text.substr(equals + 1);
  const auto colon = values.find(':');
  auto number = [&](const std::string& value) -> uint64_t {
    if (value == "unlimited" || value == "-1") return std::numeric_limits<uint64_t>::max();  // RLIM_INFINITY
    uint64_t parsed = 0;
    auto [end, failure] = std::from_chars(value.data(), value.data() + value.size(), parsed);
    if (value.empty() || failure != std::errc() || end != value.data() + value.size())
      throw Error("--ulimit " + text + ": '" + value + "' is not a number" + usage);
    return parsed;
  };
  const uint64_t soft = number(values.substr(0, colon));
  const uint64_t hard = colon == std::string::npos ? soft : number(values.substr(colon + 1));
  if (soft > hard) throw Error("--ulimit " + text + ": the soft limit is above the hard limit");
  return {{"resource", name}, {"soft", soft}, {"hard", hard}};
}

nlohmann::json spec_json(const LaunchSpec& spec) {
  nlohmann::json json = {
      {"version", 1},
      {"args", spec.args},
      {"env", spec.env},
      {"cwd", spec.cwd},
      {"uid", spec.uid},
      {"gid", spec.gid},
      {"groups", spec.groups},
      {"hostname", spec.hostname},
      {"tty", spec.tty},
      {"stdin", spec.stdin_open},
      {"rlimits", spec.rlimits},
      {"root", {{"serial", "ember-root"}, {"fstype", spec.root_fstype}}},
      {"scratch", spec.scratch ? nlohmann::json{{"serial", "ember-scratch"}, {"fstype", "ext4"}}
                               : nlohmann::json(nullptr)},
      {"mounts", spec.mounts},
      {"network", spec.network},
      {"stop_signal", 15},
  };
  for (const auto& [key, value] : json.items()) check_utf8(value, key);
  return json;
}

}  // namespace ember::run
