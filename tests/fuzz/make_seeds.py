#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target: tests/fuzz/corpus/<target>/<seed>. Each seed is a
small, well-formed (or deliberately malformed) input in the target's format, described at the top
of tests/fuzz/<target>_fuzz.cpp, so the fuzzer starts from inputs that reach deep into the code.
Files named regression-* are inputs that once found a bug; this script never touches them.

    tests/fuzz/make_seeds.py            # rewrites every generated seed
"""
import gzip
import hashlib
import io
import json
import pathlib
import shutil
import struct
import subprocess
import tarfile

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


def u8(value):
    return struct.pack("<B", value)


def u16(value):
    return struct.pack("<H", value)


def u32(value):
    return struct.pack("<I", value)


def u64(value):
    return struct.pack("<Q", value)


# --- Guest memory and split virtqueues (virtio_fuzz.hpp) -------------------------------------------

LOW_SIZE = 0x4000
HIGH_START = 0x8000
HIGH_SIZE = 0x1000
NEXT, WRITE, INDIRECT = 1, 2, 4
EVENT_IDX, INDIRECT_DESC = 1, 2


class Memory:
    """Guest RAM as the virtio targets lay it out: 16 KiB at 0, 4 KiB at 0x8000."""

    def __init__(self, data_base=0x2000):
        self.low = bytearray(LOW_SIZE)
        self.high = bytearray(HIGH_SIZE)
        self.next = data_base

    def write(self, address, data):
        if address >= HIGH_START:
            self.high[address - HIGH_START:address - HIGH_START + len(data)] = data
        else:
            self.low[address:address + len(data)] = data

    def alloc(self, length, align=16):
        self.next = (self.next + align - 1) // align * align
        address = self.next
        self.next += length
        assert self.next <= LOW_SIZE
        return address

    def readable(self, data):
        address = self.alloc(len(data))
        self.write(address, data)
        return (address, len(data), False)

    def writable(self, length):
        return (self.alloc(length), length, True)

    def image(self):
        high = bytes(self.high).rstrip(b"\0")
        if high:
            return bytes(self.low) + high
        return bytes(self.low).rstrip(b"\0")


class Ring:
    """A driver's split virtqueue of `size` entries at `base`, in the seeds' standard layout."""

    def __init__(self, memory, size, base):
        self.memory = memory
        self.size = size
        self.descriptors = base
        self.available = base + 16 * size
        self.used = (self.available + 6 + 2 * size + 3) & ~3
        self.next_descriptor = 0
        self.available_index = 0

    def layout(self):
        code = self.size.bit_length() - 1
        return u8(code) + u16(self.descriptors) + u16(self.available) + u16(self.used)

    def descriptor(self, table, index, address, length, flags, next_index):
        self.memory.write(table + 16 * index, u64(address) + u32(length) + u16(flags) + u16(next_index))

    def chain(self, buffers):
        head = self.next_descriptor
        for i, (address, length, writable) in enumerate(buffers):
            index = self.next_descriptor
            self.next_descriptor = (self.next_descriptor + 1) % self.size
            last = i + 1 == len(buffers)
            flags = (WRITE if writable else 0) | (0 if last else NEXT)
            self.descriptor(self.descriptors, index, address, length, flags, 0 if last else self.next_descriptor)
        return head

    def indirect(self, buffers):
        table = self.memory.alloc(16 * len(buffers))
        for i, (address, length, writable) in enumerate(buffers):
            last = i + 1 == len(buffers)
            flags = (WRITE if writable else 0) | (0 if last else NEXT)
            self.descriptor(table, i, address, length, flags, 0 if last else i + 1)
        head = self.next_descriptor
        self.next_descriptor = (self.next_descriptor + 1) % self.size
        self.descriptor(self.descriptors, head, table, 16 * len(buffers), INDIRECT, 0)
        return head

    def publish(self, head):
        self.memory.write(self.available + 4 + 2 * (self.available_index % self.size), u16(head))
        self.available_index += 1
        self.memory.write(self.available + 2, u16(self.available_index))

    def push(self, buffers):
        self.publish(self.chain(buffers))

    def push_indirect(self, buffers):
        self.publish(self.indirect(buffers))


def virtio_input(flags, rings, actions, memory):
    return u8(flags) + b"".join(ring.layout() for ring in rings) + bytes(actions) + memory.image()


def virtqueue_seeds():
    seeds = {}
    memory = Memory()
    ring = Ring(memory, 16, 0)
    ring.push([memory.readable(b"request header.."), memory.writable(32)])
    seeds["one-chain"] = virtio_input(0, [ring], [0], memory)

    memory = Memory()
    ring = Ring(memory, 64, 0)
    ring.push_indirect([memory.readable(b"abc"), memory.readable(b"defgh"), memory.writable(64)])
    ring.push([memory.readable(b"x" * 40), (0x8100, 256, True)])  # A buffer in the high region.
    ring.push([memory.readable(b"zero-length next"), (0x3000, 0, False), memory.writable(8)])
    seeds["indirect-event-idx"] = virtio_input(EVENT_IDX | INDIRECT_DESC, [ring], [1], memory)

    memory = Memory()
    ring = Ring(memory, 256, 0)
    for i in range(8):
        ring.push([memory.readable(bytes([i]) * 8), memory.writable(16)])
    seeds["size-256-batch"] = virtio_input(EVENT_IDX, [ring], [2 | 4], memory)

    memory = Memory()
    ring = Ring(memory, 8, 0)
    ring.descriptor(ring.descriptors, 0, 0x2000, 16, NEXT, 1)
    ring.descriptor(ring.descriptors, 1, 0x2100, 16, NEXT, 0)  # Loops back to 0.
    ring.publish(0)
    seeds["loop"] = virtio_input(0, [ring], [0], memory)

    memory = Memory()
    ring = Ring(memory, 8, 0)
    ring.push([memory.writable(16), memory.readable(b"readable after writable")])
    seeds["readable-after-writable"] = virtio_input(0, [ring], [0], memory)

    memory = Memory()
    ring = Ring(memory, 8, 0)
    ring.push([(0x5000, 16, False)])  # In the hole between the regions.
    seeds["buffer-in-hole"] = virtio_input(0, [ring], [0], memory)

    memory = Memory()
    ring = Ring(memory, 8, 0)
    ring.push([(0x3ff0, 0x20, True)])  # Straddles the end of the low region.
    ring.memory.write(ring.available + 2, u16(9))  # And the index is 9 ahead.
    seeds["index-too-far"] = virtio_input(0, [ring], [0], memory)

    memory = Memory()
    ring = Ring(memory, 16, 0)
    table = memory.alloc(32)
    ring.descriptor(table, 0, 0x2000, 16, INDIRECT, 0)  # A nested indirect table.
    ring.descriptor(ring.descriptors, 0, table, 32, INDIRECT, 0)
    ring.publish(0)
    seeds["nested-indirect"] = virtio_input(INDIRECT_DESC, [ring], [0], memory)
    return seeds


def blk_header(kind, sector):
    return u32(kind) + u32(0) + u64(sector)


def virtio_blk_seeds():
    seeds = {}

    def request(name, parts, flags=INDIRECT_DESC, indirect=False, kicks=0):
        memory = Memory()
        ring = Ring(memory, 32, 0)
        for buffers in parts(memory):
            (ring.push_indirect if indirect else ring.push)(buffers)
        seeds[name] = virtio_input(flags, [ring], [kicks], memory)

    request("read", lambda m: [[m.readable(blk_header(0, 2)), m.writable(1024), m.writable(1)]])
    request("write", lambda m: [[m.readable(blk_header(1, 0)), m.readable(b"d" * 512), m.writable(1)]])
    request("flush-get-id", lambda m: [[m.readable(blk_header(4, 0)), m.writable(1)],
                                       [m.readable(blk_header(8, 0)), m.writable(20), m.writable(1)]])
    request("discard-write-zeroes", lambda m: [
        [m.readable(blk_header(11, 0)), m.readable(u64(8) + u32(8) + u32(0)), m.writable(1)],
        [m.readable(blk_header(13, 0)), m.readable(u64(16) + u32(16) + u32(1)), m.writable(1)]])
    request("out-of-range", lambda m: [[m.readable(blk_header(0, 127)), m.writable(1024), m.writable(1)],
                                       [m.readable(blk_header(99, 0)), m.writable(1)]])
    request("indirect-write", lambda m: [[m.readable(blk_header(1, 4)), m.readable(b"a" * 256),
                                          m.readable(b"b" * 256), m.writable(1)]], indirect=True)
    request("read-only-write", lambda m: [[m.readable(blk_header(1, 0)), m.readable(b"w" * 512), m.writable(1)]],
            flags=INDIRECT_DESC | 4)
    request("reset-before-completion", lambda m: [[m.readable(blk_header(0, 0)), m.writable(512), m.writable(1)]],
            flags=EVENT_IDX | 16, kicks=1)
    request("short-header", lambda m: [[m.readable(b"short"), m.writable(1)], [m.readable(b"no status")]])
    return seeds


def virtio_net_seeds():
    seeds = {}
    net_header = bytes(12)

    def device(name, flags, fill, actions):
        memory = Memory(data_base=0x1000)
        receive = Ring(memory, 16, 0)
        transmit = Ring(memory, 16, 0x400)
        fill(memory, receive, transmit)
        seeds[name] = virtio_input(flags, [receive, transmit], actions, memory)

    device("transmit", 0, lambda m, rx, tx: tx.push([m.readable(net_header + b"f" * 60)]),
           [0x80, 0xff, 0xff, 0xff])
    device("receive", EVENT_IDX, lambda m, rx, tx: [rx.push([m.writable(2048)]) for _ in range(2)],
           [40, 10, 0xff, 0xff])
    device("mergeable", EVENT_IDX | INDIRECT_DESC | 4,
           lambda m, rx, tx: [rx.push([m.writable(512)]) for _ in range(6)], [30, 0x7f, 0xff, 0xff])
    device("receive-too-small", 8, lambda m, rx, tx: rx.push([m.writable(100)]), [40, 0x80, 0xff, 0xff])
    device("tap-events", EVENT_IDX | 0x10, lambda m, rx, tx: (
        rx.push([m.writable(1024)]), tx.push([m.readable(net_header + b"t" * 100)])), [0xfe, 0x80, 0xfe, 0xff])
    device("malformed-chains", INDIRECT_DESC, lambda m, rx, tx: (
        tx.push([m.readable(b"short")]), tx.push([m.readable(net_header), m.writable(10)]),
        rx.push([m.readable(b"readable"), m.writable(64)])), [0x80, 1, 0xff, 0xff])
    return seeds


def virtio_console_seeds():
    seeds = {}

    def device(name, flags, fill, actions):
        memory = Memory(data_base=0x1000)
        receive = Ring(memory, 16, 0)
        transmit = Ring(memory, 16, 0x400)
        fill(memory, receive, transmit)
        seeds[name] = virtio_input(flags, [receive, transmit], actions, memory)

    device("output", 0, lambda m, rx, tx: tx.push([m.readable(b"hello from the guest\n")]), [0x80, 0xff, 0xff, 0xff])
    device("input", EVENT_IDX, lambda m, rx, tx: [rx.push([m.writable(64)]) for _ in range(3)], [5, 20, 0xff, 0xff])
    device("both-indirect", EVENT_IDX | INDIRECT_DESC, lambda m, rx, tx: (
        rx.push_indirect([m.writable(16), m.writable(16)]),
        tx.push_indirect([m.readable(b"part one, "), m.readable(b"part two\n")])), [0x80, 2, 0x80, 0xff])
    device("wrong-directions", 0, lambda m, rx, tx: (
        rx.push([m.readable(b"not writable")]), tx.push([m.writable(8)])), [0x80, 1, 0xff, 0xff])
    return seeds


def virtio_rng_seeds():
    seeds = {}
    memory = Memory()
    ring = Ring(memory, 16, 0)
    ring.push([memory.writable(64)])
    ring.push([memory.writable(16), (0x8000, 0x1000, True)])
    seeds["requests"] = virtio_input(0, [ring], [1], memory)
    memory = Memory()
    ring = Ring(memory, 16, 0)
    ring.push_indirect([memory.writable(32), memory.writable(32)])
    ring.push([memory.readable(b"readable: dropped")])
    seeds["indirect-and-dropped"] = virtio_input(EVENT_IDX | INDIRECT_DESC, [ring], [0], memory)
    return seeds


# --- vhost-user replies (virtio_fs) ----------------------------------------------------------------

GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE = 1, 2, 3, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE = 15, 17, 18
VERSION_1, PROTOCOL_FEATURES = 1 << 32, 1 << 30
REPLY_ACK, MQ = 1 << 3, 1 << 0


def reply(request, payload):
    return u32(request) + u32(0x1 | 0x4) + u32(len(payload)) + payload


def virtio_fs_seeds():
    seeds = {}
    features = VERSION_1 | (1 << 28) | (1 << 29)
    # No protocol features: nothing is acknowledged; GET_VRING_BASE at reset.
    stream = reply(GET_FEATURES, u64(features))
    stream += reply(GET_VRING_BASE, u32(1) + u32(0))
    seeds["plain-backend"] = u8(EVENT_IDX | 8) + u8(0) + stream
    # REPLY_ACK and MQ: every request acknowledged, both queues.
    stream = reply(GET_FEATURES, u64(features | PROTOCOL_FEATURES))
    stream += reply(GET_PROTOCOL_FEATURES, u64(REPLY_ACK | MQ))
    stream += reply(SET_OWNER, u64(0))
    stream += reply(GET_QUEUE_NUM, u64(2))
    stream += reply(SET_FEATURES, u64(0)) + reply(SET_MEM_TABLE, u64(0))
    for _ in range(2):
        for request in (SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, SET_VRING_CALL,
                        SET_VRING_ERR):
            stream += reply(request, u64(0))
    stream += reply(SET_VRING_ENABLE, u64(0)) * 2
    for index in range(2):
        stream += reply(SET_VRING_ENABLE, u64(0)) + reply(GET_VRING_BASE, u32(index) + u32(7))
    seeds["acked-backend"] = u8(EVENT_IDX | INDIRECT_DESC | 4 | 8) + u8(36) + stream
    seeds["no-version-1"] = u8(4) + u8(0) + reply(GET_FEATURES, u64(1 << 28))
    seeds["refused-ack"] = u8(4) + u8(0) + reply(GET_FEATURES, u64(features | PROTOCOL_FEATURES)) + \
        reply(GET_PROTOCOL_FEATURES, u64(REPLY_ACK)) + reply(SET_OWNER, u64(1))
    seeds["wrong-reply"] = u8(4) + u8(0) + reply(GET_QUEUE_NUM, u64(features)) + b"\x01\x00"
    return seeds


# --- Register accesses (register_accesses.hpp) ---------------------------------------------------------

def op(write, size, offset, value=0, kind=0, offset_bytes=2):
    code = {1: 0, 2: 1, 4: 2, 8: 3}[size]
    operation = (1 if write else 0) | code << 1 | kind << 3
    packed_offset = u16(offset) if offset_bytes == 2 else u32(offset)
    return u8(operation) + packed_offset + u64(value)


def ops(records):
    assert len(records) < 256
    return u8(len(records)) + b"".join(records)


def rng_ring_memory(queues=1):
    memory = Memory()
    for index in range(queues):
        ring = Ring(memory, 16, 0x400 * index)
        ring.push([memory.writable(64)])
        ring.push_indirect([memory.writable(8), memory.writable(8)])
    return memory


def virtio_mmio_seeds():
    seeds = {}
    status, queue_sel, queue_num, queue_ready = 0x70, 0x30, 0x38, 0x44
    driver_features, driver_features_sel = 0x20, 0x24

    def start(queues):
        records = [op(False, 4, 0), op(False, 4, 4), op(False, 4, 8), op(True, 4, status, 1),
                   op(True, 4, status, 3), op(True, 4, 0x14, 1), op(False, 4, 0x10),
                   op(True, 4, driver_features_sel, 1), op(True, 4, driver_features, 1),
                   op(True, 4, driver_features_sel, 0), op(True, 4, driver_features, (1 << 28) | (1 << 29)),
                   op(True, 4, status, 0xb), op(False, 4, status)]
        for index in range(queues):
            ring = Ring(Memory(), 16, 0x400 * index)
            records += [op(True, 4, queue_sel, index), op(False, 4, 0x34), op(True, 4, queue_num, 16),
                        op(True, 4, 0x80, ring.descriptors), op(True, 4, 0x84, 0),
                        op(True, 4, 0x90, ring.available), op(True, 4, 0xa0, ring.used),
                        op(True, 4, queue_ready, 1)]
        records += [op(True, 4, status, 0xf)]
        return records

    records = start(1) + [op(True, 4, 0x50, 0), op(False, 4, 0x60), op(True, 4, 0x64, 1),
                          op(False, 4, 0xfc), op(False, 1, 0x100), op(False, 4, 0xb0),
                          op(False, 8, 0x100), op(True, 2, 0x70, 0), op(True, 4, status, 0)]
    seeds["rng-driver"] = u8(0) + ops(records) + rng_ring_memory().image()
    memory = Memory()
    receive, transmit = Ring(memory, 16, 0), Ring(memory, 16, 0x400)
    receive.push([memory.writable(32)])
    transmit.push([memory.readable(b"console output\n")])
    seeds["console-driver"] = u8(4) + ops(start(2) + [op(True, 4, 0x50, 1), op(False, 4, 0, 1, kind=1)]) + \
        memory.image()
    records = [op(True, 4, status, 1), op(True, 4, status, 7), op(True, 4, queue_num, 3),
               op(True, 4, queue_ready, 1), op(True, 4, status, 0xf), op(True, 4, 0x50, 0),
               op(True, 4, status, 1), op(True, 4, 0x64, 0xffffffff)]
    seeds["bad-driver"] = u8(0) + ops(records) + rng_ring_memory().image()
    return seeds


# virtio-pci common configuration offsets (§4.1.4.3), BAR layout and capabilities.
COMMON_STATUS, QUEUE_SELECT, QUEUE_SIZE, QUEUE_MSIX, QUEUE_ENABLE = 0x14, 0x16, 0x18, 0x1a, 0x1c
MSIX_CONTROL = 0x98 + 2  # The MSI-X capability follows the five virtio capabilities at 0x40.
PCI_CFG_CAP = 0x84


def virtio_pci_driver(queues, write, read, notify_value=0):
    """A Linux-like virtio-pci driver start, as (write, read) accesses into the BAR."""
    records = [write(2, 0x4, 0x6, config=True), write(2, MSIX_CONTROL, 0x8000, config=True)]
    for vector in range(queues + 1):
        records += [write(4, 0x4000 + 16 * vector, 0xfee00000), write(4, 0x4004 + 16 * vector, 0),
                    write(4, 0x4008 + 16 * vector, 0x30 + vector), write(4, 0x400c + 16 * vector, 0)]
    records += [write(1, COMMON_STATUS, 1), write(1, COMMON_STATUS, 3), write(4, 0x0, 1), read(4, 0x4),
                write(4, 0x8, 1), write(4, 0xc, 1), write(4, 0x8, 0), write(4, 0xc, (1 << 28) | (1 << 29)),
                write(1, COMMON_STATUS, 0xb), read(1, COMMON_STATUS), write(2, 0x10, 0)]
    for index in range(queues):
        ring = Ring(Memory(), 16, 0x400 * index)
        records += [write(2, QUEUE_SELECT, index), read(2, QUEUE_SIZE), write(2, QUEUE_SIZE, 16),
                    write(2, QUEUE_MSIX, index + 1), write(8, 0x20, ring.descriptors),
                    write(4, 0x28, ring.available), write(4, 0x2c, 0), write(8, 0x30, ring.used),
                    write(2, QUEUE_ENABLE, 1)]
    records += [write(1, COMMON_STATUS, 0xf), write(2, 0x3000, notify_value), read(1, 0x1000),
                read(8, 0x5000), read(4, 0x2000)]
    return records


def virtio_pci_seeds():
    seeds = {}

    def write(size, offset, value, config=False):
        return op(True, size, offset, value, kind=1 if config else 0)

    def read(size, offset, config=False):
        return op(False, size, offset, kind=1 if config else 0)

    records = virtio_pci_driver(1, write, read)
    records += [op(False, 4, 0, 0, kind=2), read(4, 0x4000), write(4, 0x400c, 1), write(2, 0x3000, 0),
                read(8, 0x5000), write(4, 0x400c, 0)]
    seeds["rng-driver"] = u8(0) + ops(records) + rng_ring_memory().image()
    # The PCI_CFG capability: BAR 0, offset 0x14 (device status), 1 byte, then the data window.
    records = [write(1, PCI_CFG_CAP + 4, 0, config=True), write(4, PCI_CFG_CAP + 8, 0x14, config=True),
               write(4, PCI_CFG_CAP + 12, 1, config=True), write(1, PCI_CFG_CAP + 16, 1, config=True),
               read(4, PCI_CFG_CAP + 16, config=True), read(4, 0x10, config=True),
               write(4, 0x10, 0xffffffff, config=True), read(4, 0x10, config=True),
               write(4, 0x14, 0xffffffff, config=True), read(4, 0x14, config=True), read(4, 0x0, config=True)]
    seeds["config-space"] = u8(0) + ops(records) + rng_ring_memory().image()
    memory = Memory()
    receive, transmit = Ring(memory, 16, 0), Ring(memory, 16, 0x400)
    receive.push([memory.writable(32)])
    transmit.push([memory.readable(b"console output\n")])
    seeds["console-driver"] = u8(4) + ops(virtio_pci_driver(2, write, read, notify_value=0) +
                                          [write(2, 0x3004, 0), op(False, 4, 0, 0, kind=2)]) + memory.image()
    return seeds


def pci_seeds():
    seeds = {}

    def port_config(device, register):
        return op(True, 4, 0, 0x80000000 | device << 11 | register, kind=0, offset_bytes=4)

    def ecam(device, register):
        return device << 15 | register

    records = []
    for device in range(4):
        records += [port_config(device, 0), op(False, 4, 4, kind=0, offset_bytes=4),
                    op(False, 2, 6, kind=0, offset_bytes=4), op(False, 4, ecam(device, 8), kind=1, offset_bytes=4)]
    # BAR sizing of device 1 through ECAM, then moving it.
    records += [op(True, 2, ecam(1, 4), 0, kind=1, offset_bytes=4),
                op(True, 4, ecam(1, 0x10), 0xffffffff, kind=1, offset_bytes=4),
                op(False, 4, ecam(1, 0x10), kind=1, offset_bytes=4),
                op(True, 4, ecam(1, 0x14), 0xffffffff, kind=1, offset_bytes=4),
                op(False, 8, ecam(1, 0x10), kind=1, offset_bytes=4),
                op(True, 8, ecam(1, 0x10), 0xc0100004, kind=1, offset_bytes=4),
                op(True, 2, ecam(1, 4), 6, kind=1, offset_bytes=4),
                op(False, 4, 0x100000, kind=2, offset_bytes=4)]
    seeds["enumerate-and-move"] = ops(records)

    def write(size, offset, value, config=False):
        if config:
            return op(True, size, ecam(1, offset), value, kind=1, offset_bytes=4)
        return op(True, size, offset, value, kind=2, offset_bytes=4)

    def read(size, offset, config=False):
        if config:
            return op(False, size, ecam(1, offset), kind=1, offset_bytes=4)
        return op(False, size, offset, kind=2, offset_bytes=4)

    records = virtio_pci_driver(1, write, read) + [op(False, 4, 0, 0, kind=3, offset_bytes=4)]
    records += [port_config(2, MSIX_CONTROL & ~3), op(True, 2, 4 + (MSIX_CONTROL & 3), 0xc000, kind=0,
                                                      offset_bytes=4)]
    seeds["rng-driver-and-msix"] = ops(records) + rng_ring_memory().image()
    return seeds


# --- Kernels (bzimage, elf, kernel) -----------------------------------------------------------------

def bzimage(version=0x020f, setup_sects=4, loadflags=1, xloadflags=1, init_size=0x100000, payload=0x1000,
            relocatable=1, pref_address=0x100000, header_length=0x6a):
    setup_size = ((setup_sects or 4) + 1) * 512
    image = bytearray(setup_size)

    def put(offset, data):
        image[offset:offset + len(data)] = data

    put(0x1f1, u8(setup_sects))
    put(0x1f4, u32((payload + 15) // 16))
    put(0x1fa, u16(0xffff))
    put(0x1fe, u16(0xaa55))
    put(0x200, b"\xeb" + u8(header_length))
    put(0x202, b"HdrS")
    put(0x206, u16(version))
    put(0x211, u8(loadflags))
    put(0x214, u32(0x100000))
    put(0x22c, u32(0x7fffffff))
    put(0x230, u32(0x200000))
    put(0x234, u8(relocatable))
    put(0x236, u16(xloadflags))
    put(0x238, u32(2047))
    put(0x258, u64(pref_address))
    put(0x260, u32(init_size))
    return bytes(image) + bytes((i * 7) & 0xff for i in range(payload))


def bzimage_seeds():
    return {
        "bzimage": bzimage(),
        "setup-sects-0": bzimage(setup_sects=0, relocatable=0),
        "protocol-2.05": bzimage(version=0x0205),
        "no-64-bit-entry": bzimage(xloadflags=0),
        "init-size-too-big": bzimage(init_size=0x800000),
        "truncated": bzimage()[:0x900],
    }


def elf(segments, notes=None, note_sections=None, machine=62, elf_class=2, entry=0x100000):
    """ELF64 ET_EXEC: segments are (type, paddr, data, memsz, align); notes a PT_NOTE segment's
    bytes; note_sections the same as an SHT_NOTE section instead."""
    program = list(segments)
    body = bytearray()
    header_size, phentsize, shentsize = 64, 56, 64
    count = len(program) + (1 if notes is not None else 0)
    data_offset = header_size + phentsize * count
    entries = []
    for kind, paddr, data, memsz, align in program:
        entries.append(struct.pack("<IIQQQQQQ", kind, 5, data_offset + len(body), paddr, paddr, len(data), memsz,
                                   align))
        body += data
    if notes is not None:
        entries.append(struct.pack("<IIQQQQQQ", 4, 4, data_offset + len(body), 0, 0, len(notes), len(notes), 4))
        body += notes
    sections = b""
    shoff = shnum = 0
    if note_sections is not None:
        note_offset = data_offset + len(body)
        body += note_sections
        shoff = data_offset + len(body)
        shnum = 2
        sections = bytes(shentsize) + struct.pack("<IIQQQQIIQQ", 1, 7, 0, 0, note_offset, len(note_sections), 0, 0,
                                                  4, 0)
        body += sections
    ident = b"\x7fELF" + bytes([elf_class, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, entry, header_size, shoff, 0, header_size,
                                 phentsize, count, shentsize, shnum, 0)
    return header + b"".join(entries) + bytes(body)


def pvh_note(entry, size=4):
    name = b"Xen\0"
    desc = u32(entry) if size == 4 else u64(entry)
    return u32(len(name)) + u32(len(desc)) + u32(18) + name + desc


def other_note():
    name = b"GNU\0"
    return u32(len(name)) + u32(16) + u32(3) + name + bytes(range(16))


def elf_seeds():
    load = (1, 0x100000, bytes(range(256)) * 4, 0x4000, 0x1000)
    return {
        "vmlinux": elf([load]),
        "pvh-note": elf([load], notes=other_note() + pvh_note(0x100040)),
        "pvh-note-8-bytes": elf([load], notes=pvh_note(0x100080, 8)),
        "pvh-note-section": elf([load], note_sections=pvh_note(0x100010)),
        "two-segments": elf([load, (1, 0x200000, b"second", 0x2000, 0x1000)]),
        "below-1mib": elf([(1, 0x1000, b"low", 0x1000, 0x1000)]),
        "32-bit": elf([load], elf_class=1),
        "aarch64": elf([load], machine=183),
    }


def kernel_seeds():
    def spec(initrd_size, cmdline, kernel):
        return u32(initrd_size) + u8(len(cmdline)) + cmdline + kernel

    load = (1, 0x100000, bytes(range(256)), 0x2000, 0x1000)
    return {
        "bzimage-initrd": spec(0x10000, b"console=ttyS0 panic=-1", bzimage()),
        "pvh-initrd": spec(0x1000, b"console=hvc0", elf([load], notes=pvh_note(0x100000))),
        "vmlinux": spec(0, b"", elf([load])),
        "initrd-too-big": spec(0x3f0000, b"quiet", bzimage()),
        "not-a-kernel": spec(0, b"x", b"MZ this is not a kernel"),
    }


# --- Images (layers, image_archive, oci_layout, image_config, image_user) ----------------------------

def tar_bytes(members, compress=None):
    """members: list of (TarInfo, data or None)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buffer.getvalue()
    if compress == "gzip":
        return gzip.compress(raw, mtime=0)
    if compress == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=raw, stdout=subprocess.PIPE, check=True).stdout
    return raw


def entry(name, kind=tarfile.REGTYPE, data=None, link="", mode=0o644, major=0, minor=0):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    info.mtime = 1700000000
    info.devmajor, info.devminor = major, minor
    return (info, data if kind == tarfile.REGTYPE else None)


def layer_members():
    return [entry("etc/", tarfile.DIRTYPE, mode=0o755),
            entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
            entry("etc/group", data=b"root:x:0:\napp:x:1000:\n"),
            entry("bin/", tarfile.DIRTYPE, mode=0o755),
            entry("bin/busybox", data=b"\x7fELF not really", mode=0o755),
            entry("bin/sh", tarfile.SYMTYPE, link="busybox"),
            entry("bin/ls", tarfile.LNKTYPE, link="bin/busybox")]


def layers_seeds():
    seeds = {
        "plain": tar_bytes(layer_members()),
        "gzip": tar_bytes(layer_members(), "gzip"),
        "whiteouts": tar_bytes([entry("lower/.wh.file", data=b""), entry("etc/.wh..wh..opq", data=b""),
                                entry("etc/hostname", data=b"ember\n"), entry("lower/new", data=b"new")]),
        "special-files": tar_bytes([entry("dev/", tarfile.DIRTYPE), entry("dev/fifo", tarfile.FIFOTYPE),
                                    entry("dev/null", tarfile.CHRTYPE, mode=0o666, major=1, minor=3),
                                    entry("dev/loop0", tarfile.BLKTYPE, major=7, minor=0),
                                    entry("setuid", data=b"#!/bin/sh\n", mode=0o4755)]),
        "replace-kinds": tar_bytes([entry("etc/passwd", tarfile.DIRTYPE), entry("etc/passwd/x", data=b"x"),
                                    entry("lower", tarfile.SYMTYPE, link="etc"), entry("lower", data=b"file again")]),
        # Entries that try to leave the root: each must fail or stay inside.
        "dotdot": tar_bytes([entry("../escaped", data=b"out"), entry("a/../../escaped", data=b"out")]),
        "absolute": tar_bytes([entry("/etc/escaped", data=b"in the root's etc")]),
        "symlink-to-root": tar_bytes([entry("host", tarfile.SYMTYPE, link="/"),
                                      entry("host/ember-fuzz-escaped", data=b"out"),
                                      entry("up", tarfile.SYMTYPE, link="../.."),
                                      entry("up/ember-fuzz-escaped", data=b"out"),
                                      entry("up/canary", data=b"overwritten")]),
        "hardlinks-outside": tar_bytes([entry("passwd", tarfile.LNKTYPE, link="/etc/passwd"),
                                        entry("canary", tarfile.LNKTYPE, link="../canary"),
                                        entry("up", tarfile.SYMTYPE, link=".."),
                                        entry("canary2", tarfile.LNKTYPE, link="up/canary")]),
        "symlink-last-component": tar_bytes([entry("target", tarfile.SYMTYPE, link="../canary"),
                                             entry("target", data=b"replaces the link, not its target")]),
    }
    if shutil.which("zstd"):
        seeds["zstd"] = tar_bytes(layer_members(), "zstd")
    return seeds


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def docker_archive(diff_ids=True, layer_name="layer.tar", extra=(), compress=None):
    uncompressed = tar_bytes(layer_members())
    layer = tar_bytes(layer_members(), compress) if compress else uncompressed
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "echo hi"], "Env": ["PATH=/bin"],
                         "WorkingDir": "/", "User": "app", "ExposedPorts": {"80/tcp": {}}},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256(uncompressed)] if diff_ids else []}}
    config_bytes = json.dumps(config).encode()
    config_name = sha256(config_bytes) + ".json"
    manifest = [{"Config": config_name, "RepoTags": ["fuzz:latest"], "Layers": [layer_name]}]
    members = [entry("manifest.json", data=json.dumps(manifest).encode()),
               entry(config_name, data=config_bytes), entry(layer_name, data=layer)]
    return tar_bytes(members + list(extra))


def oci_archive():
    layer = tar_bytes(layer_members(), "gzip")
    config = json.dumps({"config": {"Cmd": ["/bin/sh"]}, "rootfs": {"type": "layers"}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + sha256(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": "sha256:" + sha256(layer), "size": len(layer)}]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + sha256(manifest),
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}).encode()
    return tar_bytes([entry("oci-layout", data=b'{"imageLayoutVersion": "1.0.0"}'), entry("index.json", data=index),
                      entry("blobs/", tarfile.DIRTYPE), entry("blobs/sha256/", tarfile.DIRTYPE),
                      entry("blobs/sha256/" + sha256(manifest), data=manifest),
                      entry("blobs/sha256/" + sha256(config), data=config),
                      entry("blobs/sha256/" + sha256(layer), data=layer)])


def image_archive_seeds():
    hostile_manifest = [{"Config": "../../canary", "Layers": ["/etc/passwd"]}]
    return {
        "docker-archive": docker_archive(),
        "docker-archive-no-diff-ids": docker_archive(diff_ids=False, layer_name="abc/layer.tar"),
        "docker-archive-gzip-layer": docker_archive(compress="gzip"),
        "oci-archive": oci_archive(),
        "hostile-paths": tar_bytes([entry("manifest.json", data=json.dumps(hostile_manifest).encode())]),
        # Archive members that are links: skipped by the unpacker, never followed.
        "link-members": docker_archive(extra=[entry("canary", tarfile.LNKTYPE, link="canary"),
                                              entry("escape", tarfile.SYMTYPE, link="../.."),
                                              entry("escape/file", data=b"out")]),
        "neither": tar_bytes([entry("README", data=b"not an image")]),
    }


def oci_layout_seeds():
    manifest_type = "application/vnd.oci.image.manifest.v1+json"
    config_type = "application/vnd.oci.image.config.v1+json"
    layer_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    index_type = "application/vnd.oci.image.index.v1+json"

    def parts(*documents):
        return "\n--\n".join(d if isinstance(d, str) else json.dumps(d) for d in documents).encode()

    manifest = {"schemaVersion": 2, "config": {"mediaType": config_type, "digest": "@2"},
                "layers": [{"mediaType": layer_type, "digest": "@3"}]}
    config = {"config": {"Entrypoint": ["/bin/app"], "Env": ["A=B"], "User": "1000:1000"}}
    simple_index = {"schemaVersion": 2, "manifests": [{"mediaType": manifest_type, "digest": "@1"}]}
    nested_index = {"schemaVersion": 2, "manifests": [{"mediaType": index_type, "digest": "@1"}]}
    platforms = {"schemaVersion": 2, "manifests": [
        {"mediaType": manifest_type, "digest": "@1", "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": manifest_type, "digest": "@2", "platform": {"os": "linux", "architecture": "amd64"},
         "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    return {
        "simple": parts(simple_index, manifest, config, "layer bytes"),
        "nested-index": parts(nested_index, {"schemaVersion": 2, "manifests": [
            {"mediaType": manifest_type, "digest": "@2", "platform": {"os": "linux", "architecture": "amd64"}}]},
            {"schemaVersion": 2, "config": {"mediaType": config_type, "digest": "@3"}, "layers": []},
            {"config": None}),
        "platforms": parts(platforms, {"schemaVersion": 2, "config": {"mediaType": config_type, "digest": "@3"},
                                       "layers": []},
                           {"schemaVersion": 2, "config": {"mediaType": config_type, "digest": "@3"},
                            "layers": [{"mediaType": layer_type, "digest": "@4"}]},
                           {"config": {"Cmd": ["sh"]}}, "layer"),
        "bad-digest": parts({"schemaVersion": 2, "manifests": [
            {"mediaType": manifest_type, "digest": "sha256:../../../canary"}]}),
        "wrong-size": parts({"schemaVersion": 2, "manifests": [
            {"mediaType": manifest_type, "digest": "@1", "size": 3}]}, manifest, config, "x"),
    }


def image_config_seeds():
    return {
        "docker": json.dumps({"architecture": "amd64", "config": {
            "Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["nginx", "-g", "daemon off;"],
            "Env": ["PATH=/usr/bin:/bin", "NGINX_VERSION=1.25"], "WorkingDir": "/srv", "User": "nginx",
            "ExposedPorts": {"443/tcp": {}, "80/tcp": {}}}, "rootfs": {"type": "layers", "diff_ids": []}}).encode(),
        "nulls": b'{"config": {"Entrypoint": null, "Cmd": null, "Env": null, "WorkingDir": null, "User": null}}',
        "no-config": b'{"architecture": "amd64"}',
        "wrong-types": b'{"config": {"Cmd": "sh", "Env": [1, 2], "User": 0}}',
        "not-an-object": b'["config"]',
        "unicode": '{"config": {"Cmd": ["echo", "h\\u00e9llo \\ud83d\\ude00"]}}'.encode(),
    }


def image_user_seeds():
    passwd = (b"root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1000::/home/app:/bin/sh\n"
              b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nbroken line\n")
    group = b"root:x:0:\nwheel:x:10:app,root\napp:x:1000:\nstaff:x:50:app\n"
    return {
        "name": b"app\0" + passwd + b"\0" + group,
        "uid-gid": b"1000:10\0" + passwd + b"\0" + group,
        "name-group": b"app:staff\0" + passwd + b"\0" + group,
        "unknown": b"nobody2:nogroup\0" + passwd + b"\0" + group,
        "numeric-unknown": b"4242\0\0",
        "empty": b"\0" + passwd + b"\0" + group,
    }


# --- The ember run protocol (host_protocol, init_protocol) -------------------------------------------

def frame(kind, payload=b""):
    return u8(kind) + u8(0) + u16(0) + u32(len(payload)) + payload


HELLO, STDOUT, STDERR, EXIT, ERROR, LOG = 0x81, 0x82, 0x83, 0x84, 0x85, 0x86
START, STDIN, STDIN_EOF, SIGNAL, RESIZE = 0x01, 0x02, 0x03, 0x04, 0x05


def host_protocol_seeds():
    hello = frame(HELLO, u32(1))
    return {
        "run": u8(255) + u8(0) + hello + frame(LOG, b"mounted /dev/vda") + frame(STDOUT, b"hello\n") +
        frame(STDERR, b"warning\n") + frame(EXIT, u32(0) + u32(3)),
        "small-chunks": u8(2) + u8(3) + hello + frame(STDOUT, b"x" * 100) + frame(EXIT, u32(1) + u32(9)),
        "error": u8(16) + u8(1) + hello + frame(ERROR, u32(127) + b"sh: not found\nsecond line"),
        "before-hello": u8(255) + u8(0) + frame(STDOUT, b"early"),
        "bad-version": u8(255) + u8(0) + frame(HELLO, u32(2)),
        "oversized": u8(255) + u8(0) + hello + u8(STDOUT) + u8(0) + u16(0) + u32(0x10001),
        "after-exit": u8(7) + u8(0) + hello + frame(EXIT, u32(0) + u32(0)) + frame(STDOUT, b"late") + frame(LOG, b"x"),
    }


def launch_spec(**changes):
    spec = {"version": 1, "args": ["sh", "-c", "exit 7"], "env": ["PATH=/usr/bin:/bin", "HOME=/root"],
            "cwd": "/", "uid": 0, "gid": 0, "groups": [0, 10], "hostname": "ember-1a2b3c", "tty": False,
            "stdin": True, "rlimits": [{"resource": "nofile", "soft": 1048576, "hard": 1048576}],
            "root": {"serial": "ember-root", "fstype": "erofs"},
            "scratch": {"serial": "ember-scratch", "fstype": "ext4"},
            "mounts": [{"type": "virtiofs", "source": "ember-v0", "target": "/data", "readonly": False}],
            "network": {"interface": "eth0", "mac": "52:54:00:12:34:56", "address": "172.30.0.2/30",
                        "gateway": "172.30.0.1", "mtu": 1500, "dns": ["172.30.0.1"]},
            "stop_signal": 15}
    spec.update(changes)
    return json.dumps(spec).encode()


def init_protocol_seeds():
    return {
        "run": frame(START, launch_spec()) + frame(RESIZE, u16(24) + u16(80)) + frame(STDIN, b"input\n") +
        frame(SIGNAL, u32(2)) + frame(STDIN_EOF),
        "minimal-spec": frame(START, launch_spec(scratch=None, network=None, mounts=[], rlimits=[], stdin=False)),
        "bad-spec": frame(START, launch_spec(version=2)) + frame(START, launch_spec(cwd="relative")),
        "rlimits": frame(START, launch_spec(rlimits=[{"resource": "core", "soft": 0, "hard": 18446744073709551615},
                                                     {"resource": "nproc", "soft": 10, "hard": 5}])),
        "guest-frame": frame(HELLO, u32(1)),
        "truncated": frame(START, launch_spec())[:-10],
    }


TARGETS = {
    "virtqueue": virtqueue_seeds, "virtio_blk": virtio_blk_seeds, "virtio_net": virtio_net_seeds,
    "virtio_console": virtio_console_seeds, "virtio_rng": virtio_rng_seeds, "virtio_fs": virtio_fs_seeds,
    "virtio_mmio": virtio_mmio_seeds, "virtio_pci": virtio_pci_seeds, "pci": pci_seeds,
    "bzimage": bzimage_seeds, "elf": elf_seeds, "kernel": kernel_seeds,
    "layers": layers_seeds, "image_archive": image_archive_seeds, "oci_layout": oci_layout_seeds,
    "image_config": image_config_seeds, "image_user": image_user_seeds,
    "host_protocol": host_protocol_seeds, "init_protocol": init_protocol_seeds,
}


def main():
    total = 0
    for target, make in TARGETS.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            if not old.name.startswith("regression-"):
                old.unlink()
        for name, data in make().items():
            (directory / name).write_bytes(data)
            total += len(data)
    print(f"wrote the seeds of {len(TARGETS)} targets ({total} bytes) under {CORPUS}")


if __name__ == "__main__":
    main()
