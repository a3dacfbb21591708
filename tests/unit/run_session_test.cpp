// ember's side of the `ember run` protocol: frames and the session, fed byte streams as hvc0 would.
#include <gtest/gtest.h>

#include "guest/protocol/protocol.hpp"
#include "vmm/run/frame.hpp"
#include "vmm/run/session.hpp"

namespace ember::run {
namespace {

namespace proto = protocol;

std::vector<uint8_t> bytes_of(const std::string& text) {
  return {text.begin(), text.end()};
}

std::vector<uint8_t> u32s(std::initializer_list<uint32_t> values) {
  std::vector<uint8_t> out;
  for (uint32_t value : values) {
    uint8_t word[4];
    proto::put_u32(word, value);
    out.insert(out.end(), word, word + 4);
  }
  return out;
}

std::vector<uint8_t> hello() {
  return encode_frame(proto::kHello, u32s({proto::kVersion}));
}

struct Sent {
  uint8_t type;
  std::vector<uint8_t> payload;
};

// What the session has queued for the guest, parsed back as the guest would.
std::vector<Sent> drain(Session& session, size_t take_at_most = SIZE_MAX) {
  std::vector<uint8_t> wire;
  session.flush([&](std::span<const uint8_t> bytes) {
    const size_t taken = std::min(bytes.size(), take_at_most);
    wire.insert(wire.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(taken));
    return taken;
  });
  std::vector<Sent> sent;
  FrameReader reader(false, [&](uint8_t type, std::span<const uint8_t> payload) {
    sent.push_back({type, {payload.begin(), payload.end()}});
  });
  EXPECT_TRUE(reader.feed(wire)) << reader.error();
  return sent;
}

struct Captured {
  std::string out, err;
  Session::Sinks sinks() {
    return {[this](std::span<const uint8_t> b) { out.append(b.begin(), b.end()); },
            [this](std::span<const uint8_t> b) { err.append(b.begin(), b.end()); }};
  }
};

TEST(RunFrame, ReaderReassemblesFramesCutAnywhere) {
  std::vector<uint8_t> stream = encode_frame(proto::kStdout, bytes_of("hello"));
  auto second = encode_frame(proto::kStderr, bytes_of(""));
  auto third = encode_frame(proto::kLog, std::vector<uint8_t>(1000, 0x78));
  stream.insert(stream.end(), second.begin(), second.end());
  stream.insert(stream.end(), third.begin(), third.end());
  std::vector<Sent> frames;
  FrameReader reader(true, [&](uint8_t type, std::span<const uint8_t> payload) {
    frames.push_back({type, {payload.begin(), payload.end()}});
  });
  for (uint8_t byte : stream) ASSERT_TRUE(reader.feed(std::span(&byte, 1)));
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].type, proto::kStdout);
  EXPECT_EQ(std::string(frames[0].payload.begin(), frames[0].payload.end()), "hello");
  EXPECT_TRUE(frames[1].payload.empty());
  EXPECT_EQ(frames[2].payload.size(), 1000u);
  EXPECT_EQ(reader.buffered(), 0u);
}

TEST(RunFrame, ReaderRejectsBadHeaders) {
  auto reject = [](std::vector<uint8_t> header, const char* why) {
    FrameReader reader(true,
                       [](uint8_t, std::span<const uint8_t>) { FAIL() << "no frame expected"; });
    EXPECT_FALSE(reader.feed(header));
    EXPECT_NE(reader.error().find(why), std::string::npos) << reader.error();
    EXPECT_FALSE(reader.feed(hello()));  // stays stopped
  };
  reject({0x7f, 0, 0, 0, 0, 0, 0, 0}, "unknown frame type");
  reject({proto::kStart, 0, 0, 0, 0, 0, 0, 0},
         "unknown frame type");  // host -> guest type from the guest
  reject({proto::kStdout, 1, 0, 0, 0, 0, 0, 0}, "non-zero flags");
  reject({proto::kStdout, 0, 0, 0, 1, 0, 1, 0}, "longer than the protocol allows");
}

TEST(RunSession, StartsAfterHelloAndClosesStdinWhenNotInteractive) {
  Captured captured;
  Session session("{\"version\":1}", false, std::nullopt, captured.sinks());
  EXPECT_TRUE(drain(session).empty());  // nothing before kHello
  session.send_signal(15);              // no payload yet: dropped
  session.receive(hello());
  ASSERT_TRUE(session.running());
  auto sent = drain(session);
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].type, proto::kStart);
  EXPECT_EQ(std::string(sent[0].payload.begin(), sent[0].payload.end()), "{\"version\":1}");
  EXPECT_EQ(sent[1].type, proto::kStdinEof);
  session.send_stdin(bytes_of("ignored"));  // stdin already closed
  EXPECT_TRUE(drain(session).empty());
}

TEST(RunSession, InteractiveStdinResizeAndSignals) {
  Captured captured;
  Session session("{}", true, std::make_pair<uint16_t, uint16_t>(24, 80), captured.sinks());
  session.receive(hello());
  std::vector<uint8_t> big(proto::kMaxPayload + 10, 'a');
  session.send_stdin(big);
  session.send_signal(2);
  session.send_stdin_eof();
  session.send_stdin_eof();
  auto sent = drain(session, 1000);  // the guest takes it a little at a time
  ASSERT_EQ(sent.size(), 6u);
  EXPECT_EQ(sent[0].type, proto::kStart);
  EXPECT_EQ(sent[1].type, proto::kResize);
  EXPECT_EQ(proto::get_u16(sent[1].payload.data()), 24);
  EXPECT_EQ(proto::get_u16(sent[1].payload.data() + 2), 80);
  EXPECT_EQ(sent[2].type, proto::kStdin);
  EXPECT_EQ(sent[2].payload.size(), proto::kMaxPayload);
  EXPECT_EQ(sent[3].payload.size(), 10u);
  EXPECT_EQ(sent[4].type, proto::kSignal);
  EXPECT_EQ(proto::get_u32(sent[4].payload.data()), 2u);
  EXPECT_EQ(sent[5].type, proto::kStdinEof);
  EXPECT_EQ(session.outbox_bytes(), 0u);
}

TEST(RunSession, OutputGoesToItsOwnStreamAndExitSetsTheStatus) {
  Captured captured;
  Session session("{}", false, std::nullopt, captured.sinks());
  std::vector<uint8_t> stream = hello();
  for (auto frame : {encode_frame(proto::kStdout, bytes_of("out1 ")),
                     encode_frame(proto::kStderr, bytes_of("err")),
                     encode_frame(proto::kLog, bytes_of("a log line")),
                     encode_frame(proto::kStdout, bytes_of("out2")),
                     encode_frame(proto::kExit, u32s({proto::kExited, 7}))})
    stream.insert(stream.end(), frame.begin(), frame.end());
  session.receive(stream);
  EXPECT_EQ(session.state(), Session::State::kFinished);
  EXPECT_EQ(session.status(), 7);
  EXPECT_EQ(captured.out, "out1 out2");
  EXPECT_EQ(captured.err, "err");
  EXPECT_TRUE(session.message().empty());
}

TEST(RunSession, KilledBySignalIs128PlusN) {
  Session session("{}", false, std::nullopt, {});
  session.receive(hello());
  session.receive(encode_frame(proto::kExit, u32s({proto::kSignaled, 9})));
  EXPECT_EQ(session.state(), Session::State::kFinished);
  EXPECT_EQ(session.status(), 137);
}

TEST(RunSession, ErrorCarriesStatusAndOneLineMessage) {
  Session session("{}", false, std::nullopt, {});
  session.receive(hello());
  auto payload = u32s({127});
  auto text = bytes_of("exec nosuch: No such file\nor directory\x01");
  payload.insert(payload.end(), text.begin(), text.end());
  session.receive(encode_frame(proto::kError, payload));
  EXPECT_EQ(session.state(), Session::State::kFinished);
  EXPECT_EQ(session.status(), 127);
  EXPECT_EQ(session.message(), "exec nosuch: No such file or directory?");
}

TEST(RunSession, ErrorMessageKeepsUtf8AndDropsWhatTerminalsActOn) {
  Session session("{}", false, std::nullopt, {});
  session.receive(hello());
  auto payload = u32s({125});
  const std::vector<uint8_t> text = {
      'a', 0x9b, '2', 'J',                    // a raw 8-bit CSI
      'b', 0xc2, 0x9b, '2', 'J',              // CSI as UTF-8 (U+009B, a C1 control)
      'c', 0x1b, '[', 'H',                    // ESC
      'd', 0xed, 0xa0, 0x80,                  // a UTF-16 surrogate: not UTF-8
      'e', 0xc0, 0xaf,                        // an overlong '/'
      'f', 0xe2, 0x82,                        // a sequence cut short
      ' ', 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80,  // é € U+1F600: kept
      ' ', 0xf0, 0x9f, 0x98};                 // cut short at the end
  payload.insert(payload.end(), text.begin(), text.end());
  session.receive(encode_frame(proto::kError, payload));
  EXPECT_EQ(session.state(), Session::State::kFinished);
  EXPECT_EQ(session.message(), "a?2Jb?2Jc?[Hd???e??f?? \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 ???");
}

TEST(RunSession, ProtocolViolationsFailTheRun) {
  struct Case {
    std::vector<uint8_t> after_hello;
    const char* why;
  };
  const std::vector<Case> cases = {
      {{0x7f, 0, 0, 0, 0, 0, 0, 0}, "unknown frame type"},
      {hello(), "unexpected frame"},
      {encode_frame(proto::kExit, u32s({proto::kExited})), "kExit payload"},
      {encode_frame(proto::kExit, u32s({proto::kExited, 256})), "kExit with"},
      {encode_frame(proto::kExit, u32s({5, 0})), "kExit with"},
      {encode_frame(proto::kError, u32s({0})), "kError with status"},
      {encode_frame(proto::kError, std::vector<uint8_t>{1, 0}), "kError payload"},
  };
  for (const auto& c : cases) {
    Captured captured;
    Session session("{}", false, std::nullopt, captured.sinks());
    session.receive(hello());
    session.receive(c.after_hello);
    EXPECT_EQ(session.state(), Session::State::kFailed) << c.why;
    EXPECT_NE(session.message().find("guest protocol error: "), std::string::npos);
    EXPECT_NE(session.message().find(c.why), std::string::npos) << session.message();
    EXPECT_EQ(session.outbox_bytes(), 0u);  // nothing more goes to a misbehaving guest
    session.receive(encode_frame(proto::kStdout, bytes_of("late")));
    EXPECT_TRUE(captured.out.empty());
  }
}

TEST(RunSession, HelloMustComeFirstWithOurVersion) {
  Session early("{}", false, std::nullopt, {});
  early.receive(encode_frame(proto::kStdout, bytes_of("x")));
  EXPECT_EQ(early.state(), Session::State::kFailed);
  EXPECT_NE(early.message().find("before kHello"), std::string::npos);
  Session version("{}", false, std::nullopt, {});
  version.receive(encode_frame(proto::kHello, u32s({2})));
  EXPECT_EQ(version.state(), Session::State::kFailed);
  EXPECT_NE(version.message().find("version 2"), std::string::npos);
  Session short_hello("{}", false, std::nullopt, {});
  short_hello.receive(encode_frame(proto::kHello, std::vector<uint8_t>{1, 0}));
  EXPECT_EQ(short_hello.state(), Session::State::kFailed);
}

}  // namespace
}  // namespace ember::run
