#include "guest/init/root.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "vmm/error.hpp"
#include "vmm/unique_fd.hpp"

namespace ember::init {
namespace {

void make_directory(const std::string& path, mode_t mode = 0755) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) throw system_error("mkdir " + path);
}

void mount_or_throw(const std::string& source, const std::string& target, const std::string& type,
                    unsigned long flags, const std::string& options, const std::string& what) {
  if (::mount(source.c_str(), target.c_str(), type.empty() ? nullptr : type.c_str(), flags,
              options.empty() ? nullptr : options.c_str()) != 0)
    throw system_error(what);
}

// mount -t TYPE SOURCE TARGET, creating TARGET; the error reads "mount SOURCE (TYPE) on TARGET:
// ...".
void mount_filesystem(const std::string& source, const std::string& target, const std::string& type,
                      unsigned long flags, const std::string& options = "") {
  make_directories(target);
  mount_or_throw(source, target, type, flags, options,
                 "mount " + source + " (" + type + ") on " + target);
}

void mount_lower(const LowerLayer& lower, const std::string& target) {
  make_directory(target);
  if (!lower.fstype.empty()) {
    mount_or_throw(lower.source, target, lower.fstype, MS_RDONLY, "",
                   "mount " + lower.source + " (" + lower.fstype + ") on " + target);
    return;
  }
  // A directory: opened before anything is mounted over its path, then bind-mounted read-only.
  const UniqueFd directory(::open(lower.source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!directory) throw system_error("root directory " + lower.source);
  const std::string by_fd = "/proc/self/fd/" + std::to_string(directory.get());
  mount_or_throw(by_fd, target, "", MS_BIND | MS_REC, "",
                 "bind-mount " + lower.source + " on " + target);
  mount_or_throw("", target, "", MS_REMOUNT | MS_BIND | MS_RDONLY, "",
                 "read-only remount of " + target);
}

void mount_writable(const WritableLayer& writable, const std::string& target) {
  make_directory(target);
  if (writable.device.empty())
    mount_or_throw("tmpfs", target, "tmpfs", 0, "mode=0755", "mount tmpfs on " + target);
  else
    mount_or_throw(writable.device, target, writable.fstype, 0, "",
                   "mount " + writable.device + " (" + writable.fstype + ") on " + target);
}

}  // namespace

void make_directories(const std::string& path) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1))
    make_directory(path.substr(0, slash));
  make_directory(path);
}

void switch_to_container_root(const std::string& staging, bool staging_tmpfs,
                              const LowerLayer& lower, const WritableLayer& writable) {
  // The lower directory is opened first: in test mode it may live under the staging path.
  const std::string lower_dir = staging + "/lower", rw_dir = staging + "/rw",
                    root_dir = staging + "/root";
  UniqueFd lower_source;
  if (lower.fstype.empty()) {
    lower_source.reset(::open(lower.source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!lower_source) throw system_error("root directory " + lower.source);
  }
  if (staging_tmpfs)
    mount_or_throw("tmpfs", staging, "tmpfs", 0, "mode=0700", "mount tmpfs on " + staging);
  mount_lower(lower.fstype.empty()
                  ? LowerLayer{"/proc/self/fd/" + std::to_string(lower_source.get()), ""}
                  : lower,
              lower_dir);
  mount_writable(writable, rw_dir);
  const std::string upper = rw_dir + "/upper", work = rw_dir + "/work";
  make_directory(upper);
  make_directory(work);
  // The container's "/" looks like the image's, not like the directory made here.
  struct stat image_root {};
  if (::stat(lower_dir.c_str(), &image_root) == 0) {
    if (::chmod(upper.c_str(), image_root.st_mode & 07777) != 0 ||
        ::chown(upper.c_str(), image_root.st_uid, image_root.st_gid) != 0)
      throw system_error("setting the owner and mode of " + upper);
  }
  make_directory(root_dir);
  mount_or_throw("overlay", root_dir, "overlay", 0,
                 "lowerdir=" + lower_dir + ",upperdir=" + upper + ",workdir=" + work,
                 "mount overlay (lower " + lower_dir + ", upper " + upper + ") on " + root_dir);

  if (::chdir(root_dir.c_str()) != 0) throw system_error("chdir " + root_dir);
  if (::mount(root_dir.c_str(), "/", nullptr, MS_MOVE, nullptr) != 0)
    throw system_error("moving " + root_dir + " onto /");
  if (::chroot(".") != 0) throw system_error("chroot into the container root");
  if (::chdir("/") != 0) throw system_error("chdir / in the container root");
}

void mount_container_filesystems(const std::vector<MountSpec>& shares) {
  mount_filesystem("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
  mount_filesystem("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY);
  mount_filesystem("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  // A private devpts instance; /dev/ptmx becomes its ptmx by a bind mount, which (unlike replacing
  // the node) changes nothing in the devtmpfs that a test host shares with this namespace.
  mount_filesystem("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620,gid=5");
  if (::access("/dev/ptmx", F_OK) != 0) {  // A mount point for the bind mount below.
    const UniqueFd ptmx(::open("/dev/ptmx", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666));
    if (!ptmx) throw system_error("creating /dev/ptmx");
  }
  mount_or_throw("/dev/pts/ptmx", "/dev/ptmx", "", MS_BIND, "",
                 "bind-mount /dev/pts/ptmx on /dev/ptmx");
  mount_filesystem("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777");
  mount_filesystem("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  for (const auto& [link, target] :
       {std::pair{"/dev/fd", "/proc/self/fd"}, std::pair{"/dev/stdin", "/proc/self/fd/0"},
        std::pair{"/dev/stdout", "/proc/self/fd/1"}, std::pair{"/dev/stderr", "/proc/self/fd/2"}})
    if (::symlink(target, link) != 0 && errno != EEXIST)
      throw system_error(std::string("symlink ") + link);
  for (const MountSpec& share : shares)
    mount_filesystem(share.source, share.target, share.type, share.readonly ? MS_RDONLY : 0);
}

void unmount_container_filesystems(const std::vector<MountSpec>& shares) {
  for (auto share = shares.rbegin(); share != shares.rend(); ++share)
    ::umount2(share->target.c_str(), MNT_DETACH);
  for (const char* target : {"/tmp", "/dev/shm", "/dev/ptmx", "/dev/pts", "/dev", "/sys", "/proc"})
    ::umount2(target, MNT_DETACH);
}

}  // namespace ember::init
