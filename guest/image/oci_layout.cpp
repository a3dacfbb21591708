#include "guest/image/oci_layout.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "guest/image/text.hpp"
#include "vmm/error.hpp"

namespace ember::image {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kOciIndex = "application/vnd.oci.image.index.v1+json";
constexpr const char* kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
constexpr std::array kManifestTypes = {"application/vnd.oci.image.manifest.v1+json",
                                       "application/vnd.docker.distribution.manifest.v2+json"};
constexpr std::array kConfigTypes = {"application/vnd.oci.image.config.v1+json",
                                     "application/vnd.docker.container.image.v1+json"};
// image-spec layer.md; "nondistributable" variants are deprecated but still valid.
constexpr std::array kLayerTypes = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
};

template <size_t N>
bool one_of(const std::string& value, const std::array<const char*, N>& allowed) {
  return std::any_of(allowed.begin(), allowed.end(),
                     [&](const char* type) { return value == type; });
}

// JSON library messages can quote raw input; keep Errors to one line.
json parse_json(const std::string& text, const std::string& name) {
  try {
    json document = json::parse(text);
    if (!document.is_object()) throw Error(name + ": corrupt JSON: not an object");
    return document;
  } catch (const json::exception& error) {
    throw Error(one_line(name + ": corrupt JSON: " + error.what()));
  }
}

struct Descriptor {
  std::string media_type;
  std::string digest;
  int64_t size = -1;
};

Descriptor descriptor(const json& node, const std::string& name) {
  if (!node.is_object() || !node.contains("digest") || !node["digest"].is_string())
    throw Error(name + ": descriptor without a digest");
  Descriptor result;
  result.digest = node["digest"].get<std::string>();
  if (node.contains("mediaType") && node["mediaType"].is_string())
    result.media_type = node["mediaType"].get<std::string>();
  if (node.contains("size") && node["size"].is_number_integer())
    result.size = node["size"].get<int64_t>();
  return result;
}

}  // namespace

Sha256::Sha256() : context_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
  if (!context_ || EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) != 1)
    throw Error("sha256: cannot initialise OpenSSL digest");
}

void Sha256::update(const void* data, size_t size) {
  EVP_DigestUpdate(context_.get(), data, size);
}

std::string Sha256::hex() {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest;
  unsigned int length = 0;
  EVP_DigestFinal_ex(context_.get(), digest.data(), &length);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xf];
  }
  return hex;
}

std::string digest_hex(const std::string& digest, const std::string& name) {
  constexpr std::string_view kPrefix = "sha256:";
  std::string hex = digest.starts_with(kPrefix) ? digest.substr(kPrefix.size()) : "";
  bool valid = hex.size() == 64 && std::all_of(hex.begin(), hex.end(), [](char c) {
                 return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
               });
  if (!valid) throw Error(name + ": unsupported digest '" + one_line(digest) + "'");
  return hex;
}

std::string sha256_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw system_error("cannot read " + path.string());
  Sha256 sha256;
  std::array<char, 1 << 16> buffer;
  while (in) {
    in.read(buffer.data(), buffer.size());
    if (in.gcount() > 0) sha256.update(buffer.data(), static_cast<size_t>(in.gcount()));
  }
  return sha256.hex();
}

std::string sha256_text(std::string_view text) {
  Sha256 sha256;
  sha256.update(text.data(), text.size());
  return sha256.hex();
}

namespace {

constexpr const char* kRefNameAnnotation = "org.opencontainers.image.ref.name";

std::string ref_name(const json& entry) {
  if (!entry.is_object() || !entry.contains("annotations")) return {};
  const json& annotations = entry["annotations"];
  if (!annotations.is_object() || !annotations.contains(kRefNameAnnotation) ||
      !annotations[kRefNameAnnotation].is_string())
    return {};
  return annotations[kRefNameAnnotation].get<std::string>();
}

// The index entry for this host: the one named `ref` (its org.opencontainers.image.ref.name, or
// its digest "sha256:...") when a ref is given; else the only one, or linux/amd64 among several.
const json& choose_manifest_entry(const json& index, const std::string& name,
                                  const std::string& ref) {
  if (!index.contains("manifests") || !index["manifests"].is_array() || index["manifests"].empty())
    throw Error(name + ": no manifests");
  const json& manifests = index["manifests"];
  if (!ref.empty()) {
    std::string known;
    for (const json& entry : manifests) {
      const std::string entry_ref = ref_name(entry);
      const bool digest_matches =
          entry.is_object() && entry.contains("digest") && entry["digest"] == ref;
      if (entry_ref == ref || digest_matches) return entry;
      if (!entry_ref.empty()) known += (known.empty() ? "" : ", ") + entry_ref;
    }
    throw Error(name + ": no manifest named '" + one_line(ref) + "' (" +
                (known.empty() ? std::string("it names none") : "it names " + one_line(known)) +
                ")");
  }
  if (manifests.size() == 1) return manifests.front();
  // Compared as JSON values: an entry, platform, os or architecture of another type is simply not
  // linux/amd64 (json::value() would throw type_error for them, past every Error handler).
  const auto field = [](const json& object, const char* key) {
    return object.is_object() && object.contains(key) ? object[key] : json();
  };
  for (const json& entry : manifests) {
    const json platform = field(entry, "platform");
    if (field(platform, "os") == "linux" && field(platform, "architecture") == "amd64") return entry;
  }
  throw Error(name + ": no linux/amd64 manifest among " + std::to_string(manifests.size()));
}

class Layout {
 public:
  explicit Layout(fs::path root) : root_(std::move(root)) {}

  // The verified path of a blob. The digest is checked to be sha256:<64 hex> before it becomes a
  // path, so a hostile index cannot name files outside blobs/sha256/.
  fs::path blob(const Descriptor& descriptor) const {
    const std::string& digest = descriptor.digest;
    const std::string hex = digest_hex(digest, "image " + root_.string());
    fs::path path = root_ / "blobs" / "sha256" / hex;
    std::error_code error;
    if (!fs::is_regular_file(path, error))
      throw Error("image " + root_.string() + ": missing blob " + digest);
    if (descriptor.size >= 0 &&
        fs::file_size(path, error) != static_cast<uintmax_t>(descriptor.size))
      throw Error("image " + root_.string() + ": blob " + digest + " has the wrong size");
    if (sha256_file(path) != hex)
      throw Error("image " + root_.string() + ": blob " + digest + " is corrupt (sha256 mismatch)");
    return path;
  }

  json blob_json(const Descriptor& descriptor) const {
    return parse_json(read_text(blob(descriptor)), "blob " + descriptor.digest);
  }

  // Follows nested indexes down to one image manifest.
  // `ref` selects among the top index's entries only; nested indexes are chosen by platform.
  Descriptor pick_manifest(const json& index, const std::string& name, const std::string& ref,
                           int depth = 0) const {
    if (depth > 4) throw Error(name + ": image indexes nested too deeply");
    const json* chosen = &choose_manifest_entry(index, name, ref);
    Descriptor manifest = descriptor(*chosen, name);
    if (manifest.media_type == kOciIndex || manifest.media_type == kDockerManifestList)
      return pick_manifest(blob_json(manifest), "index " + manifest.digest, "", depth + 1);
    if (!one_of(manifest.media_type, kManifestTypes))
      throw Error(name + ": unsupported manifest media type '" + manifest.media_type + "'");
    return manifest;
  }

 private:
  fs::path root_;
};

std::vector<std::string> string_list(const json& config, const char* key, const std::string& name) {
  if (!config.contains(key) || config[key].is_null()) return {};
  if (!config[key].is_array()) throw Error(name + ": " + key + " is not a list of strings");
  std::vector<std::string> result;
  for (const json& item : config[key]) {
    if (!item.is_string()) throw Error(name + ": " + key + " is not a list of strings");
    result.push_back(item.get<std::string>());
  }
  return result;
}

std::string string_field(const json& config, const char* key, const std::string& name) {
  if (!config.contains(key) || config[key].is_null()) return {};
  if (!config[key].is_string()) throw Error(name + ": " + key + " is not a string");
  return config[key].get<std::string>();
}

}  // namespace

std::string manifest_digest_from_index(const std::string& index_json, const std::string& name,
                                       const std::string& ref) {
  const Descriptor entry =
      descriptor(choose_manifest_entry(parse_json(index_json, name), name, ref), name);
  if (entry.media_type == kOciIndex || entry.media_type == kDockerManifestList) return {};
  return entry.digest;
}

ImageConfig parse_image_config(const std::string& json_text, const std::string& name) {
  json document = parse_json(json_text, name);
  ImageConfig result;
  if (!document.contains("config") || document["config"].is_null()) return result;
  const json& config = document["config"];
  if (!config.is_object()) throw Error(name + ": config is not an object");
  result.entrypoint = string_list(config, "Entrypoint", name);
  result.cmd = string_list(config, "Cmd", name);
  result.env = string_list(config, "Env", name);
  result.working_dir = string_field(config, "WorkingDir", name);
  result.user = string_field(config, "User", name);
  if (config.contains("ExposedPorts") && config["ExposedPorts"].is_object())
    for (const auto& [port, unused] : config["ExposedPorts"].items())
      result.exposed_ports.push_back(port);
  std::sort(result.exposed_ports.begin(), result.exposed_ports.end());
  return result;
}

Image read_oci_layout(const fs::path& layout, const std::string& ref) {
  std::error_code error;
  if (!fs::is_directory(layout, error))
    throw Error("image " + layout.string() + ": no such directory");
  if (!fs::is_regular_file(layout / "oci-layout", error))
    throw Error(layout.string() + " is not an OCI image layout (no oci-layout file)");
  json marker = parse_json(read_text(layout / "oci-layout"), (layout / "oci-layout").string());
  if (!marker.contains("imageLayoutVersion") || !marker["imageLayoutVersion"].is_string())
    throw Error(layout.string() + " is not an OCI image layout (no imageLayoutVersion)");
  if (!fs::is_regular_file(layout / "index.json", error))
    throw Error(layout.string() + " is not an OCI image layout (no index.json)");

  Layout blobs(layout);
  std::string index_name = (layout / "index.json").string();
  Descriptor manifest_descriptor = blobs.pick_manifest(
      parse_json(read_text(layout / "index.json"), index_name), index_name, ref);
  std::string manifest_name = "manifest " + manifest_descriptor.digest;
  json manifest = blobs.blob_json(manifest_descriptor);

  Image image;
  image.manifest_digest = manifest_descriptor.digest;
  try {
    Descriptor config = descriptor(manifest.value("config", json()), manifest_name);
    if (!one_of(config.media_type, kConfigTypes))
      throw Error(manifest_name + ": unsupported config media type '" + config.media_type + "'");
    image.config = parse_image_config(read_text(blobs.blob(config)), "config " + config.digest);
    if (!manifest.contains("layers") || !manifest["layers"].is_array())
      throw Error(manifest_name + ": no layers list");
    for (const json& entry : manifest["layers"]) {
      Descriptor layer = descriptor(entry, manifest_name);
      if (!one_of(layer.media_type, kLayerTypes))
        throw Error(manifest_name + ": unsupported layer media type '" + layer.media_type + "'");
      image.layers.push_back({layer.digest, layer.media_type, blobs.blob(layer)});
    }
  } catch (const json::exception& failure) {
    throw Error(one_line(manifest_name + ": corrupt JSON: " + failure.what()));
  }
  return image;
}

}  // namespace ember::image
