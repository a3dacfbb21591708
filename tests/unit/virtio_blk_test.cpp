#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "devices/backends/raw_file.hpp"
#include "devices/virtio/blk.hpp"
#include "tests/unit/virtio_test_ring.hpp"
#include "vmm/error.hpp"

namespace ember::virtio {
namespace {

using namespace blk;
using test::Buffer;
using test::TestRing;
using test::UsedElement;

constexpr uint64_t kImageSize = 1 << 20;  // 2048 sectors
constexpr uint16_t kRingSize = 128;
constexpr std::byte kCanary{0x5a};

// A temporary image file filled with `fill`, removed at the end of the test.
class TempImage {
 public:
  explicit TempImage(uint64_t size, char fill) {
    const char* directory = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
    std::string pattern = std::string(directory) + "/ember-virtio-blk-XXXXXX";
    fd_ = UniqueFd(::mkstemp(pattern.data()));
    if (!fd_) throw system_error("mkstemp " + pattern);
    path_ = pattern;
    const std::string content(size, fill);
    if (::pwrite(fd_.get(), content.data(), size, 0) != static_cast<ssize_t>(size))
      throw system_error("pwrite " + path_);
  }
  ~TempImage() { ::unlink(path_.c_str()); }

  const std::string& path() const { return path_; }
  std::string read(uint64_t offset, uint64_t length) const {
    std::string content(length, '\0');
    if (::pread(fd_.get(), content.data(), length, static_cast<off_t>(offset)) !=
        static_cast<ssize_t>(length))
      throw system_error("pread " + path_);
    return content;
  }

 private:
  UniqueFd fd_;
  std::string path_;
};

class CountingInterrupts : public Interrupts {
 public:
  void queue_used(uint16_t queue) override {
    EXPECT_EQ(queue, 0);
    ++used;
  }
  void config_changed() override { ++config; }
  std::atomic<int> used{0};
  std::atomic<int> config{0};
};

std::vector<std::byte> header(uint32_t type, uint64_t sector) {
  std::vector<std::byte> bytes(kHeaderSize);
  for (int i = 0; i < 4; ++i) bytes[i] = static_cast<std::byte>(type >> (8 * i));
  for (int i = 0; i < 8; ++i) bytes[8 + i] = static_cast<std::byte>(sector >> (8 * i));
  return bytes;
}

std::vector<std::byte> segment(uint64_t sector, uint32_t sectors, uint32_t flags) {
  std::vector<std::byte> bytes(kSegmentSize);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::byte>(sector >> (8 * i));
  for (int i = 0; i < 4; ++i) bytes[8 + i] = static_cast<std::byte>(sectors >> (8 * i));
  for (int i = 0; i < 4; ++i) bytes[12 + i] = static_cast<std::byte>(flags >> (8 * i));
  return bytes;
}

std::string pattern(size_t length, int seed) {
  std::string bytes(length, '\0');
  for (size_t i = 0; i < length; ++i) bytes[i] = static_cast<char>(i * 13 + seed + i / 4096);
  return bytes;
}

// A VirtioBlock on a temporary image, activated on one queue, with the I/O loop on its own thread.
// The parameter forces RawFile's synchronous fallback instead of io_uring.
class VirtioBlockTest : public ::testing::TestWithParam<bool> {
 protected:
  VirtioBlockTest() : memory_(test::make_test_memory()), image_(kImageSize, 'i') {}
  ~VirtioBlockTest() override {
    if (device_) {
      std::lock_guard lock(device_->mutex());
      device_->reset();
    }
    stop_loop();
  }

  void start(RawFileOptions options = {}, std::string id = "ember-test-disk",
             bool run_loop = true) {
    options.force_synchronous = GetParam();
    device_ = std::make_unique<VirtioBlock>(std::make_unique<RawFile>(image_.path(), options),
                                            std::move(id));
    ring_ = std::make_unique<TestRing>(*memory_, kRingSize);
    ASSERT_TRUE(ring_->activate(queues_[0], false, true));
    std::lock_guard lock(device_->mutex());
    ASSERT_TRUE(device_->activate(*memory_, queues_, device_->features(), interrupts_, loop_));
    if (run_loop) start_loop();
  }
  void start_loop() {
    loop_thread_ = std::jthread([this] { loop_.run(); });
  }
  void stop_loop() {
    if (!loop_thread_.joinable()) return;
    loop_.stop();
    loop_thread_.join();
  }

  void kick() {
    std::lock_guard lock(device_->mutex());
    device_->process_queue(0);
  }
  // Waits (up to 5 s) until the device put `count` elements in the used ring.
  bool wait_for_used(uint16_t count) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard lock(device_->mutex());
        if (ring_->used_index() >= count) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
  // Runs one request to completion; returns its used element, and the status byte through `status`.
  UsedElement run(const std::vector<Buffer>& buffers, uint8_t* status, bool indirect = false) {
    const uint16_t head = indirect ? ring_->push_indirect(buffers) : ring_->push(buffers);
    const uint16_t expected = ring_->available_index();
    kick();
    EXPECT_TRUE(wait_for_used(expected));
    std::lock_guard lock(device_->mutex());
    auto used = ring_->pop_used();
    EXPECT_TRUE(used.has_value());
    if (!used) return {};
    EXPECT_EQ(used->id, head);
    if (status != nullptr) *status = status_of(buffers.back());
    return *used;
  }
  uint8_t status_of(const Buffer& buffer) const {
    return std::to_integer<uint8_t>(ring_->read_bytes(buffer.address + buffer.length - 1, 1)[0]);
  }
  Buffer status_buffer() {
    Buffer buffer = ring_->writable(1);
    ring_->fill(buffer.address, 1, kCanary);
    return buffer;
  }
  Buffer data(const std::string& bytes) { return ring_->readable(std::string_view(bytes)); }
  Buffer request(uint32_t type, uint64_t sector) { return ring_->readable(header(type, sector)); }
  std::string content(const Buffer& buffer) const {
    return ring_->read_string(buffer.address, buffer.length);
  }
  uint8_t simple(uint32_t type, uint64_t sector, std::vector<Buffer> middle = {}) {
    std::vector<Buffer> buffers{request(type, sector)};
    buffers.insert(buffers.end(), middle.begin(), middle.end());
    buffers.push_back(status_buffer());
    uint8_t status = 0xff;
    run(buffers, &status);
    return status;
  }

  std::unique_ptr<GuestMemory> memory_;
  TempImage image_;
  std::unique_ptr<TestRing> ring_;
  std::vector<Queue> queues_{Queue(256)};
  CountingInterrupts interrupts_;
  EventLoop loop_;
  std::unique_ptr<VirtioBlock> device_;
  std::jthread loop_thread_;
};

uint32_t config32(const VirtioBlock& device, uint64_t offset) {
  uint8_t bytes[4];
  device.read_config(offset, bytes);
  return bytes[0] | bytes[1] << 8 | bytes[2] << 16 | static_cast<uint32_t>(bytes[3]) << 24;
}

TEST_P(VirtioBlockTest, ConfigSpaceAndFeatures) {
  start();
  uint8_t capacity[8];
  device_->read_config(kConfigCapacity, capacity);
  uint64_t sectors = 0;
  for (int i = 0; i < 8; ++i) sectors |= static_cast<uint64_t>(capacity[i]) << (8 * i);
  EXPECT_EQ(sectors, kImageSize / 512);
  EXPECT_EQ(config32(*device_, kConfigBlockSize), 512u);
  EXPECT_EQ(config32(*device_, kConfigSegMax), 254u);
  EXPECT_EQ(config32(*device_, kConfigMaxDiscardSegments), 1u);
  EXPECT_EQ(config32(*device_, kConfigMaxWriteZeroesSectors), kMaxDiscardSectors);
  uint8_t past_end[4] = {1, 2, 3, 4};
  device_->read_config(kConfigSize, past_end);
  EXPECT_EQ(config32(*device_, kConfigSize), 0u);
  EXPECT_EQ(device_->type(), DeviceType::kBlock);
  EXPECT_EQ(device_->queue_count(), 1);

  const uint64_t features = device_->features();
  for (uint64_t bit :
       {kFeatureVersion1, kFeatureIndirectDescriptors, kFeatureEventIndex, kBlockFeatureSegMax,
        kBlockFeatureBlockSize, kBlockFeatureFlush, kBlockFeatureDiscard, kBlockFeatureWriteZeroes})
    EXPECT_TRUE(features & bit) << std::hex << bit;
  EXPECT_FALSE(features & kBlockFeatureReadOnly);
}

TEST_P(VirtioBlockTest, WritesAndReadsThroughSeveralDescriptors) {
  start();
  const std::string written = pattern(2048, 1);
  uint8_t status = 0xff;
  auto used = run({request(kTypeOut, 6), data(written.substr(0, 512)),
                   data(written.substr(512, 1024)), data(written.substr(1536)), status_buffer()},
                  &status);
  EXPECT_EQ(status, kStatusOk);
  EXPECT_EQ(used.length, 1u);
  EXPECT_EQ(image_.read(6 * 512, 2048), written);

  const Buffer first = ring_->writable(1536);
  const Buffer second = ring_->writable(512);
  used = run({request(kTypeIn, 6), first, second, status_buffer()}, &status);
  EXPECT_EQ(status, kStatusOk);
  EXPECT_EQ(used.length, 2048u + 1);
  EXPECT_EQ(content(first) + content(second), written);
  EXPECT_GE(interrupts_.used.load(), 1);
}

TEST_P(VirtioBlockTest, WritesAndReadsThroughIndirectChains) {
  start();
  const std::string written = pattern(4096, 2);
  uint8_t status = 0xff;
  run({request(kTypeOut, 100), data(written.substr(0, 1000)), data(written.substr(1000)),
       status_buffer()},
      &status, true);
  EXPECT_EQ(status, kStatusOk);
  EXPECT_EQ(image_.read(100 * 512, 4096), written);

  // The status byte shares the last writable descriptor with data.
  const Buffer first = ring_->writable(3000);
  const Buffer rest = ring_->writable(1096 + 1);
  ring_->fill(rest.address + rest.length - 1, 1, kCanary);
  const auto used = run({request(kTypeIn, 100), first, rest}, &status, true);
  EXPECT_EQ(status, kStatusOk);
  EXPECT_EQ(used.length, 4097u);
  EXPECT_EQ((content(first) + content(rest)).substr(0, 4096), written);
}

TEST_P(VirtioBlockTest, RequestsLargerThanAPage) {
  start();
  const std::string written = pattern(96 * 1024, 3);
  EXPECT_EQ(simple(kTypeOut, 1000, {data(written)}), kStatusOk);
  EXPECT_EQ(image_.read(1000 * 512, written.size()), written);
  const Buffer back = ring_->writable(96 * 1024);
  EXPECT_EQ(simple(kTypeIn, 1000, {back}), kStatusOk);
  EXPECT_EQ(content(back), written);
}

TEST_P(VirtioBlockTest, ManyRequestsInFlight) {
  RawFileOptions options;
  options.queue_depth = 8;  // Fewer than the requests: some wait inside the backend.
  start(options);
  constexpr int kRequests = 32;
  std::vector<Buffer> statuses;
  for (int i = 0; i < kRequests; ++i) {
    statuses.push_back(status_buffer());
    ring_->push({request(kTypeOut, i * 8), data(pattern(4096, i)), statuses.back()});
  }
  kick();
  ASSERT_TRUE(wait_for_used(kRequests));
  for (const auto& status : statuses) EXPECT_EQ(status_of(status), kStatusOk);
  for (int i = 0; i < kRequests; ++i) EXPECT_EQ(image_.read(i * 4096, 4096), pattern(4096, i));

  std::vector<Buffer> reads;
  statuses.clear();
  for (int i = 0; i < kRequests; ++i) {
    reads.push_back(ring_->writable(4096));
    statuses.push_back(status_buffer());
    ring_->push({request(kTypeIn, (kRequests - 1 - i) * 8), reads.back(), statuses.back()});
  }
  kick();
  ASSERT_TRUE(wait_for_used(2 * kRequests));
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(status_of(statuses[i]), kStatusOk);
    EXPECT_EQ(content(reads[i]), pattern(4096, kRequests - 1 - i)) << "read " << i;
  }
}

TEST_P(VirtioBlockTest, Flush) {
  start();
  EXPECT_EQ(simple(kTypeFlush, 0), kStatusOk);
}

TEST_P(VirtioBlockTest, GetIdIsTruncatedToTwentyBytes) {
  start({}, "ember-disk-with-a-rather-long-serial");
  const Buffer id = ring_->writable(20);
  uint8_t status = 0xff;
  const auto used = run({request(kTypeGetId, 0), id, status_buffer()}, &status);
  EXPECT_EQ(status, kStatusOk);
  EXPECT_EQ(used.length, 21u);
  EXPECT_EQ(content(id), "ember-disk-with-a-ra");
}

TEST_P(VirtioBlockTest, GetIdPadsShortIdsWithZeros) {
  start({}, "disk0");
  const Buffer id = ring_->writable(20);
  ring_->fill(id.address, 20, kCanary);
  EXPECT_EQ(simple(kTypeGetId, 0, {id}), kStatusOk);
  EXPECT_EQ(content(id), std::string("disk0") + std::string(15, '\0'));
  EXPECT_EQ(simple(kTypeGetId, 0), kStatusIoError);  // No room for the id.
}

TEST_P(VirtioBlockTest, DiscardAndWriteZeroesZeroTheFile) {
  start();
  EXPECT_EQ(simple(kTypeDiscard, 0, {ring_->readable(segment(8, 8, 0))}), kStatusOk);
  EXPECT_EQ(simple(kTypeWriteZeroes, 0, {ring_->readable(segment(32, 8, 0))}), kStatusOk);
  EXPECT_EQ(simple(kTypeWriteZeroes, 0, {ring_->readable(segment(64, 3, kSegmentFlagUnmap))}),
            kStatusOk);
  EXPECT_EQ(image_.read(8 * 512, 4096), std::string(4096, '\0'));
  EXPECT_EQ(image_.read(32 * 512, 4096), std::string(4096, '\0'));
  EXPECT_EQ(image_.read(64 * 512, 1536), std::string(1536, '\0'));
  EXPECT_EQ(image_.read(0, 4096), std::string(4096, 'i'));
  EXPECT_EQ(image_.read(16 * 512, 8192), std::string(8192, 'i'));
  EXPECT_EQ(image_.read(67 * 512, 512), std::string(512, 'i'));
}

TEST_P(VirtioBlockTest, DiscardAndWriteZeroesCheckTheirSegments) {
  start();
  // §5.2.6.2: unmap on a discard and unknown flags are unsupported.
  EXPECT_EQ(simple(kTypeDiscard, 0, {ring_->readable(segment(8, 8, kSegmentFlagUnmap))}),
            kStatusUnsupported);
  EXPECT_EQ(simple(kTypeWriteZeroes, 0, {ring_->readable(segment(8, 8, 2))}), kStatusUnsupported);
  EXPECT_EQ(simple(kTypeWriteZeroes, 0, {ring_->readable(segment(2047, 2, 0))}), kStatusIoError);
  EXPECT_EQ(simple(kTypeDiscard, 0), kStatusIoError);  // No segment.
  auto two = segment(0, 8, 0);
  const auto second = segment(16, 8, 0);
  two.insert(two.end(), second.begin(), second.end());
  EXPECT_EQ(simple(kTypeDiscard, 0, {ring_->readable(two)}), kStatusIoError);  // Over max_seg.
  EXPECT_EQ(image_.read(0, 16384), std::string(16384, 'i'));
}

TEST_P(VirtioBlockTest, ReadOnlyDiskRefusesChanges) {
  RawFileOptions options;
  options.read_only = true;
  start(options);
  const uint64_t features = device_->features();
  EXPECT_TRUE(features & kBlockFeatureReadOnly);
  EXPECT_FALSE(features & kBlockFeatureDiscard);
  EXPECT_FALSE(features & kBlockFeatureWriteZeroes);

  EXPECT_EQ(simple(kTypeOut, 0, {data(pattern(512, 4))}), kStatusIoError);
  EXPECT_EQ(simple(kTypeDiscard, 0, {ring_->readable(segment(0, 8, 0))}), kStatusIoError);
  EXPECT_EQ(simple(kTypeWriteZeroes, 0, {ring_->readable(segment(0, 8, 0))}), kStatusIoError);
  EXPECT_EQ(image_.read(0, 4096), std::string(4096, 'i'));
  const Buffer back = ring_->writable(512);
  EXPECT_EQ(simple(kTypeIn, 0, {back}), kStatusOk);
  EXPECT_EQ(content(back), std::string(512, 'i'));
  EXPECT_EQ(simple(kTypeFlush, 0), kStatusOk);
}

TEST_P(VirtioBlockTest, SectorsBeyondCapacityAreErrors) {
  start();
  const uint64_t capacity = kImageSize / 512;
  EXPECT_EQ(simple(kTypeIn, capacity - 1, {ring_->writable(1024)}), kStatusIoError);
  EXPECT_EQ(simple(kTypeIn, capacity, {ring_->writable(512)}), kStatusIoError);
  EXPECT_EQ(simple(kTypeOut, ~0ull, {data(pattern(512, 5))}), kStatusIoError);
  EXPECT_EQ(simple(kTypeOut, ~0ull / 512 + 1, {data(pattern(512, 5))}), kStatusIoError);
  const Buffer last = ring_->writable(512);
  EXPECT_EQ(simple(kTypeIn, capacity - 1, {last}), kStatusOk);
  EXPECT_EQ(content(last), std::string(512, 'i'));
}

TEST_P(VirtioBlockTest, MalformedTransfersAreErrors) {
  start();
  EXPECT_EQ(simple(kTypeOut, 0, {data(std::string(500, 'x'))}), kStatusIoError);  // Not sectors.
  EXPECT_EQ(simple(kTypeIn, 0, {ring_->writable(100)}), kStatusIoError);
  // Data in the wrong direction for the type.
  EXPECT_EQ(simple(kTypeIn, 0, {data(std::string(512, 'x'))}), kStatusIoError);
  EXPECT_EQ(simple(kTypeOut, 0, {ring_->writable(512)}), kStatusIoError);
  EXPECT_EQ(image_.read(0, 4096), std::string(4096, 'i'));
}

TEST_P(VirtioBlockTest, UnknownTypesAreUnsupported) {
  start();
  EXPECT_EQ(simple(99, 0), kStatusUnsupported);
  EXPECT_EQ(simple(10, 0, {ring_->writable(48)}), kStatusUnsupported);  // GET_LIFETIME.
}

TEST_P(VirtioBlockTest, ChainWithoutStatusByteIsReturnedEmpty) {
  start();
  const auto used = run({request(kTypeOut, 0), data(pattern(512, 6))}, nullptr);
  EXPECT_EQ(used.length, 0u);
  EXPECT_EQ(image_.read(0, 512), std::string(512, 'i'));
}

TEST_P(VirtioBlockTest, HeaderInWritableBufferIsAnError) {
  start();
  const Buffer fake_header = ring_->writable(16);
  uint8_t status = 0xff;
  const auto used = run({fake_header, status_buffer()}, &status);
  EXPECT_EQ(status, kStatusIoError);
  EXPECT_EQ(used.length, 1u);
}

TEST_P(VirtioBlockTest, ShortHeaderIsAnError) {
  start();
  auto short_header = header(kTypeIn, 0);
  short_header.resize(8);
  uint8_t status = 0xff;
  run({ring_->readable(short_header), ring_->writable(512), status_buffer()}, &status);
  EXPECT_EQ(status, kStatusIoError);
}

TEST_P(VirtioBlockTest, StatusByteInReadableBufferIsNotWritten) {
  start();
  const Buffer readable_status = ring_->readable(std::string_view("\x5a"));
  const auto used = run({request(kTypeFlush, 0), readable_status}, nullptr);
  EXPECT_EQ(used.length, 0u);
  EXPECT_EQ(status_of(readable_status), 0x5a);
}

TEST_P(VirtioBlockTest, ZeroLengthRequestsSucceed) {
  start();
  EXPECT_EQ(simple(kTypeIn, 0), kStatusOk);
  EXPECT_EQ(simple(kTypeOut, 5), kStatusOk);
  EXPECT_EQ(image_.read(0, 4096), std::string(4096, 'i'));
}

TEST_P(VirtioBlockTest, ResetWithRequestsInFlightLeavesGuestMemoryAlone) {
  start({}, "id", /*run_loop=*/false);  // Completions pile up undelivered until reset.
  constexpr int kRequests = 16;
  std::vector<Buffer> statuses;
  for (int i = 0; i < kRequests; ++i) {
    const Buffer target = ring_->writable(32 * 1024);
    ring_->fill(target.address, target.length, kCanary);
    statuses.push_back(status_buffer());
    ring_->push({request(kTypeIn, i * 64), target, statuses.back()});
  }
  kick();
  {
    std::lock_guard lock(device_->mutex());
    device_->reset();
  }
  queues_[0].reset();
  const auto snapshot = ring_->read_bytes(0, test::kLowRegionSize);
  start_loop();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  {
    std::lock_guard lock(device_->mutex());
    EXPECT_EQ(ring_->used_index(), 0);
    for (const auto& status : statuses) EXPECT_EQ(status_of(status), 0x5a);
    EXPECT_TRUE(ring_->read_bytes(0, test::kLowRegionSize) == snapshot)
        << "guest memory changed after reset";
  }
  EXPECT_EQ(interrupts_.used.load(), 0);

  // The device works again after the driver sets it up anew.
  ring_ = std::make_unique<TestRing>(*memory_, kRingSize, 0x8000, 0x1c0000);
  ASSERT_TRUE(ring_->activate(queues_[0], false, true));
  {
    std::lock_guard lock(device_->mutex());
    ASSERT_TRUE(device_->activate(*memory_, queues_, device_->features(), interrupts_, loop_));
  }
  const Buffer back = ring_->writable(512);
  EXPECT_EQ(simple(kTypeIn, 0, {back}), kStatusOk);
  EXPECT_EQ(content(back), std::string(512, 'i'));
}

TEST_P(VirtioBlockTest, BrokenQueueNeedsReset) {
  start();
  // The driver claims more new buffers than the queue holds: a ring violation.
  ring_->set_available_index(kRingSize + 1);
  kick();
  {
    std::lock_guard lock(device_->mutex());
    EXPECT_TRUE(device_->needs_reset());
  }
  EXPECT_EQ(interrupts_.config.load(), 1);
  kick();  // Ignored until reset, and not reported twice.
  EXPECT_EQ(interrupts_.config.load(), 1);
  std::lock_guard lock(device_->mutex());
  device_->reset();
  EXPECT_FALSE(device_->needs_reset());
}

TEST_P(VirtioBlockTest, NotActiveDeviceIgnoresKicks) {
  device_ = std::make_unique<VirtioBlock>(std::make_unique<RawFile>(image_.path()), "x");
  kick();
  EXPECT_THROW(VirtioBlock(nullptr, "x"), Error);
}

INSTANTIATE_TEST_SUITE_P(Paths, VirtioBlockTest, ::testing::Values(false, true),
                         [](const auto& test_info) {
                           return test_info.param ? "Synchronous" : "IoUring";
                         });

}  // namespace
}  // namespace ember::virtio
