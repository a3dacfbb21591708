// A writer for the "newc" cpio format (070701, ASCII hex headers, 4-byte alignment) that the Linux
// kernel unpacks as an initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
// Entries are written as given: the caller adds parent directories before their contents.
// Timestamps are 0 and owners root, so the same input gives the same bytes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ember::run {

class CpioWriter {
 public:
  // Names are relative ("init", "lib/modules"); one-line Error for an empty, absolute or '..' name.
  void directory(const std::string& name, uint32_t permissions = 0755);
  void file(const std::string& name, std::span<const uint8_t> data, uint32_t permissions = 0644);
  // Appends the TRAILER!!! entry and returns the archive.
  std::vector<uint8_t> finish();

 private:
  void entry(const std::string& name, uint32_t mode, std::span<const uint8_t> data);
  void pad();

  std::vector<uint8_t> bytes_;
  uint32_t next_inode_ = 1;
};

}  // namespace ember::run
