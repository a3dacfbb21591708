#include "guest/image/prepare.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "guest/image/layers.hpp"
#include "guest/image/text.hpp"
#include "vmm/error.hpp"
#include "vmm/process.hpp"

namespace ember::image {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kMaxMetadataBytes = 4 << 20;       // index.json, manifest.json, a config
constexpr uint64_t kProgressThreshold = 64ull << 20;  // layers larger than this show progress

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) throw system_error("cannot write " + path.string());
}

// A relative path from an archive's manifest, checked to stay inside `root`.
fs::path inside(const fs::path& root, const std::string& relative, const std::string& name) {
  fs::path path(relative);
  bool escapes = relative.empty() || path.is_absolute();
  for (const auto& part : path)
    if (part == "..") escapes = true;
  if (escapes) throw Error(name + ": path '" + one_line(relative) + "' leaves the archive");
  return root / path.lexically_normal();
}

std::string normalize_member(std::string name) {
  while (name.starts_with("./")) name.erase(0, 2);
  return name;
}

// libarchive's message for the last failure, on one line. It may have none (a compressed layer
// that holds no data at all), and std::string from a null pointer throws logic_error, not an Error.
std::string archive_message(archive* handle) {
  const char* message = archive_error_string(handle);
  return message ? one_line(message) : "unknown error";
}

struct ArchiveReader {
  std::unique_ptr<archive, decltype(&archive_read_free)> handle{archive_read_new(),
                                                                archive_read_free};

  ArchiveReader(const fs::path& path, const std::string& name) {
    if (!handle) throw Error(name + ": cannot allocate a tar reader");
    archive_read_support_format_tar(handle.get());
    archive_read_support_filter_all(handle.get());
    if (archive_read_open_filename(handle.get(), path.c_str(), 1 << 16) != ARCHIVE_OK)
      throw Error(name + ": not a tar archive (" + archive_message(handle.get()) + ")");
  }
};

// The contents of the named members of a tar (the small JSON files that say what it is).
std::map<std::string, std::string> read_tar_members(const fs::path& path,
                                                    const std::set<std::string>& names,
                                                    const std::string& name) {
  ArchiveReader reader(path, name);
  std::map<std::string, std::string> found;
  archive_entry* entry = nullptr;
  int status;
  while ((status = archive_read_next_header(reader.handle.get(), &entry)) == ARCHIVE_OK) {
    const std::string member = normalize_member(archive_entry_pathname(entry));
    if (!names.contains(member) || archive_entry_filetype(entry) != AE_IFREG) continue;
    if (archive_entry_size(entry) > static_cast<la_int64_t>(kMaxMetadataBytes))
      throw Error(name + ": " + member + " is larger than " +
                  std::to_string(kMaxMetadataBytes >> 20) + " MiB");
    std::string data(static_cast<size_t>(archive_entry_size(entry)), '\0');
    if (archive_read_data(reader.handle.get(), data.data(), data.size()) !=
        static_cast<la_ssize_t>(data.size()))
      throw Error(name + ": corrupt tar archive (" + archive_message(reader.handle.get()) + ")");
    found[member] = std::move(data);
  }
  if (status != ARCHIVE_EOF)
    throw Error(name + ": corrupt tar archive (" + archive_message(reader.handle.get()) + ")");
  return found;
}

// Unpacks an oci-archive or docker-archive (blobs and JSON only: regular files and directories;
// anything else is skipped); member names with `..` or a leading '/' never leave `target`.
void extract_archive(const fs::path& path, const fs::path& target, const std::string& name) {
  ArchiveReader reader(path, name);
  std::unique_ptr<archive, decltype(&archive_write_free)> writer(archive_write_disk_new(),
                                                                 archive_write_free);
  // Destinations are absolute (target/member, checked by inside()); only files and directories are
  // written, so no symlink created here can redirect a later entry.
  archive_write_disk_set_options(writer.get(), ARCHIVE_EXTRACT_SECURE_NODOTDOT);
  archive_entry* entry = nullptr;
  int status;
  while ((status = archive_read_next_header(reader.handle.get(), &entry)) == ARCHIVE_OK) {
    const auto type = archive_entry_filetype(entry);
    if (type != AE_IFREG && type != AE_IFDIR) continue;
    const std::string member = normalize_member(archive_entry_pathname(entry));
    if (member.empty()) continue;
    const fs::path destination = inside(target, member, name);
    archive_entry_set_pathname(entry, destination.c_str());
    archive_entry_set_perm(entry, type == AE_IFDIR ? 0755 : 0644);
    if (archive_write_header(writer.get(), entry) != ARCHIVE_OK)
      throw Error(name + ": cannot unpack " + member + ": " + archive_message(writer.get()));
    const void* block;
    size_t size;
    la_int64_t offset;
    int data_status;
    while ((data_status = archive_read_data_block(reader.handle.get(), &block, &size, &offset)) ==
           ARCHIVE_OK)
      if (archive_write_data_block(writer.get(), block, size, offset) != ARCHIVE_OK)
        throw Error(name + ": cannot unpack " + member + ": " + archive_message(writer.get()));
    if (data_status != ARCHIVE_EOF)
      throw Error(name + ": corrupt tar archive (" + archive_message(reader.handle.get()) + ")");
    archive_write_finish_entry(writer.get());
  }
  if (status != ARCHIVE_EOF)
    throw Error(name + ": corrupt tar archive (" + archive_message(reader.handle.get()) + ")");
}

// docker-archive's manifest.json: [{"Config": "...", "RepoTags": [...], "Layers": [...]}].
struct DockerManifest {
  std::string config;
  std::vector<std::string> layers;
};

// docker's reference normalisation, enough to compare RepoTags: "busybox" and
// "docker.io/library/busybox:latest" name the same image.
std::string normalize_tag(std::string tag) {
  const size_t slash = tag.rfind('/');
  if (tag.find('@') == std::string::npos &&
      tag.find(':', slash == std::string::npos ? 0 : slash) == std::string::npos)
    tag += ":latest";
  const size_t first_slash = tag.find('/');
  const std::string domain = first_slash == std::string::npos ? "" : tag.substr(0, first_slash);
  if (first_slash == std::string::npos) return "docker.io/library/" + tag;
  if (domain.find_first_of(".:") == std::string::npos && domain != "localhost")
    return "docker.io/" + tag;
  return tag;
}

// The image of manifest.json to use: the one whose RepoTags name `ref`, else the only one.
const json& choose_docker_image(const json& document, const std::string& name,
                                const std::string& ref) {
  if (!document.is_array() || document.empty())
    throw Error(name + ": manifest.json lists no image");
  if (ref.empty()) {
    if (document.size() > 1)
      throw Error(name + ": manifest.json lists " + std::to_string(document.size()) +
                  " images; name one as ARCHIVE:REPO:TAG");
    return document.front();
  }
  std::string known;
  for (const json& image : document) {
    if (!image.is_object() || !image.contains("RepoTags") || !image["RepoTags"].is_array())
      continue;
    for (const json& tag : image["RepoTags"]) {
      if (!tag.is_string()) continue;
      if (normalize_tag(tag.get<std::string>()) == normalize_tag(ref)) return image;
      known += (known.empty() ? "" : ", ") + tag.get<std::string>();
    }
  }
  throw Error(name + ": no image tagged '" + one_line(ref) + "' in manifest.json (" +
              (known.empty() ? std::string("it has no tags") : "it has " + one_line(known)) + ")");
}

DockerManifest parse_docker_manifest(const std::string& text, const std::string& name,
                                     const std::string& ref) {
  try {
    const json document = json::parse(text);
    const json& image = choose_docker_image(document, name, ref);
    DockerManifest manifest;
    manifest.config = image.at("Config").get<std::string>();
    for (const json& layer : image.at("Layers"))
      manifest.layers.push_back(layer.get<std::string>());
    return manifest;
  } catch (const json::exception& error) {
    throw Error(one_line(name + ": corrupt manifest.json: " + error.what()));
  }
}

bool is_compressed(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char magic[4] = {};
  in.read(reinterpret_cast<char*>(magic), sizeof(magic));
  return (magic[0] == 0x1f && magic[1] == 0x8b) ||                                        // gzip
         (magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd);  // zstd
}

// The sha256 of a compressed layer's tar stream (what a diff_id names), decompressed by libarchive.
std::string sha256_uncompressed(const fs::path& path, const std::string& name) {
  std::unique_ptr<archive, decltype(&archive_read_free)> reader(archive_read_new(),
                                                                archive_read_free);
  archive_read_support_filter_all(reader.get());
  archive_read_support_format_raw(reader.get());
  archive_entry* entry = nullptr;
  if (archive_read_open_filename(reader.get(), path.c_str(), 1 << 16) != ARCHIVE_OK ||
      archive_read_next_header(reader.get(), &entry) != ARCHIVE_OK)
    throw Error(name + ": corrupt compressed layer (" + archive_message(reader.get()) + ")");
  Sha256 sha256;
  const void* block;
  size_t size;
  la_int64_t offset;
  int status;
  while ((status = archive_read_data_block(reader.get(), &block, &size, &offset)) == ARCHIVE_OK)
    sha256.update(block, size);
  if (status != ARCHIVE_EOF)
    throw Error(name + ": corrupt compressed layer (" + archive_message(reader.get()) + ")");
  return sha256.hex();
}

// A plain directory's key: sorted (path, mode, uid, gid, size, mtime, link target) lines.
std::string tree_digest(const fs::path& root) {
  std::vector<std::string> lines;
  std::error_code error;
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::none, error);
       !error && it != fs::recursive_directory_iterator(); it.increment(error)) {
    struct stat info {};
    if (::lstat(it->path().c_str(), &info) != 0) continue;
    std::string line = fs::relative(it->path(), root).string() + '\0' +
                       std::to_string(info.st_mode) + ' ' + std::to_string(info.st_uid) + ' ' +
                       std::to_string(info.st_gid) + ' ' + std::to_string(info.st_size) + ' ' +
                       std::to_string(info.st_mtim.tv_sec) + '.' +
                       std::to_string(info.st_mtim.tv_nsec);
    if (S_ISLNK(info.st_mode)) line += ' ' + fs::read_symlink(it->path(), error).string();
    lines.push_back(std::move(line));
  }
  if (error) throw Error("image " + root.string() + ": cannot list: " + error.message());
  std::sort(lines.begin(), lines.end());
  std::string listing;
  for (const auto& line : lines) listing += line + '\n';
  return "sha256:" + sha256_text(listing);
}

json config_to_json(const ImageConfig& config) {
  return json{{"Entrypoint", config.entrypoint},
              {"Cmd", config.cmd},
              {"Env", config.env},
              {"WorkingDir", config.working_dir},
              {"User", config.user},
              {"ExposedPorts", config.exposed_ports}};
}

ImageConfig config_from_json(const std::string& text, const std::string& name) {
  try {
    const json document = json::parse(text);
    ImageConfig config;
    config.entrypoint = document.at("Entrypoint").get<std::vector<std::string>>();
    config.cmd = document.at("Cmd").get<std::vector<std::string>>();
    config.env = document.at("Env").get<std::vector<std::string>>();
    config.working_dir = document.at("WorkingDir").get<std::string>();
    config.user = document.at("User").get<std::string>();
    config.exposed_ports = document.at("ExposedPorts").get<std::vector<std::string>>();
    return config;
  } catch (const json::exception& error) {
    throw Error(one_line(name + ": corrupt cache entry: " + error.what()));
  }
}

class Progress {
 public:
  Progress(std::string name, uint64_t layer_bytes)
      : name_(std::move(name)),
        enabled_(
            ::isatty(STDERR_FILENO) || layer_bytes > kProgressThreshold ||
            (std::getenv("EMBER_PROGRESS") && std::string(std::getenv("EMBER_PROGRESS")) == "1")) {}

  bool enabled() const { return enabled_; }

  void line(const std::string& text) const {
    if (enabled_) std::fprintf(stderr, "ember: converting %s: %s\n", name_.c_str(), text.c_str());
  }

  void building(const fs::path& rootfs) const {
    if (!enabled_) return;
    uint64_t files = 0;
    std::error_code error;
    for (auto it = fs::recursive_directory_iterator(rootfs, error);
         !error && it != fs::recursive_directory_iterator(); it.increment(error))
      ++files;
    std::fprintf(stderr, "ember: building erofs image (%ju %s)\n", static_cast<uintmax_t>(files),
                 files == 1 ? "file" : "files");
  }

 private:
  std::string name_;
  bool enabled_;
};

std::string mebibytes(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}

// Copies <rootfs>/etc/<file> into the entry when it is a regular file (a symlink there could name
// anything on the host).
void keep_etc_file(const fs::path& rootfs, const char* file, const fs::path& destination) {
  const fs::path source = rootfs / "etc" / file;
  std::error_code error;
  if (fs::is_symlink(rootfs / "etc", error) ||
      !fs::is_regular_file(fs::symlink_status(source, error)))
    return;
  if (fs::file_size(source, error) > kMaxMetadataBytes) return;
  fs::copy_file(source, destination, fs::copy_options::overwrite_existing, error);
}

// What an input resolves to once it is a directory: layers to apply (none for a root filesystem),
// or a ready root filesystem.
struct Source {
  ImageConfig config;
  std::vector<std::pair<fs::path, std::string>> layers;  // archive, name
  fs::path rootfs;                                       // set for a plain directory
  std::string digest;                                    // known only after a full read
};

Source read_docker_directory(const fs::path& directory, const std::string& name,
                             const std::string& ref) {
  const DockerManifest manifest =
      parse_docker_manifest(read_text(directory / "manifest.json"), name, ref);
  const fs::path config_path = inside(directory, manifest.config, name);
  Source source;
  const std::string config_text = read_text(config_path);
  source.config = parse_image_config(config_text, name + " config");
  source.digest = "sha256:" + sha256_file(config_path);
  std::vector<std::string> diff_ids;
  try {
    const json config = json::parse(config_text);
    if (config.contains("rootfs") && config["rootfs"].contains("diff_ids"))
      diff_ids = config["rootfs"]["diff_ids"].get<std::vector<std::string>>();
  } catch (const json::exception& error) {
    throw Error(one_line(name + ": corrupt config: " + error.what()));
  }
  if (!diff_ids.empty() && diff_ids.size() != manifest.layers.size())
    throw Error(name + ": the config lists " + std::to_string(diff_ids.size()) +
                " layers, manifest.json " + std::to_string(manifest.layers.size()));
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const fs::path layer = inside(directory, manifest.layers[i], name);
    std::error_code error;
    if (!fs::is_regular_file(layer, error))
      throw Error(name + ": missing layer " + manifest.layers[i]);
    // diff_ids are digests of the uncompressed tar, which is what `docker save` writes; a
    // compressed layer is decompressed once more to check it.
    if (!diff_ids.empty() &&
        "sha256:" + (is_compressed(layer)
                         ? sha256_uncompressed(layer, name + " layer " + manifest.layers[i])
                         : sha256_file(layer)) !=
            diff_ids[i])
      throw Error(name + ": layer " + manifest.layers[i] +
                  " is corrupt (sha256 does not match the config's diff_id)");
    source.layers.emplace_back(layer, manifest.layers[i]);
  }
  return source;
}

Source read_oci_directory(const fs::path& directory, const std::string& ref) {
  const Image image = read_oci_layout(directory, ref);
  Source source;
  source.config = image.config;
  source.digest = image.manifest_digest;
  for (const auto& layer : image.layers) source.layers.emplace_back(layer.path, layer.digest);
  return source;
}

// IMAGE as the user gave it: a path, optionally followed by ":REF" or "@REF" naming one image of
// an OCI index (org.opencontainers.image.ref.name) or of a docker-archive (RepoTags). A path that
// exists as given is taken whole (paths may contain ':'); otherwise the longest existing prefix
// that ends before a ':' or '@'.
struct Reference {
  fs::path path;
  std::string ref;
};

Reference split_reference(const std::string& reference) {
  std::error_code error;
  if (fs::exists(reference, error)) return {reference, ""};
  for (size_t at = reference.size() - 1; at > 0 && at != std::string::npos; --at)
    if ((reference[at] == ':' || reference[at] == '@') && at + 1 < reference.size() &&
        fs::exists(reference.substr(0, at), error))
      return {reference.substr(0, at), reference.substr(at + 1)};
  return {reference, ""};
}

// A conversion that was killed leaves its temporary directory behind; one untouched for a day is
// no other ember's work in progress.
void remove_stale_temporaries(const fs::path& images) {
  std::error_code error;
  const auto day_ago = fs::file_time_type::clock::now() - std::chrono::hours(24);
  for (auto it = fs::directory_iterator(images, error); !error && it != fs::directory_iterator();
       it.increment(error)) {
    std::error_code ignored;
    if (it->path().filename().string().starts_with(".tmp-") &&
        fs::last_write_time(it->path(), ignored) < day_ago)
      fs::remove_all(it->path(), ignored);
  }
}

enum class Form { kOciLayout, kDockerDirectory, kRootfs, kOciArchive, kDockerArchive };

}  // namespace

fs::path default_cache_dir() {
  if (const char* cache = std::getenv("EMBER_CACHE"); cache && *cache) return cache;
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : "/root") / ".cache" / "ember";
}

PreparedImage prepare_image(const std::string& reference, const fs::path& cache_dir) {
  const std::string name = "image " + reference;
  const auto [path, ref] = split_reference(reference);
  std::error_code error;
  const auto status = fs::status(path, error);
  if (!fs::exists(status)) throw Error(name + ": no such file or directory");

  // What it is, and its digest, from the small files alone.
  Form form;
  std::string digest;
  if (fs::is_directory(status)) {
    if (fs::exists(path / "oci-layout", error)) {
      form = Form::kOciLayout;
      digest = manifest_digest_from_index(read_text(path / "index.json"),
                                          (path / "index.json").string(), ref);
    } else if (fs::is_regular_file(path / "manifest.json", error) &&
               !fs::exists(path / "etc", error)) {
      form = Form::kDockerDirectory;
      const DockerManifest manifest =
          parse_docker_manifest(read_text(path / "manifest.json"), name, ref);
      digest = "sha256:" + sha256_file(inside(path, manifest.config, name));
    } else {
      if (!ref.empty())
        throw Error(name + ": " + path.string() + " is a root directory; it has no images to name");
      form = Form::kRootfs;
      digest = tree_digest(path);
    }
  } else if (fs::is_regular_file(status)) {
    auto members = read_tar_members(path, {"oci-layout", "index.json", "manifest.json"}, name);
    if (members.contains("oci-layout") && members.contains("index.json")) {
      form = Form::kOciArchive;
      digest = manifest_digest_from_index(members["index.json"], name + " index.json", ref);
    } else if (members.contains("manifest.json")) {
      form = Form::kDockerArchive;
      const DockerManifest manifest = parse_docker_manifest(members["manifest.json"], name, ref);
      const std::string config_member = inside("", manifest.config, name).string();
      auto config = read_tar_members(path, {config_member}, name);
      if (!config.contains(config_member)) throw Error(name + ": missing config " + config_member);
      digest = "sha256:" + sha256_text(config[config_member]);
    } else {
      throw Error(name + ": a tar archive that is neither an oci-archive nor a docker-archive");
    }
  } else {
    throw Error(name + ": not a directory or a tar archive");
  }

  const fs::path images = cache_dir / "images";
  auto cached = [&](const std::string& known_digest) -> std::optional<PreparedImage> {
    if (known_digest.empty()) return std::nullopt;
    const fs::path entry = images / digest_hex(known_digest, name);
    std::error_code missing;
    if (!fs::is_regular_file(entry / "rootfs.erofs", missing) ||
        !fs::is_regular_file(entry / "config.json", missing))
      return std::nullopt;
    PreparedImage image;
    image.reference = reference;
    image.digest = known_digest;
    image.disk = entry / "rootfs.erofs";
    image.fstype = "erofs";
    image.config = config_from_json(read_text(entry / "config.json"), entry.string());
    image.passwd = entry / "passwd";
    image.group = entry / "group";
    return image;
  };
  if (auto hit = cached(digest)) return *hit;

  fs::create_directories(images, error);
  if (error) throw Error("image cache " + images.string() + ": " + error.message());
  remove_stale_temporaries(images);
  char temporary_name[] = "XXXXXX";
  const std::string temporary_template = (images / ".tmp-").string() + temporary_name;
  std::vector<char> buffer(temporary_template.begin(), temporary_template.end());
  buffer.push_back('\0');
  if (!::mkdtemp(buffer.data()))
    throw system_error("image cache: cannot create a directory in " + images.string());
  const fs::path temporary(buffer.data());
  struct Cleanup {
    fs::path path;
    ~Cleanup() {
      std::error_code ignored;
      if (!path.empty()) fs::remove_all(path, ignored);
    }
  } cleanup{temporary};

  Source source;
  const fs::path unpacked = temporary / "archive";
  switch (form) {
    case Form::kOciLayout:
      source = read_oci_directory(path, ref);
      break;
    case Form::kDockerDirectory:
      source = read_docker_directory(path, name, ref);
      break;
    case Form::kRootfs:
      source.rootfs = path;
      source.digest = digest;
      break;
    case Form::kOciArchive:
      extract_archive(path, unpacked, name);
      source = read_oci_directory(unpacked, ref);
      break;
    case Form::kDockerArchive:
      extract_archive(path, unpacked, name);
      source = read_docker_directory(unpacked, name, ref);
      break;
  }
  if (source.digest != digest) {  // a nested index, now followed; or the archive changed under us
    digest = source.digest;
    if (auto hit = cached(digest)) return *hit;
  }

  uint64_t layer_bytes = 0;
  for (const auto& [layer, unused] : source.layers) layer_bytes += fs::file_size(layer, error);
  const Progress progress(reference, layer_bytes);
  fs::path rootfs = source.rootfs;
  if (rootfs.empty()) {
    rootfs = temporary / "rootfs";
    fs::create_directory(rootfs);
    for (size_t i = 0; i < source.layers.size(); ++i) {
      const auto& [layer, layer_name] = source.layers[i];
      progress.line("layer " + std::to_string(i + 1) + "/" + std::to_string(source.layers.size()) +
                    " (" + mebibytes(fs::file_size(layer, error)) + ")");
      apply_layer(layer, rootfs, layer_name);
    }
  }

  progress.building(rootfs);
  std::vector<std::string> mkfs = {"mkfs.erofs", "--quiet", "-zlz4hc"};
  // Without root the extracted files belong to the caller: the image's files become root's.
  if (::geteuid() != 0) mkfs.push_back("--all-root");
  mkfs.push_back((temporary / "rootfs.erofs").string());
  mkfs.push_back(rootfs.string());
  std::string diagnostics;
  if (run_quietly(mkfs, diagnostics) != 0)
    throw Error(name + ": mkfs.erofs failed" +
                (diagnostics.empty() ? "" : ": " + one_line(diagnostics)));
  write_text(temporary / "config.json", config_to_json(source.config).dump());
  keep_etc_file(rootfs, "passwd", temporary / "passwd");
  keep_etc_file(rootfs, "group", temporary / "group");
  fs::remove_all(temporary / "rootfs", error);
  fs::remove_all(unpacked, error);

  const fs::path entry = images / digest_hex(digest, name);
  fs::rename(temporary, entry, error);
  if (error) {
    // Another ember finished the same image first: use its entry.
    if (auto hit = cached(digest)) return *hit;
    throw Error("image cache: cannot create " + entry.string() + ": " + error.message());
  }
  cleanup.path.clear();
  progress.line("done (" + mebibytes(fs::file_size(entry / "rootfs.erofs", error)) + " erofs)");
  auto result = cached(digest);
  if (!result) throw Error("image cache: " + entry.string() + " vanished");
  result->converted = true;
  return *result;
}

}  // namespace ember::image
