// The writable layer's disk of `ember run`: a sparse file formatted ext4 (mkfs.ext4 -q), given to
// the guest as the virtio-blk disk with serial "ember-scratch". Deleted when the object goes,
// unless keep() was called.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ember::run {

inline constexpr uint64_t kScratchBytes = 4ull
                                          << 30;  // Sparse: only what the guest writes is stored.

class ScratchDisk {
 public:
  // Creates `directory` if needed and <directory>/<name>.ext4; one-line Error naming what failed
  // (mkfs.ext4's own message included).
  ScratchDisk(const std::filesystem::path& directory, const std::string& name,
              uint64_t bytes = kScratchBytes);
  ~ScratchDisk();
  ScratchDisk(const ScratchDisk&) = delete;
  ScratchDisk& operator=(const ScratchDisk&) = delete;

  const std::filesystem::path& path() const { return path_; }
  void keep() { keep_ = true; }

 private:
  std::filesystem::path path_;
  bool keep_ = false;
};

}  // namespace ember::run
