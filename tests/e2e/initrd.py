"""Writes an uncompressed newc cpio archive (the initramfs format Linux unpacks), so tests need no
cpio tool and the fixture kernel does not spend minutes decompressing under an emulating KVM."""
import os
import stat


def _header(inode, mode, size, name, nlink=1):
    fields = [inode, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % field for field in fields)


def _pad(length):
    return b"\0" * ((4 - length % 4) % 4)


def write_initrd(path, entries):
    """entries: list of (name, mode, data) where mode has the file type bits (S_IFDIR, S_IFREG,
    S_IFLNK; a symlink's data is its target). Directories come before what they contain."""
    out = bytearray()
    for inode, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode()
        header = _header(inode, mode, len(data), encoded, 2 if stat.S_ISDIR(mode) else 1)
        out += header + encoded + b"\0"
        out += _pad(len(header) + len(encoded) + 1)
        out += data + _pad(len(data))
    with open(path, "wb") as f:
        f.write(out)


def busybox_initrd(path, init_script, busybox="/bin/busybox"):
    """An initrd with a static busybox at /bin/busybox and init_script as /init."""
    with open(busybox, "rb") as f:
        busybox_binary = f.read()
    directory = stat.S_IFDIR | 0o755
    entries = [(name, directory, b"") for name in ("bin", "dev", "proc", "sys", "tmp")]
    entries += [("bin/busybox", stat.S_IFREG | 0o755, busybox_binary),
                ("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
                ("init", stat.S_IFREG | 0o755, init_script.encode())]
    write_initrd(path, entries)
    return os.path.getsize(path)
