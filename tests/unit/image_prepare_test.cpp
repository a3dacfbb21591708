// prepare_image(): every input form into a cached erofs disk (real mkfs.erofs; contents checked
// with fsck.erofs --extract), and resolve_user()'s docker -u forms.
#include "guest/image/prepare.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>

#include "tests/unit/image_test_support.hpp"
#include "vmm/error.hpp"
#include "vmm/process.hpp"

namespace ember::image {
namespace {

namespace fs = std::filesystem;
using namespace ember::image::testing;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kConfig = R"({"architecture": "amd64", "os": "linux",
  "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": "/srv", "User": "app"},
  "rootfs": {"type": "layers", "diff_ids": [DIFF_IDS]}})";

std::string config_with(const std::string& diff_ids) {
  std::string text = kConfig;
  text.replace(text.find("DIFF_IDS"), 8, diff_ids);
  return text;
}

class Prepare : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two layers: the upper one deletes etc/old and makes opaque/ opaque.
    write_layer(work() / "lower.tar", {file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
                                        file("etc/group", "root:x:0:\nwheel:x:10:app\napp:x:1000:\n"),
                                        file("etc/old", "o"), file("opaque/a", "a"), file("srv/app", "v1")},
                false);
    write_layer(work() / "upper.tar", {file("etc/.wh.old", ""), file("opaque/.wh..wh..opq", ""),
                                        file("opaque/c", "c")},
                false);
  }

  fs::path work() {
    fs::create_directories(temp_.path() / "work");
    return temp_.path() / "work";
  }
  fs::path cache() const { return temp_.path() / "cache"; }

  // docker save's legacy form: <id>/layer.tar, <config hex>.json, manifest.json.
  fs::path docker_archive(bool corrupt_layer = false) {
    const std::string lower = read_text(work() / "lower.tar"), upper = read_text(work() / "upper.tar");
    const std::string config = config_with("\"sha256:" + sha256_file(work() / "lower.tar") + "\", \"sha256:" +
                                           sha256_file(work() / "upper.tar") + "\"");
    const std::string config_name = sha256_text(config) + ".json";
    const fs::path archive = work() / (corrupt_layer ? "docker-corrupt.tar" : "docker.tar");
    write_layer(archive,
                {file("manifest.json", R"([{"Config": ")" + config_name +
                                           R"(", "RepoTags": ["t:latest"], "Layers": ["l1/layer.tar", "l2/layer.tar"]}])"),
                 file(config_name, config), file("l1/layer.tar", corrupt_layer ? upper : lower),
                 file("l2/layer.tar", upper)},
                false);
    return archive;
  }

  // Extracts an erofs image with fsck.erofs.
  fs::path extract(const fs::path& disk) {
    const fs::path out = temp_.path() / ("extracted-" + std::to_string(extractions_++));
    std::string diagnostics;
    EXPECT_EQ(run_quietly({"fsck.erofs", "--extract=" + out.string(), disk.string()}, diagnostics), 0) << diagnostics;
    return out;
  }

  std::string error_of(const std::string& reference) {
    try {
      prepare_image(reference, cache());
    } catch (const Error& error) {
      std::string message = error.what();
      EXPECT_THAT(message, Not(HasSubstr("\n")));
      return message;
    }
    ADD_FAILURE() << reference << " was accepted";
    return {};
  }

  TempDir temp_;
  int extractions_ = 0;
};

TEST_F(Prepare, DockerArchiveAppliesLayersAndIsCachedByConfigDigest) {
  const fs::path archive = docker_archive();
  PreparedImage first = prepare_image(archive.string(), cache());
  EXPECT_TRUE(first.converted);
  EXPECT_EQ(first.fstype, "erofs");
  EXPECT_THAT(first.config.cmd, ElementsAre("sh"));
  EXPECT_EQ(first.config.user, "app");
  EXPECT_EQ(first.disk.parent_path().filename().string(), first.digest.substr(7));
  const fs::path root = extract(first.disk);
  EXPECT_EQ(read_text(root / "srv/app"), "v1");
  EXPECT_FALSE(fs::exists(root / "etc/old"));
  EXPECT_FALSE(fs::exists(root / "opaque/a"));
  EXPECT_EQ(read_text(root / "opaque/c"), "c");

  struct stat before {};
  ASSERT_EQ(::stat(first.disk.c_str(), &before), 0);
  PreparedImage second = prepare_image(archive.string(), cache());
  EXPECT_FALSE(second.converted);
  EXPECT_EQ(second.digest, first.digest);
  struct stat after {};
  ASSERT_EQ(::stat(second.disk.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
  // Only the finished entry is left in the cache.
  std::vector<std::string> entries;
  for (const auto& entry : fs::directory_iterator(cache() / "images")) entries.push_back(entry.path().filename());
  EXPECT_THAT(entries, ElementsAre(first.digest.substr(7)));
}

TEST_F(Prepare, UnpackedDockerArchiveDirectoryGivesTheSameDigest) {
  const fs::path archive = docker_archive();
  const fs::path directory = work() / "unpacked";
  fs::create_directories(directory);
  std::string diagnostics;
  ASSERT_EQ(run_quietly({"tar", "-xf", archive.string(), "-C", directory.string()}, diagnostics), 0);
  EXPECT_EQ(prepare_image(directory.string(), cache()).digest, prepare_image(archive.string(), cache()).digest);
}

TEST_F(Prepare, CorruptDockerLayerIsRefused) {
  EXPECT_THAT(error_of(docker_archive(true).string()), HasSubstr("diff_id"));
  EXPECT_FALSE(fs::exists(cache() / "images") && !fs::is_empty(cache() / "images"));
}

TEST_F(Prepare, OciArchiveAndLayoutShareTheManifestDigest) {
  // A layout from the same two layers (gzip), then the same layout as a tar.
  const fs::path layout = work() / "layout";
  fs::create_directories(layout / "blobs/sha256");
  write_text(layout / "oci-layout", R"({"imageLayoutVersion": "1.0.0"})");
  auto add = [&](const std::string& content) {
    const std::string hex = sha256_text(content);
    write_text(layout / "blobs/sha256" / hex, content);
    return R"("digest": "sha256:)" + hex + R"(", "size": )" + std::to_string(content.size());
  };
  const std::string lower = add(read_text(work() / "lower.tar")), upper = add(read_text(work() / "upper.tar"));
  const std::string config = add(config_with(""));
  const std::string manifest = add(
      R"({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", )" +
      config + R"(}, "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", )" + lower +
      R"(}, {"mediaType": "application/vnd.oci.image.layer.v1.tar", )" + upper + "}]}");
  write_text(layout / "index.json",
             R"({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", )" +
                 manifest + "}]}");
  const fs::path archive = work() / "oci.tar";
  std::string diagnostics;
  ASSERT_EQ(run_quietly({"tar", "-cf", archive.string(), "-C", layout.string(), "."}, diagnostics), 0);

  PreparedImage from_layout = prepare_image(layout.string(), cache());
  EXPECT_TRUE(from_layout.converted);
  EXPECT_THAT(manifest, HasSubstr(from_layout.digest.substr(7)));
  PreparedImage from_archive = prepare_image(archive.string(), cache());
  EXPECT_FALSE(from_archive.converted);  // same manifest: the layout's conversion is reused
  EXPECT_EQ(from_archive.digest, from_layout.digest);
  const fs::path root = extract(from_layout.disk);
  EXPECT_FALSE(fs::exists(root / "etc/old"));
  EXPECT_EQ(read_text(root / "opaque/c"), "c");
}

TEST_F(Prepare, PlainDirectoryDigestFollowsItsListing) {
  const fs::path rootfs = work() / "rootfs";
  fs::create_directories(rootfs / "bin");
  write_text(rootfs / "bin/tool", "#!/bin/sh\n");
  PreparedImage first = prepare_image(rootfs.string(), cache());
  EXPECT_TRUE(first.converted);
  EXPECT_TRUE(first.config.cmd.empty());
  EXPECT_FALSE(prepare_image(rootfs.string(), cache()).converted);
  write_text(rootfs / "bin/tool", "#!/bin/sh\necho changed\n");
  PreparedImage changed = prepare_image(rootfs.string(), cache());
  EXPECT_NE(changed.digest, first.digest);
  EXPECT_TRUE(changed.converted);
  EXPECT_EQ(read_text(extract(changed.disk) / "bin/tool"), "#!/bin/sh\necho changed\n");
}

TEST_F(Prepare, BadInputsGetOneLineErrors) {
  EXPECT_THAT(error_of((work() / "missing").string()), HasSubstr("no such file or directory"));
  write_text(work() / "random.tar", std::string(4096, '\x5a'));
  EXPECT_THAT(error_of((work() / "random.tar").string()), HasSubstr("not a tar archive"));
  write_layer(work() / "other.tar", {file("hello.txt", "hi")}, false);
  EXPECT_THAT(error_of((work() / "other.tar").string()), HasSubstr("neither an oci-archive nor a docker-archive"));
  // A manifest naming a file outside the archive.
  write_layer(work() / "escape.tar",
              {file("manifest.json", R"([{"Config": "../../etc/passwd", "Layers": []}])")}, false);
  EXPECT_THAT(error_of((work() / "escape.tar").string()), HasSubstr("leaves the archive"));
}

TEST(ResolveUser, DockerForms) {
  const std::string passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
  const std::string group = "root:x:0:\nwheel:x:10:app,other\napp:x:1000:\nstaff:x:50:\n";
  auto resolve = [&](const std::string& user) { return resolve_user(user, passwd, group, "image t"); };
  EXPECT_EQ(resolve("").uid, 0u);
  ResolvedUser app = resolve("app");
  EXPECT_EQ(app.uid, 1000u);
  EXPECT_EQ(app.gid, 1000u);
  EXPECT_THAT(app.groups, ElementsAre(1000u, 10u));
  EXPECT_EQ(app.home, "/home/app");
  ResolvedUser numeric = resolve("1000:1000");
  EXPECT_EQ(numeric.uid, 1000u);
  EXPECT_THAT(numeric.groups, ElementsAre(1000u, 10u));
  ResolvedUser with_group = resolve("app:staff");
  EXPECT_EQ(with_group.gid, 50u);
  EXPECT_THAT(with_group.groups, ElementsAre(50u, 10u));
  ResolvedUser unknown_uid = resolve("4242");  // docker allows ids the image doesn't list
  EXPECT_EQ(unknown_uid.uid, 4242u);
  EXPECT_EQ(unknown_uid.gid, 0u);
  EXPECT_EQ(resolve("0:4242").gid, 4242u);
}

TEST(ResolveUser, UnknownNamesAreOneLineErrors) {
  const std::string passwd = "root:x:0:0:root:/root:/bin/sh\n";
  const std::string group = "root:x:0:\n";
  auto message = [&](const std::string& user) {
    try {
      resolve_user(user, passwd, group, "image t");
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(message("nobody2"), "unknown user 'nobody2' in image t (not in its /etc/passwd)");
  EXPECT_EQ(message("root:nogroup"), "unknown group 'nogroup' in image t (not in its /etc/group)");
  EXPECT_THAT(message("root:"), HasSubstr("expected USER[:GROUP]"));
}

}  // namespace
}  // namespace ember::image
