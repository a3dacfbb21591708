#include "init_stub.hpp"

#include "guest/protocol/protocol.hpp"

#include "base.hpp"
#include "cmdline.hpp"
#include "hostile_common.hpp"
#include "pci.hpp"
#include "power.hpp"
#include "print.hpp"
#include "timing.hpp"
#include "virtio.hpp"
#include "virtio_pci.hpp"

namespace guest {
namespace {

namespace proto = ember::protocol;

constexpr uint32_t kMaxDevices = 16;
constexpr uint16_t kReceiveQueue = 0;  // virtio console port 0 (§5.3.2)
constexpr uint16_t kTransmitQueue = 1;
constexpr uint32_t kRxBuffers = 128;
constexpr uint32_t kRxBufferSize = 16 * 1024;
constexpr uint32_t kTxChunks = 32;
constexpr uint32_t kTxChunkSize = proto::kHeaderSize + proto::kMaxPayload;
constexpr uint32_t kMaxArgs = 16;
constexpr uint32_t kArgBytes = 4096;
constexpr uint64_t kStartTimeoutMs = 60000;
constexpr uint64_t kGarbageWaitMs = 30000;
constexpr uint32_t kSigKill = 9;
constexpr uint32_t kSigTerm = 15;

constinit virtio::Device devices[kMaxDevices];

struct Channel {
    virtio::Device* device = nullptr;
    virtio::Virtqueue rx, tx;
    uint8_t* free_chunks[kTxChunks] = {};
    uint32_t free_count = 0;
    // Receiving: the frame being assembled.
    uint8_t header[proto::kHeaderSize] = {};
    uint32_t header_fill = 0;
    bool in_payload = false;
    uint8_t type = 0;
    uint32_t length = 0, payload_fill = 0;
    uint8_t* payload = nullptr;  // kMaxStartPayload bytes
};

constinit Channel channel;

// What the host has told us so far.
struct HostState {
    bool started = false;
    uint32_t spec_length = 0;
    char* spec = nullptr;
    bool stdin_eof = false;
    bool forward_stdin = false;  // cat: kStdin payloads go straight back as kStdout
    uint32_t signals[16] = {};
    uint32_t signal_head = 0, signal_tail = 0;
};

constinit HostState host;

[[noreturn]] void halt_with(const char* why) {
    print("ember-test-guest: init_stub: %s\n", why);
    power_off();
}

void reclaim_tx() {
    uint32_t length;
    void* cookie;
    while (virtio::pop_used(channel.tx, length, cookie)) channel.free_chunks[channel.free_count++] = static_cast<uint8_t*>(cookie);
}

uint8_t* take_chunk() {
    for (;;) {
        reclaim_tx();
        if (channel.free_count > 0) return channel.free_chunks[--channel.free_count];
        cpu_relax();
    }
}

// Sends a frame whose payload the caller already wrote at chunk + kHeaderSize.
void send_chunk(uint8_t* chunk, uint8_t type, uint32_t length) {
    proto::write_header(chunk, type, length);
    virtio::Buffer buffer{reinterpret_cast<uint64_t>(chunk), static_cast<uint32_t>(proto::kHeaderSize + length), false};
    if (!virtio::submit(channel.tx, &buffer, 1, chunk)) halt_with("transmit queue full");
    virtio::kick(channel.tx);
}

void send_frame(uint8_t type, const void* payload, uint32_t length) {
    uint8_t* chunk = take_chunk();
    memcpy(chunk + proto::kHeaderSize, payload, length);
    send_chunk(chunk, type, length);
}

void send_text(uint8_t type, const char* text) {
    size_t length = string_length(text);
    while (length > 0) {
        uint32_t part = length < proto::kMaxPayload ? static_cast<uint32_t>(length) : proto::kMaxPayload;
        send_frame(type, text, part);
        text += part;
        length -= part;
    }
}

void drain_tx() {
    while (channel.free_count < kTxChunks) {
        reclaim_tx();
        cpu_relax();
    }
}

[[noreturn]] void send_exit(uint32_t how, uint32_t value) {
    uint8_t payload[8];
    proto::put_u32(payload, how);
    proto::put_u32(payload + 4, value);
    send_frame(proto::kExit, payload, sizeof(payload));
    drain_tx();
    print("ember-test-guest: init_stub: exit how=%u value=%u\n", how, value);
    power_off();
}

[[noreturn]] void send_error(uint32_t status, const char* message) {
    uint8_t payload[256];
    proto::put_u32(payload, status);
    uint32_t length = 0;
    while (message[length] != '\0' && length + 4 < sizeof(payload)) {
        payload[4 + length] = static_cast<uint8_t>(message[length]);
        ++length;
    }
    send_frame(proto::kError, payload, 4 + length);
    drain_tx();
    print("ember-test-guest: init_stub: error %u %s\n", status, message);
    power_off();
}

bool parse_args(const char* spec);
extern const char* args[];
extern uint32_t arg_count;

void on_frame(uint8_t type, const uint8_t* payload, uint32_t length) {
    switch (type) {
        case proto::kStart:
            if (host.started) send_error(125, "init_stub: second kStart");
            host.started = true;
            host.spec = reinterpret_cast<char*>(const_cast<uint8_t*>(payload));
            host.spec_length = length;
            host.spec[length] = '\0';
            channel.payload = static_cast<uint8_t*>(virtio::dma_alloc(proto::kMaxPayload + 1));  // keep the spec
            if (channel.payload == nullptr) halt_with("out of DMA memory");
            if (!parse_args(host.spec)) send_error(125, "init_stub: no readable \"args\" in the launch spec");
            // kStdin may follow in the same receive buffer: decide now where it goes.
            host.forward_stdin = arg_count > 0 && make_str(args[0]).equals("cat");
            return;
        case proto::kStdin:
            if (host.forward_stdin && length > 0) send_frame(proto::kStdout, payload, length);
            return;
        case proto::kStdinEof:
            host.stdin_eof = true;
            return;
        case proto::kSignal:
            if (length == 4 && host.signal_head - host.signal_tail < 16) host.signals[host.signal_head++ % 16] = proto::get_u32(payload);
            return;
        case proto::kResize:  // nothing to resize: reported for the host test
            if (length == 4)
                print("ember-test-guest: init_stub: resize rows=%u cols=%u\n", proto::get_u16(payload),
                      proto::get_u16(payload + 2));
            return;
        default:
            return;
    }
}

void feed(const uint8_t* bytes, uint32_t count) {
    Channel& c = channel;
    while (count > 0) {
        if (!c.in_payload) {
            c.header[c.header_fill++] = *bytes++;
            --count;
            if (c.header_fill < proto::kHeaderSize) continue;
            c.header_fill = 0;
            if (const char* reason = proto::read_header(c.header, false, c.type, c.length)) send_error(125, reason);
            if (!host.started && c.type != proto::kStart) send_error(125, "init_stub: frame before kStart");
            c.in_payload = true;
            c.payload_fill = 0;
        }
        uint32_t take = c.length - c.payload_fill < count ? c.length - c.payload_fill : count;
        memcpy(c.payload + c.payload_fill, bytes, take);
        c.payload_fill += take;
        bytes += take;
        count -= take;
        if (c.payload_fill == c.length) {
            c.in_payload = false;
            on_frame(c.type, c.payload, c.length);
        }
    }
}

// Takes whatever the host sent, hands the buffers back, and frees finished transmit chunks.
void service() {
    uint32_t length;
    void* cookie;
    bool reposted = false;
    while (virtio::pop_used(channel.rx, length, cookie)) {
        auto* data = static_cast<uint8_t*>(cookie);
        feed(data, length <= kRxBufferSize ? length : kRxBufferSize);
        virtio::Buffer buffer{reinterpret_cast<uint64_t>(data), kRxBufferSize, true};
        virtio::submit(channel.rx, &buffer, 1, data);
        reposted = true;
    }
    if (reposted) virtio::kick(channel.rx);
    reclaim_tx();
}

bool next_signal(uint32_t& number) {
    service();
    if (host.signal_tail == host.signal_head) return false;
    number = host.signals[host.signal_tail++ % 16];
    return true;
}

// --- The spec's "args": a small scan of the JSON text ----------------------------------------------------

constinit char arg_bytes[kArgBytes] = {};
constinit const char* args[kMaxArgs] = {};
constinit uint32_t arg_count = 0;

const char* skip_space(const char* p) {
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') ++p;
    return p;
}

bool parse_args(const char* spec) {
    const char* p = spec;
    const char* key = "\"args\"";
    for (;; ++p) {
        if (*p == '\0') return false;
        if (Str{p, 6}.equals(key) && p[6] != '\0') break;
    }
    p = skip_space(p + 6);
    if (*p++ != ':') return false;
    p = skip_space(p);
    if (*p++ != '[') return false;
    uint32_t used = 0;
    for (;;) {
        p = skip_space(p);
        if (*p == ']') return true;
        if (*p == ',') {
            ++p;
            continue;
        }
        if (*p++ != '"' || arg_count == kMaxArgs) return false;
        args[arg_count++] = arg_bytes + used;
        for (; *p != '"'; ++p) {
            if (*p == '\0' || used + 2 >= kArgBytes) return false;
            char c = *p;
            if (c == '\\') {
                c = *++p;
                if (c == 'n') c = '\n';
                else if (c == 't') c = '\t';
                else if (c == 'u') { c = '?'; p += 4; }
                else if (c == '\0') return false;
            }
            arg_bytes[used++] = c;
        }
        ++p;
        arg_bytes[used++] = '\0';
    }
}

uint32_t number_arg(uint32_t index, uint32_t fallback) {
    uint64_t value;
    if (index < arg_count && make_str(args[index]).to_u64(value)) return static_cast<uint32_t>(value);
    return fallback;
}

// --- The built-in commands -------------------------------------------------------------------------------

void split(uint64_t total) {
    for (uint64_t sent = 0; sent < total;) {
        uint32_t length = total - sent < proto::kMaxPayload ? static_cast<uint32_t>(total - sent) : proto::kMaxPayload;
        uint8_t* out = take_chunk();
        for (uint32_t i = 0; i < length; ++i) out[proto::kHeaderSize + i] = static_cast<uint8_t>((sent + i) % 251);
        send_chunk(out, proto::kStdout, length);
        uint8_t* err = take_chunk();
        for (uint32_t i = 0; i < length; ++i) err[proto::kHeaderSize + i] = static_cast<uint8_t>((sent + i) * 13 + 5);
        send_chunk(err, proto::kStderr, length);
        sent += length;
        service();
    }
}

[[noreturn]] void run_command() {
    if (arg_count == 0) send_error(125, "init_stub: empty args");
    Str name = make_str(args[0]);
    print("ember-test-guest: init_stub: running %s (%u args)\n", args[0], arg_count);
    if (name.equals("exit")) send_exit(proto::kExited, number_arg(1, 0));
    if (name.equals("echo")) {
        for (uint32_t i = 1; i < arg_count; ++i) {
            send_text(proto::kStdout, args[i]);
            send_text(proto::kStdout, i + 1 < arg_count ? " " : "");
        }
        send_text(proto::kStdout, "\n");
        send_exit(proto::kExited, 0);
    }
    if (name.equals("cat")) {  // forward_stdin was set at kStart
        while (!host.stdin_eof) service();
        send_exit(proto::kExited, 0);
    }
    if (name.equals("split")) {
        split(number_arg(1, 0));
        send_exit(proto::kExited, 0);
    }
    if (name.equals("waitsig")) {
        bool trap = arg_count > 1 && make_str(args[1]).equals("trap");
        uint32_t number;
        while (!next_signal(number)) cpu_relax();
        if (trap && number == kSigTerm) send_exit(proto::kExited, 42);
        send_exit(proto::kSignaled, number);
    }
    if (name.equals("ignoresig")) {
        for (;;) {
            uint32_t number;
            if (!next_signal(number)) continue;
            print("ember-test-guest: init_stub: signal %u\n", number);
            if (number == kSigKill) send_exit(proto::kSignaled, kSigKill);
        }
    }
    if (name.equals("fail")) {
        char message[200];
        size_t length = 0;
        for (uint32_t i = 2; i < arg_count; ++i) {
            for (const char* p = args[i]; *p != '\0' && length + 2 < sizeof(message); ++p) message[length++] = *p;
            if (i + 1 < arg_count && length + 2 < sizeof(message)) message[length++] = ' ';
        }
        message[length] = '\0';
        send_error(number_arg(1, 125), message);
    }
    if (name.equals("garbage")) {
        uint8_t* chunk = take_chunk();
        send_chunk(chunk, 0x7f, 0);
        Deadline deadline(kGarbageWaitMs);
        while (!deadline.expired()) service();
        halt_with("garbage: ember did not stop the VM");
    }
    if (name.equals("env")) {
        send_text(proto::kStdout, host.spec);
        send_text(proto::kStdout, "\n");
        send_exit(proto::kExited, 0);
    }
    char message[160];
    format_to(message, sizeof(message), "%s: command not found", args[0]);
    send_error(127, message);
}

// --- test.hostile=1: malformed frames (the host side must treat the guest's stream as hostile) ------------

void send_raw(const uint8_t* data, uint32_t length) {
    while (length > 0) {
        uint32_t part = length < kTxChunkSize ? length : kTxChunkSize;
        uint8_t* chunk = take_chunk();
        memcpy(chunk, data, part);
        virtio::Buffer buffer{reinterpret_cast<uint64_t>(chunk), part, false};
        if (!virtio::submit(channel.tx, &buffer, 1, chunk)) halt_with("transmit queue full");
        virtio::kick(channel.tx);
        data += part;
        length -= part;
    }
}

void send_header(uint8_t type, uint8_t flags, uint16_t reserved, uint32_t length) {
    uint8_t header[proto::kHeaderSize];
    header[0] = type;
    header[1] = flags;
    proto::put_u16(header + 2, reserved);
    proto::put_u32(header + 4, length);
    send_raw(header, sizeof(header));
}

void send_u32s(uint8_t type, uint32_t first, uint32_t second, uint32_t count) {
    uint8_t payload[8];
    proto::put_u32(payload, first);
    proto::put_u32(payload + 4, second);
    send_frame(type, payload, count);
}

void send_hello() { send_u32s(proto::kHello, proto::kVersion, 0, 4); }

void await_start() {
    Deadline deadline(kStartTimeoutMs);
    while (!host.started) {
        if (deadline.expired()) halt_with("hostile: no kStart within 60 s");
        service();
    }
}

// Random bytes, `count` of them, from the seeded PRNG.
void send_random(hostile::Prng& prng, uint32_t count) {
    uint8_t block[512];
    while (count > 0) {
        uint32_t part = count < sizeof(block) ? count : static_cast<uint32_t>(sizeof(block));
        for (uint32_t i = 0; i < part; ++i) block[i] = static_cast<uint8_t>(prng.next());
        send_raw(block, part);
        count -= part;
    }
}

// After a frame ember must refuse: it stops the VM; if it does not, say so and power off.
[[noreturn]] void await_stop(const char* attack) {
    drain_tx();
    print("ember-test-guest: init_stub: hostile %s sent\n", attack);
    Deadline deadline(kGarbageWaitMs);
    while (!deadline.expired()) service();
    halt_with("hostile: ember did not stop the VM");
}

// test.hostile.frame=<attack> picks what the guest sends instead of the conversation (tests/e2e/
// ember_hostile_test.py runs each): a protocol violation ember must answer with one "protocol error" line and
// status 125, a stream that ends mid-frame, or hostile but well-formed frames it must pass on and survive.
[[noreturn]] void run_hostile_frames(const BootInfo& boot) {
    Str attack;
    if (!cmdline_value(boot.cmdline, "test.hostile.frame", attack)) attack = make_str("random");
    uint64_t seed = 1;
    cmdline_number(boot.cmdline, "test.seed", seed);
    hostile::Prng prng(seed);
    char name[48];
    format_to(name, sizeof(name), "%.*s", static_cast<int>(attack.size), attack.data);
    print("ember-test-guest: init_stub: hostile frame attack %s seed=%lu\n", name, seed);
    if (attack.equals("random")) {  // before kHello
        send_random(prng, 4096);
        await_stop(name);
    }
    if (attack.equals("before_hello")) {
        send_frame(proto::kStdout, "early", 5);
        await_stop(name);
    }
    if (attack.equals("host_type")) {  // a host -> guest type from the guest
        send_frame(proto::kStart, "{}", 2);
        await_stop(name);
    }
    if (attack.equals("flags")) {
        send_header(proto::kHello, 0x80, 0, 4);
        send_raw(reinterpret_cast<const uint8_t*>("\1\0\0\0"), 4);
        await_stop(name);
    }
    if (attack.equals("reserved")) {
        send_header(proto::kHello, 0, 0xbeef, 4);
        await_stop(name);
    }
    if (attack.equals("length_4g")) {
        send_header(proto::kHello, 0, 0, 0xffffffff);
        send_random(prng, 64 * 1024);
        await_stop(name);
    }
    if (attack.equals("hello_short")) {
        send_u32s(proto::kHello, proto::kVersion, 0, 3);
        await_stop(name);
    }
    if (attack.equals("hello_version")) {
        send_u32s(proto::kHello, 0xffffffff, 0, 4);
        await_stop(name);
    }
    if (attack.equals("truncated_header")) {  // 5 of kHello's 8 header bytes, then the guest powers off
        uint8_t header[proto::kHeaderSize];
        proto::write_header(header, proto::kHello, 4);
        send_raw(header, 5);
        drain_tx();
        halt_with("hostile truncated_header sent; powering off mid-frame");
    }
    // The rest after a proper kHello and kStart.
    send_hello();
    await_start();
    if (attack.equals("random_after_start")) {
        send_random(prng, 4096);
        await_stop(name);
    }
    if (attack.equals("over_max_payload")) {
        send_header(proto::kStdout, 0, 0, proto::kMaxPayload + 1);
        send_random(prng, 1024);
        await_stop(name);
    }
    if (attack.equals("hello_again")) {
        send_hello();
        await_stop(name);
    }
    if (attack.equals("exit_short")) {
        send_u32s(proto::kExit, proto::kExited, 0, 4);
        await_stop(name);
    }
    if (attack.equals("exit_how")) {
        send_u32s(proto::kExit, 7, 0, 8);
        await_stop(name);
    }
    if (attack.equals("exit_signal_0")) {
        send_u32s(proto::kExit, proto::kSignaled, 0, 8);
        await_stop(name);
    }
    if (attack.equals("error_status_0")) {
        send_u32s(proto::kError, 0, 0x41414141, 8);
        await_stop(name);
    }
    if (attack.equals("truncated_payload")) {  // a kStdout frame cut short, then the guest powers off
        send_header(proto::kStdout, 0, 0, 1000);
        send_random(prng, 10);
        drain_tx();
        halt_with("hostile truncated_payload sent; powering off mid-frame");
    }
    if (attack.equals("hostile_text")) {
        // Well formed: kLog and kStderr of random bytes (control characters, invalid UTF-8), a kError whose
        // 64 KiB message has newlines and escapes. ember must print one sanitised line and exit 77.
        for (uint32_t i = 0; i < 16; ++i) {
            uint8_t* chunk = take_chunk();
            for (uint32_t j = 0; j < proto::kMaxPayload; ++j) chunk[proto::kHeaderSize + j] = static_cast<uint8_t>(prng.next());
            send_chunk(chunk, i % 2 ? proto::kLog : proto::kStderr, proto::kMaxPayload);
        }
        uint8_t* chunk = take_chunk();
        proto::put_u32(chunk + proto::kHeaderSize, 77);
        for (uint32_t j = 4; j < proto::kMaxPayload; ++j) {
            uint8_t byte = static_cast<uint8_t>(prng.next());
            chunk[proto::kHeaderSize + j] = j < 40 ? static_cast<uint8_t>('A' + (j - 4) % 26) : byte;
        }
        send_chunk(chunk, proto::kError, proto::kMaxPayload);
        drain_tx();
        print("ember-test-guest: init_stub: hostile %s sent\n", name);
        power_off();
    }
    halt_with("hostile: unknown test.hostile.frame");
}

bool open_channel(const BootInfo& boot, uint32_t bsp_apic_id) {
    if (!virtio::dma_init(boot) || !pci::init(boot)) return false;
    virtio::set_interrupt_destination(bsp_apic_id);
    uint32_t count = virtio::discover_pci(devices, kMaxDevices);
    for (uint32_t i = 0; i < count && channel.device == nullptr; ++i)
        if (devices[i].device_id == virtio::kDeviceConsole) channel.device = &devices[i];
    if (channel.device == nullptr) return false;
    const char* error = "";
    if (!virtio::begin(*channel.device, 0, error) ||
        !virtio::queue_create(*channel.device, kReceiveQueue, virtio::kMaxQueueSize, 0, channel.rx, error) ||
        !virtio::queue_create(*channel.device, kTransmitQueue, virtio::kMaxQueueSize, 0, channel.tx, error)) {
        print("ember-test-guest: init_stub: console set-up: %s\n", error);
        return false;
    }
    virtio::driver_ok(*channel.device);
    auto* rx_memory = static_cast<uint8_t*>(virtio::dma_alloc(uint64_t{kRxBuffers} * kRxBufferSize, 4096));
    auto* tx_memory = static_cast<uint8_t*>(virtio::dma_alloc(uint64_t{kTxChunks} * kTxChunkSize, 4096));
    channel.payload = static_cast<uint8_t*>(virtio::dma_alloc(proto::kMaxStartPayload + 1, 4096));
    if (rx_memory == nullptr || tx_memory == nullptr || channel.payload == nullptr) return false;
    uint32_t buffers = kRxBuffers < channel.rx.size ? kRxBuffers : channel.rx.size;
    for (uint32_t i = 0; i < buffers; ++i) {
        uint8_t* data = rx_memory + uint64_t{i} * kRxBufferSize;
        virtio::Buffer buffer{reinterpret_cast<uint64_t>(data), kRxBufferSize, true};
        virtio::submit(channel.rx, &buffer, 1, data);
    }
    virtio::kick(channel.rx);
    for (uint32_t i = 0; i < kTxChunks; ++i) channel.free_chunks[channel.free_count++] = tx_memory + uint64_t{i} * kTxChunkSize;
    return true;
}

}  // namespace

void run_init_stub(const BootInfo& boot, uint32_t bsp_apic_id) {
    if (!open_channel(boot, bsp_apic_id)) halt_with("no usable virtio console (virtio-pci)");
    if (cmdline_flag(boot.cmdline, "test.hostile")) run_hostile_frames(boot);
    uint8_t hello[4];
    proto::put_u32(hello, proto::kVersion);
    send_frame(proto::kHello, hello, sizeof(hello));
    print("ember-test-guest: init_stub: kHello sent\n");
    Deadline deadline(kStartTimeoutMs);
    while (!host.started) {
        if (deadline.expired()) halt_with("no kStart within 60 s");
        service();
    }
    print("ember-test-guest: init_stub: kStart with %u bytes\n", host.spec_length);
    run_command();
}

}  // namespace guest
