// Helpers for the image tests: a temporary directory and tar layers written with libarchive.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ember::image::testing {

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "ember-image-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

struct TarEntry {
  enum Kind { kFile, kDirectory, kSymlink, kHardlink } kind = kFile;
  std::string path;
  std::string data;  // file contents, or the link target
  mode_t mode = 0644;
};

inline TarEntry file(std::string path, std::string data, mode_t mode = 0644) {
  return {TarEntry::kFile, std::move(path), std::move(data), mode};
}
inline TarEntry directory(std::string path, mode_t mode = 0755) {
  return {TarEntry::kDirectory, std::move(path), "", mode};
}
inline TarEntry symlink(std::string path, std::string target) {
  return {TarEntry::kSymlink, std::move(path), std::move(target), 0777};
}
inline TarEntry hardlink(std::string path, std::string target) {
  return {TarEntry::kHardlink, std::move(path), std::move(target), 0644};
}

// Writes a pax tar (gzip-compressed unless `gzip` is false) with `entries` in order.
inline void write_layer(const std::filesystem::path& path, const std::vector<TarEntry>& entries,
                        bool gzip = true) {
  archive* writer = archive_write_new();
  if (gzip) archive_write_add_filter_gzip(writer);
  archive_write_set_format_pax_restricted(writer);
  if (archive_write_open_filename(writer, path.c_str()) != ARCHIVE_OK)
    throw std::runtime_error("archive_write_open_filename");
  for (const TarEntry& item : entries) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, item.path.c_str());
    archive_entry_set_perm(entry, item.mode);
    switch (item.kind) {
      case TarEntry::kFile:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_size(entry, static_cast<la_int64_t>(item.data.size()));
        break;
      case TarEntry::kDirectory:
        archive_entry_set_filetype(entry, AE_IFDIR);
        break;
      case TarEntry::kSymlink:
        archive_entry_set_filetype(entry, AE_IFLNK);
        archive_entry_set_symlink(entry, item.data.c_str());
        break;
      case TarEntry::kHardlink:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_hardlink(entry, item.data.c_str());
        break;
    }
    archive_write_header(writer, entry);
    if (item.kind == TarEntry::kFile) archive_write_data(writer, item.data.data(), item.data.size());
    archive_entry_free(entry);
  }
  archive_write_close(writer);
  archive_write_free(writer);
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace ember::image::testing
