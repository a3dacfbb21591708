#include "devices/vhost_user/frontend.hpp"

#include <sys/socket.h>
#include <sys/time.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "vmm/error.hpp"

namespace ember::vhost_user {

namespace {

// Room for kMaxFds descriptors of ancillary data.
constexpr size_t kControlSize = CMSG_SPACE(sizeof(int) * kMaxFds);

void set_timeout(int socket, int option) {
  timeval timeout{};
  timeout.tv_sec = kReplyTimeout.count();
  if (::setsockopt(socket, SOL_SOCKET, option, &timeout, sizeof(timeout)) != 0)
    throw system_error("vhost-user: setsockopt timeout");
}

// Closes fds a backend sent where none were expected, so they cannot pile up in ember.
void close_received_fds(msghdr& header) {
  for (cmsghdr* control = CMSG_FIRSTHDR(&header); control != nullptr;
       control = CMSG_NXTHDR(&header, control)) {
    if (control->cmsg_level != SOL_SOCKET || control->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (control->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(control) + i * sizeof(int), sizeof(int));
      UniqueFd owned(fd);
    }
  }
}

}  // namespace

Frontend::Frontend(UniqueFd socket, std::string name)
    : socket_(std::move(socket)), name_(std::move(name)) {
  if (!socket_) throw Error("vhost-user " + name_ + ": no socket");
  set_timeout(socket_.get(), SO_RCVTIMEO);
  set_timeout(socket_.get(), SO_SNDTIMEO);
}

void Frontend::initialize(uint64_t wanted_protocol_features) {
  send(make_request(Request::kGetFeatures), {});
  backend_features_ = receive_u64(Request::kGetFeatures);
  if ((backend_features_ & kFeatureProtocolFeatures) != 0) {
    send(make_request(Request::kGetProtocolFeatures), {});
    const uint64_t offered = receive_u64(Request::kGetProtocolFeatures);
    // Not acked: REPLY_ACK applies only once this message has been processed.
    send(make_u64(Request::kSetProtocolFeatures, offered & wanted_protocol_features), {});
    protocol_features_ = offered & wanted_protocol_features;
  }
  send_acked(make_request(Request::kSetOwner));
  if ((protocol_features_ & kProtocolMultiQueue) != 0) {
    send(make_request(Request::kGetQueueNum), {});
    queue_limit_ = receive_u64(Request::kGetQueueNum);
  }
}

void Frontend::set_features(uint64_t driver_features) {
  const uint64_t features = (driver_features & ~kFeatureProtocolFeatures) |
                            (backend_features_ & kFeatureProtocolFeatures);
  send_acked(make_u64(Request::kSetFeatures, features));
}

void Frontend::set_mem_table(const GuestMemory& memory) {
  const auto& regions = memory.regions();
  if (regions.empty() || regions.size() > kMaxMemoryRegions)
    fail(Request::kSetMemTable, std::to_string(regions.size()) + " memory regions (1 to " +
                                    std::to_string(kMaxMemoryRegions) + " supported)");
  // GuestMemory maps its memfd from offset 0 and lays the regions over it in order, so a
  // region's offset in the memfd is its distance from the first region's mapping.
  std::vector<MemoryRegionDescription> descriptions;
  std::vector<int> fds;
  for (const auto& region : regions) {
    descriptions.push_back({region.guest_address, region.size,
                            reinterpret_cast<uint64_t>(region.host),
                            static_cast<uint64_t>(region.host - regions.front().host)});
    fds.push_back(memory.fd());
  }
  send_acked(make_memory_table(descriptions), fds);
}

void Frontend::set_vring_num(uint32_t index, uint32_t size) {
  send_acked(make_vring_state(Request::kSetVringNum, {index, size}));
}

void Frontend::set_vring_base(uint32_t index, uint32_t next_available) {
  send_acked(make_vring_state(Request::kSetVringBase, {index, next_available}));
}

void Frontend::set_vring_addr(const VringAddress& address) {
  send_acked(make_vring_address(address));
}

void Frontend::set_vring_kick(uint32_t index, int eventfd) {
  const std::array fds{eventfd};
  send_acked(make_vring_fd(Request::kSetVringKick, index, eventfd >= 0),
             eventfd >= 0 ? std::span<const int>(fds) : std::span<const int>());
}

void Frontend::set_vring_call(uint32_t index, int eventfd) {
  const std::array fds{eventfd};
  send_acked(make_vring_fd(Request::kSetVringCall, index, eventfd >= 0),
             eventfd >= 0 ? std::span<const int>(fds) : std::span<const int>());
}

void Frontend::set_vring_err(uint32_t index, int eventfd) {
  const std::array fds{eventfd};
  send_acked(make_vring_fd(Request::kSetVringErr, index, eventfd >= 0),
             eventfd >= 0 ? std::span<const int>(fds) : std::span<const int>());
}

void Frontend::set_vring_enable(uint32_t index, bool enabled) {
  send_acked(make_vring_state(Request::kSetVringEnable, {index, enabled ? 1u : 0u}));
}

uint32_t Frontend::get_vring_base(uint32_t index) {
  send(make_vring_state(Request::kGetVringBase, {index, 0}), {});
  const auto payload = receive(Request::kGetVringBase);
  const auto state = decode_vring_state(payload);
  if (!state || state->index != index)
    fail(Request::kGetVringBase, "malformed reply of " + std::to_string(payload.size()) + " bytes");
  return state->num;
}

void Frontend::send_acked(Message message, std::span<const int> fds) {
  const bool ack = (protocol_features_ & kProtocolReplyAck) != 0;
  if (ack) message.flags |= kFlagNeedReply;
  send(message, fds);
  if (!ack) return;
  const uint64_t status = receive_u64(message.request);
  if (status != 0)
    fail(message.request, "backend failed it (status " + std::to_string(status) + ")");
}

void Frontend::send(const Message& message, std::span<const int> fds) {
  check_connected(message.request);
  if (fds.size() > kMaxFds) fail(message.request, "too many fds");
  const std::vector<std::byte> bytes = message.encode();
  std::array<char, kControlSize> control{};
  size_t sent = 0;
  while (sent < bytes.size()) {
    iovec vector{const_cast<std::byte*>(bytes.data() + sent), bytes.size() - sent};
    msghdr header{};
    header.msg_iov = &vector;
    header.msg_iovlen = 1;
    if (sent == 0 && !fds.empty()) {  // The fds travel with the first byte.
      header.msg_control = control.data();
      header.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* rights = CMSG_FIRSTHDR(&header);
      rights->cmsg_level = SOL_SOCKET;
      rights->cmsg_type = SCM_RIGHTS;
      rights->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(rights), fds.data(), sizeof(int) * fds.size());
    }
    const ssize_t result = ::sendmsg(socket_.get(), &header, MSG_NOSIGNAL);
    if (result < 0 && errno == EINTR) continue;
    if (result < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      fail(message.request, "backend stopped reading");
    if (result < 0 && (errno == EPIPE || errno == ECONNRESET))
      fail(message.request, "backend closed the connection");
    if (result <= 0) fail(message.request, std::strerror(errno));
    sent += static_cast<size_t>(result);
  }
}

uint64_t Frontend::receive_u64(Request request) {
  const auto payload = receive(request);
  const auto value = decode_u64(payload);
  if (!value) fail(request, "malformed reply of " + std::to_string(payload.size()) + " bytes");
  return *value;
}

std::vector<std::byte> Frontend::receive(Request request) {
  std::array<std::byte, kHeaderSize> header_bytes{};
  receive_exactly(header_bytes, request);
  const auto header = decode_header(header_bytes);
  if (!header) fail(request, "malformed reply header");
  if (header->request != request || (header->flags & kFlagReply) == 0)
    fail(request, "backend answered with " + request_name(header->request));
  std::vector<std::byte> payload(header->size);
  receive_exactly(payload, request);
  return payload;
}

void Frontend::receive_exactly(std::span<std::byte> out, Request request) {
  size_t received = 0;
  while (received < out.size()) {
    std::array<char, kControlSize> control{};
    iovec vector{out.data() + received, out.size() - received};
    msghdr header{};
    header.msg_iov = &vector;
    header.msg_iovlen = 1;
    header.msg_control = control.data();
    header.msg_controllen = control.size();
    const ssize_t result = ::recvmsg(socket_.get(), &header, MSG_CMSG_CLOEXEC);
    if (result < 0 && errno == EINTR) continue;
    if (result < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      fail(request, "no reply within " + std::to_string(kReplyTimeout.count()) + " s");
    if (result < 0 && errno == ECONNRESET) fail(request, "backend closed the connection");
    if (result < 0) fail(request, std::strerror(errno));
    close_received_fds(header);
    if (result == 0) fail(request, "backend closed the connection");
    received += static_cast<size_t>(result);
  }
}

void Frontend::disconnect() {
  if (connected_) ::shutdown(socket_.get(), SHUT_RDWR);
  connected_ = false;
}

void Frontend::check_connected(Request request) const {
  if (!connected_)
    throw Error("vhost-user " + name_ + ": " + request_name(request) + ": connection lost earlier");
}

void Frontend::fail(Request request, const std::string& why) {
  connected_ = false;  // The stream may be out of step now: nothing more can be trusted on it.
  throw Error("vhost-user " + name_ + ": " + request_name(request) + ": " + why);
}

}  // namespace ember::vhost_user
