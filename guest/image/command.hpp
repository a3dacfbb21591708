// The command a container runs: the image's Entrypoint/Cmd combined with the user's `-- CMD` the
// way docker does it.
#pragma once

#include <span>
#include <string>
#include <vector>

namespace ember::image {

// Entrypoint + (user command if given, else Cmd). A user command replaces Cmd and is appended to
// Entrypoint. Throws Error("image has no command and none was given") when the result is empty.
std::vector<std::string> resolve_command(std::span<const std::string> entrypoint,
                                         std::span<const std::string> cmd,
                                         std::span<const std::string> user_command);

}  // namespace ember::image
