#include "vmm/run/scratch.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <vector>

#include "vmm/error.hpp"
#include "vmm/process.hpp"
#include "vmm/unique_fd.hpp"

namespace ember::run {

namespace fs = std::filesystem;

ScratchDisk::ScratchDisk(const fs::path& directory, const std::string& name, bool keep,
                         uint64_t bytes) {
  std::error_code error;
  fs::create_directories(directory, error);
  if (error)
    throw Error("scratch disk: cannot create " + directory.string() + ": " + error.message());
  const fs::path named = directory / (name + ".ext4");
  if (keep) {
    fd_.reset(::open(named.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd_) throw system_error("scratch disk " + named.string());
    kept_path_ = named;
  } else {
    fd_.reset(::open(directory.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!fd_ && (errno == EOPNOTSUPP || errno == EISDIR)) {
      // No O_TMPFILE here (overlayfs before Linux 6.6, for one): a name for a moment only.
      fd_.reset(::open(named.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
      if (fd_) ::unlink(named.c_str());
    }
    if (!fd_) throw system_error("scratch disk in " + directory.string());
  }
  path_ = "/proc/self/fd/" + std::to_string(fd_.get());
  const auto remove_kept = [&] {
    if (!kept_path_.empty()) fs::remove(kept_path_, error);
  };
  if (::ftruncate(fd_.get(), static_cast<off_t>(bytes)) != 0) {
    const auto failure = system_error("scratch disk " + named.string());
    remove_kept();
    throw failure;
  }
  // mkfs.ext4 reaches the file through this process's descriptor. Lazy inode-table and journal
  // initialisation: formatting stays quick and the file sparse.
  const std::string target = "/proc/" + std::to_string(::getpid()) + "/fd/" +
                             std::to_string(fd_.get());
  std::string diagnostics;
  const int status =
      run_quietly({"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", "-L",
                   "ember-scratch", target},
                  diagnostics);
  if (status != 0) {
    remove_kept();
    throw Error("scratch disk: mkfs.ext4 " + named.string() + " failed" +
                (diagnostics.empty() ? std::string() : ": " + diagnostics));
  }
  spdlog::debug("scratch disk {} ({} GiB sparse, ext4)",
                keep ? named.string() : "in " + directory.string() + " (unnamed)", bytes >> 30);
}

}  // namespace ember::run
