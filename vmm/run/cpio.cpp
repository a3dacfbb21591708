#include "vmm/run/cpio.hpp"

#include <sys/stat.h>

#include <cstdio>

#include "vmm/error.hpp"

namespace ember::run {

namespace {

void check_name(const std::string& name) {
  if (name.empty() || name.front() == '/' || name == ".." || name.starts_with("../") ||
      name.find("/../") != std::string::npos || name.ends_with("/.."))
    throw Error("initrd entry '" + name + "': not a relative path inside the archive");
}

}  // namespace

void CpioWriter::directory(const std::string& name, uint32_t permissions) {
  check_name(name);
  entry(name, S_IFDIR | (permissions & 07777), {});
}

void CpioWriter::file(const std::string& name, std::span<const uint8_t> data,
                      uint32_t permissions) {
  check_name(name);
  entry(name, S_IFREG | (permissions & 07777), data);
}

std::vector<uint8_t> CpioWriter::finish() {
  entry("TRAILER!!!", 0, {});
  return std::move(bytes_);
}

void CpioWriter::entry(const std::string& name, uint32_t mode, std::span<const uint8_t> data) {
  const bool trailer = mode == 0;
  const uint32_t fields[13] = {
      trailer ? 0 : next_inode_++,  // c_ino
      mode,                         // c_mode
      0,
      0,                                   // c_uid, c_gid
      S_ISDIR(mode) ? 2u : 1u,             // c_nlink
      0,                                   // c_mtime
      static_cast<uint32_t>(data.size()),  // c_filesize
      0,
      0,
      0,
      0,                                       // c_devmajor, c_devminor, c_rdevmajor, c_rdevminor
      static_cast<uint32_t>(name.size() + 1),  // c_namesize, with the NUL
      0,                                       // c_check (newc: 0)
  };
  char header[6 + 13 * 8 + 1];
  int length = std::snprintf(header, sizeof(header), "070701");
  for (uint32_t field : fields)
    length +=
        std::snprintf(header + length, sizeof(header) - static_cast<size_t>(length), "%08X", field);
  bytes_.insert(bytes_.end(), header, header + length);
  bytes_.insert(bytes_.end(), name.begin(), name.end());
  bytes_.push_back(0);
  pad();  // header + name end on a 4-byte boundary
  bytes_.insert(bytes_.end(), data.begin(), data.end());
  pad();
}

void CpioWriter::pad() {
  while (bytes_.size() % 4 != 0) bytes_.push_back(0);
}

}  // namespace ember::run
