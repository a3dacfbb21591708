#include "guest/image/layers.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "tests/unit/image_test_support.hpp"
#include "vmm/error.hpp"

namespace ember::image {
namespace {

namespace fs = std::filesystem;
using namespace ember::image::testing;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

// work/root is the target; work/canary next to it must stay empty whatever a layer does.
class ImageLayers : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(root());
    fs::create_directories(canary());
    fs::create_directories(temp_.path() / "layers");
  }

  fs::path root() const { return temp_.path() / "work" / "root"; }
  fs::path canary() const { return temp_.path() / "work" / "canary"; }

  // Writes and applies one layer; returns its path.
  fs::path apply(const std::string& name, const std::vector<TarEntry>& entries) {
    fs::path layer = temp_.path() / "layers" / name;
    write_layer(layer, entries);
    apply_layer(layer, root(), name);
    return layer;
  }

  std::string apply_error(const std::string& name, const std::vector<TarEntry>& entries) {
    try {
      apply(name, entries);
    } catch (const Error& error) {
      return error.what();
    }
    return "no error";
  }

  std::vector<std::string> names(const fs::path& directory) const {
    std::vector<std::string> result;
    for (const auto& entry : fs::directory_iterator(directory)) result.push_back(entry.path().filename());
    return result;
  }

  void expect_nothing_escaped() const {
    EXPECT_TRUE(fs::is_empty(canary()));
    EXPECT_THAT(names(temp_.path() / "work"), UnorderedElementsAre("root", "canary"));
  }

  TempDir temp_;
};

TEST_F(ImageLayers, CreatesFilesDirectoriesLinksAndModes) {
  apply("base", {directory("bin", 0750), file("bin/tool", "#!/bin/sh\n", 04755),
                 symlink("bin/alias", "tool"), hardlink("bin/same", "bin/tool"),
                 file("etc/deep/config", "x=1")});
  EXPECT_EQ(read_text(root() / "bin/tool"), "#!/bin/sh\n");
  EXPECT_EQ(fs::status(root() / "bin").permissions(), fs::perms(0750));
  struct stat tool {}, same {};
  ASSERT_EQ(::stat((root() / "bin/tool").c_str(), &tool), 0);
  ASSERT_EQ(::stat((root() / "bin/same").c_str(), &same), 0);
  EXPECT_EQ(tool.st_mode & 07777, 04755u);
  EXPECT_EQ(tool.st_ino, same.st_ino);
  EXPECT_EQ(fs::read_symlink(root() / "bin/alias"), "tool");
  EXPECT_EQ(read_text(root() / "etc/deep/config"), "x=1");
}

TEST_F(ImageLayers, UpperLayerReplacesLowerEntries) {
  apply("lower", {file("a", "old"), directory("d"), file("d/inner", "x"), symlink("l", "../canary/x")});
  apply("upper", {file("a", "new"), file("d", "now a file"), file("l", "a file, not through the link")});
  EXPECT_EQ(read_text(root() / "a"), "new");
  EXPECT_EQ(read_text(root() / "d"), "now a file");
  EXPECT_FALSE(fs::is_symlink(root() / "l"));
  EXPECT_EQ(read_text(root() / "l"), "a file, not through the link");
  expect_nothing_escaped();
}

TEST_F(ImageLayers, WhiteoutDeletesALowerFileAndDirectory) {
  apply("lower", {file("etc/keep", "k"), file("etc/gone", "g"), file("var/cache/big", "b")});
  apply("upper", {file("etc/new", "n"), file("etc/.wh.gone", ""), file("var/.wh.cache", "")});
  EXPECT_THAT(names(root() / "etc"), UnorderedElementsAre("keep", "new"));
  EXPECT_THAT(names(root() / "var"), UnorderedElementsAre());
}

TEST_F(ImageLayers, OpaqueDirectoryHidesLowerContentsButKeepsItsOwn) {
  apply("lower", {file("app/old1", "1"), file("app/sub/old2", "2"), file("other", "o")});
  // The layer's own entry comes before the marker: pass order must not matter.
  apply("upper", {file("app/fresh", "f"), file("app/.wh..wh..opq", "")});
  EXPECT_THAT(names(root() / "app"), UnorderedElementsAre("fresh"));
  EXPECT_TRUE(fs::exists(root() / "other"));
}

TEST_F(ImageLayers, WhiteoutOfSomethingAbsentIsHarmless) {
  apply("only", {file("nothing/.wh.here", ""), file(".wh.missing", "")});
  EXPECT_FALSE(fs::exists(root() / "nothing"));
}

// ".wh..." whited out "..": at the top of a layer that emptied the root's parent (found with the
// layers fuzz target's sandbox; corpus file regression-whiteout-dotdot).
TEST_F(ImageLayers, WhiteoutOfDotOrDotDotIsRejected) {
  apply("lower", {file("keep", "k"), file("d/inner", "i")});
  EXPECT_THAT(apply_error("parent", {file(".wh...", "")}), HasSubstr("rejected whiteout ./.wh..."));
  EXPECT_THAT(apply_error("self", {file("d/.wh..", "")}), HasSubstr("rejected whiteout ./d/.wh.."));
  EXPECT_THAT(apply_error("root", {file("d/.wh...", "")}), HasSubstr("it names no entry"));
  EXPECT_THAT(apply_error("empty", {file(".wh.", "")}), HasSubstr("it names no entry"));
  EXPECT_THAT(names(root()), UnorderedElementsAre("keep", "d"));
  EXPECT_THAT(names(root() / "d"), UnorderedElementsAre("inner"));
  expect_nothing_escaped();
}

TEST_F(ImageLayers, DotDotEntryIsRejected) {
  EXPECT_THAT(apply_error("dotdot", {file("../escape", "x")}), HasSubstr("layer dotdot: rejected entry"));
  EXPECT_THAT(apply_error("dotdot2", {file("a/../../escape", "x")}), HasSubstr("'..'"));
  expect_nothing_escaped();
}

TEST_F(ImageLayers, AbsolutePathLandsInsideTheTarget) {
  apply("absolute", {file("/abs/path", "inside")});
  EXPECT_EQ(read_text(root() / "abs/path"), "inside");
  expect_nothing_escaped();
}

TEST_F(ImageLayers, SymlinkToSlashResolvesInsideTheTarget) {
  const std::string name = "ember-image-test-escape";
  apply("rootlink", {symlink("link", "/"), file("link/etc/" + name, "x")});
  EXPECT_FALSE(fs::exists("/etc/" + name));
  EXPECT_EQ(read_text(root() / "etc" / name), "x");
  EXPECT_TRUE(fs::is_symlink(root() / "link"));
  expect_nothing_escaped();
}

TEST_F(ImageLayers, SymlinkUpwardsResolvesInsideTheTarget) {
  apply("uplink", {symlink("up", "../.."), file("up/file", "x")});
  EXPECT_EQ(read_text(root() / "file"), "x");
  expect_nothing_escaped();
}

// `c -> ../canary` means root/canary inside the root, which does not exist: a dangling link in the
// middle of a path is an error, never a way out.
TEST_F(ImageLayers, DanglingSymlinkInAPathIsAnError) {
  EXPECT_THAT(apply_error("dangling", {symlink("c", "../canary"), file("c/x", "y")}),
              HasSubstr("layer dangling: open directory ./c"));
  expect_nothing_escaped();
}

TEST_F(ImageLayers, SymlinkAcrossLayersResolvesInsideTheTarget) {
  apply("lower", {symlink("escape", "../.."), directory("inside")});
  apply("upper", {file("escape/inside/planted", "x")});
  EXPECT_TRUE(fs::exists(root() / "inside/planted"));
  expect_nothing_escaped();
}

TEST_F(ImageLayers, HardlinkOutsideIsRejected) {
  EXPECT_THAT(apply_error("hard", {hardlink("passwd", "../../etc/passwd")}),
              HasSubstr("layer hard: hardlink to '..'"));
  EXPECT_FALSE(fs::exists(root() / "passwd"));
  expect_nothing_escaped();
}

TEST_F(ImageLayers, HardlinkThroughASymlinkCannotReachOutside) {
  write_text(temp_.path() / "secret", "host");  // what up/secret would be if `up` escaped
  EXPECT_THAT(apply_error("hardsym", {symlink("up", "../.."), hardlink("stolen", "up/secret")}),
              HasSubstr("layer hardsym: hardlink"));
  EXPECT_FALSE(fs::exists(root() / "stolen"));
  expect_nothing_escaped();
}

TEST_F(ImageLayers, CorruptArchiveIsAOneLineErrorNamingTheLayer) {
  fs::path garbage = temp_.path() / "layers" / "sha256-bad";
  write_text(garbage, std::string(1000, '\x42'));
  try {
    apply_layer(garbage, root(), "sha256:bad");
    FAIL() << "expected an Error";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("layer sha256:bad: corrupt archive"));
    EXPECT_THAT(error.what(), Not(HasSubstr("\n")));
  }
}

TEST_F(ImageLayers, TruncatedArchiveIsAnError) {
  std::string big(200000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 7919) % 251);
  fs::path layer = temp_.path() / "layers" / "whole";
  write_layer(layer, {file("big", big)});
  std::string bytes = read_text(layer);
  fs::path truncated = temp_.path() / "layers" / "truncated";
  write_text(truncated, bytes.substr(0, bytes.size() / 2));
  EXPECT_THROW(apply_layer(truncated, root(), "truncated"), Error);
}

}  // namespace
}  // namespace ember::image
