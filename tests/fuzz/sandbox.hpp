// A scratch directory for the image fuzz targets, with tripwires around the part the code under
// test may touch: canary files and directories outside it are watched with inotify, so an entry
// that escapes (a symlink or hardlink followed outside, a whiteout that reaches "..", a write
// through a link) is seen even when the code removes what it made afterwards. "/" is watched too,
// for escapes through absolute links. Made once per process in /dev/shm (tmpfs: file system work
// on the host's disk made these targets 10 to 20 times slower) or $TMPDIR, named after the pid and
// removed at exit; a crashed run's directory is removed by the next run of the same target.
#pragma once

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tests/fuzz/fuzz_input.hpp"

namespace ember::fuzz {

class Sandbox {
 public:
  explicit Sandbox(const std::string& name) {
    const char* temporary = std::getenv("TMPDIR");
    std::string base = temporary && *temporary ? temporary : "/tmp";
    if (::access("/dev/shm", W_OK) == 0) base = "/dev/shm";
    const std::string prefix = "ember-fuzz-" + name + "-";
    remove_abandoned(base, prefix);
    root_ = std::filesystem::path(base) / (prefix + std::to_string(::getpid()));
    remove(root_);
    FUZZ_CHECK(std::filesystem::create_directory(root_));
    watch_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    FUZZ_CHECK(watch_ >= 0);
  }
  ~Sandbox() {
    ::close(watch_);
    remove(root_);
  }

  const std::filesystem::path& root() const { return root_; }

  // A file nothing may open, change, link or remove.
  void add_canary(const std::filesystem::path& path) {
    std::ofstream(path) << "canary\n";
    watch(path, IN_OPEN | IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF);
  }
  // A directory whose own entries nobody may add, remove or rename (what happens further down is
  // not seen).
  void guard_directory(const std::filesystem::path& path) {
    watch(path,
          IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF);
  }
  // Forgets events so far (the target's own set-up).
  void arm() {
    alignas(inotify_event) char buffer[4096];
    while (::read(watch_, buffer, sizeof(buffer)) > 0) {
    }
  }
  // Aborts, naming the path, if anything tripped since arm().
  void check() {
    alignas(inotify_event) char buffer[4096];
    const ssize_t count = ::read(watch_, buffer, sizeof(buffer));
    if (count <= 0) return;
    const auto* event = reinterpret_cast<const inotify_event*>(buffer);
    std::fprintf(stderr, "sandbox escape: event %#x on %s/%s\n", event->mask,
                 watched_[event->wd].c_str(), event->len ? event->name : "");
    std::abort();
  }

  // Removes a tree without following links, whatever its modes.
  static void remove(const std::filesystem::path& path) {
    std::error_code error;
    std::filesystem::remove_all(path, error);
    if (!error) return;
    ::nftw(
        path.c_str(),
        [](const char* entry, const struct stat* info, int type, FTW*) {
          if (type == FTW_D || type == FTW_DNR) ::chmod(entry, 0700);
          (void)info;
          return 0;
        },
        16, FTW_PHYS);
    std::filesystem::remove_all(path, error);
    FUZZ_CHECK(!error);
  }

  // Every non-directory below `tree` has as many names there as its link count: nothing in it is a
  // hardlink to a file outside.
  static void check_no_outside_links(const std::filesystem::path& tree) {
    static std::map<std::pair<dev_t, ino_t>, std::pair<nlink_t, nlink_t>>* seen;
    std::map<std::pair<dev_t, ino_t>, std::pair<nlink_t, nlink_t>> links;
    seen = &links;
    ::nftw(
        tree.c_str(),
        [](const char*, const struct stat* info, int type, FTW*) {
          if (type == FTW_F || type == FTW_SL || type == FTW_SLN) {
            auto& entry = (*seen)[{info->st_dev, info->st_ino}];
            entry.first = info->st_nlink;
            ++entry.second;
          }
          return 0;
        },
        16, FTW_PHYS);
    for (const auto& [inode, counts] : links) {
      if (counts.first == counts.second) continue;
      std::fprintf(stderr, "sandbox escape: inode %ju has %ju links, %ju of them in %s\n",
                   static_cast<uintmax_t>(inode.second), static_cast<uintmax_t>(counts.first),
                   static_cast<uintmax_t>(counts.second), tree.c_str());
      std::abort();
    }
  }

 private:
  // Sandboxes of runs that died (a crash aborts before any destructor runs).
  static void remove_abandoned(const std::string& base, const std::string& prefix) {
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator(base, error)) {
      const std::string file = entry.path().filename().string();
      if (!file.starts_with(prefix)) continue;
      const long pid = std::strtol(file.c_str() + prefix.size(), nullptr, 10);
      if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
        remove(entry.path());
    }
  }

  void watch(const std::filesystem::path& path, uint32_t mask) {
    const int descriptor = ::inotify_add_watch(watch_, path.c_str(), mask);
    FUZZ_CHECK(descriptor >= 0);
    watched_[descriptor] = path.string();
  }

  std::filesystem::path root_;
  int watch_ = -1;
  std::map<int, std::string> watched_;
};

}  // namespace ember::fuzz
