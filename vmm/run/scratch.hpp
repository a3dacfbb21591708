// The writable layer's disk of `ember run`: a sparse file formatted ext4 (mkfs.ext4 -q), given to
// the guest as the virtio-blk disk with serial "ember-scratch". It has no name in the file system
// (O_TMPFILE, or unlinked right after creation where the file system lacks O_TMPFILE), so nothing is
// left behind however ember ends, SIGKILL included; with `keep` it is linked under its name from
// the start and stays.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "vmm/unique_fd.hpp"
#include <vector>

namespace ember::run {

inline constexpr uint64_t kScratchBytes = 4ull
                                          << 30;  // Sparse: only what the guest writes is stored.

class ScratchDisk {
 public:
  // Creates `directory` if needed and the disk in it; with `keep`, as <directory>/<name>.ext4 (an
  // Error if that exists). One-line Error naming what failed (mkfs.ext4's own message included).
  ScratchDisk(const std::filesystem::path& directory, const std::string& name, bool keep,
              uint64_t bytes = kScratchBytes);
  ScratchDisk(const ScratchDisk&) = delete;
  ScratchDisk& operator=(const ScratchDisk&) = delete;

  // What this process opens for the guest: /proc/self/fd/N, the disk itself whether named or not.
  const std::filesystem::path& path() const { return path_; }
  // Where a kept disk stays; empty unless `keep`.
  const std::filesystem::path& kept_path() const { return kept_path_; }

 private:
  UniqueFd fd_;
  std::filesystem::path path_;
  std::filesystem::path kept_path_;
};

}  // namespace ember::run
