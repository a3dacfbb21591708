#include "virtio_fs.hpp"

#include "base.hpp"
#include "checks.hpp"
#include "cmdline.hpp"
#include "print.hpp"
#include "timing.hpp"

namespace guest::virtio {
namespace {

// Configuration layout (§5.11.4): u8 tag[36], le32 num_request_queues.
constexpr uint32_t kConfigTag = 0;
constexpr uint32_t kTagSize = 36;
constexpr uint32_t kConfigNumRequestQueues = 36;
// Queues (§5.11.2): 0 high priority, 1.. requests (no notification queue: its feature is refused).
constexpr uint16_t kHighPriorityQueue = 0;
constexpr uint16_t kRequestQueue = 1;
constexpr uint16_t kHighPriorityQueueSize = 16;
constexpr uint16_t kRequestQueueSize = 64;
constexpr uint16_t kMaxIndirect = 8;
constexpr uint64_t kTimeoutMs = 10000;

// FUSE protocol (linux/fuse.h, written out: the guest has no system headers). Version 7.31 is the
// first with virtio-fs (FUSE_MAP_ALIGNMENT); a device must answer it with major 7.
constexpr uint32_t kFuseMajor = 7;
constexpr uint32_t kFuseMinor = 31;
constexpr uint64_t kRootId = 1;
constexpr uint32_t kLookup = 1, kForget = 2, kOpen = 14, kRead = 15, kWrite = 16, kRelease = 18, kFlush = 25,
                   kInit = 26, kCreate = 35;
constexpr uint32_t kOpenReadOnly = 0, kOpenWriteOnly = 1, kOpenCreate = 0100, kOpenExclusive = 0200;
constexpr uint32_t kModeRegular0644 = 0100644;
constexpr int32_t kErrorAccess = 13, kErrorReadOnlyFs = 30;
constexpr uint32_t kMaxReadahead = 128 * 1024;
constexpr uint32_t kReadSize = 4096;
constexpr uint32_t kArgsMax = 256;

struct InHeader {
    uint32_t len, opcode;
    uint64_t unique, nodeid;
    uint32_t uid, gid, pid;
    uint16_t total_extlen, padding;
};
struct OutHeader {
    uint32_t len;
    int32_t error;
    uint64_t unique;
};
struct InitIn {
    uint32_t major, minor, max_readahead, flags, flags2, unused[11];
};
struct InitOut {
    uint32_t major, minor, max_readahead, flags;
    uint16_t max_background, congestion_threshold;
    uint32_t max_write, time_gran;
    uint16_t max_pages, map_alignment;
    uint32_t flags2, unused[7];
};
struct Attr {
    uint64_t ino, size, blocks, atime, mtime, ctime;
    uint32_t atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags;
};
struct EntryOut {
    uint64_t nodeid, generation, entry_valid, attr_valid;
    uint32_t entry_valid_nsec, attr_valid_nsec;
    Attr attr;
};
struct OpenIn {
    uint32_t flags, open_flags;
};
struct OpenOut {
    uint64_t fh;
    uint32_t open_flags, padding;
};
struct ReadIn {  // also fuse_write_in: the same layout
    uint64_t fh, offset;
    uint32_t size, read_flags;
    uint64_t lock_owner;
    uint32_t flags, padding;
};
struct WriteOut {
    uint32_t size, padding;
};
struct CreateIn {
    uint32_t flags, mode, umask, open_flags;
};
struct ReleaseIn {
    uint64_t fh;
    uint32_t flags, release_flags;
    uint64_t lock_owner;
};
struct FlushIn {
    uint64_t fh;
    uint32_t unused, padding;
    uint64_t lock_owner;
};
struct ForgetIn {
    uint64_t nlookup;
};
static_assert(sizeof(InHeader) == 40 && sizeof(OutHeader) == 16 && sizeof(InitIn) == 64 && sizeof(InitOut) == 64);
static_assert(sizeof(Attr) == 88 && sizeof(EntryOut) == 128 && sizeof(OpenOut) == 16 && sizeof(ReadIn) == 40);
static_assert(sizeof(CreateIn) == 16 && sizeof(ReleaseIn) == 24 && sizeof(FlushIn) == 24);

// One request's buffers, in DMA memory: each is its own descriptor of the chain.
struct Exchange {
    InHeader in;
    uint8_t args[kArgsMax];
    OutHeader out;
    uint8_t reply[kReadSize];
};

const char* opcode_name(uint32_t opcode) {
    switch (opcode) {
    case kLookup: return "LOOKUP";
    case kForget: return "FORGET";
    case kOpen: return "OPEN";
    case kRead: return "READ";
    case kWrite: return "WRITE";
    case kRelease: return "RELEASE";
    case kFlush: return "FLUSH";
    case kInit: return "INIT";
    case kCreate: return "CREATE";
    default: return "?";
    }
}

class Session {
public:
    Session(Device& d, Virtqueue& requests, Virtqueue& hiprio, Exchange* x)
        : d_(d), q_(requests), hiprio_(hiprio), x_(x) {}

    // Sends one request (readable: in header, `args`, `data`; writable: out header, `reply_room` bytes) and
    // waits for its reply. False with `problem` set when no well-formed reply came; otherwise the FUSE
    // error (0 or -errno) is in error() and the reply's body (after the out header) in reply()/length().
    bool call(uint32_t opcode, uint64_t nodeid, const void* args, uint32_t args_size, const void* data,
              uint32_t data_size, uint32_t reply_room) {
        x_->in = InHeader{};
        x_->in.len = static_cast<uint32_t>(sizeof(InHeader) + args_size + data_size);
        x_->in.opcode = opcode;
        x_->in.unique = ++unique_;
        x_->in.nodeid = nodeid;
        x_->in.pid = 1;
        if (args_size > kArgsMax || reply_room > kReadSize) return failed(opcode, "request too big for the buffers");
        memcpy(x_->args, args, args_size);
        memset(&x_->out, 0xff, sizeof(OutHeader));
        Buffer chain[5];
        uint16_t count = 0;
        chain[count++] = Buffer{reinterpret_cast<uint64_t>(&x_->in), sizeof(InHeader), false};
        if (args_size != 0) chain[count++] = Buffer{reinterpret_cast<uint64_t>(x_->args), args_size, false};
        if (data_size != 0) chain[count++] = Buffer{reinterpret_cast<uint64_t>(data), data_size, false};
        chain[count++] = Buffer{reinterpret_cast<uint64_t>(&x_->out), sizeof(OutHeader), true};
        if (reply_room != 0) chain[count++] = Buffer{reinterpret_cast<uint64_t>(x_->reply), reply_room, true};
        if (!submit(q_, chain, count, x_)) return failed(opcode, "request queue full");
        kick(q_);
        uint32_t used_length;
        void* cookie;
        if (!next_used(q_, kTimeoutMs, used_length, cookie)) {
            format_to(problem_, sizeof(problem_), "FUSE_%s: no reply within %lu ms (device status %x)",
                      opcode_name(opcode), kTimeoutMs, status(d_));
            return false;
        }
        if (cookie != x_) return failed(opcode, "used element is not the request");
        if (used_length < sizeof(OutHeader) || used_length > sizeof(OutHeader) + reply_room) {
            format_to(problem_, sizeof(problem_), "FUSE_%s: used length %u (out header %zu + room %u)",
                      opcode_name(opcode), used_length, sizeof(OutHeader), reply_room);
            return false;
        }
        if (x_->out.unique != unique_ || x_->out.len != used_length) {
            format_to(problem_, sizeof(problem_), "FUSE_%s: reply unique=%lu len=%u, expected unique=%lu len=%u",
                      opcode_name(opcode), x_->out.unique, x_->out.len, unique_, used_length);
            return false;
        }
        length_ = used_length - static_cast<uint32_t>(sizeof(OutHeader));
        return true;
    }

    // The request with a fixed-size reply `T` expected on success (error() == 0).
    template <typename T>
    bool call_for(uint32_t opcode, uint64_t nodeid, const void* args, uint32_t args_size, T& out,
                  const void* data = nullptr, uint32_t data_size = 0) {
        if (!call(opcode, nodeid, args, args_size, data, data_size, sizeof(T))) return false;
        out = T{};
        if (error() == 0) {
            if (length_ < sizeof(T)) {
                format_to(problem_, sizeof(problem_), "FUSE_%s: reply body %u bytes, expected %zu", opcode_name(opcode),
                          length_, sizeof(T));
                return false;
            }
            memcpy(&out, x_->reply, sizeof(T));
        }
        return true;
    }

    // FUSE_FORGET on the high-priority queue: no reply, the element comes back used with length 0.
    bool forget(uint64_t nodeid, uint64_t nlookup) {
        x_->in = InHeader{};
        x_->in.len = sizeof(InHeader) + sizeof(ForgetIn);
        x_->in.opcode = kForget;
        x_->in.unique = ++unique_;
        x_->in.nodeid = nodeid;
        x_->in.pid = 1;
        ForgetIn forget{nlookup};
        memcpy(x_->args, &forget, sizeof(forget));
        Buffer chain[2] = {{reinterpret_cast<uint64_t>(&x_->in), sizeof(InHeader), false},
                           {reinterpret_cast<uint64_t>(x_->args), sizeof(ForgetIn), false}};
        if (!submit(hiprio_, chain, 2, x_)) return failed(kForget, "high-priority queue full");
        kick(hiprio_);
        uint32_t used_length;
        void* cookie;
        if (!next_used(hiprio_, kTimeoutMs, used_length, cookie)) {
            format_to(problem_, sizeof(problem_), "FUSE_FORGET: not used within %lu ms (device status %x)", kTimeoutMs,
                      status(d_));
            return false;
        }
        if (cookie != x_) return failed(kForget, "used element is not the request");
        length_ = used_length;
        return true;
    }

    int32_t error() const { return x_->out.error; }
    uint32_t length() const { return length_; }
    const uint8_t* reply() const { return x_->reply; }
    const char* problem() const { return problem_; }
    Virtqueue& requests() { return q_; }

private:
    bool failed(uint32_t opcode, const char* why) {
        format_to(problem_, sizeof(problem_), "FUSE_%s: %s", opcode_name(opcode), why);
        return false;
    }

    Device& d_;
    Virtqueue& q_;
    Virtqueue& hiprio_;
    Exchange* x_;
    uint64_t unique_ = 0;
    uint32_t length_ = 0;
    char problem_[160] = {};
};

// `name\0` as FUSE_LOOKUP's argument, or after fuse_create_in; returns the bytes used.
uint32_t put_name(uint8_t* out, uint32_t offset, const char* name) {
    size_t size = string_length(name) + 1;
    memcpy(out + offset, name, size);
    return static_cast<uint32_t>(offset + size);
}

// Printable ASCII as is, everything else as \xNN.
void print_content(const uint8_t* data, uint32_t size) {
    print("fs_read content=");
    for (uint32_t i = 0; i < size; ++i) {
        if (data[i] >= 0x20 && data[i] < 0x7f && data[i] != '\\') print("%c", data[i]);
        else print("\\x%02x", data[i]);
    }
    print("\n");
}

bool check_tag(Device& d, const char* name, Str expected) {
    char tag[kTagSize + 1] = {};
    uint32_t size = 0;
    for (uint32_t i = 0; i < kTagSize; ++i) {
        tag[i] = static_cast<char>(config8(d, kConfigTag + i));
        if (tag[i] == '\0') break;
        size = i + 1;
    }
    uint32_t queues = config32(d, kConfigNumRequestQueues);
    bool same = size == expected.size && memcmp(tag, expected.data, size) == 0;
    if (!same) {
        check_fail(name, "tag=%.*s (%u bytes), expected %.*s", static_cast<int>(size), tag, size,
                   static_cast<int>(expected.size), expected.data);
        return false;
    }
    if (queues == 0) {
        check_fail(name, "tag=%s num_request_queues=0", tag);
        return false;
    }
    check_ok(name, "tag=%s request_queues=%u features=%lx", tag, queues, d.features);
    return true;
}

void check_read(Session& s, uint8_t* data, uint32_t& read_node_lookups, uint64_t& read_node) {
    uint64_t start = read_tsc();
    uint8_t args[kArgsMax];
    EntryOut entry;
    if (!s.call_for(kLookup, kRootId, args, put_name(args, 0, "hello.txt"), entry)) {
        check_fail("fs_read", "%s", s.problem());
        return;
    }
    if (s.error() != 0 || entry.nodeid == 0) {
        check_fail("fs_read", "FUSE_LOOKUP hello.txt: error %d nodeid %lu", s.error(), entry.nodeid);
        return;
    }
    read_node = entry.nodeid;
    read_node_lookups = 1;
    OpenIn open{kOpenReadOnly, 0};
    OpenOut opened;
    if (!s.call_for(kOpen, entry.nodeid, &open, sizeof(open), opened)) {
        check_fail("fs_read", "%s", s.problem());
        return;
    }
    if (s.error() != 0) {
        check_fail("fs_read", "FUSE_OPEN hello.txt: error %d", s.error());
        return;
    }
    ReadIn read{};
    read.fh = opened.fh;
    read.size = kReadSize;
    bool ok = s.call(kRead, entry.nodeid, &read, sizeof(read), nullptr, 0, kReadSize);
    int32_t read_error = ok ? s.error() : 0;
    uint32_t size = ok ? s.length() : 0;
    if (ok && read_error == 0) memcpy(data, s.reply(), size);
    ReleaseIn release{opened.fh, kOpenReadOnly, 0, 0};
    bool released = s.call(kRelease, entry.nodeid, &release, sizeof(release), nullptr, 0, 0) && s.error() == 0;
    if (!ok) {
        check_fail("fs_read", "%s", s.problem());
        return;
    }
    if (read_error != 0) {
        check_fail("fs_read", "FUSE_READ: error %d", read_error);
        return;
    }
    print_content(data, size);
    if (size != entry.attr.size) {
        check_fail("fs_read", "read %u bytes, LOOKUP said size=%lu", size, entry.attr.size);
    } else if (!released) {
        check_fail("fs_read", "FUSE_RELEASE: %s", s.error() != 0 ? "error" : s.problem());
    } else {
        check_ok("fs_read", "bytes=%u nodeid=%lu fh=%lu wait=%s time_us=%lu", size, entry.nodeid, opened.fh,
                 wait_summary(s.requests()), elapsed_us(start));
    }
}

void check_write(Session& s, uint8_t* data) {
    uint64_t start = read_tsc();
    const char* name = "fs_write";
    uint8_t args[kArgsMax];
    CreateIn create{kOpenWriteOnly | kOpenCreate | kOpenExclusive, kModeRegular0644, 0, 0};
    memcpy(args, &create, sizeof(create));
    uint32_t args_size = put_name(args, sizeof(create), "from-guest.txt");
    if (!s.call(kCreate, kRootId, args, args_size, nullptr, 0, sizeof(EntryOut) + sizeof(OpenOut))) {
        check_fail(name, "%s", s.problem());
        return;
    }
    if (s.error() != 0 || s.length() < sizeof(EntryOut) + sizeof(OpenOut)) {
        check_fail(name, "FUSE_CREATE from-guest.txt: error %d, reply %u bytes", s.error(), s.length());
        return;
    }
    EntryOut entry;
    OpenOut opened;
    memcpy(&entry, s.reply(), sizeof(entry));
    memcpy(&opened, s.reply() + sizeof(entry), sizeof(opened));
    uint32_t size = static_cast<uint32_t>(string_length(kFsGuestText));
    memcpy(data, kFsGuestText, size);
    ReadIn write{};  // fuse_write_in
    write.fh = opened.fh;
    write.size = size;
    WriteOut written;
    if (!s.call_for(kWrite, entry.nodeid, &write, sizeof(write), written, data, size)) {
        check_fail(name, "%s", s.problem());
        return;
    }
    if (s.error() != 0 || written.size != size) {
        check_fail(name, "FUSE_WRITE: error %d, wrote %u of %u bytes", s.error(), written.size, size);
        return;
    }
    FlushIn flush{opened.fh, 0, 0, 0};
    if (!s.call(kFlush, entry.nodeid, &flush, sizeof(flush), nullptr, 0, 0) || s.error() != 0) {
        check_fail(name, "FUSE_FLUSH: error %d %s", s.error(), s.problem());
        return;
    }
    ReleaseIn release{opened.fh, kOpenWriteOnly, 0, 0};
    if (!s.call(kRelease, entry.nodeid, &release, sizeof(release), nullptr, 0, 0) || s.error() != 0) {
        check_fail(name, "FUSE_RELEASE: error %d %s", s.error(), s.problem());
        return;
    }
    EntryOut again;
    if (!s.call_for(kLookup, kRootId, args, put_name(args, 0, "from-guest.txt"), again) || s.error() != 0) {
        check_fail(name, "FUSE_LOOKUP from-guest.txt after writing: error %d %s", s.error(), s.problem());
        return;
    }
    s.forget(again.nodeid, 2);  // this lookup and the create's; the check does not depend on it
    if (again.attr.size != size || again.nodeid != entry.nodeid) {
        check_fail(name, "LOOKUP after writing: size=%lu nodeid=%lu, expected size=%u nodeid=%lu", again.attr.size,
                   again.nodeid, size, entry.nodeid);
        return;
    }
    check_ok(name, "bytes=%u nodeid=%lu time_us=%lu", size, entry.nodeid, elapsed_us(start));
}

void check_read_only(Session& s) {
    uint8_t args[kArgsMax];
    CreateIn create{kOpenWriteOnly | kOpenCreate | kOpenExclusive, kModeRegular0644, 0, 0};
    memcpy(args, &create, sizeof(create));
    uint32_t args_size = put_name(args, sizeof(create), "from-guest.txt");
    if (!s.call(kCreate, kRootId, args, args_size, nullptr, 0, sizeof(EntryOut) + sizeof(OpenOut))) {
        check_fail("fs_ro", "%s", s.problem());
        return;
    }
    int32_t error = s.error();
    if (error == -kErrorReadOnlyFs || error == -kErrorAccess) {
        check_ok("fs_ro", "create_error=%d", error);
        return;
    }
    check_fail("fs_ro", "FUSE_CREATE on a read-only share: error %d (expected -%d EROFS or -%d EACCES)", error,
               kErrorReadOnlyFs, kErrorAccess);
    if (error == 0 && s.length() >= sizeof(EntryOut) + sizeof(OpenOut)) {
        EntryOut entry;
        OpenOut opened;
        memcpy(&entry, s.reply(), sizeof(entry));
        memcpy(&opened, s.reply() + sizeof(entry), sizeof(opened));
        ReleaseIn release{opened.fh, kOpenWriteOnly, 0, 0};
        s.call(kRelease, entry.nodeid, &release, sizeof(release), nullptr, 0, 0);
    }
}

}  // namespace

bool fs_requested(const BootInfo& boot) {
    Str tag;
    return cmdline_value(boot.cmdline, "test.fs.tag", tag);
}

void check_fs(Device& d, uint32_t number, const BootInfo& boot) {
    Str expected;
    if (!cmdline_value(boot.cmdline, "test.fs.tag", expected) || number != 0) {
        print("ember-test-guest: fs%u %s: not checked (%s)\n", number, transport_name(d),
              number != 0 ? "only the first virtio-fs device is" : "no test.fs.tag=");
        return;
    }
    uint64_t start = read_tsc();
    uint64_t mark = dma_mark();
    const char* error = "";
    Virtqueue hiprio, requests;
    if (!begin(d, 0, error)) {
        check_fail("fs_tag", "%s set-up: %s", transport_name(d), error);
        return;
    }
    if (!check_tag(d, "fs_tag", expected)) {
        fail(d);
        return;
    }
    if (!queue_create(d, kHighPriorityQueue, kHighPriorityQueueSize, 0, hiprio, error) ||
        !queue_create(d, kRequestQueue, kRequestQueueSize, kMaxIndirect, requests, error)) {
        check_fail("fs_init", "%s queue set-up: %s", transport_name(d), error);
        fail(d);
        return;
    }
    driver_ok(d);
    auto* exchange = static_cast<Exchange*>(dma_alloc(sizeof(Exchange), 4096));
    auto* data = static_cast<uint8_t*>(dma_alloc(kReadSize, 4096));
    if (exchange == nullptr || data == nullptr) {
        check_fail("fs_init", "out of DMA memory");
        reset(d);
        dma_release(mark);
        return;
    }
    print("ember-test-guest: fs0 %s features=%lx queues=%u+%u indirect=%u event_idx=%u\n", transport_name(d),
          d.features, hiprio.size, requests.size, requests.indirect != nullptr ? 1 : 0, requests.event_idx ? 1 : 0);
    Session s(d, requests, hiprio, exchange);

    InitIn init{};
    init.major = kFuseMajor;
    init.minor = kFuseMinor;
    init.max_readahead = kMaxReadahead;
    InitOut reply;
    if (!s.call_for(kInit, 0, &init, sizeof(init), reply)) {
        check_fail("fs_init", "%s", s.problem());
    } else if (s.error() != 0 || reply.major != kFuseMajor) {
        check_fail("fs_init", "error %d major %u minor %u", s.error(), reply.major, reply.minor);
    } else {
        check_ok("fs_init", "major=%u minor=%u max_write=%u max_readahead=%u flags=%x", reply.major, reply.minor,
                 reply.max_write, reply.max_readahead, reply.flags);
        uint32_t lookups = 0;
        uint64_t node = 0;
        check_read(s, data, lookups, node);
        if (lookups != 0) {
            uint64_t forget_start = read_tsc();
            if (!s.forget(node, lookups)) check_fail("fs_forget", "%s", s.problem());
            else if (s.length() != 0) check_fail("fs_forget", "used length %u, expected 0 (no reply)", s.length());
            else check_ok("fs_forget", "queue=0 nodeid=%lu time_us=%lu", node, elapsed_us(forget_start));
        }
        if (cmdline_flag(boot.cmdline, "test.fs.ro")) check_read_only(s);
        else check_write(s, data);
    }
    print("ember-test-guest: fs0 requests=%lu interrupts=%lu notifies=%lu indirect_requests=%lu status=%x "
          "time_us=%lu\n", static_cast<uint64_t>(requests.last_used), interrupts(requests), requests.notifies,
          requests.indirect_used, status(d), elapsed_us(start));
    reset(d);
    dma_release(mark);
}

}  // namespace guest::virtio
