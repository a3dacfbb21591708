#include "vmm/run/initrd.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "guest/image/oci_layout.hpp"
#include "vmm/error.hpp"
#include "vmm/run/cpio.hpp"

namespace ember::run {

namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path.string());
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

// "kernel/fs/overlayfs/overlay.ko.xz" -> "overlay"; '-' as '_' as the kernel does.
std::string module_name(const std::string& path) {
  std::string name = fs::path(path).filename().string();
  name = name.substr(0, name.find(".ko"));
  for (auto& c : name)
    if (c == '-') c = '_';
  return name;
}

std::string trim(const std::string& text) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1);
}

// Feeds one key part to the initrd's cache key; a string goes with its terminating NUL so that
// adjacent parts cannot run into each other.
void add_to_key(image::Sha256& key, const std::string& text) { key.update(text.c_str(), text.size() + 1); }
void add_to_key(image::Sha256& key, std::span<const uint8_t> bytes) { key.update(bytes.data(), bytes.size()); }

}  // namespace

std::vector<std::string> modules_in_load_order(const fs::path& release_dir,
                                               std::span<const std::string> wanted) {
  std::ifstream in(release_dir / "modules.dep");
  if (!in) throw Error("cannot read " + (release_dir / "modules.dep").string());
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> by_name;  // path, deps
  std::string line;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string path = trim(line.substr(0, colon));
    std::vector<std::string> dependencies;
    std::string rest = line.substr(colon + 1), word;
    for (std::istringstream words(rest); words >> word;) dependencies.push_back(word);
    by_name[module_name(path)] = {path, dependencies};
  }
  std::vector<std::string> order;
  std::set<std::string> visited;
  // Depth first, dependencies before the module (modules.dep lists every indirect dependency too,
  // so each dependency's own line orders it among the others).
  std::function<void(const std::string&)> visit = [&](const std::string& name) {
    if (!visited.insert(name).second) return;
    const auto found = by_name.find(name);
    if (found == by_name.end()) return;
    for (const auto& dependency : found->second.second) visit(module_name(dependency));
    order.push_back(found->second.first);
  };
  for (const auto& name : wanted) {
    std::string normalized = name;
    for (auto& c : normalized)
      if (c == '-') c = '_';
    if (!by_name.contains(normalized))
      spdlog::debug("module {} not in {}/modules.dep (built in?)", name, release_dir.string());
    visit(normalized);
  }
  return order;
}

std::vector<uint8_t> build_initrd(std::span<const uint8_t> ember_init,
                                  const std::optional<fs::path>& release_dir,
                                  std::span<const std::string> modules) {
  CpioWriter cpio;
  cpio.file("init", ember_init, 0755);
  cpio.directory("ember");
  std::string load_list;
  if (release_dir) {
    const std::string base = "lib/modules/" + release_dir->filename().string();
    std::set<std::string> directories;
    auto add_directory = [&](const std::string& path) {
      // Parents first: "lib", "lib/modules", ...
      for (size_t slash = path.find('/');; slash = path.find('/', slash + 1)) {
        const std::string prefix = path.substr(0, slash);
        if (directories.insert(prefix).second) cpio.directory(prefix);
        if (slash == std::string::npos) break;
      }
    };
    add_directory(base);
    for (const auto& module : modules) {
      const std::string target = base + "/" + module;
      add_directory(fs::path(target).parent_path().string());
      cpio.file(target, read_bytes(*release_dir / module));
      load_list += target + "\n";
    }
  }
  cpio.file("ember/modules.load",
            std::span(reinterpret_cast<const uint8_t*>(load_list.data()), load_list.size()));
  return cpio.finish();
}

fs::path cached_initrd(const fs::path& ember_init, const std::optional<fs::path>& release_dir,
                       const fs::path& cache_dir) {
  const auto init_bytes = read_bytes(ember_init);
  if (init_bytes.empty()) throw Error("ember-init " + ember_init.string() + ": file is empty");
  std::vector<std::string> modules;
  if (release_dir) modules = modules_in_load_order(*release_dir, kGuestModules);
  image::Sha256 key;
  add_to_key(key, "ember-initrd-v1");
  add_to_key(key, init_bytes);
  if (release_dir) add_to_key(key, release_dir->filename().string());
  for (const auto& module : modules) {
    add_to_key(key, module);
    add_to_key(key, read_bytes(*release_dir / module));
  }
  const fs::path directory = cache_dir / "initrd";
  const fs::path path = directory / (key.hex() + ".cpio");
  std::error_code error;
  if (fs::is_regular_file(path, error)) {
    spdlog::debug("initrd {} (cached)", path.string());
    return path;
  }
  fs::create_directories(directory, error);
  if (error) throw Error("cannot create " + directory.string() + ": " + error.message());
  const auto bytes = build_initrd(init_bytes, release_dir, modules);
  // Written under a private name and renamed: concurrent runs never see half a file.
  const fs::path temporary = path.string() + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out) throw Error("cannot write " + temporary.string());
  }
  fs::rename(temporary, path, error);
  if (error) throw Error("cannot write " + path.string() + ": " + error.message());
  spdlog::debug("initrd {}: {} bytes, {} modules", path.string(), bytes.size(), modules.size());
  return path;
}

fs::path find_ember_init() {
  if (const char* override_path = std::getenv("EMBER_INIT"); override_path && *override_path) {
    if (!fs::is_regular_file(override_path))
      throw Error("EMBER_INIT=" + std::string(override_path) + ": no such file");
    return override_path;
  }
  std::error_code error;
  const fs::path self = fs::read_symlink("/proc/self/exe", error);
  if (!error) {
    for (const fs::path& candidate :
         {self.parent_path() / "guest" / "init" / "ember-init",
          self.parent_path().parent_path() / "libexec" / "ember" / "ember-init"})
      if (fs::is_regular_file(candidate, error)) return candidate;
  }
  throw Error("ember-init not found next to " + self.string() +
              " (build it with ninja, or set EMBER_INIT=PATH)");
}

}  // namespace ember::run
