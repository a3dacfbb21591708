#include "vmm/guest_memory.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <sstream>
#include <string>

#include "vmm/error.hpp"

namespace ember {

GuestMemory::GuestMemory(const std::vector<RegionSpec>& specs) {
  if (specs.empty()) throw Error("guest memory: no regions");
  uint64_t previous_end = 0;
  for (const auto& spec : specs) {
    if (spec.size == 0 || spec.size % 4096 != 0 || spec.guest_address % 4096 != 0)
      throw Error("guest memory: region is empty or not page aligned");
    if (spec.guest_address < previous_end || spec.guest_address + spec.size < spec.guest_address)
      throw Error("guest memory: regions overlap or are out of order");
    previous_end = spec.guest_address + spec.size;
    total_size_ += spec.size;
  }
  memfd_.reset(::memfd_create("ember-guest-ram", MFD_CLOEXEC));
  if (!memfd_) throw system_error("guest memory: memfd_create");
  if (::ftruncate(memfd_.get(), static_cast<off_t>(total_size_)) != 0)
    throw system_error("guest memory: ftruncate to " + std::to_string(total_size_) + " bytes");
  void* mapping = ::mmap(nullptr, total_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                         memfd_.get(), 0);
  if (mapping == MAP_FAILED) throw system_error("guest memory: mmap");
  mapping_ = static_cast<std::byte*>(mapping);
  uint64_t offset = 0;
  for (const auto& spec : specs) {
    regions_.push_back({spec.guest_address, spec.size, mapping_ + offset});
    offset += spec.size;
  }
}

GuestMemory::~GuestMemory() {
  if (mapping_ != nullptr) ::munmap(mapping_, total_size_);
}

uint64_t GuestMemory::resident_bytes() const {
  struct stat info {};
  if (::fstat(memfd_.get(), &info) != 0) return 0;
  return static_cast<uint64_t>(info.st_blocks) * 512;  // st_blocks counts 512-byte units.
}

std::optional<std::span<std::byte>> GuestMemory::slice(uint64_t gpa, uint64_t length) const {
  for (const auto& region : regions_) {
    if (gpa < region.guest_address) continue;
    const uint64_t offset = gpa - region.guest_address;
    // At the very end of a region only an empty slice belongs to it: a non-empty one may start an
    // adjacent region.
    if (offset > region.size || (offset == region.size && length > 0)) continue;
    // offset <= size here, so size - offset cannot wrap; comparing lengths avoids gpa + length overflow.
    if (length > region.size - offset) return std::nullopt;
    return std::span<std::byte>(region.host + offset, length);
  }
  return std::nullopt;
}

bool GuestMemory::read(uint64_t gpa, std::span<std::byte> out) const {
  auto view = slice(gpa, out.size());
  if (!view) return false;
  if (!out.empty()) std::memcpy(out.data(), view->data(), out.size());
  return true;
}

bool GuestMemory::write(uint64_t gpa, std::span<const std::byte> in) const {
  auto view = slice(gpa, in.size());
  if (!view) return false;
  if (!in.empty()) std::memcpy(view->data(), in.data(), in.size());
  return true;
}

std::span<std::byte> GuestMemory::slice_or_throw(uint64_t gpa, uint64_t length) const {
  auto view = slice(gpa, length);
  if (!view) {
    throw Error("guest memory: range at 0x" + (std::ostringstream() << std::hex << gpa).str() +
                " of " + std::to_string(length) + " bytes is outside guest RAM");
  }
  return *view;
}

void GuestMemory::write_or_throw(uint64_t gpa, std::span<const std::byte> in) const {
  auto view = slice_or_throw(gpa, in.size());
  if (!in.empty()) std::memcpy(view.data(), in.data(), in.size());
}

}  // namespace ember
