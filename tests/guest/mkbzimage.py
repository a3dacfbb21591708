#!/usr/bin/env python3
"""Builds ember-test-guest.bzimage from ember-test-guest.elf.

The protected-mode part is the ELF's PT_LOAD contents laid out from 0x100000 (its offset 0 is the 32-bit
entry, offset 0x200 the 64-bit entry). In front of it go the setup sectors: the real-mode setup code of
SETUP.elf (setup16.S, for loaders that enter in real mode) with the Linux boot protocol setup header
(Documentation/arch/x86/boot.rst) written over offsets 0x1f1..0x267.

usage: mkbzimage.py KERNEL.elf SETUP.elf OUTPUT.bzimage
"""
import struct
import sys

LOAD_ADDRESS = 0x100000
SECTOR = 512
SETUP_SECTS = 4  # setup = boot sector + 4 sectors

# Setup header offsets (boot.rst, "The real-mode kernel header").
OFF_SETUP_SECTS = 0x1F1
OFF_ROOT_FLAGS = 0x1F2
OFF_SYSSIZE = 0x1F4
OFF_VID_MODE = 0x1FA
OFF_BOOT_FLAG = 0x1FE
OFF_JUMP = 0x200
OFF_HEADER = 0x202
OFF_VERSION = 0x206
OFF_LOADFLAGS = 0x211
OFF_CODE32_START = 0x214
OFF_HEAP_END_PTR = 0x224
OFF_INITRD_ADDR_MAX = 0x22C
OFF_KERNEL_ALIGNMENT = 0x230
OFF_RELOCATABLE = 0x234
OFF_MIN_ALIGNMENT = 0x235
OFF_XLOADFLAGS = 0x236
OFF_CMDLINE_SIZE = 0x238
OFF_PREF_ADDRESS = 0x258
OFF_INIT_SIZE = 0x260
HEADER_END = 0x268

BOOT_PROTOCOL_VERSION = 0x020E  # 2.14: acpi_rsdp_addr in boot_params
LOADED_HIGH = 0x01
XLF_KERNEL_64 = 0x01
CMDLINE_SIZE = 2047
PT_LOAD = 1


def load_segments(elf):
    """Returns [(paddr, filesz, memsz, data)] of the PT_LOAD segments of an ELF64 little-endian file."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise SystemExit("mkbzimage: input is not an ELF64 little-endian file")
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    segments = []
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", elf, phoff + i * phentsize)
        if p_type == PT_LOAD:
            segments.append((p_paddr, p_filesz, p_memsz, elf[p_offset:p_offset + p_filesz]))
    return segments


def flatten(segments, base):
    """Lays the segments' file contents out from `base`; returns (bytes, end of memory image - base)."""
    end = max(paddr + filesz for paddr, filesz, _, _ in segments)
    image = bytearray(end - base)
    for paddr, filesz, _, data in segments:
        if paddr < base:
            raise SystemExit("mkbzimage: segment below 0x%x" % base)
        image[paddr - base:paddr - base + filesz] = data
    memory_size = max(paddr + memsz for paddr, _, memsz, _ in segments) - base
    return bytes(image), memory_size


def setup_sectors(setup_code, payload_size, init_size):
    setup = bytearray((SETUP_SECTS + 1) * SECTOR)
    if len(setup_code) > len(setup):
        raise SystemExit("mkbzimage: setup code is larger than %d sectors" % (SETUP_SECTS + 1))
    setup[:len(setup_code)] = setup_code
    if setup[OFF_JUMP] != 0xEB:
        raise SystemExit("mkbzimage: setup code has no short jump at 0x200")
    struct.pack_into("<B", setup, OFF_SETUP_SECTS, SETUP_SECTS)
    struct.pack_into("<H", setup, OFF_ROOT_FLAGS, 0)
    struct.pack_into("<I", setup, OFF_SYSSIZE, (payload_size + 15) // 16)
    struct.pack_into("<H", setup, OFF_VID_MODE, 0xFFFF)
    struct.pack_into("<H", setup, OFF_BOOT_FLAG, 0xAA55)
    setup[OFF_HEADER:OFF_HEADER + 4] = b"HdrS"
    struct.pack_into("<H", setup, OFF_VERSION, BOOT_PROTOCOL_VERSION)
    struct.pack_into("<B", setup, OFF_LOADFLAGS, LOADED_HIGH)
    struct.pack_into("<I", setup, OFF_CODE32_START, LOAD_ADDRESS)
    struct.pack_into("<H", setup, OFF_HEAP_END_PTR, 0)
    struct.pack_into("<I", setup, OFF_INITRD_ADDR_MAX, 0x7FFFFFFF)
    struct.pack_into("<I", setup, OFF_KERNEL_ALIGNMENT, 0x1000)
    struct.pack_into("<B", setup, OFF_RELOCATABLE, 0)
    struct.pack_into("<B", setup, OFF_MIN_ALIGNMENT, 12)
    struct.pack_into("<H", setup, OFF_XLOADFLAGS, XLF_KERNEL_64)
    struct.pack_into("<I", setup, OFF_CMDLINE_SIZE, CMDLINE_SIZE)
    struct.pack_into("<Q", setup, OFF_PREF_ADDRESS, LOAD_ADDRESS)
    struct.pack_into("<I", setup, OFF_INIT_SIZE, (init_size + 4095) & ~4095)
    return bytes(setup)


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    with open(sys.argv[1], "rb") as f:
        payload, init_size = flatten(load_segments(f.read()), LOAD_ADDRESS)
    with open(sys.argv[2], "rb") as f:
        setup_code, _ = flatten(load_segments(f.read()), 0)
    payload += bytes(-len(payload) % 16)
    with open(sys.argv[3], "wb") as f:
        f.write(setup_sectors(setup_code, len(payload), init_size))
        f.write(payload)


if __name__ == "__main__":
    main()
