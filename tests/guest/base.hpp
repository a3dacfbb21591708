// Basic types and helpers of the freestanding ember test guest (no libc, no C++ library).
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace guest {

// A non-owning view of characters (std::string_view needs the hosted library).
struct Str {
    const char* data = nullptr;
    size_t size = 0;

    bool empty() const { return size == 0; }
    bool equals(const char* text) const;
    bool starts_with(const char* prefix) const;
    // Parses a decimal number; false if this is not one.
    bool to_u64(uint64_t& value) const;
};

size_t string_length(const char* text);
Str make_str(const char* text);

// Guest-physical memory is identity mapped and user-accessible. The empty asm hides the constant
// address from the optimizer, which otherwise warns about fixed low addresses (e.g. the BDA at 0x40e).
template <typename T>
inline volatile T* physical(uint64_t address) {
    asm("" : "+r"(address));
    return reinterpret_cast<volatile T*>(address);
}

inline uint8_t read8(uint64_t address) { return *physical<uint8_t>(address); }
inline uint16_t read16(uint64_t address) { return *physical<uint16_t>(address); }
inline uint32_t read32(uint64_t address) { return *physical<uint32_t>(address); }
inline uint64_t read64(uint64_t address) { return *physical<uint64_t>(address); }
inline void write8(uint64_t address, uint8_t value) { *physical<uint8_t>(address) = value; }
inline void write16(uint64_t address, uint16_t value) { *physical<uint16_t>(address) = value; }
inline void write32(uint64_t address, uint32_t value) { *physical<uint32_t>(address) = value; }

// Current privilege level (low bits of CS).
inline unsigned current_cpl() {
    uint16_t cs;
    asm volatile("mov %%cs, %0" : "=r"(cs));
    return cs & 3;
}

inline void cpu_relax() { asm volatile("pause" ::: "memory"); }

}  // namespace guest

extern "C" {
void* memcpy(void* destination, const void* source, size_t size);
void* memmove(void* destination, const void* source, size_t size);
void* memset(void* destination, int value, size_t size);
int memcmp(const void* left, const void* right, size_t size);
}
