// From what the user names as IMAGE to a disk the guest mounts: the image's input form is detected
// by content, its layers are applied into a temporary root filesystem, and that becomes an erofs
// image (mkfs.erofs, no loop mounts, no root needed) in the cache, keyed by the image's digest, so
// a second run of the same image converts nothing.
//
// Inputs (IMAGE is a path; the kind is told by content, never by name):
//   - an OCI image layout directory (oci-layout + index.json + blobs/sha256/); PATH:REF or PATH@REF
//     picks the index entry whose org.opencontainers.image.ref.name (or digest, sha256:...) is REF
//   - an oci-archive: a tar of an OCI image layout
//   - a docker-archive: what `docker save` / `podman save` / `skopeo copy docker-archive:` write
//     (manifest.json naming a config and layer tars; legacy <id>/layer.tar or blobs/sha256/ form);
//     ARCHIVE:REPO:TAG picks one image by its RepoTags; layers are checked against the config's
//     rootfs.diff_ids (a compressed layer is decompressed once more for that)
//   - a plain directory without oci-layout: a root filesystem as it is (empty config)
// Digests (the cache key): the manifest's for OCI, the config's (docker's image ID) for
// docker-archive; for a plain directory a sha256 over its sorted listing of path, mode, owner,
// size, mtime and symlink target (a changed file changes the key; contents are not read, so a
// rewrite that keeps size and mtime goes unnoticed). A cached run reads only index.json or
// manifest.json + the config (from an archive: its tar headers, skipping the blobs); a conversion
// unpacks an archive's blobs into the temporary directory first, then applies the layers.
//
// Ownership: run as root, the layers' owners are kept. Otherwise extraction cannot chown and
// every file of the disk belongs to root (mkfs.erofs --all-root); modes are kept either way.
//
// Cache: <cache>/images/<digest hex>/{rootfs.erofs, config.json, passwd, group}, written into a
// temporary directory beside it and renamed into place, so a concurrent ember never sees half an
// entry.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "guest/image/oci_layout.hpp"

namespace ember::image {

struct PreparedImage {
  std::string reference;       // as the user gave it
  std::string digest;          // "sha256:<hex>"
  std::filesystem::path disk;  // the erofs image in the cache (attach read-only)
  std::string fstype;          // "erofs"
  ImageConfig config;
  bool converted = false;               // false: the cache already had it
  std::filesystem::path passwd, group;  // cached copies of the rootfs's files; may not exist
};

// $EMBER_CACHE, else $HOME/.cache/ember.
std::filesystem::path default_cache_dir();

// Prepares (or finds in the cache) the disk for `reference`. Progress lines go to stderr while
// converting when stderr is a terminal, the layers exceed 64 MiB, or EMBER_PROGRESS=1.
// Throws a one-line Error for a missing path, an unrecognised or corrupt input, a hostile layer.
PreparedImage prepare_image(const std::string& reference, const std::filesystem::path& cache_dir);

struct ResolvedUser {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> groups;  // gid first, then the groups that list the user
  std::string home = "/";
};

// docker's -u forms: "" (the image's User, else root), "name", "uid", "name:group", "uid:gid",
// "name:gid", "uid:group". Names are looked up in the image's /etc/passwd and /etc/group. A
// numeric uid unknown to the image is allowed (gid 0 unless given), as in docker.
// Throws Error("unknown user 'x' in image ...") and the like for a group.
ResolvedUser resolve_user(const std::string& user, const PreparedImage& image);

// The same from passwd/group texts (for tests); "" is root here.
ResolvedUser resolve_user(const std::string& user, const std::string& passwd_text,
                          const std::string& group_text, const std::string& image_name);

}  // namespace ember::image
