// Applying OCI image layers (tar, optionally gzip/zstd) into a root filesystem directory.
//
// Every path is resolved inside the target with openat2(RESOLVE_IN_ROOT): a symlink in the tree
// (`link -> /`, `link -> ../..`) resolves as it would inside the container, never to the host.
// Entry names and hardlink targets with `..` components are rejected; a leading '/' is stripped.
// The last component is never followed: a symlink there is replaced, not written through.
// OCI whiteouts (image-spec layer.md): `.wh.NAME` removes NAME from lower layers;
// `.wh..wh..opq` empties its directory of lower-layer contents.
#pragma once

#include <filesystem>
#include <span>
#include <string>

namespace ember::image {

// Applies one layer archive on top of `target` (an existing directory). `name` (a digest, say)
// names the layer in the one-line Errors thrown for a corrupt archive or a hostile entry.
void apply_layer(const std::filesystem::path& archive, const std::filesystem::path& target,
                 const std::string& name);

// Applies layers lowest first, each named by its file name.
void apply_layers(std::span<const std::filesystem::path> archives, const std::filesystem::path& target);

}  // namespace ember::image
