"""The host side of `ember run`'s protocol (guest/protocol/protocol.hpp) in Python, for tests that play
ember against ember-init: frame encoding, a checking frame reader, the launch spec's defaults, and a
session that sends stdin/signals while collecting the guest's frames until kExit or kError."""
import json
import select
import socket
import struct
import threading
import time

VERSION = 1
HEADER_SIZE = 8
MAX_PAYLOAD = 64 * 1024
MAX_START_PAYLOAD = 1024 * 1024

# host -> guest
START, STDIN, STDIN_EOF, SIGNAL, RESIZE = 0x01, 0x02, 0x03, 0x04, 0x05
# guest -> host
HELLO, STDOUT, STDERR, EXIT, ERROR, LOG = 0x81, 0x82, 0x83, 0x84, 0x85, 0x86
EXITED, SIGNALED = 0, 1


class ProtocolError(Exception):
    pass


def max_payload(frame_type):
    return MAX_START_PAYLOAD if frame_type == START else MAX_PAYLOAD


def encode(frame_type, payload=b"", flags=0, reserved=0, length=None):
    """One frame; flags/reserved/length can be forced to build invalid frames on purpose."""
    return struct.pack("<BBHI", frame_type, flags, reserved,
                       len(payload) if length is None else length) + payload


def u32s(*words):
    return struct.pack("<" + "I" * len(words), *words)


class FrameReader:
    """Cuts frames from the guest's byte stream, checking them as ember does."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data):
        self.buffer += data
        frames = []
        while len(self.buffer) >= HEADER_SIZE:
            frame_type, flags, reserved, length = struct.unpack_from("<BBHI", self.buffer)
            if not HELLO <= frame_type <= LOG:
                raise ProtocolError(f"unknown frame type 0x{frame_type:02x}")
            if flags or reserved:
                raise ProtocolError("non-zero flags or reserved field")
            if length > max_payload(frame_type):
                raise ProtocolError(f"frame of {length} bytes")
            if len(self.buffer) < HEADER_SIZE + length:
                break
            frames.append((frame_type, bytes(self.buffer[HEADER_SIZE:HEADER_SIZE + length])))
            del self.buffer[:HEADER_SIZE + length]
        return frames


def launch_spec(args, **overrides):
    """A launch spec with every key (as ember writes them), for a tmpfs writable layer."""
    spec = {
        "version": 1,
        "args": list(args),
        "env": ["PATH=/usr/local/bin:/usr/bin:/bin", "HOSTNAME=ember-test", "HOME=/root"],
        "cwd": "/",
        "uid": 0, "gid": 0, "groups": [0],
        "hostname": "ember-test",
        "tty": False,
        "stdin": False,
        "rlimits": [{"resource": "nofile", "soft": 1048576, "hard": 1048576}],
        "root": {"serial": "ember-root", "fstype": "erofs"},
        "scratch": None,
        "mounts": [],
        "network": None,
        "stop_signal": 15,
    }
    spec.update(overrides)
    return spec


class Outcome:
    """What the guest said in one run."""

    def __init__(self):
        self.hello = None          # the version kHello carried
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.logs = []
        self.exit = None           # (how, value) from kExit
        self.error = None          # (status, message) from kError
        self.protocol_error = None  # what was wrong with the guest's frames
        self.closed = False        # the guest closed the channel before kExit/kError
        self.timed_out = False
        self.frames_after_end = 0

    def describe(self):
        return (f"hello={self.hello} exit={self.exit} error={self.error} protocol_error="
                f"{self.protocol_error} closed={self.closed} timed_out={self.timed_out} "
                f"stdout={bytes(self.stdout[:200])!r} stderr={bytes(self.stderr[:300])!r} "
                f"logs={self.logs[-3:]}")


class HostSession:
    """ember's side on `sock`: waits for kHello, sends kStart (and kStdinEof when the spec says no
    stdin), then runs `script(session)` on a thread (it may call send/send_stdin/wait_stdout) while
    this thread reads frames until kExit or kError."""

    def __init__(self, sock):
        self.sock = sock
        self.reader = FrameReader()
        self.outcome = Outcome()
        self.lock = threading.Lock()
        self.stdout_seen = threading.Condition(self.lock)
        self.send_lock = threading.Lock()

    def send_raw(self, data):
        with self.send_lock:
            self.sock.sendall(data)

    def send(self, frame_type, payload=b""):
        self.send_raw(encode(frame_type, payload))

    def send_stdin(self, data):
        for start in range(0, len(data), MAX_PAYLOAD):
            self.send(STDIN, data[start:start + MAX_PAYLOAD])

    def wait_stdout(self, needle, timeout):
        """Blocks until `needle` is in stdout so far (or timeout); returns whether it came."""
        with self.stdout_seen:
            return self.stdout_seen.wait_for(lambda: needle in self.outcome.stdout or
                                             self.outcome.exit or self.outcome.error,
                                             timeout) and needle in self.outcome.stdout

    def _receive(self, deadline, until):
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                self.outcome.timed_out = True
                return
            ready, _, _ = select.select([self.sock], [], [], min(left, 1.0))
            if not ready:
                continue
            data = self.sock.recv(1 << 20)
            if not data:
                self.outcome.closed = True
                return
            try:
                frames = self.reader.feed(data)
            except ProtocolError as error:
                self.outcome.protocol_error = str(error)
                return
            for frame_type, payload in frames:
                self._on_frame(frame_type, payload)

    def _on_frame(self, frame_type, payload):
        outcome = self.outcome
        with self.lock:
            if outcome.exit or outcome.error:
                outcome.frames_after_end += 1
            elif frame_type == HELLO:
                if outcome.hello is not None or len(payload) != 4:
                    outcome.protocol_error = "kHello again or of the wrong size"
                outcome.hello = struct.unpack("<I", payload[:4])[0] if len(payload) >= 4 else None
            elif outcome.hello is None and frame_type != LOG:
                outcome.protocol_error = f"frame 0x{frame_type:02x} before kHello"
            elif frame_type == STDOUT:
                outcome.stdout += payload
            elif frame_type == STDERR:
                outcome.stderr += payload
            elif frame_type == LOG:
                outcome.logs.append(payload.decode(errors="replace"))
            elif frame_type == EXIT:
                outcome.exit = struct.unpack("<II", payload) if len(payload) == 8 else ("bad", payload)
            elif frame_type == ERROR:
                status = struct.unpack_from("<I", payload)[0] if len(payload) >= 4 else None
                outcome.error = (status, payload[4:].decode(errors="replace"))
            self.stdout_seen.notify_all()

    def run(self, spec, script=None, timeout=60, start_payload=None, with_start=b""):
        """with_start: raw frames sent in the same write as kStart (they reach the guest together)."""
        deadline = time.monotonic() + timeout
        self._receive(deadline, lambda: self.outcome.hello is not None or self.outcome.error)
        if self.outcome.hello is None:
            return self.outcome
        try:
            self.send_raw(encode(START, start_payload if start_payload is not None else
                                 json.dumps(spec).encode()) + with_start)
            if spec and not spec.get("stdin"):
                self.send(STDIN_EOF)
        except OSError:
            pass  # The guest already gave up (kError after kHello); its frames are still to read.
        worker = None
        if script:
            worker = threading.Thread(target=self._run_script, args=(script,), daemon=True)
            worker.start()
        self._receive(deadline, lambda: self.outcome.exit or self.outcome.error or
                      self.outcome.protocol_error)
        if worker:
            worker.join(timeout=max(1, deadline - time.monotonic()))
        return self.outcome

    def _run_script(self, script):
        try:
            script(self)
        except OSError:
            pass  # The guest went away while we were still sending; the outcome says why.


def socketpair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
