// Synthetic kernel images for the boot tests: minimal bzImages and ELF64 files built byte by byte.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "boot/boot_params.hpp"
#include "boot/little_endian.hpp"

namespace ember::boot::test {

using Bytes = std::vector<std::byte>;

inline Bytes pattern(size_t size, uint8_t seed) {
  Bytes bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>((i * 7 + seed) & 0xff);
  return bytes;
}

struct BzImageOptions {
  uint8_t setup_sects = 4;
  uint16_t version = 0x020f;
  uint8_t loadflags = setup_header::kLoadedHigh;
  uint16_t xloadflags = setup_header::kXlfKernel64;
  uint32_t initrd_addr_max = 0x7fffffff;
  uint32_t cmdline_size = 2047;
  uint8_t relocatable = 1;
  uint32_t kernel_alignment = 0x200000;
  uint64_t pref_address = 0x1000000;
  uint32_t init_size = 0x400000;
  size_t payload_size = 0x3000;
  uint8_t header_length = 0x6a;  // Second byte of the jump at 0x200: header ends at 0x202 + this.
};

// Setup sectors (zero apart from the header), then payload_size bytes of protected-mode "code".
inline Bytes make_bzimage(const BzImageOptions& options = {}) {
  using namespace setup_header;
  const size_t setup_sects = options.setup_sects == 0 ? 4 : options.setup_sects;
  const size_t setup_size = (setup_sects + 1) * 512;
  Bytes image(setup_size);
  image[kSetupSects] = static_cast<std::byte>(options.setup_sects);
  store_le<uint32_t>(image, kSysSize, static_cast<uint32_t>((options.payload_size + 15) / 16));
  store_le<uint16_t>(image, kVidMode, kVidModeNormal);
  store_le<uint16_t>(image, kBootFlag, kBootFlagMagic);
  image[kJump] = std::byte{0xeb};
  image[kJump + 1] = static_cast<std::byte>(options.header_length);
  store_le<uint32_t>(image, kHeader, kHeaderMagic);
  store_le<uint16_t>(image, kVersion, options.version);
  image[kLoadFlags] = static_cast<std::byte>(options.loadflags);
  store_le<uint32_t>(image, kCode32Start, 0x100000);
  store_le<uint32_t>(image, kInitrdAddrMax, options.initrd_addr_max);
  store_le<uint32_t>(image, kKernelAlignment, options.kernel_alignment);
  image[kRelocatableKernel] = static_cast<std::byte>(options.relocatable);
  store_le<uint16_t>(image, kXLoadFlags, options.xloadflags);
  store_le<uint32_t>(image, kCmdlineSize, options.cmdline_size);
  store_le<uint64_t>(image, kPrefAddress, options.pref_address);
  store_le<uint32_t>(image, kInitSize, options.init_size);
  const Bytes payload = pattern((options.payload_size + 15) / 16 * 16, 0x42);
  image.insert(image.end(), payload.begin(), payload.end());
  return image;
}

struct ElfSegment {
  uint64_t paddr;
  Bytes data;
  uint64_t memsz;
};

struct ElfOptions {
  uint8_t elf_class = 2;  // ELFCLASS64
  uint16_t machine = 62;  // EM_X86_64
  uint16_t type = 2;      // ET_EXEC
  uint64_t entry = 0x1000000;
  std::vector<ElfSegment> segments{{0x1000000, pattern(0x2000, 1), 0x3000}};
  std::optional<uint64_t> pvh_entry;
  size_t pvh_entry_size = 8;     // 4 or 8 bytes of address in the note.
  bool note_in_section = false;  // The note only as an SHT_NOTE section, no PT_NOTE.
};

inline void append(Bytes& out, const Bytes& bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

// Notes: a "Linux" note first (so the walker must skip one), then the PVH note.
inline Bytes make_notes(uint64_t pvh_entry, size_t entry_size) {
  Bytes notes(12 + 8 + 4);
  store_le<uint32_t>(notes, 0, 6);  // "Linux\0"
  store_le<uint32_t>(notes, 4, 4);
  store_le<uint32_t>(notes, 8, 1);
  const char linux_name[] = "Linux";
  for (size_t i = 0; i < 6; ++i) notes[12 + i] = static_cast<std::byte>(linux_name[i]);
  Bytes pvh(12 + 4 + entry_size);
  store_le<uint32_t>(pvh, 0, 4);  // "Xen\0"
  store_le<uint32_t>(pvh, 4, static_cast<uint32_t>(entry_size));
  store_le<uint32_t>(pvh, 8, 18);  // XEN_ELFNOTE_PHYS32_ENTRY
  pvh[12] = std::byte{'X'};
  pvh[13] = std::byte{'e'};
  pvh[14] = std::byte{'n'};
  if (entry_size == 8)
    store_le<uint64_t>(pvh, 16, pvh_entry);
  else
    store_le<uint32_t>(pvh, 16, static_cast<uint32_t>(pvh_entry));
  append(notes, pvh);
  return notes;
}

// ELF header, program headers, segment data, notes, and (for note_in_section) section headers.
inline Bytes make_elf(const ElfOptions& options = {}) {
  constexpr size_t kEhdr = 64, kPhdr = 56, kShdr = 64;
  const Bytes notes =
      options.pvh_entry ? make_notes(*options.pvh_entry, options.pvh_entry_size) : Bytes{};
  const bool note_segment = options.pvh_entry && !options.note_in_section;
  const size_t phnum = options.segments.size() + (note_segment ? 1 : 0);
  Bytes image(kEhdr + phnum * kPhdr);
  const std::byte magic[] = {std::byte{0x7f}, std::byte{'E'}, std::byte{'L'}, std::byte{'F'}};
  std::copy(std::begin(magic), std::end(magic), image.begin());
  image[4] = static_cast<std::byte>(options.elf_class);
  image[5] = std::byte{1};  // Little-endian.
  image[6] = std::byte{1};  // EV_CURRENT.
  store_le<uint16_t>(image, 16, options.type);
  store_le<uint16_t>(image, 18, options.machine);
  store_le<uint32_t>(image, 20, 1);
  store_le<uint64_t>(image, 24, options.entry);
  store_le<uint64_t>(image, 32, kEhdr);  // e_phoff
  store_le<uint16_t>(image, 52, kEhdr);
  store_le<uint16_t>(image, 54, kPhdr);
  store_le<uint16_t>(image, 56, static_cast<uint16_t>(phnum));
  store_le<uint16_t>(image, 58, kShdr);

  auto write_phdr = [&](size_t index, uint32_t type, uint64_t offset, uint64_t paddr,
                        uint64_t filesz, uint64_t memsz, uint64_t align) {
    const size_t base = kEhdr + index * kPhdr;
    store_le<uint32_t>(image, base, type);
    store_le<uint64_t>(image, base + 8, offset);
    store_le<uint64_t>(image, base + 16, paddr + 0xffffffff80000000);  // p_vaddr: kernel virtual.
    store_le<uint64_t>(image, base + 24, paddr);
    store_le<uint64_t>(image, base + 32, filesz);
    store_le<uint64_t>(image, base + 40, memsz);
    store_le<uint64_t>(image, base + 48, align);
  };
  for (size_t i = 0; i < options.segments.size(); ++i) {
    const auto& segment = options.segments[i];
    write_phdr(i, 1 /* PT_LOAD */, image.size(), segment.paddr, segment.data.size(), segment.memsz,
               0x1000);
    append(image, segment.data);
  }
  const size_t notes_offset = image.size();
  append(image, notes);
  if (note_segment)
    write_phdr(options.segments.size(), 4 /* PT_NOTE */, notes_offset, 0, notes.size(),
               notes.size(), 4);
  if (options.pvh_entry && options.note_in_section) {
    const size_t shoff = image.size();
    image.resize(image.size() + 2 * kShdr);           // Null section, then the note section.
    store_le<uint32_t>(image, shoff + kShdr + 4, 7);  // SHT_NOTE
    store_le<uint64_t>(image, shoff + kShdr + 24, notes_offset);
    store_le<uint64_t>(image, shoff + kShdr + 32, notes.size());
    store_le<uint64_t>(image, shoff + kShdr + 48, 4);
    store_le<uint64_t>(image, 40, shoff);
    store_le<uint16_t>(image, 60, 2);
  }
  return image;
}

}  // namespace ember::boot::test
