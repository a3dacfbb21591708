// The OCI image layout reader (guest/image/oci_layout.cpp): index.json, nested indexes, manifests
// and configs, media types, digests that must not become paths outside blobs/sha256/, and the
// cache key prepare_image() takes from index.json alone, which must name the manifest the full read
// picks.
//
// Input: index.json and blobs, separated by lines "--"; a blob is stored under its own sha256. So
// that documents can name each other, "@N" in part K (N a digit above K) becomes "sha256:<hex of
// part N>" before the hash of part K is taken. Read with no ref and with ref "latest".
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "guest/image/oci_layout.hpp"
#include "tests/fuzz/sandbox.hpp"
#include "vmm/error.hpp"

using namespace ember;
using namespace ember::fuzz;
namespace fs = std::filesystem;

namespace {

Sandbox* sandbox;
constexpr std::string_view kSeparator = "\n--\n";

std::vector<std::string> split_parts(std::string_view text) {
  std::vector<std::string> parts;
  for (size_t end; (end = text.find(kSeparator)) != std::string_view::npos && parts.size() < 9;) {
    parts.emplace_back(text.substr(0, end));
    text.remove_prefix(end + kSeparator.size());
  }
  parts.emplace_back(text);
  return parts;
}

// Resolves "@N" references, last part first; returns each part's sha256 hex.
std::vector<std::string> link_parts(std::vector<std::string>& parts) {
  std::vector<std::string> digests(parts.size());
  for (size_t k = parts.size(); k-- > 0;) {
    std::string& part = parts[k];
    for (size_t at = 0; (at = part.find('@', at)) != std::string::npos; ++at) {
      if (at + 1 >= part.size() || part[at + 1] < '1' || part[at + 1] > '9') continue;
      const size_t target = static_cast<size_t>(part[at + 1] - '0');
      if (target <= k || target >= parts.size()) continue;
      const std::string digest = "sha256:" + digests[target];
      part.replace(at, 2, digest);
      at += digest.size() - 1;
    }
    digests[k] = image::sha256_text(part);
  }
  return digests;
}

void read_layout(const fs::path& layout, const std::string& index, const std::string& ref) {
  std::string expected;
  try {
    expected = image::manifest_digest_from_index(index, "index.json", ref);
  } catch (const Error&) {
  }
  try {
    const image::Image image = image::read_oci_layout(layout, ref);
    // What prepare_image() keys the cache by is the manifest it then converts.
    if (!expected.empty()) FUZZ_CHECK(image.manifest_digest == expected);
    for (const image::LayerBlob& layer : image.layers)
      FUZZ_CHECK(layer.path.parent_path() == layout / "blobs" / "sha256");
  } catch (const Error&) {
    // A corrupt or hostile layout: one line naming it.
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static Sandbox instance("oci-layout");
  sandbox = &instance;
  sandbox->add_canary(sandbox->root() / "canary");
  sandbox->guard_directory(sandbox->root());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> parts = split_parts(as_text({data, size}));
  const std::vector<std::string> digests = link_parts(parts);
  const fs::path layout = sandbox->root() / "layout";
  const fs::path blobs = layout / "blobs" / "sha256";
  fs::create_directories(blobs);
  std::ofstream(layout / "oci-layout") << R"({"imageLayoutVersion": "1.0.0"})";
  std::ofstream(layout / "index.json", std::ios::binary) << parts[0];
  for (size_t k = 1; k < parts.size(); ++k)
    std::ofstream(blobs / digests[k], std::ios::binary) << parts[k];
  sandbox->arm();
  read_layout(layout, parts[0], "");
  read_layout(layout, parts[0], "latest");
  sandbox->check();
  Sandbox::remove(layout);
  sandbox->arm();
  return 0;
}
