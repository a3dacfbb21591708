// prepare_image(): every input form into a cached erofs disk (real mkfs.erofs; contents checked
// with fsck.erofs --extract), and resolve_user()'s docker -u forms.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <thread>

#include "guest/image/prepare.hpp"
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
    write_layer(work() / "lower.tar", tar_entries_lower(), false);
    write_layer(work() / "upper.tar", tar_entries_upper(), false);
  }

  fs::path work() {
    fs::create_directories(temp_.path() / "work");
    return temp_.path() / "work";
  }
  fs::path cache() const { return temp_.path() / "cache"; }

  // docker save's legacy form: <id>/layer.tar, <config hex>.json, manifest.json.
  fs::path docker_archive(bool corrupt_layer = false) {
    const std::string lower = read_text(work() / "lower.tar"),
                      upper = read_text(work() / "upper.tar");
    const std::string config =
        config_with("\"sha256:" + sha256_file(work() / "lower.tar") +
                    "\", \"sha256:" + sha256_file(work() / "upper.tar") + "\"");
    const std::string config_name = sha256_text(config) + ".json";
    const fs::path archive = work() / (corrupt_layer ? "docker-corrupt.tar" : "docker.tar");
    write_layer(
        archive,
        {file("manifest.json",
              R"([{"Config": ")" + config_name +
                  R"(", "RepoTags": ["t:latest"], "Layers": ["l1/layer.tar", "l2/layer.tar"]}])"),
         file(config_name, config), file("l1/layer.tar", corrupt_layer ? upper : lower),
         file("l2/layer.tar", upper)},
        false);
    return archive;
  }

  // docker save's newer form (and skopeo's with compression): config and layers under
  // blobs/sha256/, no oci-layout; the layers gzip-compressed here, so checking their diff_ids
  // means decompressing them.
  fs::path docker_blobs_archive(bool corrupt_layer = false) {
    write_layer(work() / "lower.tar.gz", tar_entries_lower(), true);
    write_layer(work() / "upper.tar.gz", tar_entries_upper(), true);
    const std::string config =
        config_with("\"sha256:" + sha256_file(work() / "lower.tar") +
                    "\", \"sha256:" + sha256_file(work() / "upper.tar") + "\"");
    const std::string lower = read_text(work() / (corrupt_layer ? "upper.tar.gz" : "lower.tar.gz"));
    const std::string upper = read_text(work() / "upper.tar.gz");
    auto blob = [](const std::string& content) { return "blobs/sha256/" + sha256_text(content); };
    const fs::path archive =
        work() / (corrupt_layer ? "docker-blobs-corrupt.tar" : "docker-blobs.tar");
    write_layer(archive,
                {file("manifest.json", R"([{"Config": ")" + blob(config) +
                                           R"(", "RepoTags": ["t:latest"], "Layers": [")" +
                                           blob(lower) + R"(", ")" + blob(upper) + R"("]}])"),
                 file(blob(config), config), file(blob(lower), lower), file(blob(upper), upper)},
                false);
    return archive;
  }

  std::vector<TarEntry> tar_entries_lower() const {
    return {
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
        file("etc/group", "root:x:0:\nwheel:x:10:app\napp:x:1000:\n"), file("etc/old", "o"),
        file("opaque/a", "a"), file("srv/app", "v1")};
  }
  std::vector<TarEntry> tar_entries_upper() const {
    return {file("etc/.wh.old", ""), file("opaque/.wh..wh..opq", ""), file("opaque/c", "c")};
  }

  // An OCI layout at `layout` with one manifest per (ref name, layer list) over the uncompressed
  // lower/upper layers; returns the manifests' JSON texts (their sha256 is their digest).
  std::vector<std::string> oci_layout(
      const fs::path& layout,
      const std::vector<std::pair<std::string, std::vector<std::string>>>& images) {
    fs::create_directories(layout / "blobs/sha256");
    write_text(layout / "oci-layout", R"({"imageLayoutVersion": "1.0.0"})");
    auto add = [&](const std::string& content) {
      const std::string hex = sha256_text(content);
      write_text(layout / "blobs/sha256" / hex, content);
      return R"("digest": "sha256:)" + hex + R"(", "size": )" + std::to_string(content.size());
    };
    const std::string config = add(config_with(""));
    std::vector<std::string> manifests;
    std::string entries;
    for (const auto& [ref, layers] : images) {
      std::string layer_list;
      for (const std::string& layer : layers)
        layer_list += std::string(layer_list.empty() ? "" : ", ") +
                      R"({"mediaType": "application/vnd.oci.image.layer.v1.tar", )" +
                      add(read_text(work() / layer)) + "}";
      manifests.push_back(
          R"({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", )" +
          config + R"(}, "layers": [)" + layer_list + "]}");
      entries += std::string(entries.empty() ? "" : ", ") +
                 R"({"mediaType": "application/vnd.oci.image.manifest.v1+json", )" +
                 add(manifests.back()) +
                 R"(, "annotations": {"org.opencontainers.image.ref.name": ")" + ref + R"("}})";
    }
    write_text(layout / "index.json", R"({"schemaVersion": 2, "manifests": [)" + entries + "]}");
    return manifests;
  }

  // Extracts an erofs image with fsck.erofs.
  fs::path extract(const fs::path& disk) {
    const fs::path out = temp_.path() / ("extracted-" + std::to_string(extractions_++));
    std::string diagnostics;
    EXPECT_EQ(run_quietly({"fsck.erofs", "--extract=" + out.string(), disk.string()}, diagnostics),
              0)
        << diagnostics;
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
  for (const auto& entry : fs::directory_iterator(cache() / "images"))
    entries.push_back(entry.path().filename());
  EXPECT_THAT(entries, ElementsAre(first.digest.substr(7)));
}

TEST_F(Prepare, UnpackedDockerArchiveDirectoryGivesTheSameDigest) {
  const fs::path archive = docker_archive();
  const fs::path directory = work() / "unpacked";
  fs::create_directories(directory);
  std::string diagnostics;
  ASSERT_EQ(run_quietly({"tar", "-xf", archive.string(), "-C", directory.string()}, diagnostics),
            0);
  EXPECT_EQ(prepare_image(directory.string(), cache()).digest,
            prepare_image(archive.string(), cache()).digest);
}

TEST_F(Prepare, CorruptDockerLayerIsRefused) {
  EXPECT_THAT(error_of(docker_archive(true).string()), HasSubstr("diff_id"));
  EXPECT_FALSE(fs::exists(cache() / "images") && !fs::is_empty(cache() / "images"));
}

TEST_F(Prepare, OciArchiveAndLayoutShareTheManifestDigest) {
  // A layout from the same two layers, then the same layout as a tar.
  const fs::path layout = work() / "layout";
  const std::string manifest = oci_layout(layout, {{"latest", {"lower.tar", "upper.tar"}}}).front();
  const fs::path archive = work() / "oci.tar";
  std::string diagnostics;
  ASSERT_EQ(run_quietly({"tar", "-cf", archive.string(), "-C", layout.string(), "."}, diagnostics),
            0);

  PreparedImage from_layout = prepare_image(layout.string(), cache());
  EXPECT_TRUE(from_layout.converted);
  EXPECT_EQ(from_layout.digest, "sha256:" + sha256_text(manifest));
  PreparedImage from_archive = prepare_image(archive.string(), cache());
  EXPECT_FALSE(from_archive.converted);  // same manifest: the layout's conversion is reused
  EXPECT_EQ(from_archive.digest, from_layout.digest);
  const fs::path root = extract(from_layout.disk);
  EXPECT_FALSE(fs::exists(root / "etc/old"));
  EXPECT_EQ(read_text(root / "opaque/c"), "c");
}

TEST_F(Prepare, DockerArchiveWithBlobsAndCompressedLayers) {
  // A compressed layer whose uncompressed stream is not the config's diff_id. (First: the good
  // archive has the same config, so once cached, its digest would find the cache entry.)
  EXPECT_THAT(error_of(docker_blobs_archive(true).string()), HasSubstr("diff_id"));
  PreparedImage image = prepare_image(docker_blobs_archive().string(), cache());
  EXPECT_TRUE(image.converted);
  EXPECT_EQ(image.config.working_dir, "/srv");
  const fs::path root = extract(image.disk);
  EXPECT_FALSE(fs::exists(root / "etc/old"));
  EXPECT_FALSE(fs::exists(root / "opaque/a"));
  EXPECT_EQ(read_text(root / "opaque/c"), "c");
  EXPECT_FALSE(prepare_image(docker_blobs_archive().string(), cache()).converted);
}

TEST_F(Prepare, RefSuffixPicksAnOciIndexEntry) {
  const fs::path layout = work() / "refs";
  const auto manifests =
      oci_layout(layout, {{"one", {"lower.tar"}}, {"two", {"lower.tar", "upper.tar"}}});
  PreparedImage one = prepare_image(layout.string() + ":one", cache());
  PreparedImage two = prepare_image(layout.string() + "@two", cache());
  EXPECT_EQ(one.digest, "sha256:" + sha256_text(manifests[0]));
  EXPECT_EQ(two.digest, "sha256:" + sha256_text(manifests[1]));
  EXPECT_EQ(prepare_image(layout.string() + "@" + one.digest, cache()).digest, one.digest);
  EXPECT_EQ(one.reference, layout.string() + ":one");
  EXPECT_TRUE(fs::exists(extract(one.disk) / "etc/old"));
  EXPECT_FALSE(fs::exists(extract(two.disk) / "etc/old"));
  // The same ref from the layout as an oci-archive.
  const fs::path archive = work() / "refs.tar";
  std::string diagnostics;
  ASSERT_EQ(run_quietly({"tar", "-cf", archive.string(), "-C", layout.string(), "."}, diagnostics),
            0);
  PreparedImage from_archive = prepare_image(archive.string() + ":two", cache());
  EXPECT_EQ(from_archive.digest, two.digest);
  EXPECT_FALSE(from_archive.converted);

  EXPECT_THAT(error_of(layout.string() + ":three"),
              HasSubstr("no manifest named 'three' (it names one, two)"));
  EXPECT_THAT(error_of(layout.string()), HasSubstr("no linux/amd64 manifest among 2"));
  EXPECT_THAT(error_of(layout.string() + "/missing:tag"), HasSubstr("no such file or directory"));
}

TEST_F(Prepare, RefSuffixPicksADockerArchiveImageByRepoTags) {
  const std::string lower = read_text(work() / "lower.tar"),
                    upper = read_text(work() / "upper.tar");
  const std::string config_one = config_with("\"sha256:" + sha256_text(lower) + "\"");
  const std::string config_two =
      config_with("\"sha256:" + sha256_text(lower) + "\", \"sha256:" + sha256_text(upper) + "\"");
  const fs::path archive = work() / "two-images.tar";
  write_layer(
      archive,
      {file(
           "manifest.json",
           R"([{"Config": "one.json", "RepoTags": ["docker.io/library/one:latest"], "Layers": ["l.tar"]},
                                         {"Config": "two.json", "RepoTags": ["example.com/team/two:v2"], "Layers": ["l.tar", "u.tar"]}])"),
       file("one.json", config_one), file("two.json", config_two), file("l.tar", lower),
       file("u.tar", upper)},
      false);
  EXPECT_EQ(prepare_image(archive.string() + ":one", cache()).digest,
            "sha256:" + sha256_text(config_one));
  PreparedImage two = prepare_image(archive.string() + ":example.com/team/two:v2", cache());
  EXPECT_EQ(two.digest, "sha256:" + sha256_text(config_two));
  EXPECT_FALSE(fs::exists(extract(two.disk) / "etc/old"));
  EXPECT_THAT(error_of(archive.string()),
              HasSubstr("lists 2 images; name one as ARCHIVE:REPO:TAG"));
  EXPECT_THAT(error_of(archive.string() + ":two"), HasSubstr("no image tagged 'two'"));
}

TEST_F(Prepare, ConcurrentPreparationsShareOneEntry) {
  const fs::path archive = docker_archive();
  PreparedImage results[2];
  std::string failures[2];
  {
    std::jthread threads[2];
    for (int i = 0; i < 2; ++i)
      threads[i] = std::jthread([&, i] {
        try {
          results[i] = prepare_image(archive.string(), cache());
        } catch (const Error& error) {
          failures[i] = error.what();
        }
      });
  }
  EXPECT_EQ(failures[0], "");
  EXPECT_EQ(failures[1], "");
  EXPECT_EQ(results[0].digest, results[1].digest);
  EXPECT_EQ(results[0].disk, results[1].disk);
  EXPECT_TRUE(results[0].converted || results[1].converted);
  std::vector<std::string> entries;
  for (const auto& entry : fs::directory_iterator(cache() / "images"))
    entries.push_back(entry.path().filename());
  EXPECT_THAT(entries, ElementsAre(results[0].digest.substr(7)));
  EXPECT_EQ(read_text(extract(results[0].disk) / "srv/app"), "v1");
}

TEST_F(Prepare, ProgressLinesOnlyWhileConverting) {
  ::setenv("EMBER_PROGRESS", "1", 1);
  const fs::path archive = docker_archive();
  ::testing::internal::CaptureStderr();
  prepare_image(archive.string(), cache());
  const std::string converting = ::testing::internal::GetCapturedStderr();
  ::testing::internal::CaptureStderr();
  prepare_image(archive.string(), cache());
  const std::string cached = ::testing::internal::GetCapturedStderr();
  ::unsetenv("EMBER_PROGRESS");
  EXPECT_THAT(converting, HasSubstr("ember: converting " + archive.string() + ": layer 1/2 ("));
  EXPECT_THAT(converting, HasSubstr("ember: converting " + archive.string() + ": layer 2/2 ("));
  // etc, etc/passwd, etc/group, opaque, opaque/c, srv, srv/app
  EXPECT_THAT(converting, HasSubstr("ember: building erofs image (7 files)"));
  EXPECT_EQ(cached, "");
}

TEST_F(Prepare, PlainDirectoryDigestFollowsItsListing) {
  const fs::path rootfs = work() / "rootfs";
  fs::create_directories(rootfs / "bin");
  write_text(rootfs / "bin/tool", "#!/bin/sh\n");
  PreparedImage first = prepare_image(rootfs.string(), cache());
  EXPECT_TRUE(first.converted);
  EXPECT_TRUE(first.config.cmd.empty());
  EXPECT_FALSE(prepare_image(rootfs.string(), cache()).converted);
  // Stable: a fresh cache computes the same key for the same tree.
  EXPECT_EQ(prepare_image(rootfs.string(), temp_.path() / "other-cache").digest, first.digest);
  EXPECT_THAT(error_of(rootfs.string() + ":tag"), HasSubstr("is a root directory"));
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
  EXPECT_THAT(error_of((work() / "other.tar").string()),
              HasSubstr("neither an oci-archive nor a docker-archive"));
  // A manifest naming a file outside the archive.
  write_layer(work() / "escape.tar",
              {file("manifest.json", R"([{"Config": "../../etc/passwd", "Layers": []}])")}, false);
  EXPECT_THAT(error_of((work() / "escape.tar").string()), HasSubstr("leaves the archive"));
}

TEST(ResolveUser, DockerForms) {
  const std::string passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
  const std::string group = "root:x:0:\nwheel:x:10:app,other\napp:x:1000:\nstaff:x:50:\n";
  auto resolve = [&](const std::string& user) {
    return resolve_user(user, passwd, group, "image t");
  };
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
  ResolvedUser name_gid = resolve("app:50");
  EXPECT_EQ(name_gid.uid, 1000u);
  EXPECT_THAT(name_gid.groups, ElementsAre(50u, 10u));
  ResolvedUser uid_group = resolve("0:wheel");
  EXPECT_EQ(uid_group.gid, 10u);
  EXPECT_EQ(uid_group.home, "/root");
}

TEST(ResolveUser, EmptyMeansTheImageUserFromItsCachedFiles) {
  TempDir temp;
  PreparedImage image;
  image.reference = "t";
  image.passwd = temp.path() / "passwd";
  image.group = temp.path() / "group";
  write_text(image.passwd, "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n");
  write_text(image.group, "root:x:0:\nwheel:x:10:app\napp:x:1000:\n");
  EXPECT_EQ(resolve_user("", image).uid, 0u);  // no User in the config: root
  image.config.user = "app";
  ResolvedUser app = resolve_user("", image);
  EXPECT_EQ(app.uid, 1000u);
  EXPECT_THAT(app.groups, ElementsAre(1000u, 10u));
  EXPECT_EQ(resolve_user("root", image).uid, 0u);  // -u overrides the image's User
  image.passwd = temp.path() / "missing";          // an image without /etc/passwd: numbers only
  EXPECT_EQ(resolve_user("7:8", image).gid, 8u);
  EXPECT_THROW(resolve_user("", image), Error);
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
