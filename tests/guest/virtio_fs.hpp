// virtio file system device (virtio 1.2 §5.11, device id 26): FUSE requests over the request queue.
//
// With `test.fs.tag=TAG` on the command line, for the first virtio-fs device:
// - CHECK fs_tag: the configuration's tag (u8[36], NUL-padded) equals TAG, num_request_queues >= 1;
// - CHECK fs_init: FUSE_INIT (7.31, the first minor with virtio-fs) answered with major 7;
// - CHECK fs_read: FUSE_LOOKUP "hello.txt" in the root, FUSE_OPEN, FUSE_READ (up to 4 KiB), FUSE_RELEASE;
//   prints `fs_read content=<text>` (bytes outside 0x20..0x7e as \xNN) before the CHECK line;
// - CHECK fs_forget: FUSE_FORGET of that node on the high-priority queue (queue 0; no reply: the used
//   element comes back with nothing written);
// - CHECK fs_write: FUSE_CREATE "from-guest.txt" (O_WRONLY|O_CREAT|O_EXCL, 0644), FUSE_WRITE of
//   kFsGuestText, FUSE_FLUSH, FUSE_RELEASE, then FUSE_LOOKUP sees the new size;
//   or, with `test.fs.ro=1`, CHECK fs_ro: that FUSE_CREATE fails with -EROFS or -EACCES.
// Every request is one descriptor chain (in header, arguments, data | out header, reply); every wait is
// bounded (a missing reply is a FAIL with the opcode, never a hang).
#pragma once

#include "bootinfo.hpp"
#include "virtio.hpp"

namespace guest::virtio {

constexpr uint32_t kDeviceFs = 26;
// What the guest writes to from-guest.txt (no newline).
constexpr const char kFsGuestText[] = "written by the ember test guest through virtio-fs";

// True if the command line asks for the checks (test.fs.tag=...).
bool fs_requested(const BootInfo& boot);
void check_fs(Device& device, uint32_t number, const BootInfo& boot);

}  // namespace guest::virtio
