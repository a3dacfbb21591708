// Tier 1 (unit, no guest): the vhost-user codec and front-end, and virtio-fs served by the REAL
// virtiofsd (/usr/lib/qemu/virtiofsd). The tests play the guest driver: rings laid out in ember's
// memfd-backed GuestMemory, the device activated as a transport does, FUSE requests (linux/fuse.h)
// in the request queue, replies counted as they arrive through ember's Interrupts.
// virtiofsd's sandbox needs root (mount/pid/net namespaces), as tests here run.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "devices/interrupt_line.hpp"
#include "devices/vhost_user/frontend.hpp"
#include "devices/vhost_user/message.hpp"
#include "devices/virtio/fs.hpp"
#include "devices/virtio/mmio_transport.hpp"
#include "tests/unit/virtio_test_ring.hpp"
#include "vmm/error.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/virtiofsd.hpp"

namespace ember::virtio {
namespace {

using namespace vhost_user;
using test::kHighRegionStart;
using test::make_test_memory;
using test::TestRing;

// Bounded waits for another process: a hang fails the test instead of blocking it forever. No
// assertion is made on how long anything took.
constexpr auto kPatience = std::chrono::seconds(30);

std::vector<std::byte> bytes_of(std::string_view text) {
  const auto view = std::as_bytes(std::span(text));
  return {view.begin(), view.end()};
}

template <typename T>
void append(std::vector<std::byte>& out, const T& value) {
  const auto view = std::as_bytes(std::span(&value, 1));
  out.insert(out.end(), view.begin(), view.end());
}

// --- vhost-user messages --------------------------------------------------------------------

TEST(VhostUserMessage, EncodesHeaderAndU64LittleEndian) {
  const auto bytes = make_u64(Request::kSetFeatures, 0x0000000100000000ull | 1u << 29).encode();
  const std::vector<uint8_t> expected{2, 0, 0, 0, 1, 0,    0, 0, 8, 0,
                                      0, 0, 0, 0, 0, 0x20, 1, 0, 0, 0};
  ASSERT_EQ(bytes.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(std::to_integer<uint8_t>(bytes[i]), expected[i]) << "byte " << i;
}

TEST(VhostUserMessage, RequestWithoutPayloadIsHeaderOnly) {
  const auto bytes = make_request(Request::kSetOwner).encode();
  ASSERT_EQ(bytes.size(), kHeaderSize);
  const auto header = decode_header(bytes);
  ASSERT_TRUE(header);
  EXPECT_EQ(header->request, Request::kSetOwner);
  EXPECT_EQ(header->flags, kVersion);
  EXPECT_EQ(header->size, 0u);
}

TEST(VhostUserMessage, VringAddressRoundTrip) {
  const VringAddress address{3, 0, 0x7f0000001000, 0x7f0000003000, 0x7f0000002000, 0};
  const Message message = make_vring_address(address);
  EXPECT_EQ(message.request, Request::kSetVringAddr);
  ASSERT_EQ(message.payload.size(), kVringAddressSize);
  EXPECT_EQ(decode_vring_address(message.payload), address);
  // Field order on the wire: index, flags, descriptor, used, available, log.
  EXPECT_EQ(decode_u64(std::span(message.payload).subspan(16, 8)), 0x7f0000003000u);
  EXPECT_FALSE(decode_vring_address(std::span(message.payload).first(39)));
}

TEST(VhostUserMessage, VringStateAndFdIndex) {
  const Message state = make_vring_state(Request::kSetVringNum, {1, 256});
  EXPECT_EQ(decode_vring_state(state.payload), (VringState{1, 256}));
  EXPECT_EQ(decode_u64(make_vring_fd(Request::kSetVringKick, 5, true).payload), 5u);
  EXPECT_EQ(decode_u64(make_vring_fd(Request::kSetVringCall, 5, false).payload), 5u | kVringNoFd);
}

TEST(VhostUserMessage, MemoryTableRoundTripAndLimits) {
  const std::vector<MemoryRegionDescription> regions{{0, 2 << 20, 0x7f0000000000, 0},
                                                     {4 << 20, 2 << 20, 0x7f0000200000, 2 << 20}};
  const Message message = make_memory_table(regions);
  ASSERT_EQ(message.payload.size(), 8 + 2 * kMemoryRegionSize);
  EXPECT_EQ(decode_memory_table(message.payload), regions);

  auto truncated = message.payload;
  truncated.pop_back();
  EXPECT_FALSE(decode_memory_table(truncated));
  std::vector<MemoryRegionDescription> too_many(kMaxMemoryRegions + 1);
  EXPECT_FALSE(decode_memory_table(make_memory_table(too_many).payload));
}

TEST(VhostUserMessage, DecodeHeaderRejectsMalformed) {
  auto reply = make_u64(Request::kGetFeatures, 1);
  reply.flags = kVersion | kFlagReply;
  auto bytes = reply.encode();
  const auto good = decode_header(std::span(bytes).first(kHeaderSize));
  ASSERT_TRUE(good);
  EXPECT_EQ(good->flags & kFlagReply, kFlagReply);
  EXPECT_EQ(good->size, 8u);

  EXPECT_FALSE(decode_header(std::span(bytes).first(kHeaderSize - 1)));  // Short.
  auto wrong_version = bytes;
  wrong_version[4] = std::byte{2};
  EXPECT_FALSE(decode_header(std::span(wrong_version).first(kHeaderSize)));
  auto huge = bytes;
  huge[9] = std::byte{0x20};  // 8 KiB payload: more than any reply.
  EXPECT_FALSE(decode_header(std::span(huge).first(kHeaderSize)));
  EXPECT_FALSE(decode_u64(std::span(bytes).subspan(kHeaderSize, 7)));
  EXPECT_EQ(request_name(Request::kSetMemTable), "SET_MEM_TABLE");
  EXPECT_EQ(request_name(static_cast<Request>(99)), "request 99");
}

// --- The front-end against a scripted peer on a socketpair --------------------------------------

struct Received {
  Header header;
  std::vector<std::byte> payload;
  std::vector<UniqueFd> fds;
};

// What the back-end end of the pair reads: one message with its SCM_RIGHTS fds.
Received receive_message(int socket) {
  std::array<std::byte, kHeaderSize> header{};
  std::array<char, CMSG_SPACE(sizeof(int) * kMaxFds)> control{};
  iovec vector{header.data(), header.size()};
  msghdr message{};
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  message.msg_control = control.data();
  message.msg_controllen = control.size();
  if (::recvmsg(socket, &message, MSG_WAITALL | MSG_CMSG_CLOEXEC) != kHeaderSize)
    throw Error("peer: short header");
  Received received{*decode_header(header), {}, {}};
  for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      received.fds.emplace_back(fd);
    }
  }
  received.payload.resize(received.header.size);
  if (!received.payload.empty() &&
      ::recv(socket, received.payload.data(), received.payload.size(), MSG_WAITALL) !=
          static_cast<ssize_t>(received.payload.size()))
    throw Error("peer: short payload");
  return received;
}

void send_reply(int socket, Request request, std::optional<uint64_t> value,
                uint32_t flags = kVersion | kFlagReply) {
  Message reply = value ? make_u64(request, *value) : make_request(request);
  reply.flags = flags;
  const auto bytes = reply.encode();
  ASSERT_EQ(::send(socket, bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
}

class VhostUserFrontendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    frontend_ = std::make_unique<Frontend>(UniqueFd(pair[0]), "test");
    peer_.reset(pair[1]);
  }
  // Replies are queued before the call: the front-end reads them when it waits.
  void initialize_with_reply_ack() {
    send_reply(peer_.get(), Request::kGetFeatures, kFeatureVersion1 | kFeatureProtocolFeatures);
    send_reply(peer_.get(), Request::kGetProtocolFeatures,
               kProtocolReplyAck | kProtocolMultiQueue | (1u << 5));
    send_reply(peer_.get(), Request::kSetOwner, 0);
    send_reply(peer_.get(), Request::kGetQueueNum, 2);
    frontend_->initialize();
    for (Request expected :
         {Request::kGetFeatures, Request::kGetProtocolFeatures, Request::kSetProtocolFeatures,
          Request::kSetOwner, Request::kGetQueueNum}) {
      sent_.push_back(receive_message(peer_.get()));
      EXPECT_EQ(sent_.back().header.request, expected);
    }
    for (size_t i = 0; i < sent_.size(); ++i) EXPECT_EQ(sent_[i].header.flags & kFlagReply, 0u);
  }

  std::unique_ptr<Frontend> frontend_;
  UniqueFd peer_;
  std::vector<Received> sent_;
};

TEST_F(VhostUserFrontendTest, HandshakeNegotiatesOnlyKnownProtocolFeatures) {
  initialize_with_reply_ack();
  ASSERT_EQ(sent_.size(), 5u);
  EXPECT_EQ(sent_[0].header.request, Request::kGetFeatures);
  EXPECT_EQ(sent_[2].header.request, Request::kSetProtocolFeatures);
  EXPECT_EQ(decode_u64(sent_[2].payload), kProtocolReplyAck | kProtocolMultiQueue);
  EXPECT_EQ(sent_[3].header.request, Request::kSetOwner);
  EXPECT_EQ(sent_[3].header.flags & kFlagNeedReply, kFlagNeedReply);  // REPLY_ACK in use.
  EXPECT_EQ(frontend_->protocol_features(), kProtocolReplyAck | kProtocolMultiQueue);
  EXPECT_EQ(frontend_->queue_limit(), 2u);
  EXPECT_TRUE(frontend_->connected());
}

TEST_F(VhostUserFrontendTest, WithoutProtocolFeaturesNothingIsAcked) {
  send_reply(peer_.get(), Request::kGetFeatures, kFeatureVersion1);
  frontend_->initialize();
  EXPECT_EQ(receive_message(peer_.get()).header.request, Request::kGetFeatures);
  const auto owner = receive_message(peer_.get());
  EXPECT_EQ(owner.header.request, Request::kSetOwner);
  EXPECT_EQ(owner.header.flags, kVersion);
  frontend_->set_features(kFeatureVersion1);  // Returns without waiting for anything.
  EXPECT_EQ(decode_u64(receive_message(peer_.get()).payload), kFeatureVersion1);
}

TEST_F(VhostUserFrontendTest, MemTableSendsTheMemfdPerRegionWithOffsets) {
  initialize_with_reply_ack();
  auto memory = make_test_memory();
  send_reply(peer_.get(), Request::kSetMemTable, 0);
  frontend_->set_mem_table(*memory);
  const auto message = receive_message(peer_.get());
  EXPECT_EQ(message.header.request, Request::kSetMemTable);
  const auto regions = decode_memory_table(message.payload);
  ASSERT_TRUE(regions);
  ASSERT_EQ(regions->size(), 2u);
  ASSERT_EQ(message.fds.size(), 2u);
  EXPECT_EQ((*regions)[1].guest_address, kHighRegionStart);
  EXPECT_EQ((*regions)[1].mmap_offset, test::kLowRegionSize);
  EXPECT_EQ((*regions)[1].user_address, reinterpret_cast<uint64_t>(memory->regions()[1].host));
  // The fds are ember's memfd: what the peer writes through them, the guest sees.
  struct stat ours {
  }, theirs{};
  ASSERT_EQ(::fstat(memory->fd(), &ours), 0);
  ASSERT_EQ(::fstat(message.fds[1].get(), &theirs), 0);
  EXPECT_EQ(ours.st_ino, theirs.st_ino);
  const char mark = 'Z';
  ASSERT_EQ(::pwrite(message.fds[1].get(), &mark, 1, (*regions)[1].mmap_offset + 5), 1);
  EXPECT_EQ(memory->read_value<char>(kHighRegionStart + 5), 'Z');
}

TEST_F(VhostUserFrontendTest, VringKickPassesAWorkingEventfd) {
  initialize_with_reply_ack();
  UniqueFd kick(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  send_reply(peer_.get(), Request::kSetVringKick, 0);
  frontend_->set_vring_kick(1, kick.get());
  auto message = receive_message(peer_.get());
  EXPECT_EQ(decode_u64(message.payload), 1u);
  ASSERT_EQ(message.fds.size(), 1u);
  const uint64_t one = 1;
  ASSERT_EQ(::write(kick.get(), &one, 8), 8);
  uint64_t value = 0;
  EXPECT_EQ(::read(message.fds[0].get(), &value, 8), 8);
  EXPECT_EQ(value, 1u);

  send_reply(peer_.get(), Request::kSetVringCall, 0);
  frontend_->set_vring_call(0, -1);  // No fd: the "invalid fd" flag instead.
  message = receive_message(peer_.get());
  EXPECT_EQ(decode_u64(message.payload), kVringNoFd);
  EXPECT_TRUE(message.fds.empty());
}

TEST_F(VhostUserFrontendTest, GetVringBaseReadsTheState) {
  initialize_with_reply_ack();
  Message reply = make_vring_state(Request::kGetVringBase, {1, 42});
  reply.flags = kVersion | kFlagReply;
  const auto bytes = reply.encode();
  ASSERT_EQ(::send(peer_.get(), bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  EXPECT_EQ(frontend_->get_vring_base(1), 42u);
}

TEST_F(VhostUserFrontendTest, NegativeAckIsAnError) {
  initialize_with_reply_ack();
  send_reply(peer_.get(), Request::kSetVringNum, 1);
  EXPECT_THROW(frontend_->set_vring_num(0, 256), Error);
  EXPECT_FALSE(frontend_->connected());
}

TEST_F(VhostUserFrontendTest, ReplyToAnotherRequestIsAnErrorAndLosesTheConnection) {
  initialize_with_reply_ack();
  send_reply(peer_.get(), Request::kGetFeatures, 0);  // Not what was asked.
  try {
    frontend_->set_vring_num(0, 256);
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("answered with GET_FEATURES"), std::string::npos)
        << error.what();
  }
  EXPECT_FALSE(frontend_->connected());
  EXPECT_THROW(frontend_->set_vring_num(0, 256), Error);  // No further I/O on a lost stream.
}

TEST_F(VhostUserFrontendTest, ReplyWithoutReplyFlagIsRejected) {
  send_reply(peer_.get(), Request::kGetFeatures, 1, kVersion);
  EXPECT_THROW(frontend_->initialize(), Error);
}

TEST_F(VhostUserFrontendTest, ClosedPeerIsAnErrorNotAHangOrSigpipe) {
  initialize_with_reply_ack();
  peer_.reset();
  EXPECT_THROW(frontend_->set_vring_num(0, 256), Error);
  EXPECT_FALSE(frontend_->connected());
}

// --- virtio-fs tag and configuration ------------------------------------------------------

TEST(VirtioFsTag, EmptyOrLongerThan36BytesIsAOneLineError) {
  EXPECT_THROW(fs::check_tag(""), Error);
  EXPECT_THROW(fs::check_tag(std::string(37, 'a')), Error);
  EXPECT_THROW(fs::check_tag(std::string("a\0b", 3)), Error);
  EXPECT_NO_THROW(fs::check_tag(std::string(36, 'a')));
  try {
    fs::check_tag(std::string(40, 'x'));
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_EQ(message.find('\n'), std::string::npos);
    EXPECT_NE(message.find("40 bytes"), std::string::npos) << message;
  }
}

TEST(VirtioFsTag, DeviceRefusesABadTagBeforeTalkingToTheBackend) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd peer(pair[1]);
  EXPECT_THROW(VirtioFs(std::make_unique<Frontend>(UniqueFd(pair[0]), "t"), std::string(37, 't')),
               Error);
  char byte;
  EXPECT_EQ(::recv(peer.get(), &byte, 1, MSG_DONTWAIT), 0);  // Closed, nothing was sent.
}

// --- virtio-fs with the real virtiofsd ----------------------------------------------------

class RecordingInterrupts : public Interrupts {
 public:
  void queue_used(uint16_t queue) override {
    std::lock_guard lock(mutex_);
    ++used_[queue < 2 ? queue : 2];
    changed_.notify_all();
  }
  void config_changed() override {
    std::lock_guard lock(mutex_);
    ++config_;
    changed_.notify_all();
  }
  int used(uint16_t queue) {
    std::lock_guard lock(mutex_);
    return used_[queue];
  }
  // Until an interrupt on `queue` after the `count`-th finds `done()` true.
  template <typename Done>
  bool wait_used(uint16_t queue, int count, Done done) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, kPatience, [&] { return used_[queue] > count && done(); });
  }
  bool wait_config(int count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, kPatience, [&] { return config_ >= count; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::array<int, 3> used_{};
  int config_ = 0;
};

struct FuseReply {
  fuse_out_header header{};
  std::vector<std::byte> body;
  template <typename T>
  T as(size_t offset = 0) const {
    T value{};
    if (body.size() >= offset + sizeof(T)) std::memcpy(&value, body.data() + offset, sizeof(T));
    return value;
  }
};

const std::string kHostContent = "hello from the host\n";

// A share in a fresh temp dir, its virtiofsd, the device, and a driver for its two queues.
class FsRig {
 public:
  explicit FsRig(bool read_only) {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "ember-fs-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw system_error("mkdtemp");
    share_ = pattern;
    std::ofstream(share_ / "hello.txt") << kHostContent;
    daemon_ = std::make_unique<Virtiofsd>(VirtiofsdOptions{share_.string(), read_only});
    device_ = std::make_unique<VirtioFs>(
        std::make_unique<Frontend>(daemon_->take_connection(), "virtiofsd (test)"), "testfs");
    memory_ = make_test_memory();
    // High-priority ring in the low region, request ring and its buffers in the high one (so
    // virtiofsd has to use the second SET_MEM_TABLE region and its offset right).
    hiprio_ = std::make_unique<TestRing>(*memory_, 16, 0x1000, 0x100000);
    request_ = std::make_unique<TestRing>(*memory_, 64, 0x3000, kHighRegionStart);
    queues_.assign(fs::kQueueCount, Queue(256));
    loop_thread_ = std::jthread([this] { loop_.run(); });
  }
  ~FsRig() {
    {
      std::lock_guard lock(device_->mutex());
      device_->reset();
    }
    loop_.stop();
    loop_thread_.join();
    daemon_.reset();  // Killed first, as VirtioDevices does: it never sees the hang-up.
    device_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(share_, ignored);
  }

  // What a transport does at DRIVER_OK.
  bool activate() {
    for (auto& queue : queues_) queue.reset();
    if (!hiprio_->activate(queues_[0]) || !request_->activate(queues_[1])) return false;
    std::lock_guard lock(device_->mutex());
    return device_->activate(*memory_, queues_, kFeatureVersion1, interrupts_, loop_);
  }
  // What the transport's notify does when the guest kicks the queue.
  void kick(uint16_t queue) {
    std::lock_guard lock(device_->mutex());
    device_->process_queue(queue);
  }

  // One FUSE request on the request queue; waits for its interrupt and returns the reply.
  std::optional<FuseReply> call(uint32_t opcode, uint64_t nodeid,
                                const std::vector<std::byte>& body, uint32_t reply_room) {
    fuse_in_header in{};
    in.len = static_cast<uint32_t>(sizeof(in) + body.size());
    in.opcode = opcode;
    in.unique = next_unique_++;
    in.nodeid = nodeid;
    in.pid = 1;
    std::vector<std::byte> request;
    append(request, in);
    request.insert(request.end(), body.begin(), body.end());
    const int interrupts_before = interrupts_.used(1);
    const uint16_t used_before = request_->used_index();
    request_->push({request_->readable(request), request_->writable(reply_room)});
    const test::Buffer out = request_->buffer(1);
    kick(1);
    // The reply counts once an interrupt arrived and the used ring holds it.
    if (!interrupts_.wait_used(1, interrupts_before,
                               [&] { return request_->used_index() != used_before; }))
      return std::nullopt;
    const auto used = request_->pop_used();
    if (!used || used->length < sizeof(fuse_out_header)) return std::nullopt;
    FuseReply reply;
    const auto bytes = request_->read_bytes(out.address, used->length);
    std::memcpy(&reply.header, bytes.data(), sizeof(reply.header));
    reply.body.assign(bytes.begin() + sizeof(reply.header), bytes.end());
    EXPECT_EQ(reply.header.unique, in.unique);
    EXPECT_EQ(reply.header.len, used->length);
    return reply;
  }

  std::optional<FuseReply> init() {
    fuse_init_in init{};
    init.major = FUSE_KERNEL_VERSION;
    init.minor = FUSE_KERNEL_MINOR_VERSION;
    std::vector<std::byte> body;
    append(body, init);
    return call(FUSE_INIT, 0, body, 256);
  }
  std::optional<FuseReply> lookup(const std::string& name) {
    return call(FUSE_LOOKUP, FUSE_ROOT_ID,
                bytes_of(std::string_view(name.c_str(), name.size() + 1)), 256);
  }
  std::optional<FuseReply> open(uint64_t nodeid, uint32_t flags) {
    fuse_open_in open{};
    open.flags = flags;
    std::vector<std::byte> body;
    append(body, open);
    return call(FUSE_OPEN, nodeid, body, 64);
  }
  std::optional<FuseReply> create(const std::string& name) {
    fuse_create_in create{};
    create.flags = O_WRONLY | O_CREAT | O_EXCL;
    create.mode = S_IFREG | 0644;
    std::vector<std::byte> body;
    append(body, create);
    const auto name_bytes = bytes_of(std::string_view(name.c_str(), name.size() + 1));
    body.insert(body.end(), name_bytes.begin(), name_bytes.end());
    return call(FUSE_CREATE, FUSE_ROOT_ID, body, 256);
  }
  std::optional<FuseReply> write(uint64_t nodeid, uint64_t handle, const std::string& data) {
    fuse_write_in write{};
    write.fh = handle;
    write.size = static_cast<uint32_t>(data.size());
    std::vector<std::byte> body;
    append(body, write);
    const auto data_bytes = bytes_of(data);
    body.insert(body.end(), data_bytes.begin(), data_bytes.end());
    return call(FUSE_WRITE, nodeid, body, 64);
  }

  std::string host_file(const std::string& name) const {
    std::ifstream file(share_ / name);
    std::stringstream content;
    content << file.rdbuf();
    return content.str();
  }

  std::filesystem::path share_;
  std::unique_ptr<Virtiofsd> daemon_;
  std::unique_ptr<VirtioFs> device_;
  std::unique_ptr<GuestMemory> memory_;
  std::unique_ptr<TestRing> hiprio_;
  std::unique_ptr<TestRing> request_;
  std::vector<Queue> queues_;
  RecordingInterrupts interrupts_;
  EventLoop loop_;
  std::jthread loop_thread_;
  uint64_t next_unique_ = 1;
};

TEST(VirtioFsDevice, ConfigSpaceAndFeaturesFromVirtiofsd) {
  FsRig rig(false);
  EXPECT_EQ(rig.device_->type(), DeviceType::kFs);
  EXPECT_EQ(static_cast<uint32_t>(rig.device_->type()), 26u);
  EXPECT_EQ(rig.device_->queue_count(), 2);
  const uint64_t features = rig.device_->features();
  EXPECT_NE(features & kFeatureVersion1, 0u);
  EXPECT_EQ(features & kFeatureProtocolFeatures, 0u);  // A vhost-user bit, never the guest's.
  EXPECT_EQ(features & ~fs::kPassedFeatures, 0u);
  std::array<uint8_t, fs::kConfigSize + 4> config{};
  config.fill(0xff);
  rig.device_->read_config(0, config);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(config.data())), "testfs");
  EXPECT_EQ(config[fs::kTagSize - 1], 0);
  EXPECT_EQ(config[fs::kConfigNumRequestQueues], 1);
  EXPECT_EQ(config[fs::kConfigNumRequestQueues + 1], 0);
  EXPECT_EQ(config[fs::kConfigSize], 0);  // Past the end reads zero.
}

TEST(VirtioFsDevice, ReadsHostFileAndWritesLiveThroughRealVirtiofsd) {
  FsRig rig(false);
  ASSERT_TRUE(rig.activate());

  const auto init = rig.init();
  ASSERT_TRUE(init) << "no FUSE_INIT reply";
  ASSERT_EQ(init->header.error, 0);
  EXPECT_EQ(init->as<fuse_init_out>().major, 7u);

  const auto entry = rig.lookup("hello.txt");
  ASSERT_TRUE(entry);
  ASSERT_EQ(entry->header.error, 0);
  const auto hello = entry->as<fuse_entry_out>();
  EXPECT_EQ(hello.attr.size, kHostContent.size());
  EXPECT_NE(hello.nodeid, 0u);

  const auto opened = rig.open(hello.nodeid, O_RDONLY);
  ASSERT_TRUE(opened);
  ASSERT_EQ(opened->header.error, 0);
  fuse_read_in read{};
  read.fh = opened->as<fuse_open_out>().fh;
  read.size = 4096;
  std::vector<std::byte> read_body;
  append(read_body, read);
  const auto data = rig.call(FUSE_READ, hello.nodeid, read_body, sizeof(fuse_out_header) + 4096);
  ASSERT_TRUE(data);
  ASSERT_EQ(data->header.error, 0);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(data->body.data()), data->body.size()),
            kHostContent);

  const auto created = rig.create("from-guest.txt");
  ASSERT_TRUE(created);
  ASSERT_EQ(created->header.error, 0);
  const auto new_entry = created->as<fuse_entry_out>();
  const auto new_handle = created->as<fuse_open_out>(sizeof(fuse_entry_out)).fh;
  EXPECT_TRUE(std::filesystem::exists(rig.share_ / "from-guest.txt"));
  const std::string written = "written by the guest\n";
  const auto write = rig.write(new_entry.nodeid, new_handle, written);
  ASSERT_TRUE(write);
  ASSERT_EQ(write->header.error, 0);
  EXPECT_EQ(write->as<fuse_write_out>().size, written.size());
  // Live: on the host as soon as the reply is in the used ring, no flush or unmount needed.
  EXPECT_EQ(rig.host_file("from-guest.txt"), written);

  // Every reply came through ember's interrupt path on the request queue (call() waits for an
  // interrupt per reply); libvhost-user also signals each call fd once when it is handed over.
  EXPECT_EQ(rig.request_->used_index(), 6);
  EXPECT_GE(rig.interrupts_.used(1), 6);
  EXPECT_LE(rig.interrupts_.used(1), 7);
  EXPECT_LE(rig.interrupts_.used(0), 1);  // Nothing was ever queued on the high-priority queue.
  std::lock_guard lock(rig.device_->mutex());
  EXPECT_FALSE(rig.device_->needs_reset());
}

TEST(VirtioFsDevice, ReadOnlyShareRefusesWritesWithErofs) {
  FsRig rig(true);
  ASSERT_TRUE(rig.activate());
  const auto init = rig.init();
  ASSERT_TRUE(init);
  ASSERT_EQ(init->header.error, 0);

  const auto created = rig.create("denied.txt");
  ASSERT_TRUE(created);
  EXPECT_TRUE(created->header.error == -EROFS || created->header.error == -EACCES)
      << created->header.error;
  EXPECT_FALSE(std::filesystem::exists(rig.share_ / "denied.txt"));

  const auto entry = rig.lookup("hello.txt");
  ASSERT_TRUE(entry);
  ASSERT_EQ(entry->header.error, 0);
  const auto for_write = rig.open(entry->as<fuse_entry_out>().nodeid, O_WRONLY);
  ASSERT_TRUE(for_write);
  EXPECT_EQ(for_write->header.error, -EROFS);
  const auto for_read = rig.open(entry->as<fuse_entry_out>().nodeid, O_RDONLY);
  ASSERT_TRUE(for_read);
  EXPECT_EQ(for_read->header.error, 0);
  EXPECT_EQ(rig.host_file("hello.txt"), kHostContent);

  // Read-only for the guest only: the host still writes there (the mount was private).
  std::ofstream(rig.share_ / "host-side.txt") << "host";
  EXPECT_EQ(rig.host_file("host-side.txt"), "host");
}

TEST(VirtioFsDevice, VirtiofsdDyingMidRunSetsNeedsResetWithoutHanging) {
  FsRig rig(false);
  ASSERT_TRUE(rig.activate());
  const auto init = rig.init();
  ASSERT_TRUE(init);
  ASSERT_EQ(init->header.error, 0);

  ASSERT_EQ(::kill(-rig.daemon_->pid(), SIGKILL), 0);  // The whole group: what a crash leaves.
  ASSERT_TRUE(rig.interrupts_.wait_config(1)) << "no configuration interrupt";
  {
    std::lock_guard lock(rig.device_->mutex());
    EXPECT_TRUE(rig.device_->needs_reset());
  }
  // The guest keeps kicking: nothing is served, nothing crashes.
  rig.request_->push({rig.request_->readable("junk"), rig.request_->writable(64)});
  rig.kick(1);
  // The supervisor sees the exit and can say how it ended.
  pollfd exited{rig.daemon_->pidfd(), POLLIN, 0};
  ASSERT_EQ(::poll(&exited, 1, static_cast<int>(std::chrono::milliseconds(kPatience).count())), 1);
  const auto how = rig.daemon_->poll_exit();
  ASSERT_TRUE(how);
  EXPECT_EQ(*how, "was killed by signal 9");
  // Driver resets the device and tries again: reset returns, activation is refused.
  {
    std::lock_guard lock(rig.device_->mutex());
    rig.device_->reset();
    EXPECT_FALSE(rig.device_->needs_reset());
  }
  EXPECT_FALSE(rig.activate());
}

TEST(VirtioFsDevice, ResetAndReactivateKeepsServing) {
  FsRig rig(false);
  ASSERT_TRUE(rig.activate());
  ASSERT_TRUE(rig.init());
  {
    std::lock_guard lock(rig.device_->mutex());
    rig.device_->reset();  // GET_VRING_BASE on both rings; virtiofsd stays up.
  }
  rig.request_ = std::make_unique<TestRing>(*rig.memory_, 64, 0x3000, kHighRegionStart + 0x100000);
  ASSERT_TRUE(rig.activate());
  const auto entry = rig.lookup("hello.txt");
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->header.error, 0);  // The FUSE session survived the virtio reset.
  EXPECT_FALSE(rig.daemon_->poll_exit());
}

TEST(VirtioFsDevice, BackendThatExitsAtStartIsAOneLineError) {
  auto daemon = std::make_unique<Virtiofsd>(
      VirtiofsdOptions{std::filesystem::temp_directory_path().string(), false, "/bin/true"});
  try {
    VirtioFs device(std::make_unique<Frontend>(daemon->take_connection(), "virtiofsd (test)"), "t");
    FAIL() << "a backend that exited was accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("closed the connection"), std::string::npos)
        << error.what();
  }
  EXPECT_EQ(daemon->wait_exit(kPatience), "exited with status 0");
}

// The whole path a guest takes: virtio-mmio registers (§4.2.3.1), the notify, the interrupt
// line, and NEEDS_RESET in the status register once virtiofsd is gone.
class EdgeCounter : public InterruptLine {
 public:
  void set_level(bool asserted) override {
    std::lock_guard lock(mutex_);
    if (asserted) ++edges_;
    changed_.notify_all();
  }
  int edges() {
    std::lock_guard lock(mutex_);
    return edges_;
  }
  // `done` reads transport registers, which take the transport's lock; the interrupt is raised
  // with that lock held, so `done` runs without this counter's lock (no lock-order inversion).
  template <typename Done>
  bool wait(int after, Done done) {
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    while (true) {
      {
        std::unique_lock lock(mutex_);
        if (!changed_.wait_until(lock, deadline, [&] { return edges_ > after; })) return false;
      }
      if (done()) return true;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int edges_ = 0;
};

TEST(VirtioFsDevice, ServesThroughTheMmioTransportAndReportsNeedsReset) {
  // virtio-mmio registers (§4.2.2), written out here rather than taken from the transport.
  constexpr uint64_t kDeviceId = 0x008, kDriverFeatures = 0x020, kDriverFeaturesSel = 0x024,
                     kQueueSel = 0x030, kQueueNum = 0x038, kQueueReady = 0x044,
                     kInterruptStatus = 0x060, kStatus = 0x070, kQueueDescLow = 0x080,
                     kQueueDriverLow = 0x090, kQueueDeviceLow = 0x0a0, kConfig = 0x100;
  std::string pattern = (std::filesystem::temp_directory_path() / "ember-fs-test-XXXXXX").string();
  ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
  const std::filesystem::path share = pattern;
  auto memory = make_test_memory();
  EventLoop loop;
  EdgeCounter line;
  Virtiofsd daemon(VirtiofsdOptions{share.string(), false});
  auto device = std::make_unique<VirtioFs>(
      std::make_unique<Frontend>(daemon.take_connection(), "virtiofsd (test)"), "mmiofs");
  // The test calls notify() itself, as the queue's ioeventfd handler would.
  VirtioMmioTransport transport(std::move(device), *memory, loop, line, [](uint16_t) {});
  struct LoopThread {  // Stops the loop however the test ends, before joining it.
    EventLoop& loop;
    std::jthread thread{[this] { loop.run(); }};
    ~LoopThread() { loop.stop(); }
  } loop_thread{loop};
  auto write32 = [&](uint64_t offset, uint32_t value) {
    const std::array<uint8_t, 4> data{static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
                                      static_cast<uint8_t>(value >> 16),
                                      static_cast<uint8_t>(value >> 24)};
    transport.write(offset, data);
  };
  auto read32 = [&](uint64_t offset) {
    std::array<uint8_t, 4> data{};
    transport.read(offset, data);
    return static_cast<uint32_t>(data[0] | data[1] << 8 | data[2] << 16 | data[3] << 24);
  };
  EXPECT_EQ(read32(kDeviceId), 26u);
  EXPECT_EQ(read32(kConfig), 0x6f696d6du);  // "mmio", little-endian

  TestRing hiprio(*memory, 16, 0x1000, 0x100000);
  TestRing request(*memory, 64, 0x3000, kHighRegionStart);
  write32(kStatus, kStatusAcknowledge | kStatusDriver);
  write32(kDriverFeaturesSel, 1);
  write32(kDriverFeatures, 1);  // VIRTIO_F_VERSION_1 (bit 32).
  write32(kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  for (uint16_t queue = 0; queue < 2; ++queue) {
    const TestRing& ring = queue == 0 ? hiprio : request;
    write32(kQueueSel, queue);
    write32(kQueueNum, ring.size());
    write32(kQueueDescLow, static_cast<uint32_t>(ring.descriptor_table()));
    write32(kQueueDriverLow, static_cast<uint32_t>(ring.available_ring()));
    write32(kQueueDeviceLow, static_cast<uint32_t>(ring.used_ring()));
    write32(kQueueReady, 1);
  }
  write32(kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  ASSERT_EQ(read32(kStatus) & kStatusNeedsReset, 0u);

  fuse_in_header in{};
  fuse_init_in init{};
  in.len = sizeof(in) + sizeof(init);
  in.opcode = FUSE_INIT;
  in.unique = 7;
  init.major = FUSE_KERNEL_VERSION;
  init.minor = FUSE_KERNEL_MINOR_VERSION;
  std::vector<std::byte> bytes;
  append(bytes, in);
  append(bytes, init);
  const int edges_before = line.edges();
  request.push({request.readable(bytes), request.writable(256)});
  transport.notify(1);  // What the queue's ioeventfd handler does.
  ASSERT_TRUE(line.wait(edges_before, [&] { return request.used_index() == 1; }));
  EXPECT_NE(read32(kInterruptStatus) & 1, 0u);  // Used buffer notification.
  fuse_out_header out{};
  std::memcpy(&out, request.read_bytes(request.buffer(1).address, sizeof(out)).data(), sizeof(out));
  EXPECT_EQ(out.error, 0);
  EXPECT_EQ(out.unique, 7u);

  const int edges_alive = line.edges();
  ASSERT_EQ(::kill(-daemon.pid(), SIGKILL), 0);
  ASSERT_TRUE(line.wait(edges_alive, [&] { return (read32(kStatus) & kStatusNeedsReset) != 0; }));
  EXPECT_NE(read32(kInterruptStatus) & 2, 0u);  // Configuration change (§2.1.2).
  write32(kStatus, 0);                          // Driver resets: returns, nothing hangs.
  EXPECT_EQ(read32(kStatus), 0u);
  std::filesystem::remove_all(share);
}

TEST(VirtioFsDevice, VirtiofsdNeedsADirectory) {
  EXPECT_THROW(Virtiofsd(VirtiofsdOptions{"/nonexistent/ember-share", false}), Error);
  EXPECT_THROW(Virtiofsd(VirtiofsdOptions{"/etc/hostname", false}), Error);
  EXPECT_THROW(Virtiofsd(VirtiofsdOptions{"/tmp", false, "/nonexistent/virtiofsd"}), Error);
}

}  // namespace
}  // namespace ember::virtio
