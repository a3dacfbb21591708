#include "guest/init/vm.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/module.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <thread>

#include "vmm/error.hpp"

namespace ember::init {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPollInterval = std::chrono::milliseconds(10);

void mount_at(const char* source, const char* target, const char* type, unsigned long flags,
              const char* options = nullptr) {
  if (::mkdir(target, 0755) != 0 && errno != EEXIST)
    throw system_error(std::string("mkdir ") + target);
  if (::mount(source, target, type, flags, options) != 0)
    throw system_error(std::string("mount ") + type + " on " + target);
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
    text.pop_back();
  size_t start = 0;
  while (start < text.size() && text[start] == ' ') ++start;
  return text.substr(start);
}

}  // namespace

void mount_initramfs_filesystems() {
  mount_at("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
  mount_at("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC);
  mount_at("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) >= 0) continue;
    int opened = ::open("/dev/console", O_RDWR | O_NOCTTY);
    if (opened < 0) opened = ::open("/dev/null", O_RDWR);
    if (opened >= 0 && opened != fd) {
      ::dup2(opened, fd);
      ::close(opened);
    }
  }
}

void load_modules(const std::string& list_path, const std::string& root) {
  std::ifstream list(list_path);
  if (!list) return;  // No list: nothing to load.
  std::string line;
  while (std::getline(list, line)) {
    line = trimmed(line);
    if (line.empty() || line.front() == '#') continue;
    const std::string path = root + (root.ends_with('/') ? "" : "/") + line;
    const UniqueFd module(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!module) throw system_error("kernel module " + path);
    const unsigned flags =
        ends_with(path, ".xz") || ends_with(path, ".zst") || ends_with(path, ".gz")
            ? MODULE_INIT_COMPRESSED_FILE
            : 0;
    if (::syscall(SYS_finit_module, module.get(), "", flags) != 0 && errno != EEXIST)
      throw system_error("loading kernel module " + path);
  }
}

UniqueFd open_console(const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (::access(path.c_str(), F_OK) != 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(kPollInterval);
  UniqueFd console(::open(path.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!console)
    throw system_error(path + " (after waiting " + std::to_string(timeout.count()) + " ms)");
  termios mode{};
  if (::tcgetattr(console.get(), &mode) == 0) {
    ::cfmakeraw(&mode);
    if (::tcsetattr(console.get(), TCSANOW, &mode) != 0) throw system_error("raw mode on " + path);
  }
  return console;
}

std::string find_disk(const std::string& serial, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string seen;
  while (true) {
    seen.clear();
    if (DIR* block = ::opendir("/sys/block")) {
      while (const dirent* entry = ::readdir(block)) {
        const std::string name = entry->d_name;
        if (!name.starts_with("vd")) continue;
        std::ifstream file("/sys/block/" + name + "/serial");
        std::string found;
        std::getline(file, found);
        found = trimmed(found);
        seen += (seen.empty() ? "" : ", ") + name + "=\"" + found + "\"";
        if (found == serial) {
          ::closedir(block);
          return "/dev/" + name;
        }
      }
      ::closedir(block);
    }
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(kPollInterval);
  }
  throw Error("no virtio-blk disk has serial \"" + serial + "\" (" +
              (seen.empty() ? "no vd* disks" : seen) + ")");
}

}  // namespace ember::init
