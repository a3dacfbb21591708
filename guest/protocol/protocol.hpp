// The host <-> guest protocol of `ember run`: ember (host) and ember-init (PID 1 in the guest) talk
// over the guest's first virtio-console port (/dev/hvc0, put in raw mode by ember-init), one byte
// stream each way, cut into frames. This header is the whole definition; it is freestanding (only
// <stdint.h>/<stddef.h>) so the ember test guest can play ember-init's side with the same constants.
//
// Frame: an 8-byte header, then `length` payload bytes. All integers little-endian.
//   uint8_t  type      one of FrameType
//   uint8_t  flags     0 (receivers reject anything else)
//   uint16_t reserved  0
//   uint32_t length    payload bytes; at most kMaxPayload (kMaxStartPayload for kStart)
//
// Conversation:
//   guest -> host  kHello      payload: uint32 protocol version (kVersion). Sent once /dev/hvc0 is open,
//                              after ember-init has loaded the kernel modules it needs.
//   host  -> guest kStart      payload: the launch spec, UTF-8 JSON (see below). Exactly once, after kHello.
//   host  -> guest kStdin      payload: bytes for the payload's stdin (only when spec "stdin" is true).
//   host  -> guest kStdinEof   empty: close the payload's stdin. Sent at once when "stdin" is false.
//   host  -> guest kSignal     payload: uint32 signal number to deliver to the payload's process group
//                              leader (ember forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2; after
//                              the grace period it sends SIGKILL).
//   host  -> guest kResize     payload: uint16 rows, uint16 cols (only with "tty": true; also sent once
//                              right after kStart when the host has a terminal).
//   guest -> host  kStdout     payload: bytes the payload wrote to stdout (with a tty: the pty's output).
//   guest -> host  kStderr     payload: bytes the payload wrote to stderr (never with a tty).
//   guest -> host  kExit       payload: uint32 how (kExited or kSignaled), uint32 value (exit code 0-255
//                              or signal number). Sent after the payload has exited AND its stdout/stderr
//                              reached end of file (so every output byte precedes kExit). Then ember-init
//                              syncs, unmounts and powers the VM off.
//   guest -> host  kError      payload: uint32 exit status ember should use (125 set-up failed, 126 command
//                              found but could not be run, 127 command not found), then a UTF-8 message of
//                              one line naming the problem ("mount /dev/vda: No such device"). Ends the run
//                              like kExit: ember prints "ember: <message>" and exits with that status.
//   guest -> host  kLog        payload: a UTF-8 line from ember-init for ember's --log-level debug.
// Unknown frame types, a non-zero flags/reserved field or an oversized length are protocol errors:
// the receiver stops the run (ember: exit 125, "ember: guest protocol error: ...").
//
// Launch spec (kStart payload), JSON object; every key is present (ember writes them all):
//   "version":  1
//   "args":     ["sh", "-c", "exit 7"]            argv, already combined by docker's Entrypoint/Cmd rules;
//                                                  args[0] is looked up in PATH of "env" when it has no '/'
//   "env":      ["PATH=/usr/bin:/bin", "K=V"]     the payload's whole environment (image Env, then
//                                                  --env-file, then -e; HOSTNAME and HOME added as docker does)
//   "cwd":      "/"                                working directory (created if missing, like docker)
//   "uid": 0, "gid": 0, "groups": [0, 10]          numeric; ember resolves names from the image's /etc/passwd
//                                                  and /etc/group before boot
//   "hostname": "ember-1a2b3c"
//   "tty":      false                              true: payload gets a pty as stdin/stdout/stderr
//   "stdin":    false                              true: kStdin frames follow; false: stdin is /dev/null
//   "rlimits":  [{"resource": "nofile", "soft": 1048576, "hard": 1048576}]
//                                                  resource names as in `ulimit`/docker: nofile, nproc,
//                                                  core, stack, memlock, ...; 18446744073709551615
//                                                  (RLIM_INFINITY) is unlimited
//   "root":     {"serial": "ember-root", "fstype": "erofs"}
//                                                  the image disk: the virtio-blk disk whose serial (GET_ID,
//                                                  /sys/block/vdX/serial) is this; mounted read-only
//   "scratch":  {"serial": "ember-scratch", "fstype": "ext4"} or null
//                                                  the writable layer's disk (already formatted by ember);
//                                                  null: a tmpfs holds the writable layer
//   "mounts":   [{"type": "virtiofs", "source": "ember-v0", "target": "/data", "readonly": false}]
//                                                  -v shares: virtio-fs tag -> path inside the container
//   "network":  null, or {"interface": "eth0", "mac": "52:54:00:..", "address": "172.30.0.2/30",
//                         "gateway": "172.30.0.1", "mtu": 1500, "dns": ["172.30.0.1"]}
//                                                  the virtio-net interface with that MAC gets the address and
//                                                  a default route; /etc/resolv.conf and /etc/hosts written
//   "stop_signal": 15                              what ember-init sends the payload when the VM is asked to
//                                                  stop without a kSignal (e.g. ACPI power button); unused yet
//
// Initrd layout ember builds (newc cpio): /init and /ember-init (the same static binary), /ember/modules.load
// (one path per line, relative to the initrd root, in load order; may be empty) with the .ko files it lists
// under /lib/modules/<release>/. ember-init loads each with finit_module() before opening /dev/hvc0.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace ember::protocol {

inline constexpr uint32_t kVersion = 1;
inline constexpr size_t kHeaderSize = 8;
inline constexpr uint32_t kMaxPayload = 64 * 1024;
inline constexpr uint32_t kMaxStartPayload = 1024 * 1024;

enum FrameType : uint8_t {
    // host -> guest
    kStart = 0x01,
    kStdin = 0x02,
    kStdinEof = 0x03,
    kSignal = 0x04,
    kResize = 0x05,
    // guest -> host
    kHello = 0x81,
    kStdout = 0x82,
    kStderr = 0x83,
    kExit = 0x84,
    kError = 0x85,
    kLog = 0x86,
};

// kExit's first word.
enum ExitHow : uint32_t { kExited = 0, kSignaled = 1 };

// ember's own exit statuses for `ember run`, as docker's: the payload's status otherwise (0-255, 128+N
// when killed by signal N).
inline constexpr int kStatusSetupFailed = 125;   // ember, the VM or ember-init failed; message says why
inline constexpr int kStatusCannotInvoke = 126;  // command found but not executable
inline constexpr int kStatusNotFound = 127;      // command not found

inline bool host_to_guest(uint8_t type) { return type >= kStart && type <= kResize; }
inline bool guest_to_host(uint8_t type) { return type >= kHello && type <= kLog; }
inline uint32_t max_payload(uint8_t type) { return type == kStart ? kMaxStartPayload : kMaxPayload; }

inline void put_u16(uint8_t* out, uint16_t value) {
    out[0] = static_cast<uint8_t>(value);
    out[1] = static_cast<uint8_t>(value >> 8);
}
inline void put_u32(uint8_t* out, uint32_t value) {
    for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(value >> (8 * i));
}
inline uint16_t get_u16(const uint8_t* in) { return static_cast<uint16_t>(in[0] | (in[1] << 8)); }
inline uint32_t get_u32(const uint8_t* in) {
    return static_cast<uint32_t>(in[0]) | (static_cast<uint32_t>(in[1]) << 8) |
           (static_cast<uint32_t>(in[2]) << 16) | (static_cast<uint32_t>(in[3]) << 24);
}

// Writes a frame header for `type` with `length` payload bytes into out[0..kHeaderSize).
inline void write_header(uint8_t* out, uint8_t type, uint32_t length) {
    out[0] = type;
    out[1] = 0;
    put_u16(out + 2, 0);
    put_u32(out + 4, length);
}

// Checks a received header: returns nullptr and sets type/length, or a static reason string.
// `from_guest`: the header came from the guest (ember's side) or from the host (ember-init's side).
inline const char* read_header(const uint8_t* in, bool from_guest, uint8_t& type, uint32_t& length) {
    type = in[0];
    length = get_u32(in + 4);
    if (from_guest ? !guest_to_host(type) : !host_to_guest(type)) return "unknown frame type";
    if (in[1] != 0 || get_u16(in + 2) != 0) return "non-zero flags or reserved field";
    if (length > max_payload(type)) return "frame longer than the protocol allows";
    return nullptr;
}

}  // namespace ember::protocol
