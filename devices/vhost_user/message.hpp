// vhost-user messages (QEMU docs/interop/vhost-user.rst): a 12-byte header (le32 request, le32
// flags, le32 payload size) and a payload whose layout depends on the request. File descriptors
// travel beside the bytes as SCM_RIGHTS ancillary data; the framing here only says how many a
// message carries (frontend.hpp sends and receives them).
//
// Pure encoding and decoding, no I/O: decoders are fed by a possibly misbehaving backend and
// return nullopt for anything malformed instead of throwing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ember::vhost_user {

// Front-end requests ("Front-end message types").
enum class Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
};

// Request name for error messages ("SET_MEM_TABLE"); "request N" for unknown values.
std::string request_name(Request request);

// Header flags: version in bits 0-1, reply in bit 2, need-reply in bit 3.
inline constexpr uint32_t kHeaderSize = 12;
inline constexpr uint32_t kVersion = 0x1;
inline constexpr uint32_t kVersionMask = 0x3;
inline constexpr uint32_t kFlagReply = 1u << 2;
inline constexpr uint32_t kFlagNeedReply = 1u << 3;

// Largest payload accepted from a backend: far above anything a front-end request is answered
// with (8 bytes), so a length field of garbage is caught before reading it.
inline constexpr uint32_t kMaxPayloadSize = 4096;
// VHOST_MEMORY_BASELINE_NREGIONS: regions (and fds) one SET_MEM_TABLE may carry.
inline constexpr size_t kMaxMemoryRegions = 8;
// Most fds any message carries (SET_MEM_TABLE: one per region).
inline constexpr size_t kMaxFds = kMaxMemoryRegions;

// Virtio feature bit 30 on the vhost-user channel: the backend speaks GET/SET_PROTOCOL_FEATURES.
// Never offered to the guest (it is VIRTIO_F_BAD_FEATURE / reserved there).
inline constexpr uint64_t kFeatureProtocolFeatures = 1ull << 30;  // VHOST_USER_F_PROTOCOL_FEATURES

// Protocol feature bits ("Protocol features").
inline constexpr uint64_t kProtocolMultiQueue = 1ull << 0;  // VHOST_USER_PROTOCOL_F_MQ
inline constexpr uint64_t kProtocolReplyAck = 1ull << 3;    // VHOST_USER_PROTOCOL_F_REPLY_ACK

// SET_VRING_KICK / CALL / ERR payload: the vring index in bits 0-7, bit 8 set when no fd is sent.
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFd = 1ull << 8;

struct Header {
  Request request;
  uint32_t flags;
  uint32_t size;
};

// "A vring state description"
struct VringState {
  uint32_t index;
  uint32_t num;
  bool operator==(const VringState&) const = default;
};

// "A vring address description": host virtual addresses in the front-end's address space.
struct VringAddress {
  uint32_t index;
  uint32_t flags;  // VHOST_VRING_F_LOG (bit 0) only; ember never logs.
  uint64_t descriptor;
  uint64_t used;
  uint64_t available;
  uint64_t log;
  bool operator==(const VringAddress&) const = default;
};
inline constexpr uint32_t kVringAddressSize = 40;

// "Multiple Memory regions description": one per fd of SET_MEM_TABLE.
struct MemoryRegionDescription {
  uint64_t guest_address;
  uint64_t size;
  uint64_t user_address;  // Where the front-end mapped it.
  uint64_t mmap_offset;   // Offset of the region in its fd.
  bool operator==(const MemoryRegionDescription&) const = default;
};
inline constexpr uint32_t kMemoryRegionSize = 32;

// One message without its fds.
struct Message {
  Request request;
  uint32_t flags = kVersion;
  std::vector<std::byte> payload;

  std::vector<std::byte> encode() const;  // Header followed by the payload.
};

// Front-end messages (flags: version 1; need-reply is added by the sender when it wants an ack).
Message make_request(Request request);  // No payload.
Message make_u64(Request request, uint64_t value);
Message make_vring_state(Request request, VringState state);
Message make_vring_address(const VringAddress& address);
Message make_vring_fd(Request request, uint32_t index, bool with_fd);
Message make_memory_table(std::span<const MemoryRegionDescription> regions);

// Decoders: nullopt unless the bytes are exactly what the layout asks for.
std::optional<Header> decode_header(std::span<const std::byte> bytes);
std::optional<uint64_t> decode_u64(std::span<const std::byte> payload);
std::optional<VringState> decode_vring_state(std::span<const std::byte> payload);
std::optional<VringAddress> decode_vring_address(std::span<const std::byte> payload);
std::optional<std::vector<MemoryRegionDescription>> decode_memory_table(
    std::span<const std::byte> payload);

}  // namespace ember::vhost_user
