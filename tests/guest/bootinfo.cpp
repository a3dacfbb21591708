#include "bootinfo.hpp"

#include "layout.h"

namespace guest {
namespace {

// struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h).
constexpr uint32_t kPvhMagic = 0x336ec578;
constexpr uint64_t kPvhVersion = 4;
constexpr uint64_t kPvhCmdline = 24;
constexpr uint64_t kPvhRsdp = 32;
constexpr uint64_t kPvhMemmap = 40;
constexpr uint64_t kPvhMemmapEntries = 48;
constexpr uint64_t kPvhMemmapEntrySize = 24;  // u64 addr, u64 size, u32 type, u32 reserved

// struct boot_params (Documentation/arch/x86/zero-page.rst, boot.rst).
constexpr uint64_t kBootParamsAcpiRsdp = 0x070;
constexpr uint64_t kBootParamsExtCmdline = 0x0c8;
constexpr uint64_t kBootParamsE820Entries = 0x1e8;
constexpr uint64_t kBootParamsCmdline = 0x228;
constexpr uint64_t kBootParamsE820Table = 0x2d0;
constexpr uint64_t kBootParamsE820EntrySize = 20;

void read_pvh(uint64_t start_info, BootInfo& info) {
    if (read32(start_info) != kPvhMagic) {
        info.error = "bad hvm_start_info magic";
        return;
    }
    uint64_t cmdline = read64(start_info + kPvhCmdline);
    if (cmdline != 0) info.cmdline = reinterpret_cast<const char*>(cmdline);
    info.rsdp_hint = read64(start_info + kPvhRsdp);
    if (read32(start_info + kPvhVersion) >= 1) {
        uint64_t memmap = read64(start_info + kPvhMemmap);
        uint32_t count = read32(start_info + kPvhMemmapEntries);
        for (uint32_t i = 0; i < count && i < kMaxE820Entries; ++i) {
            uint64_t entry = memmap + i * kPvhMemmapEntrySize;
            info.e820[i] = E820Entry{read64(entry), read64(entry + 8), read32(entry + 16)};
            info.e820_count = i + 1;
        }
    }
    info.valid = true;
}

void read_boot_params(uint64_t boot_params, BootInfo& info) {
    if (boot_params == 0) {
        info.error = "no boot_params";
        return;
    }
    uint64_t cmdline = read32(boot_params + kBootParamsCmdline) |
                       (uint64_t{read32(boot_params + kBootParamsExtCmdline)} << 32);
    if (cmdline != 0) info.cmdline = reinterpret_cast<const char*>(cmdline);
    info.rsdp_hint = read64(boot_params + kBootParamsAcpiRsdp);
    uint32_t count = read8(boot_params + kBootParamsE820Entries);
    for (uint32_t i = 0; i < count && i < kMaxE820Entries; ++i) {
        uint64_t entry = boot_params + kBootParamsE820Table + i * kBootParamsE820EntrySize;
        info.e820[i] = E820Entry{read64(entry), read64(entry + 8), read32(entry + 16)};
        info.e820_count = i + 1;
    }
    info.valid = true;
}

}  // namespace

const char* entry_kind_name(uint64_t entry_kind) {
    switch (entry_kind) {
    case ENTRY_PVH: return "pvh";
    case ENTRY_LINUX64: return "linux64";
    case ENTRY_LINUX32: return "linux32";
    default: return "unknown";
    }
}

void read_boot_info(uint64_t entry_kind, uint64_t pointer, BootInfo& info) {
    info.entry_kind = entry_kind;
    info.pointer = pointer;
    if (entry_kind == ENTRY_PVH) {
        read_pvh(pointer, info);
    } else {
        read_boot_params(pointer, info);
    }
}

uint64_t e820_ram_bytes(const BootInfo& info) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < info.e820_count; ++i) {
        if (info.e820[i].type == kE820Ram) total += info.e820[i].size;
    }
    return total;
}

bool e820_is_ram(const BootInfo& info, uint64_t address, uint64_t size) {
    for (uint32_t i = 0; i < info.e820_count; ++i) {
        const E820Entry& entry = info.e820[i];
        if (entry.type == kE820Ram && address >= entry.address && address + size <= entry.address + entry.size) {
            return true;
        }
    }
    return false;
}

}  // namespace guest
