#include "guest/init/spec.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "vmm/error.hpp"

namespace ember::init {
namespace {

using nlohmann::json;

const json& member(const json& object, const char* key, const std::string& where) {
  const auto found = object.find(key);
  if (found == object.end()) throw Error("launch spec: " + where + " has no \"" + key + "\"");
  return *found;
}

std::string text(const json& object, const char* key, const std::string& where = "the spec") {
  const json& value = member(object, key, where);
  if (!value.is_string()) throw Error("launch spec: \"" + std::string(key) + "\" is not a string");
  return value.get<std::string>();
}

bool flag(const json& object, const char* key) {
  const json& value = member(object, key, "the spec");
  if (!value.is_boolean())
    throw Error("launch spec: \"" + std::string(key) + "\" is not true or false");
  return value.get<bool>();
}

uint64_t number(const json& object, const char* key, uint64_t maximum,
                const std::string& where = "the spec") {
  const json& value = member(object, key, where);
  if (!value.is_number_unsigned() || value.get<uint64_t>() > maximum)
    throw Error("launch spec: \"" + std::string(key) + "\" in " + where +
                " is not a number from 0 to " + std::to_string(maximum));
  return value.get<uint64_t>();
}

std::vector<std::string> strings(const json& object, const char* key) {
  const json& value = member(object, key, "the spec");
  if (!value.is_array()) throw Error("launch spec: \"" + std::string(key) + "\" is not an array");
  std::vector<std::string> result;
  for (const json& item : value) {
    if (!item.is_string())
      throw Error("launch spec: \"" + std::string(key) + "\" holds a non-string");
    result.push_back(item.get<std::string>());
  }
  return result;
}

std::optional<DiskSpec> disk(const json& object, const char* key) {
  const json& value = member(object, key, "the spec");
  if (value.is_null()) return std::nullopt;
  if (!value.is_object()) throw Error("launch spec: \"" + std::string(key) + "\" is not an object");
  const std::string where = "\"" + std::string(key) + "\"";
  DiskSpec result{text(value, "serial", where), text(value, "fstype", where)};
  if (result.serial.empty() || result.fstype.empty())
    throw Error("launch spec: " + where + " has an empty serial or fstype");
  return result;
}

std::vector<Rlimit> rlimits(const json& object) {
  const json& value = member(object, "rlimits", "the spec");
  if (!value.is_array()) throw Error("launch spec: \"rlimits\" is not an array");
  std::vector<Rlimit> result;
  for (const json& item : value) {
    if (!item.is_object()) throw Error("launch spec: \"rlimits\" holds a non-object");
    const std::string name = text(item, "resource", "an rlimit");
    const auto resource = rlimit_resource(name);
    if (!resource) throw Error("launch spec: unknown rlimit resource \"" + name + "\"");
    const auto maximum = std::numeric_limits<uint64_t>::max();
    Rlimit limit{*resource, number(item, "soft", maximum, "rlimit " + name),
                 number(item, "hard", maximum, "rlimit " + name)};
    if (limit.soft > limit.hard)
      throw Error("launch spec: rlimit " + name + " has soft above hard");
    result.push_back(limit);
  }
  return result;
}

std::vector<MountSpec> mounts(const json& object) {
  const json& value = member(object, "mounts", "the spec");
  if (!value.is_array()) throw Error("launch spec: \"mounts\" is not an array");
  std::vector<MountSpec> result;
  for (const json& item : value) {
    if (!item.is_object()) throw Error("launch spec: \"mounts\" holds a non-object");
    MountSpec mount{text(item, "type", "a mount"), text(item, "source", "a mount"),
                    text(item, "target", "a mount"), false};
    const json& readonly = member(item, "readonly", "a mount");
    if (!readonly.is_boolean())
      throw Error("launch spec: a mount's \"readonly\" is not true or false");
    mount.readonly = readonly.get<bool>();
    if (mount.type != "virtiofs")
      throw Error("launch spec: mount type \"" + mount.type + "\" is not virtiofs");
    if (mount.source.empty())
      throw Error("launch spec: a mount on " + mount.target + " has no source");
    if (mount.target.empty() || mount.target.front() != '/')
      throw Error("launch spec: mount target \"" + mount.target + "\" is not an absolute path");
    result.push_back(std::move(mount));
  }
  return result;
}

std::optional<NetworkSpec> network(const json& object) {
  const json& value = member(object, "network", "the spec");
  if (value.is_null()) return std::nullopt;
  if (!value.is_object()) throw Error("launch spec: \"network\" is not an object");
  NetworkSpec result;
  result.interface_name = text(value, "interface", "\"network\"");
  result.mac = text(value, "mac", "\"network\"");
  result.address = text(value, "address", "\"network\"");
  result.gateway = text(value, "gateway", "\"network\"");
  result.mtu = static_cast<uint32_t>(number(value, "mtu", 65535, "\"network\""));
  const json& dns = member(value, "dns", "\"network\"");
  if (!dns.is_array()) throw Error("launch spec: \"network\".\"dns\" is not an array");
  for (const json& server : dns) {
    if (!server.is_string()) throw Error("launch spec: \"network\".\"dns\" holds a non-string");
    result.dns.push_back(server.get<std::string>());
  }
  return result;
}

}  // namespace

LaunchSpec parse_launch_spec(std::string_view text_json) {
  const json spec = json::parse(text_json, nullptr, false);
  if (spec.is_discarded()) throw Error("launch spec: not valid JSON");
  if (!spec.is_object()) throw Error("launch spec: not a JSON object");
  if (number(spec, "version", std::numeric_limits<uint32_t>::max()) != 1)
    throw Error("launch spec: version " + spec["version"].dump() + " is not 1");
  LaunchSpec result;
  result.args = strings(spec, "args");
  if (result.args.empty() || result.args.front().empty())
    throw Error("launch spec: \"args\" has no command");
  result.env = strings(spec, "env");
  for (const std::string& assignment : result.env)
    if (assignment.find('=') == std::string::npos || assignment.front() == '=')
      throw Error("launch spec: environment entry \"" + assignment + "\" is not K=V");
  result.cwd = text(spec, "cwd");
  if (result.cwd.empty() || result.cwd.front() != '/')
    throw Error("launch spec: cwd \"" + result.cwd + "\" is not an absolute path");
  const auto max_id = std::numeric_limits<uint32_t>::max() - 1;  // (uid_t)-1 means "unchanged"
  result.uid = static_cast<uint32_t>(number(spec, "uid", max_id));
  result.gid = static_cast<uint32_t>(number(spec, "gid", max_id));
  const json& groups = member(spec, "groups", "the spec");
  if (!groups.is_array()) throw Error("launch spec: \"groups\" is not an array");
  for (const json& group : groups) {
    if (!group.is_number_unsigned() || group.get<uint64_t>() > max_id)
      throw Error("launch spec: \"groups\" holds something other than a group id");
    result.groups.push_back(group.get<uint32_t>());
  }
  result.hostname = text(spec, "hostname");
  if (result.hostname.size() > 64) throw Error("launch spec: hostname longer than 64 bytes");
  result.tty = flag(spec, "tty");
  result.stdin_open = flag(spec, "stdin");
  result.rlimits = rlimits(spec);
  const auto root = disk(spec, "root");
  if (!root) throw Error("launch spec: \"root\" is null");
  result.root = *root;
  result.scratch = disk(spec, "scratch");
  result.mounts = mounts(spec);
  result.network = network(spec);
  result.stop_signal = static_cast<int>(number(spec, "stop_signal", 64));
  return result;
}

std::optional<int> rlimit_resource(std::string_view name) {
  // docker's --ulimit names (the ulimit(1) long names as Go's units.ParseUlimit knows them).
  static constexpr std::array<std::pair<std::string_view, int>, 16> kResources{{
      {"as", RLIMIT_AS},
      {"core", RLIMIT_CORE},
      {"cpu", RLIMIT_CPU},
      {"data", RLIMIT_DATA},
      {"fsize", RLIMIT_FSIZE},
      {"locks", RLIMIT_LOCKS},
      {"memlock", RLIMIT_MEMLOCK},
      {"msgqueue", RLIMIT_MSGQUEUE},
      {"nice", RLIMIT_NICE},
      {"nofile", RLIMIT_NOFILE},
      {"nproc", RLIMIT_NPROC},
      {"rss", RLIMIT_RSS},
      {"rtprio", RLIMIT_RTPRIO},
      {"rttime", RLIMIT_RTTIME},
      {"sigpending", RLIMIT_SIGPENDING},
      {"stack", RLIMIT_STACK},
  }};
  for (const auto& [known, resource] : kResources)
    if (known == name) return resource;
  return std::nullopt;
}

std::optional<std::string> env_value(const std::vector<std::string>& env, std::string_view key) {
  for (const std::string& assignment : env)
    if (assignment.size() > key.size() && assignment.compare(0, key.size(), key) == 0 &&
        assignment[key.size()] == '=')
      return assignment.substr(key.size() + 1);
  return std::nullopt;
}

CommandLookup find_command(const std::string& name, const std::string& path) {
  if (name.find('/') != std::string::npos) return {name, 0};
  int error = ENOENT;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    const std::string directory = path.substr(start, end - start);
    const std::string candidate = (directory.empty() ? std::string(".") : directory) + "/" + name;
    struct stat status {};
    if (::stat(candidate.c_str(), &status) == 0 && S_ISREG(status.st_mode)) {
      if (::access(candidate.c_str(), X_OK) == 0) return {candidate, 0};
      error = EACCES;
    }
    start = end + 1;
  }
  return {"", error};
}

}  // namespace ember::init
