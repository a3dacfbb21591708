// Reading an OCI image layout directory (image-spec v1: oci-layout, index.json, blobs/sha256/):
// index -> manifest -> config + layers, every blob checked against its sha256 digest and size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace ember::image {

// The parts of the image config (config.config in image-spec's config.md) that `ember run` uses.
struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "KEY=VALUE"
  std::string working_dir;
  std::string user;
  std::vector<std::string> exposed_ports;  // "80/tcp", sorted
};

struct LayerBlob {
  std::string digest;  // "sha256:<64 hex>"
  std::string media_type;
  std::filesystem::path path;  // blobs/sha256/<hex>, already verified
};

struct Image {
  std::string manifest_digest;
  ImageConfig config;
  std::vector<LayerBlob> layers;  // lowest first
};

// Reads and verifies the image in `layout`. With `ref`, picks the index entry whose
// org.opencontainers.image.ref.name (or digest) is `ref` (an Error naming the known refs when none
// is); without, the only entry or linux/amd64 among several. Throws one-line Errors for a missing
// directory, a directory that is not an OCI layout, corrupt JSON, a missing or corrupt blob and
// unsupported media types.
Image read_oci_layout(const std::filesystem::path& layout, const std::string& ref = "");

// The digest of the manifest read_oci_layout() would pick, from index.json's text alone (no blob
// is read); empty when the entry is a nested index that only the full read can follow.
std::string manifest_digest_from_index(const std::string& index_json, const std::string& name,
                                       const std::string& ref = "");

// "sha256:<64 lowercase hex>" -> the hex; anything else is a one-line Error "<name>: unsupported
// digest '...'", before a digest ever becomes a path.
std::string digest_hex(const std::string& digest, const std::string& name);

// The sha256 of a file's contents as 64 lowercase hex digits.
std::string sha256_file(const std::filesystem::path& path);
std::string sha256_text(std::string_view text);

// The same over a stream given piece by piece (a layer as it is decompressed).
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  std::string hex();  // 64 lowercase hex digits; ends the stream

 private:
  std::unique_ptr<evp_md_ctx_st, void (*)(evp_md_ctx_st*)> context_;
};

// The config part of an image config blob (exposed for tests and docker-archive later).
ImageConfig parse_image_config(const std::string& json_text, const std::string& name);

}  // namespace ember::image
