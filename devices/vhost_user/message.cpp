#include "devices/vhost_user/message.hpp"

namespace ember::vhost_user {

namespace {

// The wire is little-endian whatever the host's byte order (vhost-user.rst: "all integers are
// in host byte order", and ember only runs on x86-64, where that is little-endian).
void put(std::vector<std::byte>& out, uint64_t value, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) out.push_back(static_cast<std::byte>(value >> (8 * i)));
}

uint64_t get(std::span<const std::byte> in, size_t offset, size_t bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes; ++i)
    value |= static_cast<uint64_t>(std::to_integer<uint8_t>(in[offset + i])) << (8 * i);
  return value;
}

}  // namespace

std::string request_name(Request request) {
  switch (request) {
    case Request::kGetFeatures:
      return "GET_FEATURES";
    case Request::kSetFeatures:
      return "SET_FEATURES";
    case Request::kSetOwner:
      return "SET_OWNER";
    case Request::kResetOwner:
      return "RESET_OWNER";
    case Request::kSetMemTable:
      return "SET_MEM_TABLE";
    case Request::kSetLogBase:
      return "SET_LOG_BASE";
    case Request::kSetLogFd:
      return "SET_LOG_FD";
    case Request::kSetVringNum:
      return "SET_VRING_NUM";
    case Request::kSetVringAddr:
      return "SET_VRING_ADDR";
    case Request::kSetVringBase:
      return "SET_VRING_BASE";
    case Request::kGetVringBase:
      return "GET_VRING_BASE";
    case Request::kSetVringKick:
      return "SET_VRING_KICK";
    case Request::kSetVringCall:
      return "SET_VRING_CALL";
    case Request::kSetVringErr:
      return "SET_VRING_ERR";
    case Request::kGetProtocolFeatures:
      return "GET_PROTOCOL_FEATURES";
    case Request::kSetProtocolFeatures:
      return "SET_PROTOCOL_FEATURES";
    case Request::kGetQueueNum:
      return "GET_QUEUE_NUM";
    case Request::kSetVringEnable:
      return "SET_VRING_ENABLE";
  }
  return "request " + std::to_string(static_cast<uint32_t>(request));
}

std::vector<std::byte> Message::encode() const {
  std::vector<std::byte> bytes;
  bytes.reserve(kHeaderSize + payload.size());
  put(bytes, static_cast<uint32_t>(request), 4);
  put(bytes, flags, 4);
  put(bytes, payload.size(), 4);
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  return bytes;
}

Message make_request(Request request) {
  return Message{request, kVersion, {}};
}

Message make_u64(Request request, uint64_t value) {
  Message message = make_request(request);
  put(message.payload, value, 8);
  return message;
}

Message make_vring_state(Request request, VringState state) {
  Message message = make_request(request);
  put(message.payload, state.index, 4);
  put(message.payload, state.num, 4);
  return message;
}

Message make_vring_address(const VringAddress& address) {
  Message message = make_request(Request::kSetVringAddr);
  put(message.payload, address.index, 4);
  put(message.payload, address.flags, 4);
  put(message.payload, address.descriptor, 8);
  put(message.payload, address.used, 8);
  put(message.payload, address.available, 8);
  put(message.payload, address.log, 8);
  return message;
}

Message make_vring_fd(Request request, uint32_t index, bool with_fd) {
  return make_u64(request, (index & kVringIndexMask) | (with_fd ? 0 : kVringNoFd));
}

Message make_memory_table(std::span<const MemoryRegionDescription> regions) {
  Message message = make_request(Request::kSetMemTable);
  put(message.payload, regions.size(), 4);
  put(message.payload, 0, 4);  // padding
  for (const auto& region : regions) {
    put(message.payload, region.guest_address, 8);
    put(message.payload, region.size, 8);
    put(message.payload, region.user_address, 8);
    put(message.payload, region.mmap_offset, 8);
  }
  return message;
}

std::optional<Header> decode_header(std::span<const std::byte> bytes) {
  if (bytes.size() != kHeaderSize) return std::nullopt;
  Header header{static_cast<Request>(get(bytes, 0, 4)), static_cast<uint32_t>(get(bytes, 4, 4)),
                static_cast<uint32_t>(get(bytes, 8, 4))};
  if ((header.flags & kVersionMask) != kVersion || header.size > kMaxPayloadSize)
    return std::nullopt;
  return header;
}

std::optional<uint64_t> decode_u64(std::span<const std::byte> payload) {
  if (payload.size() != 8) return std::nullopt;
  return get(payload, 0, 8);
}

std::optional<VringState> decode_vring_state(std::span<const std::byte> payload) {
  if (payload.size() != 8) return std::nullopt;
  return VringState{static_cast<uint32_t>(get(payload, 0, 4)),
                    static_cast<uint32_t>(get(payload, 4, 4))};
}

std::optional<VringAddress> decode_vring_address(std::span<const std::byte> payload) {
  if (payload.size() != kVringAddressSize) return std::nullopt;
  return VringAddress{static_cast<uint32_t>(get(payload, 0, 4)),
                      static_cast<uint32_t>(get(payload, 4, 4)),
                      get(payload, 8, 8),
                      get(payload, 16, 8),
                      get(payload, 24, 8),
                      get(payload, 32, 8)};
}

std::optional<std::vector<MemoryRegionDescription>> decode_memory_table(
    std::span<const std::byte> payload) {
  if (payload.size() < 8) return std::nullopt;
  const uint64_t count = get(payload, 0, 4);
  if (count > kMaxMemoryRegions || payload.size() != 8 + count * kMemoryRegionSize)
    return std::nullopt;
  std::vector<MemoryRegionDescription> regions;
  for (uint64_t i = 0; i < count; ++i) {
    const size_t at = 8 + i * kMemoryRegionSize;
    regions.push_back({get(payload, at, 8), get(payload, at + 8, 8), get(payload, at + 16, 8),
                       get(payload, at + 24, 8)});
  }
  return regions;
}

}  // namespace ember::vhost_user
