// `ember run IMAGE` for an IMAGE that is a tar file (guest/image/prepare.cpp): telling an
// oci-archive from a docker-archive by its members, reading index.json / manifest.json and the
// config from the tar, unpacking its blobs, following the docker manifest's paths, checking
// diff_ids, applying the layers and keeping /etc/passwd and /etc/group. mkfs.erofs is replaced by a
// stand-in that writes an empty disk, so a run costs one process start, not a file system.
//
// Nothing may escape the cache directory: the sandbox (sandbox.hpp) watches canaries beside it and
// in the working directory, which the target enters for the call so that relative link targets
// in the archive land next to a canary. A failed conversion leaves no temporary directory behind.
//
// Input: the archive, prepared as IMAGE and as IMAGE:fuzz:latest, each into an empty cache.
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "guest/image/prepare.hpp"
#include "tests/fuzz/sandbox.hpp"
#include "vmm/error.hpp"

using namespace ember;
using namespace ember::fuzz;
namespace fs = std::filesystem;

namespace {

Sandbox* sandbox;

// mkfs.erofs OPTIONS... IMAGE DIRECTORY: an empty IMAGE.
constexpr const char* kFakeMkfs =
    "#!/bin/sh\n"
    "for argument; do image=$directory; directory=$argument; done\n"
    ": > \"$image\"\n";

void install_fake_mkfs(const fs::path& bin) {
  fs::create_directory(bin);
  std::ofstream(bin / "mkfs.erofs") << kFakeMkfs;
  fs::permissions(bin / "mkfs.erofs", fs::perms::owner_all);
  const char* path = std::getenv("PATH");
  ::setenv("PATH", (bin.string() + ":" + (path ? path : "/usr/bin:/bin")).c_str(), 1);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static Sandbox instance("image-archive");
  sandbox = &instance;
  install_fake_mkfs(sandbox->root() / "bin");
  fs::create_directory(sandbox->root() / "work");
  fs::create_directory(sandbox->root() / "cache");
  sandbox->add_canary(sandbox->root() / "canary");
  sandbox->add_canary(sandbox->root() / "work" / "canary");
  sandbox->guard_directory(sandbox->root());
  sandbox->guard_directory(sandbox->root() / "work");
  sandbox->guard_directory("/");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path archive = sandbox->root() / "work" / "image.tar";
  const fs::path cache = sandbox->root() / "cache";
  std::ofstream(archive, std::ios::binary).write(reinterpret_cast<const char*>(data), size);
  const int saved_directory = ::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  FUZZ_CHECK(saved_directory >= 0 && ::chdir((sandbox->root() / "work").c_str()) == 0);
  sandbox->arm();
  // As IMAGE and as IMAGE:REF (an index's ref name, a docker-archive's RepoTags), each time into
  // an empty cache.
  for (const std::string& reference : {archive.string(), archive.string() + ":fuzz:latest"}) {
    try {
      const image::PreparedImage prepared = image::prepare_image(reference, cache);
      FUZZ_CHECK(prepared.converted && fs::is_regular_file(prepared.disk));
      FUZZ_CHECK(prepared.disk.parent_path().parent_path() == cache / "images");
    } catch (const Error&) {
      // A corrupt or hostile archive: one line naming it.
    }
    // Whatever happened, no conversion in progress is left behind.
    std::error_code missing;
    for (const auto& entry : fs::directory_iterator(cache / "images", missing))
      FUZZ_CHECK(!entry.path().filename().string().starts_with(".tmp-"));
    Sandbox::check_no_outside_links(cache);
    Sandbox::remove(cache / "images");
  }
  sandbox->check();
  FUZZ_CHECK(::fchdir(saved_directory) == 0);
  ::close(saved_directory);
  fs::remove(archive);
  sandbox->arm();
  return 0;
}
