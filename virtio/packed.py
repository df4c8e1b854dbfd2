"""Packed virtqueue layout (VIRTIO 1.4, 2.8): descriptor ring, driver and device event suppression.

Defined once and used by both sides: the driver-side queue (virtio/packed_queue.py) and the model
devices (targets/model/packed_ring.py). Views are numpy arrays over guest memory, so every field
store is a single aligned store of the field's width: a descriptor's ``flags`` (what makes it
available or used) is one 16-bit store, written after the rest of the descriptor.
"""

from __future__ import annotations

import numpy as np

from . import constants as C
from .areas import RingAddrs, RingViews
from .memory import GuestMemory

# struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; }  (2.8.13)
PVIRTQ_DESC = np.dtype([("addr", "<u8"), ("len", "<u4"), ("id", "<u2"), ("flags", "<u2")])
DESC_SIZE = 16
# A descriptor's second 8 bytes as one le64 word: len | id << 32 | flags << 48 (see split.py).
WORD_ID_SHIFT = 32
WORD_FLAGS_SHIFT = 48
# struct pvirtq_event_suppress { le16 desc (off:15 | wrap:1); le16 flags (2 bits, rest reserved); }
PVIRTQ_EVENT_SUPPRESS = np.dtype([("desc", "<u2"), ("flags", "<u2")])
EVENT_SUPPRESS_SIZE = 4

DESC_ALIGN = 16  # 2.8.10.1 table: descriptor ring
EVENT_ALIGN = 4  # device and driver event suppression
MAX_QUEUE_SIZE = 32768  # 2.8: up to 2^15 entries, any number (not only powers of two)

EVENT_OFF_MASK = 0x7FFF
EVENT_WRAP = 1 << C.RING_EVENT_WRAP_SHIFT


def ring_size(num: int) -> int:
    return DESC_SIZE * num


def off_wrap(offset: int, wrap: int) -> int:
    """The ``desc`` field of an event suppression structure: offset | wrap << 15."""
    return (offset & EVENT_OFF_MASK) | (int(bool(wrap)) << C.RING_EVENT_WRAP_SHIFT)


def avail_flags(wrap: int) -> int:
    """Flags marking a descriptor available in a lap with this wrap counter (2.8.1)."""
    return C.VIRTQ_DESC_F_AVAIL if wrap else C.VIRTQ_DESC_F_USED


def used_flags(wrap: int) -> int:
    """Flags marking a descriptor used by a device whose wrap counter is ``wrap`` (2.8.1)."""
    return (C.VIRTQ_DESC_F_AVAIL | C.VIRTQ_DESC_F_USED) if wrap else 0


def lap_flags(num: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(avail, used) flag tables for runs of up to ``2 * num`` descriptors: ``avail[w][i]`` are the
    AVAIL/USED bits of an available descriptor (AVAIL=w, USED=!w) and ``used[w][i]`` those of a used
    one (AVAIL=USED=w) at index i of a run that starts in a lap whose wrap counter is w; the lap,
    and so the bits, flip at i == num (2.8.1)."""
    lap = np.arange(2 * num) < num  # index i of a run from slot 0: still in the first lap?
    a, u = C.VIRTQ_DESC_F_AVAIL, C.VIRTQ_DESC_F_USED
    au = a | u
    avail = (np.where(lap, u, a).astype(np.uint16), np.where(lap, a, u).astype(np.uint16))
    used = (np.where(lap, 0, au).astype(np.uint16), np.where(lap, au, 0).astype(np.uint16))
    return avail, used


def is_avail(flags: int, wrap: int) -> bool:
    """AVAIL matches the wrap counter and USED does not."""
    return bool(flags & C.VIRTQ_DESC_F_AVAIL) == bool(wrap) and bool(flags & C.VIRTQ_DESC_F_USED) != bool(wrap)


def is_used(flags: int, wrap: int) -> bool:
    """AVAIL and USED both match the wrap counter."""
    return bool(flags & C.VIRTQ_DESC_F_AVAIL) == bool(wrap) and bool(flags & C.VIRTQ_DESC_F_USED) == bool(wrap)


def need_event(off_wrap_value: int, wrap: int, num: int, new: int, old: int) -> bool:
    """Did moving from ring position ``old`` to ``new`` (both 0..num-1 in the lap whose wrap
    counter is ``wrap``, ``old`` possibly in the previous lap) pass the descriptor named by
    ``off_wrap_value``? Linux's vring_need_event on positions where a previous-lap offset counts
    as negative (virtqueue_kick_prepare_packed, and the device side the same way)."""
    event = off_wrap_value & EVENT_OFF_MASK
    if (off_wrap_value >> C.RING_EVENT_WRAP_SHIFT) != bool(wrap):
        event -= num
    return ((new - event - 1) & 0xFFFF) < ((new - old) & 0xFFFF)


class PackedRing(RingViews):
    """Typed views over a packed virtqueue in guest memory.

    ``desc`` is the descriptor ring (structured); ``desc_addr``/``desc_len``/``desc_id``/
    ``desc_flags`` are per-field views, so ``ring.desc_flags[i] = f`` is one 16-bit store.
    ``driver_event_desc``/``driver_event_flags`` (driver area) and ``device_event_desc``/
    ``device_event_flags`` (device area) are 1-element le16 views; ``driver_event``/
    ``device_event`` are the whole structure as one le32, for a single-load snapshot.
    """

    desc_dtype = PVIRTQ_DESC

    def __init__(self, mem: GuestMemory, addrs: RingAddrs):
        super().__init__(mem, addrs)
        self.desc_len = self.desc["len"]
        self.desc_id = self.desc["id"]
        self.desc_flags = self.desc["flags"]
        drv = mem.array(addrs.driver, np.uint16, 2)
        self.driver_event_desc = drv[0:1]
        self.driver_event_flags = drv[1:2]
        self.driver_event = mem.array(addrs.driver, np.uint32, 1)
        dev = mem.array(addrs.device, np.uint16, 2)
        self.device_event_desc = dev[0:1]
        self.device_event_flags = dev[1:2]
        self.device_event = mem.array(addrs.device, np.uint32, 1)


def split_event(word: int) -> tuple[int, int]:
    """(desc, flags) of an event suppression structure read as one le32."""
    return word & 0xFFFF, word >> 16


def check_queue_size(num: int) -> None:
    if not 1 <= num <= MAX_QUEUE_SIZE:
        raise ValueError(f"packed queue size must be in 1..{MAX_QUEUE_SIZE}, got {num}")


def alloc_packed_ring(mem: GuestMemory, num: int) -> RingAddrs:
    """Allocate the three parts with the alignments 2.8.10.1 requires, zeroed (the descriptor
    ring is zero-initialized, 2.8.13)."""
    check_queue_size(num)
    desc = mem.alloc(ring_size(num), DESC_ALIGN)
    driver = mem.alloc(EVENT_SUPPRESS_SIZE, EVENT_ALIGN)
    device = mem.alloc(EVENT_SUPPRESS_SIZE, EVENT_ALIGN)
    mem.fill(desc, ring_size(num), 0)
    mem.fill(driver, EVENT_SUPPRESS_SIZE, 0)
    mem.fill(device, EVENT_SUPPRESS_SIZE, 0)
    return RingAddrs(num, desc, driver, device)


def free_packed_ring(mem: GuestMemory, addrs: RingAddrs) -> None:
    for a in (addrs.desc, addrs.driver, addrs.device):
        mem.free(a)
