#include "guest/image/oci_layout.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include "guest/image/layers.hpp"
#include "tests/unit/image_test_support.hpp"
#include "vmm/error.hpp"

namespace ember::image {
namespace {

namespace fs = std::filesystem;
using namespace ember::image::testing;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string sha256_hex(const std::string& data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char byte : digest) {
    hex += kHex[byte >> 4];
    hex += kHex[byte & 0xf];
  }
  return hex;
}

constexpr const char* kConfig = R"({
  "architecture": "amd64", "os": "linux",
  "config": {"Entrypoint": ["/bin/server"], "Cmd": ["--port", "80"], "Env": ["PATH=/bin", "A=b"],
             "WorkingDir": "/srv", "User": "1000:1000", "ExposedPorts": {"80/tcp": {}, "53/udp": {}}},
  "rootfs": {"type": "layers", "diff_ids": []}
})";

// A hand-made layout: one manifest, a config and two gzip layers.
class OciLayout : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(layout() / "blobs" / "sha256");
    write_text(layout() / "oci-layout", R"({"imageLayoutVersion": "1.0.0"})");
    fs::path scratch = temp_.path() / "scratch.tar.gz";
    write_layer(scratch, {file("etc/hostname", "ember"), file("etc/old", "o")});
    lower_ = add_blob(read_text(scratch));
    write_layer(scratch, {file("etc/.wh.old", ""), file("srv/app", "run")});
    upper_ = add_blob(read_text(scratch));
    config_ = add_blob(kConfig);
    std::string layer_type = "application/vnd.oci.image.layer.v1.tar+gzip";
    manifest_ = add_blob(R"({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "config": )" + descriptor("application/vnd.oci.image.config.v1+json", config_) + R"(,
      "layers": [)" + descriptor(layer_type, lower_) + "," + descriptor(layer_type, upper_) + "]}");
    write_text(layout() / "index.json", R"({"schemaVersion": 2, "manifests": [)" +
               descriptor("application/vnd.oci.image.manifest.v1+json", manifest_) + "]}");
  }

  fs::path layout() const { return temp_.path() / "image"; }

  std::string add_blob(const std::string& content) {
    std::string hex = sha256_hex(content);
    write_text(layout() / "blobs" / "sha256" / hex, content);
    sizes_[hex] = content.size();
    return hex;
  }

  std::string descriptor(const std::string& media_type, const std::string& hex) {
    return R"({"mediaType": ")" + media_type + R"(", "digest": "sha256:)" + hex +
           R"(", "size": )" + std::to_string(sizes_[hex]) + "}";
  }

  std::string error_of(const fs::path& path) {
    try {
      read_oci_layout(path);
    } catch (const Error& error) {
      std::string message = error.what();
      EXPECT_THAT(message, Not(HasSubstr("\n")));
      return message;
    }
    return "no error";
  }

  TempDir temp_;
  std::map<std::string, size_t> sizes_;
  std::string lower_, upper_, config_, manifest_;
};

TEST_F(OciLayout, ReadsConfigAndLayersInOrder) {
  Image image = read_oci_layout(layout());
  EXPECT_EQ(image.manifest_digest, "sha256:" + manifest_);
  EXPECT_THAT(image.config.entrypoint, ElementsAre("/bin/server"));
  EXPECT_THAT(image.config.cmd, ElementsAre("--port", "80"));
  EXPECT_THAT(image.config.env, ElementsAre("PATH=/bin", "A=b"));
  EXPECT_EQ(image.config.working_dir, "/srv");
  EXPECT_EQ(image.config.user, "1000:1000");
  EXPECT_THAT(image.config.exposed_ports, ElementsAre("53/udp", "80/tcp"));
  ASSERT_EQ(image.layers.size(), 2u);
  EXPECT_EQ(image.layers[0].digest, "sha256:" + lower_);
  EXPECT_EQ(image.layers[1].digest, "sha256:" + upper_);
}

TEST_F(OciLayout, LayersApplyIntoARootFilesystem) {
  Image image = read_oci_layout(layout());
  fs::path root = temp_.path() / "root";
  fs::create_directory(root);
  for (const LayerBlob& layer : image.layers) apply_layer(layer.path, root, layer.digest);
  EXPECT_EQ(read_text(root / "etc/hostname"), "ember");
  EXPECT_FALSE(fs::exists(root / "etc/old"));
  EXPECT_EQ(read_text(root / "srv/app"), "run");
}

TEST_F(OciLayout, NullEntrypointAndCmdAreEmpty) {
  ImageConfig config = parse_image_config(R"({"config": {"Entrypoint": null, "Cmd": null}})", "c");
  EXPECT_TRUE(config.entrypoint.empty());
  EXPECT_TRUE(config.cmd.empty());
}

TEST_F(OciLayout, MissingImage) {
  EXPECT_THAT(error_of(temp_.path() / "nope"), HasSubstr("no such directory"));
}

TEST_F(OciLayout, NotAnOciLayout) {
  fs::remove(layout() / "oci-layout");
  EXPECT_THAT(error_of(layout()), HasSubstr("is not an OCI image layout"));
}

TEST_F(OciLayout, CorruptIndexJson) {
  write_text(layout() / "index.json", "{\"manifests\": [\n oops");
  EXPECT_THAT(error_of(layout()), HasSubstr("index.json: corrupt JSON"));
}

TEST_F(OciLayout, MissingBlob) {
  fs::remove(layout() / "blobs" / "sha256" / upper_);
  EXPECT_THAT(error_of(layout()), HasSubstr("missing blob sha256:" + upper_));
}

TEST_F(OciLayout, CorruptBlobFailsItsDigest) {
  std::string content = read_text(layout() / "blobs" / "sha256" / config_);
  content[content.size() / 2] ^= 1;
  write_text(layout() / "blobs" / "sha256" / config_, content);
  EXPECT_THAT(error_of(layout()), HasSubstr("sha256:" + config_ + " is corrupt"));
}

TEST_F(OciLayout, DigestCannotNameAPathOutsideBlobs) {
  write_text(layout() / "index.json",
             R"({"manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": "sha256:../../../etc/passwd", "size": 1}]})");
  EXPECT_THAT(error_of(layout()), HasSubstr("unsupported digest"));
}

// Entries or platforms of the wrong JSON type among several manifests: no linux/amd64 one, said
// in one line (nlohmann's type_error escaped before; corpus files regression-platform-*).
TEST_F(OciLayout, PlatformsOfTheWrongTypeAreNotLinuxAmd64) {
  for (const char* manifests :
       {R"([1, 2])", R"([{"platform": "linux/amd64"}, {"platform": {"os": 7}}])",
        R"([{"platform": {"os": "linux", "architecture": ["amd64"]}}, {"platform": null}])"}) {
    write_text(layout() / "index.json", std::string(R"({"manifests": )") + manifests + "}");
    EXPECT_THAT(error_of(layout()), HasSubstr("no linux/amd64 manifest among 2")) << manifests;
    EXPECT_THROW(manifest_digest_from_index(read_text(layout() / "index.json"), "index.json"), Error);
  }
}

TEST_F(OciLayout, UnsupportedLayerMediaType) {
  std::string manifest = R"({"config": )" + descriptor("application/vnd.oci.image.config.v1+json", config_) +
                         R"(, "layers": [)" + descriptor("application/x-unknown", lower_) + "]}";
  std::string hex = add_blob(manifest);
  write_text(layout() / "index.json", R"({"manifests": [)" +
             descriptor("application/vnd.oci.image.manifest.v1+json", hex) + "]}");
  EXPECT_THAT(error_of(layout()), HasSubstr("unsupported layer media type"));
}

}  // namespace
}  // namespace ember::image
