// virtio-fs (virtio 1.2 §5.11, device id 26) served by a vhost-user backend (virtiofsd).
//
// ember keeps the transport, the feature negotiation with the driver and the configuration space
// (tag[36], le32 num_request_queues); the backend reads and writes the rings and the FUSE buffers
// directly in guest memory (the memfd is shared with it through SET_MEM_TABLE). Queue 0 is the
// high-priority queue, queue 1 the one request queue (VIRTIO_FS_F_NOTIFICATION is not offered, so
// there is no notification queue; QEMU's C virtiofsd serves a single request queue).
//
// Notifications are relayed, not handed over: the Device interface gives the device neither the
// transport's ioeventfds nor its interrupt routes, only process_queue() and Interrupts. So at
// activation the device makes a kick and a call eventfd per queue and passes them to the backend;
// process_queue() (the I/O thread, after the guest's ioeventfd fired) writes the kick eventfd, and
// the I/O loop turns a signalled call eventfd into Interrupts::queue_used() (MSI-X vector or
// virtio-mmio interrupt). That costs one eventfd hop each way and keeps both transports unchanged.
// The backend decides when to signal (it implements EVENT_IDX / NO_INTERRUPT itself).
//
// Failure: a backend that closes the connection (virtiofsd exits or crashes, which is also what it
// does when a guest feeds it a malformed ring) or signals a vring error fd stops the device: one
// warning line, needs_reset() becomes true and a configuration interrupt is raised. ember never
// waits on a dead backend: its vhost-user requests time out (vhost_user::kReplyTimeout), and after
// a lost connection reset() sends nothing and activate() refuses to start.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "devices/vhost_user/frontend.hpp"
#include "devices/virtio/device.hpp"
#include "vmm/unique_fd.hpp"

namespace ember::virtio {

namespace fs {

// Configuration space (struct virtio_fs_config, §5.11.4).
inline constexpr uint64_t kConfigTag = 0;                // u8[36], NUL-padded, not terminated at 36
inline constexpr uint64_t kConfigNumRequestQueues = 36;  // le32
inline constexpr uint64_t kConfigSize = 40;  // notify_buf_size only with VIRTIO_FS_F_NOTIFICATION
inline constexpr size_t kTagSize = 36;

inline constexpr uint16_t kHighPriorityQueue = 0;
inline constexpr uint32_t kRequestQueues = 1;
inline constexpr uint16_t kQueueCount = 1 + kRequestQueues;

// Of the backend's GET_FEATURES, what ember lets the driver see: ember's Queue validates the ring
// layout at activation with these, and the transports know no others.
inline constexpr uint64_t kPassedFeatures =
    kFeatureVersion1 | kFeatureIndirectDescriptors | kFeatureEventIndex;

// Throws a one-line Error unless `tag` is 1 to 36 bytes without NUL (the driver reads up to 36
// bytes and stops at the first NUL, so an embedded one would cut the name it mounts by).
void check_tag(std::string_view tag);

}  // namespace fs

class VirtioFs final : public Device {
 public:
  // Runs the vhost-user handshake on `backend` (a connected, not yet initialized front-end).
  // Throws Error for a bad tag, a backend that fails the handshake, lacks VERSION_1 or serves too
  // few queues.
  VirtioFs(std::unique_ptr<vhost_user::Frontend> backend, std::string tag);
  ~VirtioFs() override;

  DeviceType type() const override { return DeviceType::kFs; }
  uint64_t features() const override { return features_; }
  uint16_t queue_count() const override { return fs::kQueueCount; }
  void read_config(uint64_t offset, std::span<uint8_t> data) const override;
  bool activate(const GuestMemory& memory, std::span<Queue> queues, uint64_t features,
                Interrupts& interrupts, EventLoop& loop) override;
  void process_queue(uint16_t queue) override;
  void reset() override;
  bool needs_reset() const override { return needs_reset_; }

  const std::string& tag() const { return tag_; }

 private:
  // One queue handed to the backend.
  struct Vring {
    uint16_t index = 0;
    UniqueFd kick;   // ember writes, the backend reads.
    UniqueFd call;   // The backend writes, ember's loop reads.
    UniqueFd error;  // The backend writes when it cannot serve the ring.
  };

  // Sends features, memory table and rings; throws Error (the connection is then lost).
  void start_backend(const GuestMemory& memory, std::span<Queue> queues, uint64_t features);
  void watch(EventLoop& loop);
  void unwatch();
  // Stops the rings in the backend (GET_VRING_BASE) if it is still there.
  void stop_backend();
  void backend_failed(const std::string& why);

  std::unique_ptr<vhost_user::Frontend> backend_;
  std::string tag_;
  uint64_t features_ = 0;

  // Set while active (between activate() and reset()).
  Interrupts* interrupts_ = nullptr;
  EventLoop* loop_ = nullptr;
  std::vector<Vring> vrings_;
  bool socket_watched_ = false;
  bool needs_reset_ = false;
};

}  // namespace ember::virtio
