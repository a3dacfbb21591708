#include "guest/image/command.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "vmm/error.hpp"

namespace ember::image {
namespace {

using Strings = std::vector<std::string>;
using ::testing::ElementsAre;

TEST(ImageCommand, NeitherEntrypointNorCmdNeedsAUserCommand) {
  EXPECT_THAT(resolve_command({}, {}, Strings{"ls", "-l"}), ElementsAre("ls", "-l"));
  try {
    resolve_command({}, {}, {});
    FAIL() << "expected an Error";
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "image has no command and none was given");
  }
}

TEST(ImageCommand, OnlyEntrypointTakesUserArguments) {
  Strings entrypoint{"/bin/server", "--flag"};
  EXPECT_THAT(resolve_command(entrypoint, {}, {}), ElementsAre("/bin/server", "--flag"));
  EXPECT_THAT(resolve_command(entrypoint, {}, Strings{"x"}), ElementsAre("/bin/server", "--flag", "x"));
}

TEST(ImageCommand, OnlyCmdIsReplacedByTheUserCommand) {
  Strings cmd{"/bin/sh"};
  EXPECT_THAT(resolve_command({}, cmd, {}), ElementsAre("/bin/sh"));
  EXPECT_THAT(resolve_command({}, cmd, Strings{"echo", "hi"}), ElementsAre("echo", "hi"));
}

TEST(ImageCommand, BothAppendCmdOrTheUserCommandToEntrypoint) {
  Strings entrypoint{"python3"};
  Strings cmd{"app.py"};
  EXPECT_THAT(resolve_command(entrypoint, cmd, {}), ElementsAre("python3", "app.py"));
  EXPECT_THAT(resolve_command(entrypoint, cmd, Strings{"-V"}), ElementsAre("python3", "-V"));
}

}  // namespace
}  // namespace ember::image
