// Guest physical memory: memfd-backed regions and the one checked translation from guest-physical
// addresses to host memory. Every address that comes from a guest goes through slice().
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vmm/unique_fd.hpp"

namespace ember {

struct MemoryRegion {
  uint64_t guest_address;
  uint64_t size;
  std::byte* host;  // Owned by GuestMemory's mapping.
};

class GuestMemory {
 public:
  struct RegionSpec {
    uint64_t guest_address;
    uint64_t size;
  };

  // Maps one memfd of the total size and lays the regions over it in order. Throws Error.
  explicit GuestMemory(const std::vector<RegionSpec>& regions);
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  // The host view of [gpa, gpa + length), or nullopt when any byte of it is outside one region
  // (gaps, straddling two regions, overflow). A zero length is valid inside or at the end of a region.
  std::optional<std::span<std::byte>> slice(uint64_t gpa, uint64_t length) const;

  // Copies to/from guest memory; false (nothing copied) when the range is not fully inside one region.
  bool read(uint64_t gpa, std::span<std::byte> out) const;
  bool write(uint64_t gpa, std::span<const std::byte> in) const;

  // Setup-time helpers that throw Error when the range is not guest memory.
  std::span<std::byte> slice_or_throw(uint64_t gpa, uint64_t length) const;
  void write_or_throw(uint64_t gpa, std::span<const std::byte> in) const;

  template <typename T>
  std::optional<T> read_value(uint64_t gpa) const {
    T value{};
    if (!read(gpa, std::as_writable_bytes(std::span(&value, 1)))) return std::nullopt;
    return value;
  }
  template <typename T>
  bool write_value(uint64_t gpa, const T& value) const {
    return write(gpa, std::as_bytes(std::span(&value, 1)));
  }

  const std::vector<MemoryRegion>& regions() const { return regions_; }
  uint64_t total_size() const { return total_size_; }
  int fd() const { return memfd_.get(); }
  // Bytes of guest RAM the host has actually backed so far (pages the guest or ember touched).
  uint64_t resident_bytes() const;

 private:
  UniqueFd memfd_;
  std::byte* mapping_ = nullptr;
  uint64_t total_size_ = 0;
  std::vector<MemoryRegion> regions_;
};

}  // namespace ember
