#include "devices/backends/raw_file.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "vmm/error.hpp"

namespace ember {
namespace {

// A temporary image file of `size` bytes filled with `fill`, removed at the end of the test.
class TempImage {
 public:
  explicit TempImage(uint64_t size, char fill = 0, const char* directory = nullptr) {
    if (directory == nullptr) directory = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
    std::string pattern = std::string(directory) + "/ember-raw-file-XXXXXX";
    fd_ = UniqueFd(::mkstemp(pattern.data()));
    if (!fd_) throw system_error("mkstemp " + pattern);
    path_ = pattern;
    const std::vector<char> content(size, fill);
    if (::pwrite(fd_.get(), content.data(), content.size(), 0) != static_cast<ssize_t>(size))
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

// Waits for the completion fd and drains until `count` completions arrived; token -> result.
std::map<uint64_t, int32_t> wait_for(RawFile& disk, size_t count) {
  std::map<uint64_t, int32_t> results;
  size_t delivered = 0;
  while (delivered < count) {
    pollfd ready{disk.completion_fd(), POLLIN, 0};
    if (::poll(&ready, 1, 5000) != 1) break;  // Timed out: the caller's checks fail.
    disk.drain_completions([&](uint64_t token, int32_t result) {
      EXPECT_FALSE(results.contains(token)) << "token " << token << " completed twice";
      results[token] = result;
      ++delivered;
    });
  }
  return results;
}

iovec view(std::string& buffer, size_t offset, size_t length) {
  return {buffer.data() + offset, length};
}

class RawFileTest : public ::testing::TestWithParam<bool> {
 protected:
  RawFileOptions options(RawFileOptions base = {}) const {
    base.force_synchronous = GetParam();
    return base;
  }
};

TEST_P(RawFileTest, ReportsSizeAndPath) {
  TempImage image(1 << 20);
  RawFile disk(image.path(), options());
  EXPECT_EQ(disk.size(), 1u << 20);
  EXPECT_FALSE(disk.read_only());
  if (GetParam()) {
    EXPECT_FALSE(disk.uses_io_uring());
  }
  if (!GetParam() && !disk.uses_io_uring()) {
    std::cout << "note: io_uring unavailable on this host, the synchronous path ran instead\n";
  }
}

TEST_P(RawFileTest, WritesAndReadsVectored) {
  TempImage image(1 << 20);
  RawFile disk(image.path(), options());
  std::string pattern(12288, '\0');
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<char>(i * 7 + i / 512);
  const std::vector<iovec> out{view(pattern, 0, 512), view(pattern, 512, 8192),
                               view(pattern, 8704, 3584)};
  disk.write(4096, out, 1);
  EXPECT_EQ(wait_for(disk, 1), (std::map<uint64_t, int32_t>{{1, 0}}));
  EXPECT_EQ(image.read(4096, pattern.size()), pattern);

  std::string back(pattern.size(), '\0');
  const std::vector<iovec> in{view(back, 0, 6144), view(back, 6144, 6144)};
  disk.read(4096, in, 2);
  EXPECT_EQ(wait_for(disk, 1), (std::map<uint64_t, int32_t>{{2, 0}}));
  EXPECT_EQ(back, pattern);
}

TEST_P(RawFileTest, KeepsManyRequestsInFlightBeyondTheQueueDepth) {
  TempImage image(1 << 20);
  RawFileOptions base;
  base.queue_depth = 4;
  RawFile disk(image.path(), options(base));
  constexpr size_t kRequests = 64;
  std::vector<std::string> blocks;
  for (size_t i = 0; i < kRequests; ++i) blocks.emplace_back(4096, static_cast<char>('A' + i % 26));
  for (size_t i = 0; i < kRequests; ++i) {
    const iovec buffer = view(blocks[i], 0, 4096);
    disk.write(i * 4096, std::span(&buffer, 1), 100 + i);
    EXPECT_LE(disk.in_flight(), 4u);
  }
  const auto results = wait_for(disk, kRequests);
  ASSERT_EQ(results.size(), kRequests);
  for (const auto& [token, result] : results) EXPECT_EQ(result, 0) << "token " << token;
  for (size_t i = 0; i < kRequests; ++i) EXPECT_EQ(image.read(i * 4096, 4096), blocks[i]);
  EXPECT_EQ(disk.in_flight(), 0u);
}

TEST_P(RawFileTest, FlushSucceeds) {
  TempImage image(4096);
  RawFile disk(image.path(), options());
  disk.flush(7);
  EXPECT_EQ(wait_for(disk, 1), (std::map<uint64_t, int32_t>{{7, 0}}));
}

TEST_P(RawFileTest, DiscardAndWriteZeroesLeaveZeros) {
  TempImage image(1 << 20, 'x');
  RawFile disk(image.path(), options());
  disk.discard(8192, 8192, 1);
  disk.write_zeroes(65536, 4096, false, 2);
  disk.write_zeroes(131072, 1024, true, 3);
  EXPECT_EQ(wait_for(disk, 3), (std::map<uint64_t, int32_t>{{1, 0}, {2, 0}, {3, 0}}));
  EXPECT_EQ(image.read(8192, 8192), std::string(8192, '\0'));
  EXPECT_EQ(image.read(65536, 4096), std::string(4096, '\0'));
  EXPECT_EQ(image.read(131072, 1024), std::string(1024, '\0'));
  EXPECT_EQ(image.read(4096, 4096), std::string(4096, 'x'));
  EXPECT_EQ(image.read(69632, 4096), std::string(4096, 'x'));
  EXPECT_EQ(image.read(132096, 512), std::string(512, 'x'));
}

TEST_P(RawFileTest, WriteZeroesFallsBackToPunchingHolesOnTmpfs) {
  struct stat shm {};
  if (::stat("/dev/shm", &shm) != 0 || !S_ISDIR(shm.st_mode)) GTEST_SKIP() << "no /dev/shm";
  TempImage image(1 << 16, 'x', "/dev/shm");  // tmpfs has no FALLOC_FL_ZERO_RANGE.
  RawFile disk(image.path(), options());
  disk.write_zeroes(4096, 8192, false, 9);
  EXPECT_EQ(wait_for(disk, 1), (std::map<uint64_t, int32_t>{{9, 0}}));
  EXPECT_EQ(image.read(4096, 8192), std::string(8192, '\0'));
  EXPECT_EQ(image.read(0, 4096), std::string(4096, 'x'));
}

TEST_P(RawFileTest, ReadingPastTheEndIsAnError) {
  TempImage image(4096);
  RawFile disk(image.path(), options());
  std::string buffer(8192, '\0');
  const iovec whole = view(buffer, 0, buffer.size());
  disk.read(2048, std::span(&whole, 1), 5);  // Half of it exists: a short read, then EOF.
  EXPECT_EQ(wait_for(disk, 1), (std::map<uint64_t, int32_t>{{5, -EIO}}));
}

TEST_P(RawFileTest, ReadOnlyRefusesChanges) {
  TempImage image(8192, 'r');
  RawFileOptions base;
  base.read_only = true;
  RawFile disk(image.path(), options(base));
  EXPECT_TRUE(disk.read_only());
  std::string data(4096, 'w');
  const iovec buffer = view(data, 0, data.size());
  disk.write(0, std::span(&buffer, 1), 1);
  disk.discard(0, 4096, 2);
  disk.write_zeroes(0, 4096, false, 3);
  disk.read(4096, std::span(&buffer, 1), 4);
  EXPECT_EQ(wait_for(disk, 4),
            (std::map<uint64_t, int32_t>{{1, -EROFS}, {2, -EROFS}, {3, -EROFS}, {4, 0}}));
  EXPECT_EQ(data, std::string(4096, 'r'));
  EXPECT_EQ(image.read(0, 8192), std::string(8192, 'r'));
}

TEST_P(RawFileTest, AbandonedRequestsNeverComplete) {
  TempImage image(1 << 20, 'a');
  RawFile disk(image.path(), options());
  std::vector<std::string> buffers(16, std::string(65536, '\0'));
  for (size_t i = 0; i < buffers.size(); ++i) {
    const iovec buffer = view(buffers[i], 0, 65536);
    disk.read(i * 65536, std::span(&buffer, 1), i);
  }
  disk.abandon_in_flight();
  EXPECT_EQ(disk.in_flight(), 0u);
  pollfd ready{disk.completion_fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&ready, 1, 50), 0);
  size_t delivered = 0;
  disk.drain_completions([&](uint64_t, int32_t) { ++delivered; });
  EXPECT_EQ(delivered, 0u);
  // Still usable afterwards.
  const iovec buffer = view(buffers[0], 0, 512);
  disk.read(0, std::span(&buffer, 1), 99);
  EXPECT_EQ(wait_for(disk, 1), (std::map<uint64_t, int32_t>{{99, 0}}));
}

INSTANTIATE_TEST_SUITE_P(Paths, RawFileTest, ::testing::Values(false, true),
                         [](const auto& test_info) {
                           return test_info.param ? "Synchronous" : "IoUring";
                         });

// A loop device over a temporary image, for the block-device path (BLKGETSIZE64). Needs root and
// losetup (util-linux), as CI has; a failure to set it up fails the test rather than skipping it.
class LoopDevice {
 public:
  explicit LoopDevice(const std::string& image) {
    FILE* pipe = ::popen(("losetup --find --show " + image + " 2>&1").c_str(), "r");
    char line[256] = {};
    if (pipe != nullptr && std::fgets(line, sizeof(line), pipe) != nullptr) path_ = line;
    const int status = pipe != nullptr ? ::pclose(pipe) : -1;
    if (!path_.empty() && path_.back() == '\n') path_.pop_back();
    if (status != 0 || !path_.starts_with("/dev/loop"))
      throw std::runtime_error("losetup failed: " + path_);
  }
  ~LoopDevice() { [[maybe_unused]] int ignored = std::system(("losetup -d " + path_).c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST_P(RawFileTest, ServesABlockDevice) {
  TempImage image(4 << 20);
  LoopDevice loop(image.path());
  RawFile disk(loop.path(), options());
  EXPECT_EQ(disk.size(), 4u << 20);  // From BLKGETSIZE64, not st_size (0 for a device node).
  std::string pattern(8192, '\0');
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<char>(i * 13 + 1);
  const std::vector<iovec> out{view(pattern, 0, pattern.size())};
  disk.write(1 << 20, out, 1);
  EXPECT_EQ(wait_for(disk, 1), (std::map<uint64_t, int32_t>{{1, 0}}));
  disk.flush(2);
  EXPECT_EQ(wait_for(disk, 1), (std::map<uint64_t, int32_t>{{2, 0}}));
  std::string back(pattern.size(), '\0');
  const std::vector<iovec> in{view(back, 0, back.size())};
  disk.read(1 << 20, in, 3);
  EXPECT_EQ(wait_for(disk, 1), (std::map<uint64_t, int32_t>{{3, 0}}));
  EXPECT_EQ(back, pattern);
}

TEST(RawFile, OpenErrorsNameThePath) {
  try {
    RawFile disk("/nonexistent/ember-disk.img");
    FAIL() << "opened a missing file";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("/nonexistent/ember-disk.img"), std::string::npos);
  }
  try {
    RawFile disk("/");
    FAIL() << "opened a directory";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("/"), std::string::npos);
  }
}

TEST(RawFile, UsesIoUringUnlessForced) {
  TempImage image(4096);
  RawFile disk(image.path());
  std::cout << "io_uring on this host: " << (disk.uses_io_uring() ? "yes" : "no (fallback)")
            << "\n";
  RawFileOptions forced;
  forced.force_synchronous = true;
  EXPECT_FALSE(RawFile(image.path(), forced).uses_io_uring());
}

}  // namespace
}  // namespace ember
