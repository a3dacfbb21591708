#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "guest/init/channel.hpp"
#include "guest/protocol/protocol.hpp"
#include "vmm/error.hpp"

namespace ember::init {
namespace {

class InitChannel : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    channel_.emplace(UniqueFd(fds[0]));
    host_.reset(fds[1]);
  }

  void host_writes(const std::vector<uint8_t>& bytes) {
    ASSERT_EQ(::write(host_.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  std::vector<uint8_t> host_reads(size_t size) {
    std::vector<uint8_t> bytes(size);
    size_t got = 0;
    while (got < size) {
      const ssize_t now = ::read(host_.get(), bytes.data() + got, size - got);
      if (now <= 0) break;
      got += static_cast<size_t>(now);
    }
    bytes.resize(got);
    return bytes;
  }
  static std::vector<uint8_t> frame(uint8_t type, std::vector<uint8_t> payload, uint8_t flags = 0) {
    std::vector<uint8_t> bytes(protocol::kHeaderSize);
    protocol::write_header(bytes.data(), type, static_cast<uint32_t>(payload.size()));
    bytes[1] = flags;
    bytes.insert(bytes.end(), payload.begin(), payload.end());
    return bytes;
  }
  std::string next_error() {
    try {
      while (!channel_->next()) {
        if (!channel_->fill()) return "(end of file)";
      }
    } catch (const Error& error) {
      return error.what();
    }
    return "(a frame)";
  }

  std::optional<Channel> channel_;
  UniqueFd host_;
};

TEST_F(InitChannel, SendsHeaderThenPayload) {
  channel_->send_u32s(protocol::kExit, {protocol::kSignaled, 9});
  EXPECT_EQ(host_reads(16),
            (std::vector<uint8_t>{0x84, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0}));
  channel_->send_error(127, "exec nope:\nnot found");
  const auto error = host_reads(8 + 4 + 20);
  ASSERT_EQ(error.size(), 32u);
  EXPECT_EQ(error[0], protocol::kError);
  EXPECT_EQ(protocol::get_u32(error.data() + 4), 24u);
  EXPECT_EQ(protocol::get_u32(error.data() + 8), 127u);
  EXPECT_EQ(std::string(error.begin() + 12, error.end()), "exec nope: not found");  // one line
}

TEST_F(InitChannel, CutsFramesFromAnyStreamPieces) {
  auto bytes = frame(protocol::kStdin, {'a', 'b', 'c'});
  const auto second = frame(protocol::kStdinEof, {});
  bytes.insert(bytes.end(), second.begin(), second.end());
  host_writes({bytes.begin(), bytes.begin() + 5});  // Half a header: no frame yet.
  ASSERT_TRUE(channel_->fill());
  EXPECT_FALSE(channel_->next());
  host_writes({bytes.begin() + 5, bytes.end()});
  const Frame stdin_frame = channel_->receive();
  EXPECT_EQ(stdin_frame.type, protocol::kStdin);
  EXPECT_EQ(stdin_frame.payload, (std::vector<uint8_t>{'a', 'b', 'c'}));
  EXPECT_EQ(channel_->receive().type, protocol::kStdinEof);
  host_.reset();
  EXPECT_THROW(channel_->receive(), Error);
}

TEST_F(InitChannel, RejectsWhatTheProtocolForbids) {
  host_writes(frame(0x7f, {}));
  EXPECT_EQ(next_error(), "protocol error: unknown frame type (type 0x7f, flags 0x00, length 0)");
}

TEST_F(InitChannel, RejectsGuestFramesFromTheHost) {
  host_writes(frame(protocol::kStdout, {'x'}));
  EXPECT_EQ(next_error(), "protocol error: unknown frame type (type 0x82, flags 0x00, length 1)");
}

TEST_F(InitChannel, RejectsFlags) {
  host_writes(frame(protocol::kStdinEof, {}, 1));
  EXPECT_EQ(next_error(),
            "protocol error: non-zero flags or reserved field (type 0x03, flags 0x01, length 0)");
}

TEST_F(InitChannel, RejectsOversizedFramesButAllowsALargeStart) {
  std::vector<uint8_t> header(protocol::kHeaderSize);
  protocol::write_header(header.data(), protocol::kStdin, protocol::kMaxPayload + 1);
  host_writes(header);
  EXPECT_EQ(next_error(),
            "protocol error: frame longer than the protocol allows (type 0x02, flags 0x00, length "
            "65537)");

  SetUp();
  protocol::write_header(header.data(), protocol::kStart, protocol::kMaxPayload + 1);
  host_writes(header);
  ASSERT_TRUE(channel_->fill());
  EXPECT_FALSE(channel_->next());  // A valid header; the payload is still to come.
}

}  // namespace
}  // namespace ember::init
