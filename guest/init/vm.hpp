// What ember-init does only as PID 1 of the VM (never in --channel-fd test mode): the initramfs's
// own /proc, /sys and /dev, the kernel modules ember put in the initrd, the console the protocol
// runs on, and the virtio-blk disks named by serial.
#pragma once

#include <chrono>
#include <string>

#include "vmm/unique_fd.hpp"

namespace ember::init {

// Mounts proc, sysfs and devtmpfs on /proc, /sys and /dev of the initramfs, and points fds 0-2 at
// /dev/console (or /dev/null) when the kernel left them closed. Throws ember::Error.
void mount_initramfs_filesystems();

// Loads each module listed in `list_path` (one path per line, relative to `root`) with
// finit_module, in order; .ko.xz/.ko.zst are handed to the kernel compressed. A module already
// loaded is fine. A missing list is an empty one. Throws ember::Error naming the module.
void load_modules(const std::string& list_path, const std::string& root = "/");

// Waits up to `timeout` for `path` to appear, then opens it read-write in raw mode. Throws
// ember::Error.
UniqueFd open_console(const std::string& path, std::chrono::milliseconds timeout);

// "/dev/vdX" for the virtio-blk disk whose /sys/block/vdX/serial is `serial`, waiting up to
// `timeout` for it to appear. Throws ember::Error.
std::string find_disk(const std::string& serial, std::chrono::milliseconds timeout);

}  // namespace ember::init
