// The front-end side of one vhost-user connection (QEMU docs/interop/vhost-user.rst): ember owns
// the guest's rings and memory, the backend process (virtiofsd for virtio-fs) processes the rings
// directly in the shared guest memory and is told where they are over this unix socket.
//
// Requests are synchronous: each call sends one message (with its fds as SCM_RIGHTS) and, for
// GET_* requests or when REPLY_ACK was negotiated, waits for the reply. Replies must name the
// request and carry the reply flag; anything else, a closed socket or no answer within
// kReplyTimeout is a one-line Error, after which the connection counts as lost (connected() is
// false and every later call throws without touching the socket). Nothing here blocks forever
// and no SIGPIPE is raised when the backend has gone away.
//
// Not thread-safe: the owning device calls it with its mutex held.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "devices/vhost_user/message.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/unique_fd.hpp"

namespace ember::vhost_user {

inline constexpr std::chrono::seconds kReplyTimeout{10};

class Frontend {
 public:
  // `socket` is a connected SOCK_STREAM unix socket; `name` prefixes error messages.
  Frontend(UniqueFd socket, std::string name);

  // The start of every session: GET_FEATURES, then (when the backend offers protocol features)
  // GET_PROTOCOL_FEATURES and SET_PROTOCOL_FEATURES with what both sides know of `wanted`, then
  // SET_OWNER. With MQ negotiated, GET_QUEUE_NUM too. Throws Error.
  void initialize(uint64_t wanted_protocol_features = kProtocolReplyAck | kProtocolMultiQueue);

  // What the backend offered in GET_FEATURES (virtio bits plus kFeatureProtocolFeatures).
  uint64_t backend_features() const { return backend_features_; }
  uint64_t protocol_features() const { return protocol_features_; }
  // Queues the backend serves: GET_QUEUE_NUM's answer with MQ, otherwise unknown (0).
  uint64_t queue_limit() const { return queue_limit_; }

  // SET_FEATURES with the driver's features; adds kFeatureProtocolFeatures itself when the
  // backend offered it (so the rings start disabled until set_vring_enable()).
  void set_features(uint64_t driver_features);
  // SET_MEM_TABLE: every region of `memory` with its fd (ember's one memfd) and its offset in it.
  void set_mem_table(const GuestMemory& memory);
  void set_vring_num(uint32_t index, uint32_t size);
  void set_vring_base(uint32_t index, uint32_t next_available);
  void set_vring_addr(const VringAddress& address);
  // An fd < 0 sends the "no fd" flag instead (polling mode for KICK, no interrupts for CALL).
  void set_vring_kick(uint32_t index, int eventfd);
  void set_vring_call(uint32_t index, int eventfd);
  void set_vring_err(uint32_t index, int eventfd);
  void set_vring_enable(uint32_t index, bool enabled);
  // Stops the ring and returns the next available index the backend would have processed.
  uint32_t get_vring_base(uint32_t index);

  // Gives up the connection (the backend sees it closed); later calls throw without I/O.
  void disconnect();
  bool connected() const { return connected_; }
  int socket_fd() const { return socket_.get(); }
  const std::string& name() const { return name_; }

 private:
  // Sends `message`, adding NEED_REPLY and waiting for the ack when REPLY_ACK was negotiated.
  void send_acked(Message message, std::span<const int> fds = {});
  void send(const Message& message, std::span<const int> fds);
  // The reply to `request`; its payload must be a u64.
  uint64_t receive_u64(Request request);
  std::vector<std::byte> receive(Request request);
  void receive_exactly(std::span<std::byte> out, Request request);
  [[noreturn]] void fail(Request request, const std::string& why);
  void check_connected(Request request) const;

  UniqueFd socket_;
  std::string name_;
  bool connected_ = true;
  uint64_t backend_features_ = 0;
  uint64_t protocol_features_ = 0;
  uint64_t queue_limit_ = 0;
};

}  // namespace ember::vhost_user
