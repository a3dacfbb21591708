// What the loader handed over: PVH hvm_start_info or Linux boot_params.
#pragma once

#include <stdint.h>

#include "base.hpp"

namespace guest {

constexpr uint32_t kE820Ram = 1;
constexpr uint32_t kMaxE820Entries = 128;

struct E820Entry {
    uint64_t address = 0;
    uint64_t size = 0;
    uint32_t type = 0;
};

struct BootInfo {
    uint64_t entry_kind = 0;
    uint64_t pointer = 0;  // hvm_start_info or boot_params
    bool valid = false;
    const char* error = "";
    const char* cmdline = "";
    uint64_t rsdp_hint = 0;  // 0 when the loader gave none
    uint32_t e820_count = 0;
    E820Entry e820[kMaxE820Entries];
};

const char* entry_kind_name(uint64_t entry_kind);
// Fills `info` from the structure the loader passed; info.valid is false (with info.error) if it is unusable.
void read_boot_info(uint64_t entry_kind, uint64_t pointer, BootInfo& info);
uint64_t e820_ram_bytes(const BootInfo& info);
// True if [address, address + size) lies inside one e820 RAM entry.
bool e820_is_ram(const BootInfo& info, uint64_t address, uint64_t size);

}  // namespace guest
