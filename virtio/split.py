"""Split virtqueue layout (VIRTIO 1.4, 2.7): descriptor table, driver area (avail), device area (used).

Defined once and used by both sides: the driver-side queue (virtio/split_queue.py) and the model
devices (targets/model/split_ring.py). Views are numpy arrays over guest memory, so every field
store is a single aligned store of the field's width (a torn 16-bit index would be a harness bug).
"""

from __future__ import annotations

import numpy as np

from .areas import RingAddrs, RingViews
from .memory import GuestMemory

# struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }  (2.7.5)
VIRTQ_DESC = np.dtype([("addr", "<u8"), ("len", "<u4"), ("flags", "<u2"), ("next", "<u2")])
DESC_SIZE = 16
# struct virtq_used_elem { le32 id; le32 len; }  (2.7.8) -- viewed as (num, 2) le32
USED_ELEM_SIZE = 8
# A descriptor's second 8 bytes as one le64 word: len | flags << 32 | next << 48. Reading or writing
# a descriptor as (addr, word) is two aligned 8-byte accesses instead of four narrower ones.
WORD_FLAGS_SHIFT = 32
WORD_NEXT_SHIFT = 48

DESC_ALIGN = 16
AVAIL_ALIGN = 2
USED_ALIGN = 4
MAX_QUEUE_SIZE = 32768  # 2.7: split queue size is a power of 2, at most 32768


def desc_table_size(num: int) -> int:
    return DESC_SIZE * num


def avail_size(num: int) -> int:
    """flags, idx, ring[num], used_event -- all le16."""
    return 2 * (3 + num)


def used_size(num: int) -> int:
    """flags, idx (le16 each), ring[num] of used elems, avail_event (le16)."""
    return 4 + USED_ELEM_SIZE * num + 2


class SplitRing(RingViews):
    """Typed views over a split virtqueue in guest memory.

    Field names follow the spec: ``desc`` (descriptor table), ``avail_flags``, ``avail_idx``,
    ``avail_ring``, ``used_event`` (driver area), ``used_flags``, ``used_idx``, ``used_ring``,
    ``avail_event`` (device area). ``desc_addr`` / ``desc_word`` are each descriptor's addr and
    its other 8 bytes as one le64 (``WORD_FLAGS_SHIFT``, ``WORD_NEXT_SHIFT``). Single fields are 1-element arrays: ``ring.avail_idx[0] = n``
    is one 16-bit store.
    """

    desc_dtype = VIRTQ_DESC

    def __init__(self, mem: GuestMemory, addrs: RingAddrs):
        super().__init__(mem, addrs)
        num = addrs.num
        avail = mem.array(addrs.driver, np.uint16, 3 + num)
        self.avail_flags = avail[0:1]
        self.avail_idx = avail[1:2]
        self.avail_ring = avail[2 : 2 + num]
        self.used_event = avail[2 + num : 3 + num]
        used_hdr = mem.array(addrs.device, np.uint16, 2)
        self.used_flags = used_hdr[0:1]
        self.used_idx = used_hdr[1:2]
        self.used_ring = mem.array(addrs.device + 4, np.uint32, 2 * num).reshape(num, 2)
        self.avail_event = mem.array(addrs.device + 4 + USED_ELEM_SIZE * num, np.uint16, 1)


def alloc_split_ring(mem: GuestMemory, num: int) -> RingAddrs:
    """Allocate the three areas with the alignments 2.7 requires and zero them."""
    if num < 1 or num > MAX_QUEUE_SIZE or num & (num - 1):
        raise ValueError(f"split queue size must be a power of 2 in 1..{MAX_QUEUE_SIZE}, got {num}")
    desc = mem.alloc(desc_table_size(num), DESC_ALIGN)
    avail = mem.alloc(avail_size(num), AVAIL_ALIGN)
    used = mem.alloc(used_size(num), USED_ALIGN)
    mem.fill(desc, desc_table_size(num), 0)
    mem.fill(avail, avail_size(num), 0)
    mem.fill(used, used_size(num), 0)
    return RingAddrs(num, desc, avail, used)


def free_split_ring(mem: GuestMemory, addrs: RingAddrs) -> None:
    for a in (addrs.desc, addrs.driver, addrs.device):
        mem.free(a)


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """2.7.10 / Linux vring_need_event: did [old, new) step over event_idx (mod 2^16)?"""
    return ((new_idx - event_idx - 1) & 0xFFFF) < ((new_idx - old_idx) & 0xFFFF)
