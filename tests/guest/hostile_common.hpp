// What hostile.cpp (virtqueue and transport attacks) and hostile_registers.cpp (register fuzzing, MSI-X)
// share: the seeded PRNG, where guest RAM is as ember maps it, and the per-device tallies and lines.
#pragma once

#include <stdint.h>

#include "bootinfo.hpp"
#include "virtio.hpp"

namespace guest::hostile {

// xorshift64* (Vigna): deterministic from test.seed, so a failing sequence can be replayed.
class Prng {
public:
    explicit Prng(uint64_t seed) : state_(seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull) {}
    uint64_t next() {
        state_ ^= state_ >> 12;
        state_ ^= state_ << 25;
        state_ ^= state_ >> 27;
        return state_ * 0x2545f4914f6cdd1dull;
    }
    uint32_t below(uint32_t bound) { return bound == 0 ? 0 : static_cast<uint32_t>(next() % bound); }

private:
    uint64_t state_;
};

// Guest RAM as ember backs it (boot/e820.cpp: one region from 0, one from 4 GiB when there is more than
// 3 GiB). The e820 map's reserved holes below 1 MiB are RAM to ember, so they are not "outside RAM".
struct RamMap {
    uint64_t low_end = 0;                    // end of the region that starts at 0
    uint64_t high_start = 0, high_end = 0;   // the region above 4 GiB; both 0 without one
    uint64_t scratch = 0, scratch_end = 0;   // RAM the guest never uses (after the DMA arena): ember may
                                             // write there without hurting the guest
    uint64_t outside = 0;                    // an address in no RAM region (the 32-bit MMIO hole)
};

struct Context {
    const BootInfo* boot = nullptr;
    Prng* prng = nullptr;
    RamMap ram;
    uint64_t seed = 1;
    uint64_t quiet_ms = 50;    // how long "no answer" is waited for
    uint64_t answer_ms = 3000; // how long an expected answer may take
    uint64_t blk_seed = 7;     // the disk's pattern (tests/guest/virtio_blk.hpp)
    int wild_slot = -1;        // counting vector for MSI-X messages the attacks aim anywhere
    uint32_t ip = 0x0a000202, peer_ip = 0x0a000201;
    bool net_rx = false;       // test.hostile.net_rx=1: the tap answers ARP (recovery waits for a frame)
    uint32_t fuzz_accesses = 2000;  // random accesses per register range
    uint64_t storm_ms = 300;        // how long the second CPU hammers a device's registers
    uint64_t request_ms = 3000;     // how long recover()'s ordinary request may take
};

// How ember answered an attack (bit set: several may be acceptable).
enum AnswerKind : uint8_t {
    kNeedsReset = 1,  // DEVICE_NEEDS_RESET in the status register
    kUsed = 2,        // a used element came back (length; blk: the status byte)
    kNothing = 4,     // nothing within Context::quiet_ms
    kRefused = 8,     // a register write did not take (read back unchanged / sanitised)
};

struct Answer {
    uint8_t kind = kNothing;
    uint32_t length = 0;
    int status = -1;  // blk status byte, -1 when there is none
    char note[80] = {};
};

// One device on one transport, and what its attacks came to.
struct Target {
    Context* context = nullptr;
    virtio::Device* device = nullptr;
    char name[24] = {};  // "blk/pci"
    uint32_t attacks = 0, unexpected = 0, unrecovered = 0;
};

constexpr uint32_t kDeviceFs = 26;  // virtio 1.2 §5.11
constexpr uint32_t kFuseOutHeader = 16, kFuseReplyRoom = 256;
// A FUSE_INIT request in `buffer` (the reply goes after it); returns the request's length.
uint32_t fuse_init(uint8_t* buffer, uint64_t unique);
// Whether `used` bytes at `reply` are a well-formed FUSE reply to `unique` (an error reply counts: virtiofsd
// may refuse a second INIT; any reply proves the path through ember to virtiofsd and back).
bool fuse_reply_ok(const uint8_t* reply, uint32_t used, uint64_t unique);

// Resets the device and proves it works with an ordinary request; `why` says what failed.
bool recover(Target& target, char* why, uint32_t why_size);
// Recovers the device and prints `hostile: <device>/<transport>: <attack>: <answer>[ UNEXPECTED (wanted ..)];
// recovered|NOT RECOVERED (...)`, counting both in the target.
void conclude(Target& target, const char* attack, const Answer& answer, uint8_t wanted, int wanted_status = -1);
// Text for a set of answer kinds ("needs_reset|used").
const char* kinds_text(uint8_t kinds, char* buffer, uint32_t size);

// hostile_registers.cpp.
void msix_attacks(Target& target);
// Random-sized reads and writes at every offset of the device's registers (virtio-mmio window, or the
// virtio-pci BAR and its configuration space), then the device must still work.
void fuzz_device_registers(Target& target);
// With a second CPU waiting (--cpus 2): it hammers the device's registers (resets, notifications, random
// accesses) while this CPU keeps setting the device up and using it; afterwards the device must work.
void concurrent_register_storm(Target& target);
// The platform's registers ember emulates: PCI configuration space through 0xcf8/0xcfc and ECAM (every
// slot), COM1, i8042, pvpanic, ACPI PM, unassigned ports and MMIO. Returns false if something broke.
void fuzz_platform(Context& context, virtio::Device* devices, uint32_t count, bool pci, uint32_t& accesses);
// A value for a register that holds a guest-physical ring address: inside the scratch RAM, or outside
// RAM, never where the guest's own code and data are.
uint64_t safe_ring_address(Context& context);

}  // namespace guest::hostile
