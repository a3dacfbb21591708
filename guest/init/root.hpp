// The container's root filesystem: the image read-only below, a writable layer (scratch disk or
// tmpfs) above, joined by overlayfs and made the root; then, inside it, what a docker container
// sees: /proc, /sys, /dev, /dev/pts, /dev/shm, /tmp and the spec's virtio-fs shares.
//
// Switching root works the same in the VM and in --channel-fd test mode: the initramfs cannot be
// pivot_root'ed away, so the overlay is moved onto "/" (MS_MOVE) and chroot'ed into, as
// switch_root(8) does. The container's own mounts are made after the switch, so a symlink in the
// image (/tmp -> /var/tmp, a -v target under one) resolves inside the container, never outside it.
#pragma once

#include <optional>
#include <string>

#include "guest/init/spec.hpp"

namespace ember::init {

struct LowerLayer {
  // VM: the block device and fstype of the image disk. Test mode: a directory, bind-mounted.
  std::string source;
  std::string fstype;  // empty: `source` is a directory
};

struct WritableLayer {
  std::string device;  // empty: a tmpfs
  std::string fstype;
};

// Builds the overlay under `staging` (a directory this function mounts a tmpfs on when
// `staging_tmpfs`) and switches root into it. Throws ember::Error with one line, e.g.
// "mount /dev/vda (erofs) on /ember/lower: No such device".
void switch_to_container_root(const std::string& staging, bool staging_tmpfs,
                              const LowerLayer& lower, const WritableLayer& writable);

// After the switch: proc, sysfs, devtmpfs, devpts (+ /dev/ptmx), /dev/shm, /tmp, then the virtio-fs
// shares. Throws ember::Error.
void mount_container_filesystems(const std::vector<MountSpec>& shares);

// mkdir -p with mode 0755 (existing directories are fine). Throws ember::Error naming the path.
void make_directories(const std::string& path);

// Lazily detaches what mount_container_filesystems mounted (the shares first), before power-off.
// Never throws.
void unmount_container_filesystems(const std::vector<MountSpec>& shares);

}  // namespace ember::init
