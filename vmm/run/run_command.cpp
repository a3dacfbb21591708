#include "vmm/run/run_command.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "guest/image/command.hpp"
#include "guest/image/prepare.hpp"
#include "guest/protocol/protocol.hpp"
#include "vmm/cli.hpp"
#include "vmm/error.hpp"
#include "vmm/jail.hpp"
#include "vmm/machine.hpp"
#include "vmm/seccomp.hpp"
#include "vmm/port_forward.hpp"
#include "vmm/run/initrd.hpp"
#include "vmm/run/kernel.hpp"
#include "vmm/run/scratch.hpp"
#include "vmm/run/session.hpp"
#include "vmm/run/spec.hpp"
#include "vmm/run_network.hpp"
#include "vmm/terminal.hpp"

namespace ember::run {

namespace fs = std::filesystem;

namespace {

// After SIGKILL went to the payload: how long ember waits before it stops the VM itself.
constexpr int kKillGraceSeconds = 5;
// After kExit: how long the guest has to sync, unmount and power off.
constexpr int kPowerOffSeconds = 10;
// Host stdin is read only while less than this waits for the guest (flow control).
constexpr size_t kStdinHighWater = 1 << 20;
constexpr auto kOutboxRetry = std::chrono::milliseconds(2);

// Blocking write of everything (the payload's output must not be lost to a slow reader); an fd
// someone made non-blocking is waited on.
void write_all(int fd, std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        pollfd wait{fd, POLLOUT, 0};
        ::poll(&wait, 1, -1);
        continue;
      }
      return;  // EPIPE: the reader went away; the container keeps running, as with docker.
    }
    bytes = bytes.subspan(static_cast<size_t>(written));
  }
}

// COM1 carries the kernel's own messages: one debug line each.
class SerialLog {
 public:
  void write(std::span<const uint8_t> bytes) {
    for (uint8_t byte : bytes) {
      if (byte == '\n' || line_.size() >= 1024) {
        spdlog::debug("guest: {}", line_);
        if (line_.find_first_not_of(' ') != std::string::npos) last_line_ = line_;
        if (panic_line_.empty() && line_.find("Kernel panic - not syncing") != std::string::npos)
          panic_line_ = line_;
        line_.clear();
      } else if (byte != '\r') {
        line_.push_back(byte >= 0x20 && byte != 0x7f ? static_cast<char>(byte) : '?');
      }
    }
  }
  ~SerialLog() {
    if (!line_.empty()) spdlog::debug("guest: {}", line_);
  }

  // What explains a failure without --log-level debug: the kernel's panic line if there was one
  // (the lines after it are a backtrace), else the console's last complete line (ember-init's last
  // word, say).
  const std::string& telling_line() const { return panic_line_.empty() ? last_line_ : panic_line_; }

 private:
  std::string line_;
  std::string last_line_;
  std::string panic_line_;
};

class Timer {
 public:
  Timer(EventLoop& loop, std::function<void()> expired) : loop_(loop) {
    fd_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!fd_) throw system_error("timerfd_create");
    loop_.add(fd_.get(), EPOLLIN, [this, expired = std::move(expired)](uint32_t) {
      uint64_t count;
      if (::read(fd_.get(), &count, sizeof(count)) == sizeof(count)) expired();
    });
  }
  ~Timer() { loop_.remove(fd_.get()); }
  void start(int seconds) {
    itimerspec spec{};
    spec.it_value.tv_sec = seconds;
    spec.it_value.tv_nsec = seconds == 0 ? 1 : 0;  // 0 would disarm it
    ::timerfd_settime(fd_.get(), 0, &spec, nullptr);
    armed_ = true;
  }
  bool armed() const { return armed_; }

 private:
  EventLoop& loop_;
  UniqueFd fd_;
  bool armed_ = false;
};

std::optional<std::pair<uint16_t, uint16_t>> terminal_size() {
  for (int fd : {0, 1, 2}) {
    winsize size{};
    if (::isatty(fd) && ::ioctl(fd, TIOCGWINSZ, &size) == 0 && size.ws_row && size.ws_col)
      return std::make_pair(size.ws_row, size.ws_col);
  }
  return std::nullopt;
}

struct Prepared {
  MachineConfig machine;
  std::string hostname;
  std::string spec;
  std::unique_ptr<ScratchDisk> scratch;
  std::unique_ptr<RunNetwork> network;
  std::vector<PortMapping> ports;
  nlohmann::json mounts = nlohmann::json::array();
  nlohmann::json rlimits = nlohmann::json::array();
};

// Everything before the VM: options checked, image prepared, spec, disks, initrd, kernel.
Prepared prepare(const RunOptions& options) {
  if (options.image_and_command.empty())
    throw Error("no IMAGE given (ember run [OPTIONS] IMAGE [-- CMD ARGS...])");
  const std::string image = options.image_and_command.front();
  std::vector<std::string> user_command(options.image_and_command.begin() + 1,
                                        options.image_and_command.end());
  if (!user_command.empty() && user_command.front() == "--")
    user_command.erase(user_command.begin());

  Prepared prepared;
  auto& machine = prepared.machine;
  const auto memory = parse_memory_size(options.memory);
  if (!memory) throw Error("--memory " + options.memory + ": not a size (use e.g. 512M or 2G)");
  machine.memory_bytes = *memory;
  machine.cpus = options.cpus;
  for (const auto& assignment : options.env) check_env_assignment(assignment, "-e");
  std::vector<std::string> file_env;
  for (const auto& file : options.env_files) {
    auto lines = read_env_file(file);
    file_env.insert(file_env.end(), lines.begin(), lines.end());
  }
  if (!options.name.empty()) check_name(options.name);
  if (!options.workdir.empty() && options.workdir.front() != '/')
    throw Error("-w " + options.workdir + ": the working directory must be an absolute path");
  for (size_t i = 0; i < options.volumes.size(); ++i) {
    const Volume volume = parse_volume(options.volumes[i]);
    const std::string tag = "ember-v" + std::to_string(i);
    machine.shares.push_back({volume.host_dir, tag, volume.read_only});
    prepared.mounts.push_back({{"type", "virtiofs"}, {"source", tag}, {"target", volume.guest_dir},
                               {"readonly", volume.read_only}});
  }
  for (const auto& text : options.ulimits) prepared.rlimits.push_back(parse_ulimit(text));
  if (options.net != "none" && options.net != "tap")
    throw Error("--net " + options.net + ": use none or tap");
  for (const auto& text : options.ports) prepared.ports.push_back(parse_port_mapping(text));
  if (!prepared.ports.empty() && options.net != "tap")
    throw Error("-p " + options.ports.front() + ": publishing a port needs --net tap");

  const fs::path cache = ember_cache_dir();
  const auto kernel = choose_kernel(
      options.kernel.empty() ? std::nullopt : std::optional<fs::path>(options.kernel), cache);
  spdlog::info("{}", kernel.description);
  const fs::path ember_init = find_ember_init();

  auto image_prepared = image::prepare_image(image, image::default_cache_dir());
  spdlog::info("image {} ({}): {}", image_prepared.reference, image_prepared.digest,
               image_prepared.disk.string());
  const auto& config = image_prepared.config;

  LaunchSpec spec;
  spec.args = image::resolve_command(config.entrypoint, config.cmd, user_command);
  const auto user =
      image::resolve_user(options.user.empty() ? config.user : options.user, image_prepared);
  spec.uid = user.uid;
  spec.gid = user.gid;
  spec.groups = user.groups;
  spec.hostname = options.name.empty() ? random_hostname() : options.name;
  prepared.hostname = spec.hostname;
  // docker's order: the image's Env, then --env-file, then -e (the last word wins).
  const std::vector<std::string> layers[] = {config.env, file_env, options.env};
  spec.env = with_defaults(merge_env(layers), spec.hostname, user.home);
  spec.cwd = !options.workdir.empty()      ? options.workdir
             : !config.working_dir.empty() ? config.working_dir
                                           : "/";
  spec.tty = options.tty;
  spec.stdin_open = options.interactive;
  spec.root_fstype = image_prepared.fstype;
  spec.scratch = true;
  spec.mounts = prepared.mounts;
  if (!prepared.rlimits.empty()) spec.rlimits = prepared.rlimits;

  prepared.scratch = std::make_unique<ScratchDisk>(
      cache / "scratch", spec.hostname + "-" + std::to_string(::getpid()), options.keep);
  if (options.net == "tap") {
    prepared.network = create_run_network(options.name);
    spec.network = prepared.network->spec();
    machine.nets.push_back(prepared.network->net_config());
  }
  prepared.spec = spec_json(spec).dump();

  machine.kernel_path = kernel.kernel.string();
  machine.initrd_path = cached_initrd(ember_init, kernel.modules, cache).string();
  machine.cmdline = kernel_command_line(kernel, options.kernel_args);
  // --log-level trace shows the guest kernel's whole log, not just what `quiet` lets through (at
  // debug level that would change what is measured: every byte of it is a UART exit).
  if (spdlog::should_log(spdlog::level::trace)) machine.cmdline += " loglevel=7";
  machine.tsc_khz_on_cmdline = true;
  machine.console = ConsoleKind::kVirtio;
  machine.console_input = -1;
  machine.console_output = -1;
  machine.entropy = true;
  machine.seccomp = seccomp::wanted(options.seccomp);
  machine.disks.push_back({image_prepared.disk.string(), true, "ember-root", false});
  machine.disks.push_back({prepared.scratch->path().string(), false, "ember-scratch", false});
  spdlog::debug("kernel command line: {}", machine.cmdline);
  spdlog::debug("launch spec: {}", prepared.spec);
  return prepared;
}

// The conversation on the I/O thread: hvc0 <-> Session, stdin, host signals, the stop timers.
class Conversation {
 public:
  Conversation(const RunOptions& options, std::string spec)
      : options_(options),
        session_(std::move(spec), options.interactive, options.tty ? terminal_size() : std::nullopt,
                 {[](std::span<const uint8_t> bytes) { write_all(1, bytes); },
                  [](std::span<const uint8_t> bytes) { write_all(2, bytes); }}) {}

  void attach(Machine& machine) {
    machine_ = &machine;
    auto& loop = machine.io_loop();
    kill_timer_ = std::make_unique<Timer>(loop, [this] { escalate(); });
    stop_timer_ = std::make_unique<Timer>(loop, [this] {
      machine_->request_stop({MachineExit::Kind::kFailure, 0,
                              "the container did not exit within " +
                                  std::to_string(kKillGraceSeconds) + " s of SIGKILL; VM stopped"});
    });
    power_off_timer_ = std::make_unique<Timer>(loop, [this] {
      spdlog::warn("the guest did not power off within {} s of the container's exit; VM stopped",
                   kPowerOffSeconds);
      machine_->request_stop(
          {MachineExit::Kind::kPowerOff, 0, "stopped after the container's exit"});
    });
    loop.set_idle(kOutboxRetry, [this] { pump(); });
  }

  void on_console(std::span<const uint8_t> bytes) { session_.receive(bytes); }

  void on_signal(int number) {
    if (number == SIGWINCH) {
      if (options_.tty)
        if (auto size = terminal_size()) session_.send_resize(size->first, size->second);
      pump();
      return;
    }
    if (session_.state() == Session::State::kWaitingForHello) {
      if (number == SIGUSR1 || number == SIGUSR2) return;
      machine_->request_stop(
          {MachineExit::Kind::kInterrupted, number,
           std::string("stopped by SIG") + sigabbrev_np(number) + " before the container started"});
      return;
    }
    if (!session_.running()) return;
    spdlog::info("forwarding SIG{} to the container", sigabbrev_np(number));
    session_.send_signal(number);
    if ((number == SIGINT || number == SIGTERM) && !kill_timer_->armed())
      kill_timer_->start(static_cast<int>(options_.stop_timeout));
    pump();
  }

  // Before the machine goes: its loop must not outlive the timers registered with it.
  void detach() {
    stop_stdin();
    kill_timer_.reset();
    stop_timer_.reset();
    power_off_timer_.reset();
  }

  const Session& session() const { return session_; }

 private:
  void escalate() {
    if (!session_.running()) return;
    spdlog::info("the container ignored the stop signal for {} s: SIGKILL", options_.stop_timeout);
    session_.send_signal(SIGKILL);
    stop_timer_->start(kKillGraceSeconds);
    pump();
  }

  // After every I/O-loop wake-up: state changes, stdin, and host bytes into hvc0 as it makes room.
  void pump() {
    auto& loop = machine_->io_loop();
    switch (session_.state()) {
      case Session::State::kFailed:
        machine_->request_stop({MachineExit::Kind::kFailure, 0, session_.message()});
        return;
      case Session::State::kFinished:
        stop_stdin();
        if (!power_off_timer_->armed()) power_off_timer_->start(kPowerOffSeconds);
        return;
      case Session::State::kWaitingForHello:
        return;
      case Session::State::kRunning:
        break;
    }
    if (options_.interactive && !stdin_started_) start_stdin();
    if (stdin_regular_) read_stdin();
    session_.flush(
        [this](std::span<const uint8_t> bytes) { return machine_->console_input(bytes); });
    const size_t waiting = session_.outbox_bytes();
    loop.enable_idle_timer(waiting > 0);
    if (stdin_watched_ && waiting >= kStdinHighWater) {
      loop.remove(0);
      stdin_watched_ = false;
    } else if (stdin_paused() && waiting < kStdinHighWater / 4) {
      loop.add(0, EPOLLIN, [this](uint32_t events) { on_stdin(events); });
      stdin_watched_ = true;
    }
  }

  bool stdin_paused() const {
    return stdin_started_ && !stdin_regular_ && !stdin_watched_ && !stdin_done_;
  }

  void start_stdin() {
    stdin_started_ = true;
    try {
      machine_->io_loop().add(0, EPOLLIN, [this](uint32_t events) { on_stdin(events); });
      stdin_watched_ = true;
    } catch (const Error&) {
      stdin_regular_ =
          true;  // A regular file or /dev/null cannot be polled: read it as room allows.
    }
  }

  void on_stdin(uint32_t events) {
    uint8_t buffer[64 * 1024];
    const ssize_t count = ::read(0, buffer, sizeof(buffer));
    if (count > 0) {
      session_.send_stdin(std::span(buffer, static_cast<size_t>(count)));
    } else if (count == 0 || (errno != EINTR && errno != EAGAIN) || (events & EPOLLHUP)) {
      session_.send_stdin_eof();
      stop_stdin();
    }
  }

  void read_stdin() {
    while (!stdin_done_ && session_.outbox_bytes() < kStdinHighWater) on_stdin(0);
  }

  void stop_stdin() {
    if (stdin_watched_ && machine_) machine_->io_loop().remove(0);
    stdin_watched_ = false;
    stdin_done_ = true;
  }

  const RunOptions& options_;
  Session session_;
  Machine* machine_ = nullptr;
  std::unique_ptr<Timer> kill_timer_, stop_timer_, power_off_timer_;
  bool stdin_started_ = false, stdin_watched_ = false, stdin_regular_ = false, stdin_done_ = false;
};

int report(const Session& session, const MachineExit& exit, const std::string& console_line) {
  // Printed after the reasons below that come from the guest, to say what its console said last.
  const std::string said =
      console_line.empty() ? std::string(" (see --log-level debug)")
                           : "; its console: \"" + console_line + "\" (more with --log-level debug)";
  switch (session.state()) {
    case Session::State::kFinished:
      if (!session.message().empty())
        std::fprintf(stderr, "ember: %s\n", session.message().c_str());
      if (exit.kind != MachineExit::Kind::kPowerOff)
        spdlog::warn("after the container's exit: {}", exit.message);
      return session.status();
    case Session::State::kFailed:
      std::fprintf(stderr, "ember: %s\n", session.message().c_str());
      return protocol::kStatusSetupFailed;
    case Session::State::kWaitingForHello:
    case Session::State::kRunning:
      break;
  }
  const char* when = session.state() == Session::State::kRunning
                         ? "before the container reported its exit"
                         : "before ember-init started";
  switch (exit.kind) {
    case MachineExit::Kind::kInterrupted:
      std::fprintf(stderr, "ember: %s\n", exit.message.c_str());
      return 128 + exit.signal;
    case MachineExit::Kind::kGuestPanic:
      std::fprintf(stderr, "ember: the guest kernel panicked %s%s\n", when, said.c_str());
      break;
    case MachineExit::Kind::kPowerOff:
      std::fprintf(stderr, "ember: the guest powered off %s%s\n", when, said.c_str());
      break;
    case MachineExit::Kind::kReset:
      std::fprintf(stderr, "ember: the guest reset %s%s\n", when, said.c_str());
      break;
    case MachineExit::Kind::kFailure:
      std::fprintf(stderr, "ember: %s\n", exit.message.c_str());
      break;
  }
  return protocol::kStatusSetupFailed;
}

}  // namespace

CLI::App* add_run_subcommand(CLI::App& app, RunOptions& options, std::string& log_level) {
  auto* run = app.add_subcommand("run", "Run a container image in a microVM (like docker run)");
  run->add_option("--cpus", options.cpus, "number of vCPUs")->default_val(1);
  run->add_option("--memory,-m", options.memory, "guest RAM, e.g. 512M or 2G")->default_val("512M");
  run->add_option("-e,--env", options.env, "set an environment variable K=V (repeatable)")
      ->allow_extra_args(false);
  run->add_option("--env-file", options.env_files, "read K=V lines from a file (repeatable)")
      ->allow_extra_args(false);
  run->add_option("-w,--workdir", options.workdir, "working directory inside the container");
  run->add_option("-u,--user", options.user, "UID[:GID] or NAME[:GROUP] from the image");
  run->add_option("-v,--volume", options.volumes,
                  "share a host directory, live and read-write (virtio-fs): HOSTDIR:GUESTDIR[:ro] "
                  "(repeatable)")
      ->allow_extra_args(false);
  run->add_option("--ulimit", options.ulimits,
                  "resource limit NAME=SOFT[:HARD], e.g. nofile=1024:4096 (repeatable)")
      ->allow_extra_args(false);
  run->add_option("--net", options.net, "none (default) or tap")->default_val("none");
  run->add_option("-p,--publish", options.ports,
                  "HOSTPORT:GUESTPORT (TCP, repeatable; needs --net tap)")
      ->allow_extra_args(false);
  run->add_flag("-i,--interactive", options.interactive,
                "keep stdin open and pass it to the container");
  run->add_flag("-t,--tty", options.tty, "give the container a terminal");
  run->add_option("--name", options.name, "the container's name (its hostname)");
  run->add_flag(
      "--rm", [](int64_t) {}, "remove the scratch disk at exit (the default)");
  run->add_flag("--keep", options.keep, "keep the scratch disk (its path is printed)");
  run->add_option("--stop-timeout", options.stop_timeout,
                  "seconds between a forwarded SIGINT/SIGTERM and SIGKILL")
      ->default_val(10);
  run->add_option("--kernel", options.kernel,
                  "kernel to boot (default: <cache>/default-kernel/kernel)");
  run->add_option("--kernel-args", options.kernel_args, "extra kernel command line arguments");
  add_seccomp_option(*run, options.seccomp);
  add_jail_options(*run, options.jail, options.uid, options.gid, "on as root");
  run->add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  // Repeatable options take one value each, so `-e A=1 IMAGE` never swallows IMAGE.
  // Options end at IMAGE: what follows is the container's command, dashes and all.
  run->footer(
      "IMAGE [-- CMD ARGS...]: an OCI image layout directory, an oci-archive or docker-archive tar, or a\n"
      "root filesystem directory; CMD replaces the image's Cmd (appended to its Entrypoint), as in docker.\n"
      "Exit status: the command's (128+N if killed by signal N); 125 if ember, the VM or ember-init failed.");
  run->prefix_command();
  run->callback([run, &options] { options.image_and_command = run->remaining(); });
  return run;
}

namespace {

// The VM and the conversation with ember-init, in the jailed VMM process when there is a jail.
int run_machine(const RunOptions& options, Prepared& prepared, jail::Jail* jail) {
  Conversation conversation(options, prepared.spec);
  SerialLog serial_log;
  prepared.machine.serial_sink = [&](std::span<const uint8_t> bytes) { serial_log.write(bytes); };
  prepared.machine.virtio_console_sink = [&](std::span<const uint8_t> bytes) {
    conversation.on_console(bytes);
  };
  prepared.machine.host_signal = [&](int number) { conversation.on_signal(number); };
  Machine machine(prepared.machine);
  conversation.attach(machine);
  struct Detach {
    Conversation& conversation;
    ~Detach() { conversation.detach(); }
  } detach{conversation};
  std::unique_ptr<PortForwarder> forwarder;
  if (!prepared.ports.empty())
    forwarder = std::make_unique<PortForwarder>(machine.io_loop(), prepared.network->guest_ip,
                                                prepared.ports);
  std::unique_ptr<TerminalMode> terminal;
  if (options.tty && options.interactive) terminal = std::make_unique<TerminalMode>(0);
  if (jail) jail->lock();
  const MachineExit exit = machine.run();
  terminal.reset();
  forwarder.reset();
  const int status = report(conversation.session(), exit, serial_log.telling_line());
  if (options.keep)
    std::fprintf(stderr, "ember: scratch disk kept at %s\n", prepared.scratch->kept_path().c_str());
  return status;
}

}  // namespace

bool jail_wanted(const std::string& setting) {
  return setting.empty() ? ::geteuid() == 0 : setting == "on";
}

int run_container(const RunOptions& options) {
  try {
    auto prepared = prepare(options);
    if (!jail_wanted(options.jail)) return run_machine(options, prepared, nullptr);
    jail::Options jail_options;
    jail_options.name = prepared.hostname;
    jail_options.uid = options.uid;
    jail_options.gid = options.gid;
    jail_options.network_namespace = prepared.network == nullptr;
    jail_options.memory_bytes = prepared.machine.memory_bytes;
    jail_options.cpus = prepared.machine.cpus;
    jail_options.shares = static_cast<uint32_t>(prepared.machine.shares.size());
    jail_options.failure_status = protocol::kStatusSetupFailed;
    return jail::run_jailed(jail_options, [&](jail::Jail& jail) {
      try {
        return run_machine(options, prepared, &jail);
      } catch (const std::exception& error) {
        std::fprintf(stderr, "ember: %s\n", error.what());
        return protocol::kStatusSetupFailed;
      }
    });
  } catch (const std::exception& error) {
    std::fprintf(stderr, "ember: %s\n", error.what());
    return protocol::kStatusSetupFailed;
  }
}

}  // namespace ember::run
