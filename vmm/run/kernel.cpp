#include "vmm/run/kernel.hpp"

#include <cstdlib>
#include <fstream>
#include <vector>

#include "vmm/error.hpp"

namespace ember::run {

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read " + path.string());
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (auto& c : text)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  while (!text.empty() && text.back() == ' ') text.pop_back();
  while (!text.empty() && text.front() == ' ') text.erase(text.begin());
  return text;
}

// The release a bzImage names: its setup header's kernel_version (boot protocol 2.00+, offset
// 0x20e: pointer - 0x200 into the file) starts with "6.12.38+deb13-cloud-amd64 (...". Empty for
// anything else.
std::string bzimage_release(const fs::path& kernel) {
  std::ifstream in(kernel, std::ios::binary);
  char header[0x300] = {};
  if (!in.read(header, sizeof(header))) return {};
  if (std::string(header + 0x202, 4) != "HdrS") return {};
  const auto offset = static_cast<uint16_t>(static_cast<uint8_t>(header[0x20e]) |
                                            static_cast<uint8_t>(header[0x20f]) << 8);
  in.seekg(0x200 + offset);
  char version[128] = {};
  in.read(version, sizeof(version) - 1);
  std::string release(version);
  return release.substr(0, release.find(' '));
}

}  // namespace

fs::path ember_cache_dir() {
  if (const char* cache = std::getenv("EMBER_CACHE"); cache && *cache) return cache;
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : "/root") / ".cache" / "ember";
}

std::optional<fs::path> find_modules(const fs::path& root, const fs::path& kernel) {
  const fs::path modules = root / "lib" / "modules";
  std::error_code error;
  if (!fs::is_directory(modules, error)) return std::nullopt;
  std::vector<fs::path> releases;
  for (const auto& entry : fs::directory_iterator(modules, error))
    if (entry.is_directory() && fs::exists(entry.path() / "modules.dep"))
      releases.push_back(entry.path());
  if (releases.empty()) return std::nullopt;
  if (releases.size() == 1) return releases.front();
  const std::string release = bzimage_release(kernel);
  for (const auto& candidate : releases)
    if (!release.empty() && candidate.filename() == release) return candidate;
  throw Error(modules.string() + ": modules of several kernel releases and none matches " +
              kernel.string());
}

KernelChoice choose_kernel(const std::optional<fs::path>& explicit_kernel,
                           const fs::path& cache_dir) {
  KernelChoice choice;
  std::error_code error;
  if (explicit_kernel) {
    choice.kernel = *explicit_kernel;
    if (!fs::is_regular_file(choice.kernel, error))
      throw Error("--kernel " + choice.kernel.string() + ": no such file");
    choice.modules = find_modules(fs::absolute(choice.kernel).parent_path(), choice.kernel);
    choice.description = "kernel " + choice.kernel.string() + " (--kernel)";
  } else {
    const fs::path directory = cache_dir / "default-kernel";
    choice.kernel = directory / "kernel";
    if (!fs::is_regular_file(choice.kernel, error))
      throw Error("no default kernel at " + choice.kernel.string() +
                  ": run tools/demo (or tools/setup) to install one, or pass --kernel PATH");
    if (fs::exists(directory / "cmdline", error))
      choice.host_arguments = read_text(directory / "cmdline");
    choice.modules = find_modules(directory, choice.kernel);
    const fs::path target = fs::canonical(choice.kernel, error);
    if (!choice.modules && !error) choice.modules = find_modules(target.parent_path(), target);
    choice.description = "default kernel " + choice.kernel.string() +
                         (!error && target != choice.kernel ? " -> " + target.string() : "");
  }
  choice.description += choice.modules ? ", modules from " + choice.modules->string()
                                       : ", no modules directory (drivers built in)";
  return choice;
}

std::string kernel_command_line(const KernelChoice& kernel, const std::string& user_arguments) {
  // The UART carries the kernel's own messages (to ember's debug log); the protocol runs on hvc0.
  std::string cmdline = "console=ttyS0 quiet panic=-1";
  if (!kernel.host_arguments.empty()) cmdline += " " + kernel.host_arguments;
  if (!user_arguments.empty()) cmdline += " " + user_arguments;
  return cmdline;
}

}  // namespace ember::run
