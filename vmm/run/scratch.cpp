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

ScratchDisk::ScratchDisk(const fs::path& directory, const std::string& name, uint64_t bytes) {
  std::error_code error;
  fs::create_directories(directory, error);
  if (error)
    throw Error("scratch disk: cannot create " + directory.string() + ": " + error.message());
  path_ = directory / (name + ".ext4");
  {
    UniqueFd fd(::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) throw system_error("scratch disk " + path_.string());
    if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
      const auto failure = system_error("scratch disk " + path_.string());
      fs::remove(path_, error);
      throw failure;
    }
  }
  std::string diagnostics;
  // Lazy inode-table and journal initialisation: formatting stays quick and the file sparse.
  const int status =
      run_quietly({"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", "-L",
                   "ember-scratch", path_.string()},
                  diagnostics);
  if (status != 0) {
    fs::remove(path_, error);
    throw Error("scratch disk: mkfs.ext4 " + path_.string() + " failed" +
                (diagnostics.empty() ? std::string() : ": " + diagnostics));
  }
  spdlog::debug("scratch disk {} ({} GiB sparse, ext4)", path_.string(), bytes >> 30);
}

ScratchDisk::~ScratchDisk() {
  if (keep_) return;
  std::error_code error;
  fs::remove(path_, error);
}

}  // namespace ember::run
