// What `ember run` prepares before the VM: the initrd (newc cpio, read back with libarchive), its
// kernel modules in load order, the kernel choice, the launch spec and the scratch disk.
#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "vmm/error.hpp"
#include "vmm/run/cpio.hpp"
#include "vmm/run/initrd.hpp"
#include "vmm/run/kernel.hpp"
#include "vmm/process.hpp"
#include "vmm/run/scratch.hpp"
#include "vmm/run/spec.hpp"

namespace ember::run {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "ember-run-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

struct Entry {
  mode_t mode;
  std::string data;
};

// The archive as an independent reader (libarchive) sees it.
std::map<std::string, Entry> read_cpio(const std::vector<uint8_t>& bytes) {
  std::map<std::string, Entry> entries;
  archive* reader = archive_read_new();
  archive_read_support_format_cpio(reader);
  EXPECT_EQ(archive_read_open_memory(reader, bytes.data(), bytes.size()), ARCHIVE_OK);
  archive_entry* entry;
  while (archive_read_next_header(reader, &entry) == ARCHIVE_OK) {
    EXPECT_EQ(archive_format(reader), ARCHIVE_FORMAT_CPIO_SVR4_NOCRC);
    std::string data(static_cast<size_t>(archive_entry_size(entry)), '\0');
    if (!data.empty()) {
      EXPECT_EQ(archive_read_data(reader, data.data(), data.size()),
                static_cast<ssize_t>(data.size()));
    }
    entries[archive_entry_pathname(entry)] = {archive_entry_mode(entry), data};
  }
  archive_read_free(reader);
  return entries;
}

TEST(RunCpio, NewcArchiveReadsBack) {
  CpioWriter cpio;
  cpio.directory("ember");
  const std::string script = "#!/bin/sh\n";
  cpio.file("init", std::span(reinterpret_cast<const uint8_t*>(script.data()), script.size()),
            0755);
  cpio.file("ember/odd", std::span(reinterpret_cast<const uint8_t*>("abc"), 3));
  const auto bytes = cpio.finish();
  EXPECT_EQ(bytes.size() % 4, 0u);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 6), "070701");
  const auto entries = read_cpio(bytes);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries.at("ember").mode, S_IFDIR | 0755u);
  EXPECT_EQ(entries.at("init").mode, S_IFREG | 0755u);
  EXPECT_EQ(entries.at("init").data, script);
  EXPECT_EQ(entries.at("ember/odd").data, "abc");
  EXPECT_THROW(CpioWriter().file("/abs", {}), Error);
  EXPECT_THROW(CpioWriter().directory("a/../../b"), Error);
}

// A Debian-like lib/modules/<release> tree; modules.dep lists each module's dependencies.
fs::path fake_modules(const fs::path& root) {
  const fs::path release = root / "lib" / "modules" / "6.12.0-test";
  write_file(
      release / "modules.dep",
      "kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz "
      "kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz "
      "kernel/drivers/virtio/virtio.ko.xz\n"
      "kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:\n"
      "kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz:\n"
      "kernel/drivers/virtio/virtio_ring.ko.xz: kernel/drivers/virtio/virtio.ko.xz\n"
      "kernel/drivers/virtio/virtio.ko.xz:\n"
      "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz "
      "kernel/drivers/virtio/virtio.ko.xz\n"
      "kernel/fs/fuse/virtiofs.ko.xz: kernel/fs/fuse/fuse.ko.xz "
      "kernel/drivers/virtio/virtio_ring.ko.xz "
      "kernel/drivers/virtio/virtio.ko.xz\n"
      "kernel/fs/fuse/fuse.ko.xz:\n"
      "kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz "
      "kernel/fs/jbd2/jbd2.ko.xz\n"
      "kernel/lib/crc16.ko.xz:\n"
      "kernel/fs/mbcache.ko.xz:\n"
      "kernel/fs/jbd2/jbd2.ko.xz:\n"
      "kernel/sound/unrelated.ko.xz:\n");
  for (const char* module :
       {"virtio_pci", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_ring"})
    write_file(release / "kernel/drivers/virtio" / (std::string(module) + ".ko.xz"), module);
  write_file(release / "kernel/drivers/virtio/virtio.ko.xz", "virtio");
  write_file(release / "kernel/drivers/block/virtio_blk.ko.xz", "virtio_blk");
  write_file(release / "kernel/fs/fuse/virtiofs.ko.xz", "virtiofs");
  write_file(release / "kernel/fs/fuse/fuse.ko.xz", "fuse");
  write_file(release / "kernel/fs/ext4/ext4.ko.xz", "ext4");
  write_file(release / "kernel/lib/crc16.ko.xz", "crc16");
  write_file(release / "kernel/fs/mbcache.ko.xz", "mbcache");
  write_file(release / "kernel/fs/jbd2/jbd2.ko.xz", "jbd2");
  return release;
}

size_t position(const std::vector<std::string>& order, const std::string& name) {
  for (size_t i = 0; i < order.size(); ++i)
    if (fs::path(order[i]).filename().string().starts_with(name + ".ko")) return i;
  ADD_FAILURE() << name << " missing";
  return SIZE_MAX;
}

TEST(RunInitrd, ModulesComeAfterTheirDependenciesEachOnce) {
  TempDir temp;
  const auto release = fake_modules(temp.path());
  const auto order = modules_in_load_order(release, kGuestModules);
  EXPECT_EQ(order.size(), 12u);  // the 5 wanted ones present and 7 dependencies; no "unrelated"
  EXPECT_LT(position(order, "virtio"), position(order, "virtio_ring"));
  EXPECT_LT(position(order, "virtio_ring"), position(order, "virtio_pci"));
  EXPECT_LT(position(order, "virtio_pci_modern_dev"), position(order, "virtio_pci"));
  EXPECT_LT(position(order, "fuse"), position(order, "virtiofs"));
  EXPECT_LT(position(order, "jbd2"), position(order, "ext4"));
  EXPECT_LT(position(order, "virtio_ring"), position(order, "virtio_blk"));
  EXPECT_THROW(modules_in_load_order(temp.path(), kGuestModules), Error);
}

TEST(RunInitrd, LayoutFollowsTheProtocol) {
  TempDir temp;
  const auto release = fake_modules(temp.path());
  const std::string init =
      "\x7f"
      "ELF ember-init";
  const auto order = modules_in_load_order(release, kGuestModules);
  const auto entries = read_cpio(build_initrd(
      std::span(reinterpret_cast<const uint8_t*>(init.data()), init.size()), release, order));
  EXPECT_EQ(entries.at("init").data, init);
  EXPECT_FALSE(entries.contains("ember-init"));  // One copy: /init is ember-init.
  EXPECT_EQ(entries.at("init").mode, S_IFREG | 0755u);
  std::string expected_list;
  for (const auto& module : order) {
    const std::string path = "lib/modules/6.12.0-test/" + module;
    expected_list += path + "\n";
    ASSERT_TRUE(entries.contains(path)) << path;
    EXPECT_EQ(entries.at(path).data, fs::path(module).filename().string().substr(
                                         0, fs::path(module).filename().string().find(".ko")));
    EXPECT_EQ(entries.at(fs::path(path).parent_path().string()).mode, S_IFDIR | 0755u);
  }
  EXPECT_EQ(entries.at("ember/modules.load").data, expected_list);
  // No modules directory (a kernel with the drivers built in): an empty load list.
  const auto bare = read_cpio(build_initrd(
      std::span(reinterpret_cast<const uint8_t*>(init.data()), init.size()), std::nullopt, {}));
  EXPECT_EQ(bare.size(), 3u);  // init, ember/, ember/modules.load
  EXPECT_EQ(bare.at("ember/modules.load").data, "");
}

TEST(RunInitrd, CachedByContent) {
  TempDir temp;
  write_file(temp.path() / "ember-init", "init-v1");
  const auto first = cached_initrd(temp.path() / "ember-init", std::nullopt, temp.path() / "cache");
  EXPECT_EQ(cached_initrd(temp.path() / "ember-init", std::nullopt, temp.path() / "cache"), first);
  write_file(temp.path() / "ember-init", "init-v2");
  const auto second =
      cached_initrd(temp.path() / "ember-init", std::nullopt, temp.path() / "cache");
  EXPECT_NE(second, first);
  std::ifstream in(second, std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
  EXPECT_EQ(read_cpio(bytes).at("init").data, "init-v2");
}

TEST(RunKernel, DefaultKernelWithHostArgumentsAndModules) {
  TempDir temp;
  EXPECT_THROW(
      {
        try {
          choose_kernel(std::nullopt, temp.path());
        } catch (const Error& error) {
          EXPECT_NE(std::string(error.what()).find("tools/demo"), std::string::npos);
          EXPECT_NE(std::string(error.what()).find("--kernel"), std::string::npos);
          throw;
        }
      },
      Error);
  // default-kernel/kernel -> ../debian/vmlinuz with the modules next to the target.
  write_file(temp.path() / "debian" / "vmlinuz", "kernel");
  fake_modules(temp.path() / "debian");
  fs::create_directories(temp.path() / "default-kernel");
  fs::create_symlink(temp.path() / "debian" / "vmlinuz", temp.path() / "default-kernel" / "kernel");
  write_file(temp.path() / "default-kernel" / "cmdline", "nopv  noxsave\n");
  const auto choice = choose_kernel(std::nullopt, temp.path());
  EXPECT_EQ(choice.kernel, temp.path() / "default-kernel" / "kernel");
  EXPECT_EQ(choice.host_arguments, "nopv  noxsave");
  ASSERT_TRUE(choice.modules);
  EXPECT_EQ(choice.modules->filename(), "6.12.0-test");
  EXPECT_NE(choice.description.find("default kernel"), std::string::npos);
  EXPECT_EQ(kernel_command_line(choice, "test.x=1"),
            "console=ttyS0 quiet panic=-1 nopv  noxsave test.x=1");
  // --kernel: no host arguments; modules only from beside that file.
  write_file(temp.path() / "plain" / "vmlinux", "kernel");
  const auto plain = choose_kernel(temp.path() / "plain" / "vmlinux", temp.path());
  EXPECT_FALSE(plain.modules);
  EXPECT_EQ(kernel_command_line(plain, ""), "console=ttyS0 quiet panic=-1");
  EXPECT_THROW(choose_kernel(temp.path() / "nothing", temp.path()), Error);
}

TEST(RunSpec, EnvironmentLayersAndDefaults) {
  const std::vector<std::string> layers[] = {
      {"PATH=/bin", "A=image", "B=image"}, {"A=cli", "C=cli"}, {"C=file"}};
  const auto merged = merge_env(layers);
  EXPECT_EQ(merged, (std::vector<std::string>{"PATH=/bin", "A=cli", "B=image", "C=file"}));
  EXPECT_EQ(with_defaults(merged, "box", "/root"),
            (std::vector<std::string>{"HOSTNAME=box", "PATH=/bin", "A=cli", "B=image", "C=file",
                                      "HOME=/root"}));
  EXPECT_EQ(with_defaults({"HOME=/x", "HOSTNAME=y"}, "box", ""),
            (std::vector<std::string>{kDefaultPath, "HOME=/x", "HOSTNAME=y"}));
  EXPECT_NO_THROW(check_env_assignment("K=", "-e"));
  EXPECT_THROW(check_env_assignment("K", "-e"), Error);
  EXPECT_THROW(check_env_assignment("=V", "-e"), Error);
}

TEST(RunSpec, Volumes) {
  TempDir temp;
  const Volume rw = parse_volume(temp.path().string() + ":/data");
  EXPECT_EQ(rw.host_dir, temp.path().string());
  EXPECT_EQ(rw.guest_dir, "/data");
  EXPECT_FALSE(rw.read_only);
  EXPECT_TRUE(parse_volume(temp.path().string() + "/:/data:ro").read_only);
  EXPECT_EQ(parse_volume(temp.path().string() + "/:/data:ro").host_dir, temp.path().string() + "/");
  EXPECT_THROW(parse_volume(temp.path().string() + ":data"), Error);
  EXPECT_THROW(parse_volume(temp.path().string() + "/missing:/data"), Error);
  EXPECT_THROW(parse_volume("/data"), Error);
}

TEST(RunSpec, Ulimits) {
  EXPECT_EQ(parse_ulimit("nofile=1024:4096"),
            (nlohmann::json{{"resource", "nofile"}, {"soft", 1024}, {"hard", 4096}}));
  EXPECT_EQ(parse_ulimit("nproc=64"), (nlohmann::json{{"resource", "nproc"}, {"soft", 64}, {"hard", 64}}));
  EXPECT_EQ(parse_ulimit("core=unlimited")["hard"].get<uint64_t>(), ~uint64_t{0});
  EXPECT_THROW(parse_ulimit("nofile"), Error);
  EXPECT_THROW(parse_ulimit("bogus=1"), Error);
  EXPECT_THROW(parse_ulimit("nofile=4096:1024"), Error);
  EXPECT_THROW(parse_ulimit("nofile=lots"), Error);
}

TEST(RunSpec, EnvFile) {
  TempDir temp;
  write_file(temp.path() / "env", "# comment\n\nA=1\r\n  B=two words\n");
  EXPECT_EQ(read_env_file(temp.path() / "env"), (std::vector<std::string>{"A=1", "B=two words"}));
  write_file(temp.path() / "bad", "A=1\nNOEQUALS\n");
  try {
    read_env_file(temp.path() / "bad");
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(":2:"), std::string::npos) << error.what();
  }
  EXPECT_THROW(read_env_file(temp.path() / "missing"), Error);
}

TEST(RunSpec, NamesAndEveryKey) {
  EXPECT_NO_THROW(check_name("web-1.example"));
  EXPECT_THROW(check_name("-x"), Error);
  EXPECT_THROW(check_name("a b"), Error);
  EXPECT_THROW(check_name(std::string(64, 'a')), Error);
  const std::string random = random_hostname();
  EXPECT_EQ(random.size(), 12u);
  EXPECT_TRUE(random.starts_with("ember-"));
  LaunchSpec spec;
  spec.args = {"sh", "-c", "exit 7"};
  spec.groups = {0, 10};
  const auto json = spec_json(spec);
  for (const char* key :
       {"version", "args", "env", "cwd", "uid", "gid", "groups", "hostname", "tty", "stdin",
        "rlimits", "root", "scratch", "mounts", "network", "stop_signal"})
    EXPECT_TRUE(json.contains(key)) << key;
  EXPECT_EQ(json.size(), 16u);
  EXPECT_EQ(json["root"]["serial"], "ember-root");
  EXPECT_EQ(json["scratch"]["serial"], "ember-scratch");
  EXPECT_TRUE(json["network"].is_null());
  spec.scratch = false;
  EXPECT_TRUE(spec_json(spec)["scratch"].is_null());
}

// A home directory from a hostile image's /etc/passwd that is not UTF-8 (found by the image_user
// fuzz target): a one-line Error naming the key, not nlohmann's type_error when the spec is sent.
TEST(RunSpec, TextThatIsNotUtf8) {
  LaunchSpec spec;
  spec.args = {"sh"};
  spec.env = with_defaults({}, "ember-1", "/roo\xb8\xb8t");
  try {
    spec_json(spec);
    FAIL() << "no Error";
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("\"env\""), std::string::npos) << message;
    EXPECT_NE(message.find("HOME=/roo??t"), std::string::npos) << message;
  }
  spec.env = {"A=h\xc3\xa9llo"};  // UTF-8 passes.
  spec.args = {"echo", "\xff"};
  EXPECT_THROW(spec_json(spec), Error);
  spec.args = {"echo"};
  EXPECT_NO_THROW(spec_json(spec).dump());
}

bool is_empty_directory(const fs::path& directory) {
  return fs::is_directory(directory) && fs::directory_iterator(directory) == fs::directory_iterator();
}

uint16_t ext4_magic(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(1024 + 0x38);  // ext4 superblock s_magic
  unsigned char magic[2] = {};
  in.read(reinterpret_cast<char*>(magic), 2);
  return static_cast<uint16_t>(magic[0] | magic[1] << 8);
}

TEST(RunScratch, SparseExt4WithoutANameUnlessKept) {
  TempDir temp;
  const fs::path directory = temp.path() / "scratch";
  {
    ScratchDisk disk(directory, "box-1", false, 64ull << 20);
    // Nothing in the directory even while the disk exists: a SIGKILLed ember leaves nothing.
    EXPECT_TRUE(is_empty_directory(directory));
    EXPECT_TRUE(disk.kept_path().empty());
    EXPECT_EQ(fs::file_size(disk.path()), 64ull << 20);
    EXPECT_EQ(ext4_magic(disk.path()), 0xEF53);
    struct stat info {};
    ASSERT_EQ(::stat(disk.path().c_str(), &info), 0);
    EXPECT_LT(info.st_blocks * 512, 16ll << 20);  // sparse
  }
  EXPECT_TRUE(is_empty_directory(directory));
  fs::path kept;
  {
    ScratchDisk disk(directory, "box-2", true, 64ull << 20);
    kept = disk.kept_path();
    EXPECT_EQ(kept, directory / "box-2.ext4");
    EXPECT_TRUE(fs::exists(kept));
    EXPECT_EQ(ext4_magic(disk.path()), 0xEF53);
  }
  EXPECT_EQ(ext4_magic(kept), 0xEF53);
  EXPECT_THROW(ScratchDisk(directory, "box-2", true, 64ull << 20), Error);  // never reused
  std::string diagnostics;
  EXPECT_NE(run_quietly({"mkfs.ext4", "-q", (temp.path() / "no" / "such").string()}, diagnostics),
            0);
  EXPECT_FALSE(diagnostics.empty());
}

}  // namespace
}  // namespace ember::run
