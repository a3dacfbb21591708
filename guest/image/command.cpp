#include "guest/image/command.hpp"

#include "vmm/error.hpp"

namespace ember::image {

std::vector<std::string> resolve_command(std::span<const std::string> entrypoint,
                                         std::span<const std::string> cmd,
                                         std::span<const std::string> user_command) {
  std::vector<std::string> command(entrypoint.begin(), entrypoint.end());
  std::span<const std::string> arguments = user_command.empty() ? cmd : user_command;
  command.insert(command.end(), arguments.begin(), arguments.end());
  if (command.empty()) throw Error("image has no command and none was given");
  return command;
}

}  // namespace ember::image
