#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "guest/init/spec.hpp"
#include "vmm/error.hpp"

namespace ember::init {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// protocol.hpp's example, with every key.
constexpr const char* kFullSpec = R"({
  "version": 1, "args": ["sh", "-c", "exit 7"], "env": ["PATH=/usr/bin:/bin", "K=V=W"], "cwd": "/work",
  "uid": 1000, "gid": 1001, "groups": [1001, 10], "hostname": "ember-1a2b3c", "tty": true, "stdin": false,
  "rlimits": [{"resource": "nofile", "soft": 1024, "hard": 1048576}, {"resource": "core", "soft": 0, "hard": 0}],
  "root": {"serial": "ember-root", "fstype": "erofs"},
  "scratch": {"serial": "ember-scratch", "fstype": "ext4"},
  "mounts": [{"type": "virtiofs", "source": "ember-v0", "target": "/data", "readonly": true}],
  "network": {"interface": "eth0", "mac": "52:54:00:12:34:56", "address": "172.30.0.2/30",
              "gateway": "172.30.0.1", "mtu": 1400, "dns": ["172.30.0.1"]},
  "stop_signal": 15})";

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  if (at == std::string::npos) throw std::logic_error("test spec lacks " + from);
  return text.replace(at, from.size(), to);
}

std::string parse_error(const std::string& json) {
  try {
    parse_launch_spec(json);
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

TEST(InitSpec, ReadsEveryKey) {
  const LaunchSpec spec = parse_launch_spec(kFullSpec);
  EXPECT_THAT(spec.args, ElementsAre("sh", "-c", "exit 7"));
  EXPECT_THAT(spec.env, ElementsAre("PATH=/usr/bin:/bin", "K=V=W"));
  EXPECT_EQ(spec.cwd, "/work");
  EXPECT_EQ(spec.uid, 1000u);
  EXPECT_EQ(spec.gid, 1001u);
  EXPECT_THAT(spec.groups, ElementsAre(1001u, 10u));
  EXPECT_EQ(spec.hostname, "ember-1a2b3c");
  EXPECT_TRUE(spec.tty);
  EXPECT_FALSE(spec.stdin_open);
  ASSERT_EQ(spec.rlimits.size(), 2u);
  EXPECT_EQ(spec.rlimits[0].resource, RLIMIT_NOFILE);
  EXPECT_EQ(spec.rlimits[0].soft, 1024u);
  EXPECT_EQ(spec.rlimits[0].hard, 1048576u);
  EXPECT_EQ(spec.rlimits[1].resource, RLIMIT_CORE);
  EXPECT_EQ(spec.root.serial, "ember-root");
  EXPECT_EQ(spec.root.fstype, "erofs");
  ASSERT_TRUE(spec.scratch);
  EXPECT_EQ(spec.scratch->serial, "ember-scratch");
  ASSERT_EQ(spec.mounts.size(), 1u);
  EXPECT_EQ(spec.mounts[0].source, "ember-v0");
  EXPECT_EQ(spec.mounts[0].target, "/data");
  EXPECT_TRUE(spec.mounts[0].readonly);
  ASSERT_TRUE(spec.network);
  EXPECT_EQ(spec.network->interface_name, "eth0");
  EXPECT_EQ(spec.network->mac, "52:54:00:12:34:56");
  EXPECT_EQ(spec.network->address, "172.30.0.2/30");
  EXPECT_EQ(spec.network->gateway, "172.30.0.1");
  EXPECT_EQ(spec.network->mtu, 1400u);
  EXPECT_THAT(spec.network->dns, ElementsAre("172.30.0.1"));
  EXPECT_EQ(spec.stop_signal, 15);
}

TEST(InitSpec, NullScratchAndNetwork) {
  const std::string json =
      replaced(replaced(kFullSpec, R"({"serial": "ember-scratch", "fstype": "ext4"})", "null"),
               R"("network": {)", R"("network": null, "unused": {)");
  const LaunchSpec spec = parse_launch_spec(json);
  EXPECT_FALSE(spec.scratch);
  EXPECT_FALSE(spec.network);
}

TEST(InitSpec, BadSpecsNameTheProblem) {
  EXPECT_EQ(parse_error("{"), "launch spec: not valid JSON");
  EXPECT_EQ(parse_error("[1]"), "launch spec: not a JSON object");
  EXPECT_THAT(parse_error(replaced(kFullSpec, R"("version": 1)", R"("version": 2)")),
              HasSubstr("version 2 is not 1"));
  EXPECT_THAT(parse_error(replaced(kFullSpec, R"("hostname")", R"("host")")),
              HasSubstr("has no \"hostname\""));
  EXPECT_THAT(parse_error(replaced(kFullSpec, R"(["sh", "-c", "exit 7"])", "[]")),
              HasSubstr("\"args\" has no command"));
  EXPECT_THAT(parse_error(replaced(kFullSpec, R"("cwd": "/work")", R"("cwd": "work")")),
              HasSubstr("cwd \"work\" is not an absolute path"));
  EXPECT_THAT(parse_error(replaced(kFullSpec, R"("nofile")", R"("files")")),
              HasSubstr("unknown rlimit resource \"files\""));
  EXPECT_THAT(parse_error(replaced(kFullSpec, R"("soft": 1024)", R"("soft": 2000000)")),
              HasSubstr("soft above hard"));
  EXPECT_THAT(parse_error(replaced(kFullSpec, R"("uid": 1000)", R"("uid": -1)")),
              HasSubstr("\"uid\""));
  EXPECT_THAT(parse_error(replaced(kFullSpec, R"("K=V=W")", R"("novalue")")),
              HasSubstr("\"novalue\" is not K=V"));
  EXPECT_THAT(parse_error(replaced(kFullSpec, R"("tty": true)", R"("tty": 1)")),
              HasSubstr("\"tty\" is not true or false"));
  EXPECT_THAT(parse_error(replaced(kFullSpec, R"("type": "virtiofs")", R"("type": "9p")")),
              HasSubstr("mount type \"9p\" is not virtiofs"));
  EXPECT_THAT(parse_error(replaced(kFullSpec, R"("target": "/data")", R"("target": "data")")),
              HasSubstr("\"data\" is not an absolute path"));
}

TEST(InitSpec, RlimitNamesAsDockerSpellsThem) {
  EXPECT_EQ(rlimit_resource("nofile"), RLIMIT_NOFILE);
  EXPECT_EQ(rlimit_resource("nproc"), RLIMIT_NPROC);
  EXPECT_EQ(rlimit_resource("stack"), RLIMIT_STACK);
  EXPECT_EQ(rlimit_resource("memlock"), RLIMIT_MEMLOCK);
  EXPECT_EQ(rlimit_resource("rttime"), RLIMIT_RTTIME);
  EXPECT_FALSE(rlimit_resource("NOFILE"));
  EXPECT_FALSE(rlimit_resource("open-files"));
}

TEST(InitSpec, EnvValueMatchesWholeKeys) {
  const std::vector<std::string> env{"PATHX=/nope", "PATH=/usr/bin:/bin", "EMPTY="};
  EXPECT_EQ(env_value(env, "PATH"), "/usr/bin:/bin");
  EXPECT_EQ(env_value(env, "EMPTY"), "");
  EXPECT_FALSE(env_value(env, "PAT"));
}

class InitCommandLookup : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "ember-init-path-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    for (const char* dir : {"a", "b", "c"}) std::filesystem::create_directory(root_ / dir);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  std::string file(const std::string& name, mode_t mode) {
    const auto path = root_ / name;
    std::ofstream(path) << "#!/bin/sh\n";
    ::chmod(path.c_str(), mode);
    return path.string();
  }
  std::string dir(const char* name) const { return (root_ / name).string(); }

  std::filesystem::path root_;
};

TEST_F(InitCommandLookup, FirstExecutableInPathOrderWins) {
  file("b/tool", 0755);
  const std::string in_c = file("c/tool", 0755);
  const std::string path = dir("a") + ":" + dir("c") + ":" + dir("b");
  EXPECT_EQ(find_command("tool", path).path, in_c);
}

TEST_F(InitCommandLookup, NonExecutableMatchesAreSkippedButRemembered) {
  file("a/tool", 0644);
  const std::string in_b = file("b/tool", 0755);
  EXPECT_EQ(find_command("tool", dir("a") + ":" + dir("b")).path, in_b);
  const CommandLookup only_plain = find_command("tool", dir("a") + ":" + dir("c"));
  EXPECT_EQ(only_plain.path, "");
  EXPECT_EQ(only_plain.error, EACCES);  // Even root's access(X_OK) needs one execute bit.
}

TEST_F(InitCommandLookup, MissingAndDirectoriesAreNotFound) {
  std::filesystem::create_directory(root_ / "a" / "tool");
  const CommandLookup missing = find_command("tool", dir("a") + ":" + dir("b"));
  EXPECT_EQ(missing.path, "");
  EXPECT_EQ(missing.error, ENOENT);
}

TEST_F(InitCommandLookup, NamesWithASlashAreNotSearched) {
  EXPECT_EQ(find_command("./x/tool", dir("a")).path, "./x/tool");
  EXPECT_EQ(find_command("/bin/sh", "").path, "/bin/sh");
}

TEST_F(InitCommandLookup, AnEmptyPathEntryIsTheCurrentDirectory) {
  file("a/tool", 0755);
  const auto previous = std::filesystem::current_path();
  std::filesystem::current_path(root_ / "a");
  const CommandLookup found = find_command("tool", dir("b") + "::" + dir("c"));
  std::filesystem::current_path(previous);
  EXPECT_EQ(found.path, "./tool");
}

}  // namespace
}  // namespace ember::init
