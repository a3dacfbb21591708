#include "vmm/run/spec.hpp"

#include <fstream>
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

nlohmann::json spec_json(const LaunchSpec& spec) {
  return {
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
      {"rlimits",
       nlohmann::json::array({{{"resource", "nofile"}, {"soft", 1048576}, {"hard", 1048576}}})},
      {"root", {{"serial", "ember-root"}, {"fstype", spec.root_fstype}}},
      {"scratch", spec.scratch ? nlohmann::json{{"serial", "ember-scratch"}, {"fstype", "ext4"}}
                               : nlohmann::json(nullptr)},
      {"mounts", spec.mounts},
      {"network", spec.network},
      {"stop_signal", 15},
  };
}

}  // namespace ember::run
