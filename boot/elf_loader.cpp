#include "boot/elf_loader.hpp"

#include <elf.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <sstream>
#include <vector>

#include "boot/layout.hpp"
#include "boot/little_endian.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

// xen/include/public/elfnote.h: the 32-bit protected-mode PVH entry point.
constexpr uint32_t kXenElfnotePhys32Entry = 18;
constexpr char kXenNoteName[] = "Xen";
constexpr uint64_t kFourGiB = uint64_t{1} << 32;

std::string hex(uint64_t value) {
  return (std::ostringstream() << "0x" << std::hex << value).str();
}

Error elf_error(const std::string& path, const std::string& reason) {
  return Error("kernel " + path + ": " + reason);
}

std::string machine_name(uint16_t machine) {
  switch (machine) {
    case EM_386:
      return "i386";
    case EM_ARM:
      return "ARM";
    case EM_AARCH64:
      return "AArch64";
    case EM_RISCV:
      return "RISC-V";
    case EM_PPC64:
      return "PowerPC64";
    case EM_S390:
      return "S/390";
    default:
      return "unknown";
  }
}

template <typename Field>
Field field(std::span<const std::byte> bytes, size_t offset) {
  return load_le<Field>(bytes, offset);
}

// A checked [offset, offset + size) view of the file, or an Error saying what was cut off.
std::span<const std::byte> file_range(const std::string& path, std::span<const std::byte> image,
                                      uint64_t offset, uint64_t size, const std::string& what) {
  if (offset > image.size() || size > image.size() - offset)
    throw elf_error(path, "truncated ELF: " + what + " ends at byte " +
                              std::to_string(offset + size) + ", file has " +
                              std::to_string(image.size()));
  return image.subspan(offset, size);
}

struct ElfHeader {
  uint64_t entry;
  uint64_t phoff, shoff;
  uint16_t phentsize, phnum, shentsize, shnum;
};

ElfHeader check_header(const std::string& path, std::span<const std::byte> image) {
  if (image.size() < EI_NIDENT) throw elf_error(path, "truncated ELF: no room for e_ident");
  const auto elf_class = static_cast<uint8_t>(image[EI_CLASS]);
  if (elf_class == ELFCLASS32)
    throw elf_error(path, "32-bit ELF; ember boots 64-bit x86-64 kernels");
  if (elf_class != ELFCLASS64)
    throw elf_error(path, "ELF class " + std::to_string(elf_class) + " is not 64-bit");
  if (static_cast<uint8_t>(image[EI_DATA]) != ELFDATA2LSB)
    throw elf_error(path, "big-endian ELF, not x86-64");
  if (image.size() < sizeof(Elf64_Ehdr))
    throw elf_error(path, "truncated ELF: header needs " + std::to_string(sizeof(Elf64_Ehdr)) +
                              " bytes, file has " + std::to_string(image.size()));
  const auto machine = field<uint16_t>(image, offsetof(Elf64_Ehdr, e_machine));
  if (machine != EM_X86_64)
    throw elf_error(path, "ELF for machine " + std::to_string(machine) + " (" +
                              machine_name(machine) + "), not x86-64");
  const auto type = field<uint16_t>(image, offsetof(Elf64_Ehdr, e_type));
  if (type != ET_EXEC)
    throw elf_error(path, "ELF type " + std::to_string(type) + " is not an executable (ET_EXEC)");
  ElfHeader header{
      .entry = field<uint64_t>(image, offsetof(Elf64_Ehdr, e_entry)),
      .phoff = field<uint64_t>(image, offsetof(Elf64_Ehdr, e_phoff)),
      .shoff = field<uint64_t>(image, offsetof(Elf64_Ehdr, e_shoff)),
      .phentsize = field<uint16_t>(image, offsetof(Elf64_Ehdr, e_phentsize)),
      .phnum = field<uint16_t>(image, offsetof(Elf64_Ehdr, e_phnum)),
      .shentsize = field<uint16_t>(image, offsetof(Elf64_Ehdr, e_shentsize)),
      .shnum = field<uint16_t>(image, offsetof(Elf64_Ehdr, e_shnum)),
  };
  if (header.phnum == 0) throw elf_error(path, "ELF has no program headers");
  if (header.phentsize != sizeof(Elf64_Phdr))
    throw elf_error(path,
                    "ELF program header size " + std::to_string(header.phentsize) + " is not 56");
  return header;
}

struct Segment {
  uint32_t type;
  uint64_t offset, paddr, filesz, memsz, align;
};

std::vector<Segment> program_headers(const std::string& path, std::span<const std::byte> image,
                                     const ElfHeader& header) {
  const auto table = file_range(path, image, header.phoff,
                                uint64_t{header.phnum} * header.phentsize, "program header table");
  std::vector<Segment> segments;
  for (size_t i = 0; i < header.phnum; ++i) {
    const auto entry = table.subspan(i * sizeof(Elf64_Phdr), sizeof(Elf64_Phdr));
    segments.push_back({
        .type = field<uint32_t>(entry, offsetof(Elf64_Phdr, p_type)),
        .offset = field<uint64_t>(entry, offsetof(Elf64_Phdr, p_offset)),
        .paddr = field<uint64_t>(entry, offsetof(Elf64_Phdr, p_paddr)),
        .filesz = field<uint64_t>(entry, offsetof(Elf64_Phdr, p_filesz)),
        .memsz = field<uint64_t>(entry, offsetof(Elf64_Phdr, p_memsz)),
        .align = field<uint64_t>(entry, offsetof(Elf64_Phdr, p_align)),
    });
  }
  return segments;
}

// Sections of type SHT_NOTE, as segments, for images whose program headers carry no PT_NOTE.
std::vector<Segment> note_sections(const std::string& path, std::span<const std::byte> image,
                                   const ElfHeader& header) {
  if (header.shnum == 0 || header.shoff == 0) return {};
  if (header.shentsize != sizeof(Elf64_Shdr))
    throw elf_error(path,
                    "ELF section header size " + std::to_string(header.shentsize) + " is not 64");
  const auto table = file_range(path, image, header.shoff,
                                uint64_t{header.shnum} * header.shentsize, "section header table");
  std::vector<Segment> notes;
  for (size_t i = 0; i < header.shnum; ++i) {
    const auto entry = table.subspan(i * sizeof(Elf64_Shdr), sizeof(Elf64_Shdr));
    if (field<uint32_t>(entry, offsetof(Elf64_Shdr, sh_type)) != SHT_NOTE) continue;
    const auto size = field<uint64_t>(entry, offsetof(Elf64_Shdr, sh_size));
    notes.push_back({.type = PT_NOTE,
                     .offset = field<uint64_t>(entry, offsetof(Elf64_Shdr, sh_offset)),
                     .paddr = 0,
                     .filesz = size,
                     .memsz = size,
                     .align = field<uint64_t>(entry, offsetof(Elf64_Shdr, sh_addralign))});
  }
  return notes;
}

// Walks one note area (ELF gABI "Note Section"): namesz, descsz, type, then name and desc, each
// padded to 4 bytes (8 for areas aligned to 8).
std::optional<uint64_t> find_pvh_note(const std::string& path, std::span<const std::byte> notes,
                                      uint64_t align) {
  const uint64_t padding = align == 8 ? 8 : 4;
  const auto pad = [padding](uint64_t size) { return (size + padding - 1) / padding * padding; };
  uint64_t offset = 0;
  while (notes.size() - offset >= 12) {
    const uint64_t name_size = field<uint32_t>(notes, offset);
    const uint64_t desc_size = field<uint32_t>(notes, offset + 4);
    const uint32_t type = field<uint32_t>(notes, offset + 8);
    const uint64_t name_offset = offset + 12;
    const uint64_t desc_offset = name_offset + pad(name_size);
    if (desc_offset > notes.size() || pad(desc_size) > notes.size() - desc_offset)
      throw elf_error(path, "truncated ELF note (type " + std::to_string(type) + ")");
    const auto name = notes.subspan(name_offset, name_size);
    const bool is_xen = name_size == sizeof(kXenNoteName) &&
                        std::memcmp(name.data(), kXenNoteName, sizeof(kXenNoteName)) == 0;
    if (is_xen && type == kXenElfnotePhys32Entry) {
      const auto desc = notes.subspan(desc_offset, desc_size);
      if (desc_size == 4) return field<uint32_t>(desc, 0);
      if (desc_size == 8) return field<uint64_t>(desc, 0);
      throw elf_error(path, "PVH entry note has a " + std::to_string(desc_size) +
                                "-byte address (expected 4 or 8)");
    }
    offset = desc_offset + pad(desc_size);
  }
  return std::nullopt;
}

std::optional<uint64_t> pvh_entry(const std::string& path, std::span<const std::byte> image,
                                  const ElfHeader& header, const std::vector<Segment>& segments) {
  std::vector<Segment> notes;
  std::copy_if(segments.begin(), segments.end(), std::back_inserter(notes),
               [](const Segment& segment) { return segment.type == PT_NOTE; });
  if (notes.empty()) notes = note_sections(path, image, header);
  for (const Segment& note : notes) {
    const auto bytes =
        file_range(path, image, note.offset, note.filesz, "note at offset " + hex(note.offset));
    if (auto entry = find_pvh_note(path, bytes, note.align)) return entry;
  }
  return std::nullopt;
}

void load_segment(const GuestMemory& memory, const std::string& path,
                  std::span<const std::byte> image, const Segment& segment) {
  const std::string where =
      "segment at " + hex(segment.paddr) + " of " + std::to_string(segment.memsz) + " bytes";
  if (segment.filesz > segment.memsz)
    throw elf_error(path, where + " has more file bytes (" + std::to_string(segment.filesz) +
                              ") than memory bytes");
  const auto bytes = file_range(path, image, segment.offset, segment.filesz, where);
  if (segment.paddr < layout::kHighRamStart)
    throw elf_error(path, where + " overlaps ember's boot data below 1 MiB");
  auto target = memory.slice(segment.paddr, segment.memsz);
  if (!target) {
    const auto& last = memory.regions().back();
    throw elf_error(path, where + " lies outside guest memory (RAM ends at " +
                              hex(last.guest_address + last.size) + ")");
  }
  std::copy(bytes.begin(), bytes.end(), target->begin());
  std::fill(target->begin() + static_cast<std::ptrdiff_t>(bytes.size()), target->end(),
            std::byte{0});
}

}  // namespace

bool is_elf(std::span<const std::byte> image) {
  return image.size() >= SELFMAG && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0;
}

ElfLoad load_elf(const GuestMemory& memory, const std::string& path,
                 std::span<const std::byte> image) {
  if (!is_elf(image)) throw elf_error(path, "no ELF magic");
  const ElfHeader header = check_header(path, image);
  const std::vector<Segment> segments = program_headers(path, image, header);
  ElfLoad result{.entry = header.entry, .pvh_entry = std::nullopt, .start = UINT64_MAX, .end = 0};
  for (const Segment& segment : segments) {
    if (segment.type != PT_LOAD || segment.memsz == 0) continue;
    load_segment(memory, path, image, segment);
    result.start = std::min(result.start, segment.paddr);
    result.end = std::max(result.end, segment.paddr + segment.memsz);
  }
  if (result.end == 0) throw elf_error(path, "ELF has no loadable segments");
  result.pvh_entry = pvh_entry(path, image, header, segments);
  if (result.pvh_entry) {
    if (*result.pvh_entry >= kFourGiB || !memory.slice(*result.pvh_entry, 1))
      throw elf_error(path, "PVH entry point " + hex(*result.pvh_entry) +
                                " is not a 32-bit address in guest memory");
  } else if (!memory.slice(result.entry, 1)) {
    throw elf_error(
        path, "entry point " + hex(result.entry) + " is not a physical address in guest memory");
  }
  return result;
}

}  // namespace ember::boot
