// ember-init: PID 1 of the microVM that `ember run` boots (guest/protocol/protocol.hpp). It loads
// the initrd's kernel modules, says kHello on /dev/hvc0, reads the launch spec, builds the
// container's root (image disk + writable layer under overlayfs), starts the payload and relays its
// stdio and signals until it exits, then reports kExit (or kError) and powers the VM off.
//
//   ember-init                                   in the VM (the kernel passes no options we use)
//   ember-init --channel-fd N --root-dir DIR     host test mode: the protocol on fd N, DIR as the
//   image;
//                                                run as PID 1 of new PID, mount and UTS namespaces
//                                                (unshare --pid --mount --uts --fork). Ends with
//                                                exit status 0 after kExit, 1 after kError, instead
//                                                of powering off; everything else is as in the VM.
#include <fcntl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "guest/init/channel.hpp"
#include "guest/init/network.hpp"
#include "guest/init/payload.hpp"
#include "guest/init/relay.hpp"
#include "guest/init/root.hpp"
#include "guest/init/spec.hpp"
#include "guest/init/vm.hpp"
#include "guest/protocol/protocol.hpp"
#include "vmm/error.hpp"

namespace ember::init {
namespace {

constexpr auto kDeviceTimeout = std::chrono::seconds(5);
constexpr const char* kConsole = "/dev/hvc0";
constexpr const char* kModuleList = "/ember/modules.load";
constexpr const char* kVmStaging = "/ember";
// Test mode: a tmpfs over /tmp of the test's own mount namespace holds the overlay's pieces.
constexpr const char* kTestStaging = "/tmp";

struct Options {
  std::optional<int> channel_fd;  // set: host test mode
  std::string root_dir;
};

void log_line(const std::string& line) {
  std::fprintf(stderr, "ember-init: %s\n", line.c_str());
}

[[noreturn]] void usage(const std::string& problem) {
  std::fprintf(stderr, "ember-init: %s\nusage: ember-init [--channel-fd N --root-dir DIR]\n",
               problem.c_str());
  std::exit(2);
}

// The kernel hands init the command-line words it does not know; only a test passes --channel-fd,
// and then the options are checked strictly.
Options parse_options(int argc, char** argv) {
  Options options;
  bool test_mode = false;
  for (int i = 1; i < argc; ++i) test_mode |= std::string_view(argv[i]) == "--channel-fd";
  if (!test_mode) return options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view option = argv[i];
    if (i + 1 >= argc) usage(std::string(option) + " needs a value");
    const std::string value = argv[++i];
    if (option == "--channel-fd") {
      char* end = nullptr;
      const long fd = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || fd < 0 || fd > 65535)
        usage("--channel-fd " + value + ": not an fd number");
      options.channel_fd = static_cast<int>(fd);
    } else if (option == "--root-dir") {
      options.root_dir = value;
    } else {
      usage("unknown option " + std::string(option));
    }
  }
  if (options.root_dir.empty()) usage("--channel-fd needs --root-dir");
  return options;
}

std::string namespace_of(const std::string& process, const char* kind) {
  char target[128] = {};
  const std::string link = "/proc/" + process + "/ns/" + kind;
  if (::readlink(link.c_str(), target, sizeof(target) - 1) < 0)
    return link + ": " + std::strerror(errno);
  return target;
}

// Test mode changes mounts and the hostname: refuse to do that to the host's own namespaces.
void check_test_namespaces() {
  if (::getpid() != 1)
    throw Error("ember-init --channel-fd must run as PID 1 of a new PID namespace");
  for (const char* kind : {"mnt", "uts"})
    if (namespace_of("self", kind) == namespace_of("1", kind))
      throw Error(std::string("ember-init --channel-fd must run in a new ") + kind +
                  " namespace (unshare --pid --mount --uts --fork)");
}

UniqueFd make_signal_fd() {
  sigset_t child;
  ::sigemptyset(&child);
  ::sigaddset(&child, SIGCHLD);
  UniqueFd fd(::signalfd(-1, &child, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!fd) throw system_error("signalfd");
  return fd;
}

// What happens between kHello and kExit. Throws LaunchError or ember::Error (-> kError).
// `mounted_shares` is set once the container's own filesystems are mounted (finish() unmounts
// them).
ExitStatus run_container(Channel& channel, const Options& options,
                         std::optional<std::vector<MountSpec>>& mounted_shares) {
  const Frame start = channel.receive();
  if (start.type != protocol::kStart) throw Error("protocol error: the first frame is not kStart");
  const LaunchSpec spec = parse_launch_spec(
      std::string_view(reinterpret_cast<const char*>(start.payload.data()), start.payload.size()));

  if (options.channel_fd) {
    switch_to_container_root(kTestStaging, true, {options.root_dir, ""}, {});
  } else {
    const LowerLayer lower{find_disk(spec.root.serial, kDeviceTimeout), spec.root.fstype};
    WritableLayer writable;
    if (spec.scratch)
      writable = {find_disk(spec.scratch->serial, kDeviceTimeout), spec.scratch->fstype};
    channel.send_log(
        "root " + lower.source + " (" + lower.fstype + "), writable layer " +
        (writable.device.empty() ? "tmpfs" : writable.device + " (" + writable.fstype + ")"));
    switch_to_container_root(kVmStaging, false, lower, writable);
  }
  mount_container_filesystems(spec.mounts);
  mounted_shares = spec.mounts;

  bring_up_loopback();
  if (spec.network) configure_network(*spec.network);
  write_resolver_files("", spec.network ? &*spec.network : nullptr, spec.hostname);
  if (!spec.hostname.empty() && ::sethostname(spec.hostname.data(), spec.hostname.size()) != 0)
    throw system_error("sethostname " + spec.hostname);
  make_directories(spec.cwd);

  const UniqueFd signals = make_signal_fd();
  Payload payload = start_payload(spec);
  channel.send_log("payload " + spec.args.front() + " started as pid " +
                   std::to_string(payload.pid));
  return relay(channel, payload, signals.get());
}

// Kills what is left, reaps it, unmounts what ember-init mounted in the container (only there:
// before the switch, "/proc" is still the initramfs's or the test host's), and powers off (VM) or
// exits (test).
[[noreturn]] void finish(bool test_mode, const std::optional<std::vector<MountSpec>>& shares,
                         int exit_status) {
  kill_all_other_processes();
  while (::waitpid(-1, nullptr, 0) > 0 || errno == EINTR) {
  }
  if (shares) unmount_container_filesystems(*shares);
  if (test_mode) std::exit(exit_status);
  ::sync();
  ::reboot(RB_POWER_OFF);
  log_line(std::string("power off: ") + std::strerror(errno));
  while (true) ::pause();  // PID 1 must not exit: the kernel would panic.
}

int main_with_options(const Options& options) {
  const bool test_mode = options.channel_fd.has_value();
  // SIGCHLD waits for the relay's signalfd; a write to a payload's closed stdin is EPIPE, not
  // death.
  sigset_t child;
  ::sigemptyset(&child);
  ::sigaddset(&child, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &child, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::optional<std::string> early_failure;  // reported after kHello, when the host can hear it
  UniqueFd channel_fd;
  if (test_mode) {
    channel_fd.reset(*options.channel_fd);
    if (::fcntl(channel_fd.get(), F_SETFD, FD_CLOEXEC) != 0)
      usage("--channel-fd: " + std::string(std::strerror(errno)));
    try {
      check_test_namespaces();
    } catch (const std::exception& error) {
      early_failure = error.what();
    }
  } else {
    try {
      mount_initramfs_filesystems();
      load_modules(kModuleList);
    } catch (const std::exception& error) {
      early_failure = error.what();
    }
    try {
      channel_fd = open_console(kConsole, kDeviceTimeout);
    } catch (const std::exception& error) {
      log_line(std::string(error.what()) +
               (early_failure ? "; before that: " + *early_failure : ""));
      finish(false, std::nullopt, 1);
    }
  }

  Channel channel(std::move(channel_fd));
  std::optional<std::vector<MountSpec>> shares;
  try {
    channel.send_u32s(protocol::kHello, {protocol::kVersion});
    try {
      if (early_failure) throw Error(*early_failure);
      const ExitStatus status = run_container(channel, options, shares);
      channel.send_u32s(protocol::kExit, {status.signaled ? protocol::kSignaled : protocol::kExited,
                                          static_cast<uint32_t>(status.value)});
      finish(test_mode, shares, 0);
    } catch (const LaunchError& error) {
      channel.send_error(static_cast<uint32_t>(error.status()), error.what());
      log_line(error.what());
    } catch (const std::exception& error) {
      channel.send_error(protocol::kStatusSetupFailed, error.what());
      log_line(error.what());
    }
  } catch (
      const std::exception& error) {  // The channel itself failed: nobody to tell but the console.
    log_line(error.what());
  }
  finish(test_mode, shares, 1);
}

}  // namespace
}  // namespace ember::init

int main(int argc, char** argv) {
  return ember::init::main_with_options(ember::init::parse_options(argc, argv));
}
