// The layer unpacker (guest/image/layers.cpp): a hostile image layer applied to a root directory,
// with paths, '..', absolute and relative symlinks, hardlinks, whiteouts, opaque markers, device
// nodes and compression all in the fuzzer's hands. Nothing may be created, changed, opened or
// linked outside the root: the sandbox (sandbox.hpp) keeps canaries next to the root and one level
// up, guards those directories and "/", and no file in the root may be a hardlink to one outside.
//
// Input: the layer archive (tar, optionally gzip or zstd), applied on top of a root that holds a
// lower layer's /etc/passwd and /lower/file (so whiteouts have something to remove).
#include <filesystem>
#include <fstream>

#include "guest/image/layers.hpp"
#include "tests/fuzz/sandbox.hpp"
#include "vmm/error.hpp"

using namespace ember;
using namespace ember::fuzz;
namespace fs = std::filesystem;

namespace {

Sandbox* sandbox;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static Sandbox instance("layers");
  sandbox = &instance;
  const fs::path inner = sandbox->root() / "inner";
  fs::create_directory(inner);
  sandbox->add_canary(sandbox->root() / "canary");
  sandbox->add_canary(inner / "canary");
  sandbox->guard_directory(sandbox->root());
  sandbox->guard_directory(inner);
  sandbox->guard_directory("/");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path inner = sandbox->root() / "inner";
  const fs::path layer = inner / "root.tar";
  const fs::path root = inner / "root";
  std::ofstream(layer, std::ios::binary).write(reinterpret_cast<const char*>(data), size);
  fs::create_directories(root / "etc");
  fs::create_directories(root / "lower");
  std::ofstream(root / "etc" / "passwd") << "root:x:0:0:root:/root:/bin/sh\n";
  std::ofstream(root / "lower" / "file") << "lower\n";
  sandbox->arm();
  try {
    image::apply_layer(layer, root, "fuzz-layer");
  } catch (const Error&) {
    // A hostile or corrupt layer: one line naming it.
  }
  sandbox->check();
  Sandbox::check_no_outside_links(root);
  Sandbox::remove(root);
  fs::remove(layer);
  sandbox->arm();
  return 0;
}
