#include "iomap.hpp"

#include "base.hpp"
#include "layout.h"
#include "portio.hpp"

extern "C" uint64_t boot_pml4[];

namespace guest {
namespace {

constexpr uint64_t kLargePage = 2 * 1024 * 1024;
constexpr uint64_t kAddressMask = 0x000ffffffffff000;
constexpr uint64_t kTableFlags = PTE_PRESENT | PTE_WRITE | PTE_USER;
constexpr uint64_t kUncachedPageFlags = PTE_PRESENT | PTE_WRITE | PTE_USER | PTE_LARGE | PTE_PCD | PTE_PWT;
constexpr uint64_t kMaxAddress = uint64_t{1} << 48;
constexpr int kPoolPages = 16;

alignas(4096) uint64_t pool[kPoolPages][512];  // .bss: zero when user_main has cleared it
int pool_used;

// The next-level table of `entry`, creating an empty one if it is not present; nullptr if out of pages.
uint64_t* next_table(uint64_t& entry) {
    if (entry & PTE_PRESENT) return reinterpret_cast<uint64_t*>(entry & kAddressMask);
    if (pool_used == kPoolPages) return nullptr;
    uint64_t* table = pool[pool_used++];
    entry = reinterpret_cast<uint64_t>(table) | kTableFlags;
    return table;
}

}  // namespace

bool map_uncached(uint64_t address, uint64_t size) {
    if (size == 0) return true;
    uint64_t first = address & ~(kLargePage - 1);
    uint64_t end = address + size;
    if (end > kMaxAddress || end < address) return false;
    for (uint64_t page = first; page < end; page += kLargePage) {
        uint64_t* pdpt = next_table(boot_pml4[(page >> 39) & 511]);
        if (pdpt == nullptr) return false;
        volatile uint64_t& pdpt_entry = pdpt[(page >> 30) & 511];
        uint64_t pdpt_value = pdpt_entry;
        uint64_t* pd = next_table(pdpt_value);
        if (pd == nullptr) return false;
        pdpt_entry = pdpt_value;
        // entry.S maps the low 4 GiB with 2 MiB pages: only large-page PDEs are ever found here.
        *physical<uint64_t>(reinterpret_cast<uint64_t>(&pd[(page >> 21) & 511])) = page | kUncachedPageFlags;
    }
    asm volatile("mfence" ::: "memory");
    flush_tlb();
    return true;
}

}  // namespace guest
