// A Linux tap interface (/dev/net/tun) as virtio-net's backend: one Ethernet frame per read() or
// writev(), each preceded by a 12-byte virtio_net_hdr (IFF_VNET_HDR with TUNSETVNETHDRSZ 12, the
// VERSION_1 layout), so the device passes headers between guest and kernel untouched. The fd is
// non-blocking; the device polls it on the I/O thread.
//
// Bringing the link up (ip link set dev NAME up) and addressing are left to the host's scripts,
// though set_up() does the former for callers that want it.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "vmm/unique_fd.hpp"

namespace ember {

class Tap {
 public:
  // sizeof(virtio_net_hdr_v1) (§5.1.6): what precedes every frame read from or written to the fd.
  static constexpr size_t kVnetHeaderBytes = 12;

  // Opens the tap `name`, creating it if it does not exist (a persistent tap made by `ip tuntap`
  // is attached to). An empty name lets the kernel choose one ("tap%d"); name() tells which.
  // Throws Error naming the tap and the reason.
  explicit Tap(const std::string& name);
  // For tests: any fd that carries one frame per read()/writev() (a SOCK_DGRAM socketpair end)
  // stands in for a tap. set_offload() then only records the flags; set_up() does nothing.
  static std::unique_ptr<Tap> from_fd(UniqueFd fd, std::string name);

  Tap(const Tap&) = delete;
  Tap& operator=(const Tap&) = delete;

  const std::string& name() const { return name_; }
  int fd() const { return fd_.get(); }

  // TUNSETOFFLOAD with TUN_F_* flags: which offloads the kernel may leave to the reader (the
  // guest), i.e. which partial checksums and GSO frames it may hand us. TSO flags need TUN_F_CSUM,
  // TUN_F_TSO_ECN needs a TSO flag. Throws Error naming the tap.
  void set_offload(unsigned flags);
  unsigned offload() const { return offload_; }  // The flags last set.

  // Sets IFF_UP on the interface (SIOCSIFFLAGS). Throws Error naming the tap.
  void set_up();

  // Reads one frame, vnet header included, into `frame`. Returns its length, or -errno
  // (-EAGAIN when none is waiting). EINTR is retried.
  ssize_t read(std::span<std::byte> frame);
  // Writes one frame (vnet header first) gathered from `buffers`. Returns bytes written, or
  // -errno (-EAGAIN when the kernel's queue is full). EINTR is retried.
  ssize_t writev(std::span<const iovec> buffers);

 private:
  Tap(UniqueFd fd, std::string name, bool is_tap)
      : fd_(std::move(fd)), name_(std::move(name)), is_tap_(is_tap) {}

  UniqueFd fd_;
  std::string name_;
  bool is_tap_ = true;
  unsigned offload_ = 0;
};

}  // namespace ember
