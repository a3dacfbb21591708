#include "guest/image/layers.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/unique_fd.hpp"

namespace ember::image {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

// An entry path split into components, with "", "." dropped and a leading '/' stripped.
struct EntryPath {
  std::vector<std::string> parent;
  std::string name;  // empty: the target root itself

  std::string parent_string() const {
    std::string joined = ".";
    for (const std::string& component : parent) joined += "/" + component;
    return joined;
  }
};

// Throws (message completed by the caller) for `..` components: they can only mean to escape.
EntryPath split_path(const std::string& path) {
  std::vector<std::string> components;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string component = path.substr(start, end - start);
    if (component == "..") throw Error("'..' in path '" + path + "'");
    if (!component.empty() && component != ".") components.push_back(component);
    start = end + 1;
  }
  EntryPath result;
  if (!components.empty()) {
    result.name = components.back();
    components.pop_back();
  }
  result.parent = std::move(components);
  return result;
}

int openat2_in_root(int root, const std::string& path, uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, root, path.c_str(), &how, sizeof how));
}

// Removes `name` in `directory` and, for a directory, everything below it, never following links.
void remove_tree(int directory, const std::string& name);

void remove_children(int directory_fd) {
  UniqueFd listing(::openat(directory_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!listing) throw system_error("open directory for removal");
  struct CloseDir {
    void operator()(DIR* stream) const { ::closedir(stream); }
  };
  std::unique_ptr<DIR, CloseDir> stream(::fdopendir(listing.get()));
  if (!stream) throw system_error("fdopendir");
  listing.release();
  std::vector<std::string> names;
  while (dirent* entry = ::readdir(stream.get())) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  for (const std::string& name : names) remove_tree(directory_fd, name);
}

void remove_tree(int directory, const std::string& name) {
  if (::unlinkat(directory, name.c_str(), 0) == 0 || errno == ENOENT) return;
  if (errno != EISDIR && errno != EPERM) throw system_error("remove " + name);
  UniqueFd child(::openat(directory, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!child) throw system_error("open " + name + " for removal");
  remove_children(child.get());
  if (::unlinkat(directory, name.c_str(), AT_REMOVEDIR) != 0) throw system_error("remove " + name);
}

class LayerWriter {
 public:
  LayerWriter(const std::filesystem::path& target, std::string name) : name_(std::move(name)) {
    root_.reset(::open(target.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_) throw system_error("layer " + name_ + ": open target " + target.string());
  }

  // Pass 1: whiteouts only refer to lower layers, so they go before this layer's own entries
  // whatever their order in the tar.
  void apply_whiteout(const EntryPath& path) {
    const std::string hidden = path.name.substr(kWhiteoutPrefix.size());
    // ".wh.." and ".wh..." name the directory itself and its parent: at the top of the layer the
    // root's parent, which remove_tree() would empty (found by the layers fuzz target's sandbox).
    if (path.name != kOpaqueMarker && (hidden.empty() || hidden == "." || hidden == ".."))
      throw Error("layer " + name_ + ": rejected whiteout " + path.parent_string() + "/" +
                  path.name + ": it names no entry");
    UniqueFd parent = open_parent(path, false);
    if (!parent) return;  // Nothing below to hide.
    if (path.name == kOpaqueMarker) {
      remove_children(parent.get());
    } else {
      remove_tree(parent.get(), hidden);
    }
  }

  // Pass 2: everything else.
  void apply_entry(archive* reader, archive_entry* entry, const EntryPath& path) {
    if (path.name.empty()) return;  // "./" itself: the target keeps its own mode.
    UniqueFd parent = open_parent(path, true);
    const char* name = path.name.c_str();
    mode_t type = archive_entry_filetype(entry);
    mode_t mode = archive_entry_perm(entry);
    const char* hardlink = archive_entry_hardlink(entry);

    struct stat existing {};
    bool exists = ::fstatat(parent.get(), name, &existing, AT_SYMLINK_NOFOLLOW) == 0;
    if (exists && !(type == AE_IFDIR && S_ISDIR(existing.st_mode))) {
      remove_tree(parent.get(), path.name);
      exists = false;
    }

    if (hardlink) {
      link_to(parent.get(), name, hardlink);
      return;  // Shares the inode, mode and times of its target.
    }
    switch (type) {
      case AE_IFDIR:
        if (!exists && ::mkdirat(parent.get(), name, 0700) != 0) fail("mkdir", path);
        break;
      case AE_IFREG:
        write_file(reader, parent.get(), path);
        break;
      case AE_IFLNK: {
        const char* link_target = archive_entry_symlink(entry);
        // The link's text is stored as is: it is only ever resolved inside the root.
        if (::symlinkat(link_target ? link_target : "", parent.get(), name) != 0) fail("symlink", path);
        break;
      }
      case AE_IFIFO:
      case AE_IFCHR:
      case AE_IFBLK:
        if (::mknodat(parent.get(), name, type | mode, archive_entry_rdev(entry)) != 0) {
          if (errno == EPERM) return;  // Devices need CAP_MKNOD; the guest's devtmpfs has them.
          fail("mknod", path);
        }
        break;
      default:
        return;  // Sockets and unknown types: nothing to create.
    }
    set_metadata(entry, parent.get(), path, type);
  }

  [[noreturn]] void fail(const std::string& what, const EntryPath& path) const {
    throw system_error("layer " + name_ + ": " + what + " " + path.parent_string() + "/" + path.name);
  }

 private:
  // The parent directory of `path`, resolved inside the root; with `create`, missing directories
  // are made (0755, as tar does). Without `create`, an invalid handle when it does not exist.
  UniqueFd open_parent(const EntryPath& path, bool create) const {
    UniqueFd current(::fcntl(root_.get(), F_DUPFD_CLOEXEC, 0));
    std::string prefix = ".";
    for (const std::string& component : path.parent) {
      prefix += "/" + component;
      int fd = openat2_in_root(root_.get(), prefix, O_PATH | O_DIRECTORY);
      if (fd < 0 && errno == ENOENT && create) {
        if (::mkdirat(current.get(), component.c_str(), 0755) != 0 && errno != EEXIST)
          throw system_error("layer " + name_ + ": mkdir " + prefix);
        fd = openat2_in_root(root_.get(), prefix, O_PATH | O_DIRECTORY);
      }
      if (fd < 0) {
        if (!create && (errno == ENOENT || errno == ENOTDIR)) return UniqueFd();
        throw system_error("layer " + name_ + ": open directory " + prefix);
      }
      current.reset(fd);
    }
    return current;
  }

  void link_to(int parent, const char* name, const std::string& hardlink) const {
    EntryPath source;
    try {
      source = split_path(hardlink);
    } catch (const Error& error) {
      throw Error("layer " + name_ + ": hardlink to " + error.what());
    }
    if (source.name.empty()) throw Error("layer " + name_ + ": hardlink to the root directory");
    UniqueFd source_parent = open_parent(source, false);
    // Flags 0: linkat does not follow a symlink at the source, so the link stays in the root.
    if (!source_parent || ::linkat(source_parent.get(), source.name.c_str(), parent, name, 0) != 0)
      throw system_error("layer " + name_ + ": hardlink " + name + " to " + hardlink);
  }

  void write_file(archive* reader, int parent, const EntryPath& path) {
    UniqueFd file(::openat(parent, path.name.c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!file) fail("create", path);
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    int status;
    while ((status = archive_read_data_block(reader, &block, &size, &offset)) == ARCHIVE_OK) {
      const char* data = static_cast<const char*>(block);
      while (size > 0) {
        ssize_t written = ::pwrite(file.get(), data, size, offset);
        if (written < 0) fail("write", path);
        data += written;
        offset += written;
        size -= static_cast<size_t>(written);
      }
    }
    if (status != ARCHIVE_EOF) corrupt(reader);
    // Sparse files can end in a hole.
    if (::ftruncate(file.get(), offset) != 0) fail("truncate", path);
  }

  void set_metadata(archive_entry* entry, int parent, const EntryPath& path, mode_t type) const {
    const char* name = path.name.c_str();
    // Ownership first: chown clears set-id bits. Only root can give files away.
    if (::geteuid() == 0 &&
        ::fchownat(parent, name, static_cast<uid_t>(archive_entry_uid(entry)),
                   static_cast<gid_t>(archive_entry_gid(entry)), AT_SYMLINK_NOFOLLOW) != 0)
      fail("chown", path);
    if (type != AE_IFLNK && ::fchmodat(parent, name, archive_entry_mode(entry) & 07777, 0) != 0)
      fail("chmod", path);
    timespec times[2] = {{archive_entry_mtime(entry), archive_entry_mtime_nsec(entry)},
                         {archive_entry_mtime(entry), archive_entry_mtime_nsec(entry)}};
    ::utimensat(parent, name, times, AT_SYMLINK_NOFOLLOW);  // Best effort, as tar does.
  }

 public:
  [[noreturn]] void corrupt(archive* reader) const {
    const char* message = archive_error_string(reader);
    throw Error("layer " + name_ + ": corrupt archive: " + (message ? message : "unknown error"));
  }

  const std::string& name() const { return name_; }

 private:
  std::string name_;
  UniqueFd root_;
};

using Reader = std::unique_ptr<archive, decltype(&archive_read_free)>;

Reader open_archive(const std::filesystem::path& path, LayerWriter& writer) {
  Reader reader(archive_read_new(), archive_read_free);
  archive_read_support_filter_all(reader.get());
  archive_read_support_format_tar(reader.get());
  if (archive_read_open_filename(reader.get(), path.c_str(), 1 << 16) != ARCHIVE_OK) writer.corrupt(reader.get());
  return reader;
}

bool is_whiteout(const EntryPath& path) { return path.name.starts_with(kWhiteoutPrefix); }

// Runs `visit` on every entry, with its path checked.
template <typename Visit>
void for_each_entry(const std::filesystem::path& path, LayerWriter& writer, Visit visit) {
  Reader reader = open_archive(path, writer);
  archive_entry* entry = nullptr;
  int status;
  while ((status = archive_read_next_header(reader.get(), &entry)) == ARCHIVE_OK ||
         status == ARCHIVE_WARN) {
    const char* raw = archive_entry_pathname(entry);
    EntryPath entry_path;
    try {
      entry_path = split_path(raw ? raw : "");
    } catch (const Error& error) {
      throw Error("layer " + writer.name() + ": rejected entry: " + error.what());
    }
    visit(reader.get(), entry, entry_path);
  }
  if (status != ARCHIVE_EOF) writer.corrupt(reader.get());
}

}  // namespace

void apply_layer(const std::filesystem::path& archive_path, const std::filesystem::path& target,
                 const std::string& name) {
  LayerWriter writer(target, name);
  for_each_entry(archive_path, writer, [&](archive*, archive_entry*, const EntryPath& path) {
    if (is_whiteout(path)) writer.apply_whiteout(path);
  });
  for_each_entry(archive_path, writer, [&](archive* reader, archive_entry* entry, const EntryPath& path) {
    if (!is_whiteout(path)) writer.apply_entry(reader, entry, path);
  });
}

void apply_layers(std::span<const std::filesystem::path> archives, const std::filesystem::path& target) {
  for (const std::filesystem::path& archive_path : archives)
    apply_layer(archive_path, target, archive_path.filename().string());
}

}  // namespace ember::image
