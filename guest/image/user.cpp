// docker's -u: names looked up in the image's /etc/passwd and /etc/group (cached beside its disk).
#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

#include "guest/image/prepare.hpp"
#include "vmm/error.hpp"

namespace ember::image {
namespace {

std::vector<std::string> split(const std::string& line, char separator) {
  std::vector<std::string> fields;
  std::string field;
  std::istringstream in(line);
  while (std::getline(in, field, separator)) fields.push_back(field);
  if (!line.empty() && line.back() == separator) fields.emplace_back();
  return fields;
}

bool parse_id(const std::string& text, uint32_t& id) {
  if (text.empty()) return false;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), id);
  return error == std::errc() && end == text.data() + text.size();
}

// Lines of an /etc/passwd or /etc/group with at least `fields` fields and a numeric third one.
std::vector<std::vector<std::string>> entries(const std::string& text, size_t fields) {
  std::vector<std::vector<std::string>> result;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.front() == '#') continue;
    auto parts = split(line, ':');
    uint32_t id;
    if (parts.size() >= fields && parse_id(parts[2], id)) result.push_back(std::move(parts));
  }
  return result;
}

std::string read_optional(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  return text.str();
}

}  // namespace

ResolvedUser resolve_user(const std::string& user, const std::string& passwd_text,
                          const std::string& group_text, const std::string& image_name) {
  ResolvedUser resolved;
  if (user.empty()) {
    resolved.groups = {0};
    resolved.home = "/root";
    return resolved;
  }
  const size_t colon = user.find(':');
  const std::string user_part = user.substr(0, colon);
  const std::string group_part = colon == std::string::npos ? "" : user.substr(colon + 1);
  if (user_part.empty() || (colon != std::string::npos && group_part.empty()))
    throw Error("-u " + user + ": expected USER[:GROUP] (names or numbers)");

  const auto users = entries(passwd_text, 7);
  const auto groups = entries(group_text, 3);
  const std::vector<std::string>* account = nullptr;
  uint32_t uid = 0;
  if (parse_id(user_part, uid)) {
    for (const auto& entry : users)
      if (uint32_t id; parse_id(entry[2], id) && id == uid) {
        account = &entry;
        break;
      }
  } else {
    for (const auto& entry : users)
      if (entry[0] == user_part) account = &entry;
    if (!account)
      throw Error("unknown user '" + user_part + "' in " + image_name +
                  " (not in its /etc/passwd)");
    parse_id((*account)[2], uid);
  }
  resolved.uid = uid;
  if (account) {
    parse_id((*account)[3], resolved.gid);
    resolved.home = (*account)[5].empty() ? "/" : (*account)[5];
  }
  if (!group_part.empty()) {
    if (!parse_id(group_part, resolved.gid)) {
      const std::vector<std::string>* group = nullptr;
      for (const auto& entry : groups)
        if (entry[0] == group_part) group = &entry;
      if (!group)
        throw Error("unknown group '" + group_part + "' in " + image_name +
                    " (not in its /etc/group)");
      parse_id((*group)[2], resolved.gid);
    }
  }
  resolved.groups.push_back(resolved.gid);
  if (account) {
    for (const auto& entry : groups) {
      if (entry.size() < 4) continue;
      for (const auto& member : split(entry[3], ','))
        if (uint32_t gid;
            member == (*account)[0] && parse_id(entry[2], gid) &&
            std::find(resolved.groups.begin(), resolved.groups.end(), gid) == resolved.groups.end())
          resolved.groups.push_back(gid);
    }
  }
  return resolved;
}

ResolvedUser resolve_user(const std::string& user, const PreparedImage& image) {
  return resolve_user(user.empty() ? image.config.user : user, read_optional(image.passwd),
                      read_optional(image.group), "image " + image.reference);
}

}  // namespace ember::image
