// virtio-net (virtio 1.2 §5.1) on a tap backend: one receive queue (0) and one transmit queue (1),
// MAC and link status in configuration space, checksum and TSO offloads in both directions, and
// mergeable receive buffers. Frames travel with their 12-byte virtio_net_hdr, which the tap reads
// and writes itself (IFF_VNET_HDR), so the device copies headers and never interprets offloads.
//
// Transmit (I/O thread, on the driver's notification): each chain's readable bytes (header + frame)
// go to the tap in one writev() straight from guest memory. When the tap's queue is full (EAGAIN)
// the chain is kept and the queue stops; the tap becoming writable again (EPOLLOUT) resumes it, so
// nothing is dropped for back-pressure. Chains that are not a plausible frame are dropped.
//
// Receive: the tap fd is watched (edge-triggered) from activate() to reset(). A readable tap is
// drained frame by frame into a host buffer, and each frame copied into one receive chain (or,
// with MRG_RXBUF, as many as it needs, num_buffers set accordingly). When the driver has no buffers
// left, the frame waits in the host buffer and the tap is not read further until the driver
// notifies the receive queue again.
//
// Hostile guests: a malformed chain (wrong direction, shorter than the header, bigger than a frame
// can be) is returned with push_used(head, 0) and a rate-limited warning. A broken queue (see
// Queue) stops the device: needs_reset() turns true, a configuration-change interrupt is raised,
// and nothing is processed until reset(). The transport should report DEVICE_NEEDS_RESET in the
// status register while needs_reset() is true.
//
// Threads: as Device; the tap handler takes mutex() itself. set_link() and counters() take
// mutex() too: call them without holding it. needs_reset() is safe with or without it.
#pragma once

#include <sys/uio.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "devices/backends/tap.hpp"
#include "devices/virtio/device.hpp"

namespace ember::virtio {

namespace net {

// Feature bits (§5.1.3).
inline constexpr uint64_t kFeatureChecksum = 1ull << 0;           // VIRTIO_NET_F_CSUM
inline constexpr uint64_t kFeatureGuestChecksum = 1ull << 1;      // VIRTIO_NET_F_GUEST_CSUM
inline constexpr uint64_t kFeatureMac = 1ull << 5;                // VIRTIO_NET_F_MAC
inline constexpr uint64_t kFeatureGuestTso4 = 1ull << 7;          // VIRTIO_NET_F_GUEST_TSO4
inline constexpr uint64_t kFeatureGuestTso6 = 1ull << 8;          // VIRTIO_NET_F_GUEST_TSO6
inline constexpr uint64_t kFeatureGuestEcn = 1ull << 9;           // VIRTIO_NET_F_GUEST_ECN
inline constexpr uint64_t kFeatureHostTso4 = 1ull << 11;          // VIRTIO_NET_F_HOST_TSO4
inline constexpr uint64_t kFeatureHostTso6 = 1ull << 12;          // VIRTIO_NET_F_HOST_TSO6
inline constexpr uint64_t kFeatureHostEcn = 1ull << 13;           // VIRTIO_NET_F_HOST_ECN
inline constexpr uint64_t kFeatureMergeableBuffers = 1ull << 15;  // VIRTIO_NET_F_MRG_RXBUF
inline constexpr uint64_t kFeatureStatus = 1ull << 16;            // VIRTIO_NET_F_STATUS

// Configuration space (§5.1.4): mac[6], le16 status. max_virtqueue_pairs and mtu are not offered.
inline constexpr uint64_t kConfigMac = 0;
inline constexpr uint64_t kConfigStatus = 6;
inline constexpr uint64_t kConfigSize = 8;
inline constexpr uint16_t kStatusLinkUp = 1;  // VIRTIO_NET_S_LINK_UP

inline constexpr uint16_t kReceiveQueue = 0;
inline constexpr uint16_t kTransmitQueue = 1;

// struct virtio_net_hdr with VERSION_1 (§5.1.6): flags, gso_type, hdr_len, gso_size, csum_start,
// csum_offset, num_buffers (le16 at offset 10).
inline constexpr size_t kHeaderBytes = 12;
inline constexpr size_t kNumBuffersOffset = 10;
// Largest frame either way: a 64 KiB GSO packet plus Ethernet and VLAN headers, with the vnet
// header.
inline constexpr size_t kMaxPacketBytes = kHeaderBytes + 14 + 65536;

}  // namespace net

class VirtioNet final : public Device {
 public:
  struct Counters {
    uint64_t transmitted_frames = 0;
    uint64_t transmitted_bytes = 0;  // Vnet headers included.
    uint64_t transmit_errors = 0;    // The tap refused a frame (other than EAGAIN).
    uint64_t received_frames = 0;
    uint64_t received_bytes = 0;    // Vnet headers included.
    uint64_t receive_dropped = 0;   // Frames too short, or too big for a non-mergeable buffer.
    uint64_t malformed_chains = 0;  // Dropped with push_used(head, 0).
  };

  // Throws Error if tap is null.
  VirtioNet(std::unique_ptr<Tap> tap, std::array<uint8_t, 6> mac);
  ~VirtioNet() override;
  VirtioNet(const VirtioNet&) = delete;
  VirtioNet& operator=(const VirtioNet&) = delete;

  DeviceType type() const override { return DeviceType::kNet; }
  uint64_t features() const override;
  uint16_t queue_count() const override { return 2; }
  void read_config(uint64_t offset, std::span<uint8_t> data) const override;
  bool activate(const GuestMemory& memory, std::span<Queue> queues, uint64_t features,
                Interrupts& interrupts, EventLoop& loop) override;
  void process_queue(uint16_t queue) override;
  void reset() override;

  // Link status as the driver sees it (VIRTIO_NET_S_LINK_UP); a change raises a configuration
  // interrupt once the device runs. Up at construction.
  void set_link(bool up);
  // The guest broke a queue: nothing more is processed until reset() (§2.1.2 DEVICE_NEEDS_RESET).
  bool needs_reset() const override { return broken_.load(std::memory_order_relaxed); }
  Counters counters();
  const Tap& tap() const { return *tap_; }

 private:
  enum class Sent { kDone, kBlocked };

  void on_tap_events(uint32_t events, uint64_t generation);
  void transmit();
  Sent transmit_chain(const DescriptorChain& chain);
  void receive();
  bool deliver_frame(Queue& queue, bool& used);
  void reject(const DescriptorChain& chain, const char* why);
  void finish(Queue& queue, uint16_t index, bool used);
  void warn(const std::string& message);

  const std::unique_ptr<Tap> tap_;
  const std::array<uint8_t, 6> mac_;

  // Guarded by mutex().
  uint16_t status_ = net::kStatusLinkUp;
  const GuestMemory* memory_ = nullptr;  // Non-null while active.
  std::span<Queue> queues_;
  Interrupts* interrupts_ = nullptr;
  EventLoop* loop_ = nullptr;
  bool mergeable_ = false;
  std::atomic<bool> broken_{false};
  uint64_t generation_ = 0;  // Bumped by reset(): stale tap events are ignored.

  std::optional<DescriptorChain> pending_transmit_;  // Popped, waiting for the tap (EAGAIN).
  bool transmit_blocked_ = false;
  std::vector<iovec> iovecs_;

  std::vector<std::byte> receive_buffer_;        // One frame read from the tap, header first.
  size_t receive_length_ = 0;                    // Non-zero: a frame waits for receive buffers.
  std::vector<DescriptorChain> receive_chains_;  // Popped for the waiting frame.

  Counters counters_;
  std::chrono::steady_clock::time_point last_warning_{};
  uint64_t suppressed_warnings_ = 0;
};

}  // namespace ember::virtio
