// The initrd of `ember run` (layout in guest/protocol/protocol.hpp): /init and /ember-init (the
// same static binary), /ember/modules.load and the kernel modules ember-init loads, in load order.
// Built once per content and kept in <cache>/initrd/<sha256>.cpio.
#pragma once

#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ember::run {

// What ember-init needs of a modular kernel (Debian's cloud kernel): the virtio transport and
// devices, the image's and the writable layer's file systems, virtio-fs.
inline const std::vector<std::string> kGuestModules = {"virtio_pci", "virtio_blk", "virtio_console",
                                                       "virtio_net", "erofs",      "overlay",
                                                       "ext4",       "fuse",       "virtiofs"};

// Paths relative to `release_dir` (lib/modules/<release>) of `wanted` and everything they depend
// on, from its modules.dep, dependencies first, each once. Names match with '-' and '_' alike;
// a wanted module missing from modules.dep is left out (built in, or absent: modules.builtin says
// which; ember-init finds out). One-line Error if modules.dep cannot be read.
std::vector<std::string> modules_in_load_order(const std::filesystem::path& release_dir,
                                               std::span<const std::string> wanted);

// The initrd as bytes; `modules` as returned above.
std::vector<uint8_t> build_initrd(std::span<const uint8_t> ember_init,
                                  const std::optional<std::filesystem::path>& release_dir,
                                  std::span<const std::string> modules);

// The cached initrd for this ember-init and modules directory, built if not there yet.
std::filesystem::path cached_initrd(const std::filesystem::path& ember_init,
                                    const std::optional<std::filesystem::path>& release_dir,
                                    const std::filesystem::path& cache_dir);

// ember-init: $EMBER_INIT, else guest/init/ember-init under the directory of the running ember
// (its build directory), else ../libexec/ember/ember-init beside it (an installed ember).
std::filesystem::path find_ember_init();

}  // namespace ember::run
