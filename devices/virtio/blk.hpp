// virtio-blk (virtio 1.2 §5.2): one request queue served from a DiskBackend.
//
// Each chain is a 16-byte header (type, reserved, sector) in readable buffers, data (readable for
// OUT, DISCARD and WRITE_ZEROES, writable for IN and GET_ID) and a status byte, the last writable
// byte. Requests that reach the backend complete later on the I/O thread: activate() registers the
// backend's completion fd with the EventLoop, whose handler takes mutex() and drains completions.
//
// Guest mistakes inside a request (short header, wrong data direction, out-of-range sector) are
// answered with VIRTIO_BLK_S_IOERR in the status byte, or with a used length of 0 when there is no
// writable byte to carry it. A queue that breaks the ring rules (Queue::broken()) stops the device:
// it logs once, raises needs_reset() and a configuration interrupt, and processes nothing until
// reset.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "devices/backends/disk.hpp"
#include "devices/virtio/device.hpp"

namespace ember::virtio {

// Block device feature bits (§5.2.3).
inline constexpr uint64_t kBlockFeatureSegMax = 1ull << 2;        // VIRTIO_BLK_F_SEG_MAX
inline constexpr uint64_t kBlockFeatureReadOnly = 1ull << 5;      // VIRTIO_BLK_F_RO
inline constexpr uint64_t kBlockFeatureBlockSize = 1ull << 6;     // VIRTIO_BLK_F_BLK_SIZE
inline constexpr uint64_t kBlockFeatureFlush = 1ull << 9;         // VIRTIO_BLK_F_FLUSH
inline constexpr uint64_t kBlockFeatureDiscard = 1ull << 13;      // VIRTIO_BLK_F_DISCARD
inline constexpr uint64_t kBlockFeatureWriteZeroes = 1ull << 14;  // VIRTIO_BLK_F_WRITE_ZEROES

namespace blk {

inline constexpr uint64_t kSectorSize = 512;  // Request sectors are always 512 bytes (§5.2.6).
inline constexpr uint64_t kHeaderSize = 16;   // le32 type, le32 reserved, le64 sector
inline constexpr uint64_t kSegmentSize = 16;  // le64 sector, le32 num_sectors, le32 flags
inline constexpr uint64_t kIdSize = 20;       // VIRTIO_BLK_ID_BYTES

// Request types (§5.2.6).
inline constexpr uint32_t kTypeIn = 0;
inline constexpr uint32_t kTypeOut = 1;
inline constexpr uint32_t kTypeFlush = 4;
inline constexpr uint32_t kTypeGetId = 8;
inline constexpr uint32_t kTypeDiscard = 11;
inline constexpr uint32_t kTypeWriteZeroes = 13;

// Status byte values (§5.2.6).
inline constexpr uint8_t kStatusOk = 0;
inline constexpr uint8_t kStatusIoError = 1;
inline constexpr uint8_t kStatusUnsupported = 2;

// Flag of a discard / write-zeroes segment (§5.2.6).
inline constexpr uint32_t kSegmentFlagUnmap = 1;

// Configuration space offsets (struct virtio_blk_config, §5.2.4).
inline constexpr uint64_t kConfigCapacity = 0;             // le64, in 512-byte sectors
inline constexpr uint64_t kConfigSizeMax = 8;              // le32
inline constexpr uint64_t kConfigSegMax = 12;              // le32
inline constexpr uint64_t kConfigGeometry = 16;            // le16 cylinders, u8 heads, u8 sectors
inline constexpr uint64_t kConfigBlockSize = 20;           // le32
inline constexpr uint64_t kConfigTopology = 24;            // u8, u8, le16, le32
inline constexpr uint64_t kConfigWriteback = 32;           // u8
inline constexpr uint64_t kConfigNumQueues = 34;           // le16
inline constexpr uint64_t kConfigMaxDiscardSectors = 36;   // le32
inline constexpr uint64_t kConfigMaxDiscardSegments = 40;  // le32
inline constexpr uint64_t kConfigDiscardSectorAlignment = 44;  // le32
inline constexpr uint64_t kConfigMaxWriteZeroesSectors = 48;   // le32
inline constexpr uint64_t kConfigMaxWriteZeroesSegments = 52;  // le32
inline constexpr uint64_t kConfigWriteZeroesMayUnmap = 56;     // u8
// Through unused1[3]; the secure-erase and zoned fields after it are not offered.
inline constexpr uint64_t kConfigSize = 60;

// What this device offers in those fields.
inline constexpr uint32_t kMaxDiscardSectors = 1u << 22;  // 2 GiB per request
inline constexpr uint32_t kMaxDiscardSegments = 1;
inline constexpr uint32_t kDiscardSectorAlignment = 8;  // 4 KiB, the usual filesystem block

}  // namespace blk

class VirtioBlock final : public Device {
 public:
  // `id` answers GET_ID; longer than 20 bytes is truncated there.
  VirtioBlock(std::unique_ptr<DiskBackend> backend, std::string id);
  ~VirtioBlock() override;

  DeviceType type() const override { return DeviceType::kBlock; }
  uint64_t features() const override;
  uint16_t queue_count() const override { return 1; }
  void read_config(uint64_t offset, std::span<uint8_t> data) const override;
  bool activate(const GuestMemory& memory, std::span<Queue> queues, uint64_t features,
                Interrupts& interrupts, EventLoop& loop) override;
  void process_queue(uint16_t queue) override;
  void reset() override;

  // DEVICE_NEEDS_RESET (§2.1.2): the driver broke the queue's rules and the device stopped serving
  // it. The transport ORs kStatusNeedsReset into the status it reports while this is true (the
  // device raised Interrupts::config_changed() when it became true); reset() clears it. Call with
  // mutex().
  bool needs_reset() const override { return needs_reset_; }

  uint64_t capacity_sectors() const { return backend_->size() / blk::kSectorSize; }

 private:
  // A request handed to the backend, by the token it was given.
  struct PendingRequest {
    DescriptorChain chain;
    uint32_t type;
  };

  bool active() const { return memory_ != nullptr; }
  void handle(const DescriptorChain& chain);
  // Each returns the status to answer now, or nothing when the backend will complete the request.
  std::optional<uint8_t> start_transfer(const DescriptorChain& chain, uint32_t type,
                                        uint64_t sector);
  std::optional<uint8_t> start_segment(const DescriptorChain& chain, uint32_t type);
  std::optional<uint8_t> answer_get_id(const DescriptorChain& chain);
  uint64_t submit(const DescriptorChain& chain, uint32_t type);
  // Host iovecs for `length` bytes of one direction of `chain`, after skipping `skip` bytes of it;
  // nullopt if the chain does not hold them in guest memory.
  std::optional<std::vector<iovec>> buffers(const DescriptorChain& chain, bool writable,
                                            uint64_t skip, uint64_t length) const;
  void complete(const DescriptorChain& chain, uint32_t type, uint8_t status);
  void drain_completions();
  void notify_if_needed();
  void check_broken();

  std::unique_ptr<DiskBackend> backend_;
  std::string id_;

  // Set while active (between activate() and reset()).
  const GuestMemory* memory_ = nullptr;
  Queue* queue_ = nullptr;
  Interrupts* interrupts_ = nullptr;
  EventLoop* loop_ = nullptr;
  uint64_t features_ = 0;
  bool needs_reset_ = false;
  bool used_since_notify_ = false;

  uint64_t next_token_ = 0;
  std::unordered_map<uint64_t, PendingRequest> pending_;
};

}  // namespace ember::virtio
