"""Guest memory: one shared mapping, an allocator over it, and addresses as the device sees them.

The mapping is a memfd so that a later transport (vhost-user) can pass it to another process; the
addresses handed to the device are guest-physical: ``base + offset`` (VIRTIO 1.4, 2.7: descriptors
carry guest-physical addresses).
"""

from __future__ import annotations

import mmap
import os
import threading
import zlib

import numpy as np

from .errors import GuestMemoryError

# Any locked instruction is a full fence on x86 (and a lock is a full barrier elsewhere): it orders
# the avail idx store before the loads that decide whether to kick (see Linux virtio_mb()).
_FENCE = threading.Lock()


def virtio_mb() -> None:
    """A full memory barrier between the driver's ring stores and the loads that follow."""
    _FENCE.acquire()
    _FENCE.release()

DEFAULT_BASE = 0x1_0000_0000  # above 4 GiB: a device that truncates addresses to 32 bits misses
DEFAULT_SIZE = 64 << 20
PAGE = 4096

# Canary bytes before and after every allocation: nobody ever writes them legitimately, so a
# change is a device writing outside the buffer it was given (checked when buffers come back).
GUARD = 16
CANARY = bytes.fromhex("c3 5a 96 e1 0f 3c 69 d2 7b 84 1e b7 4d 28 f0 6b")
_CANARY = np.frombuffer(CANARY, dtype=np.uint8)
_GUARD_AR = np.arange(GUARD, dtype=np.intp)
# Guard map values: an allocation starts at this offset (canary before it) / ends here (canary after).
GUARD_START, GUARD_END = 1, 2
# Digests of small device-readable elements: a weighted byte sum with random odd 64-bit weights
# (vectorized over a batch; any single changed byte changes it); larger ones use crc32.
SMALL_DIGEST = 256
_WEIGHTS = (np.random.default_rng(0x5EED).integers(0, 1 << 63, SMALL_DIGEST, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)


try:  # numpy >= 2: the C function, without the Python dispatch wrapper
    from numpy._core.multiarray import count_nonzero
except ImportError:  # pragma: no cover
    count_nonzero = np.count_nonzero


def changed_bytes(before: bytes, now: bytes, addr: int) -> str:
    """Which bytes differ, for messages: 'bytes 3..5 at 0x...: 00 01 02 -> ff ff ff'."""
    diff = [i for i in range(min(len(before), len(now))) if before[i] != now[i]]
    if not diff:
        return "no byte changed"
    i, j = diff[0], diff[-1]
    show = slice(i, min(j + 1, i + 8))
    more = " ..." if j + 1 > i + 8 else ""
    return (f"{len(diff)} byte(s) changed, offsets {i}..{j} from {addr:#x}: "
            f"{before[show].hex(' ')} -> {now[show].hex(' ')}{more}")


class GuestMemory:
    """A memfd-backed region with a first-fit allocator.

    Every access goes through ``view``/``read``/``write``/``array``, which check bounds, so neither
    the driver side nor a model device can touch memory outside the region.
    """

    def __init__(self, size: int = DEFAULT_SIZE, base: int = DEFAULT_BASE, name: str = "virtio-guest"):
        if size % PAGE:
            raise ValueError("guest memory size must be a multiple of 4096")
        self.size = size
        self.base = base
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.mmap = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.buf = memoryview(self.mmap)
        self.bytes = np.frombuffer(self.mmap, dtype=np.uint8)
        # Free list of (offset, length), sorted by offset; the allocator never hands out offset 0
        # so that guest address ``base`` never names a live buffer.
        self._free = [(PAGE, size - PAGE)]
        self._live: dict[int, int] = {}
        self._lock = threading.Lock()
        # One byte per guest byte (zero pages until touched): GUARD_START where an allocation begins,
        # GUARD_END at the first byte after one. ``frees`` counts frees, so that a holder of guard
        # positions knows when to look again which are still guards.
        self.guard_map = np.zeros(size + 1, dtype=np.uint8)
        self.frees = 0

    # -- allocation ---------------------------------------------------------------------------
    def alloc(self, length: int, align: int = 16) -> int:
        """Allocate ``length`` bytes aligned to ``align``; return the guest address."""
        if length <= 0:
            raise ValueError("allocation length must be positive")
        with self._lock:
            for i, (off, flen) in enumerate(self._free):
                start = -(-(off + GUARD) // align) * align
                lo = start - GUARD  # the canary before the allocation
                pad = lo - off
                if flen - pad >= length + 2 * GUARD:
                    tail = flen - pad - length - 2 * GUARD
                    pieces = []
                    if pad:
                        pieces.append((off, pad))
                    if tail:
                        pieces.append((start + length + GUARD, tail))
                    self._free[i : i + 1] = pieces
                    self._live[start] = length
                    self.buf[lo:start] = CANARY
                    self.buf[start + length : start + length + GUARD] = CANARY
                    self.guard_map[start] = GUARD_START
                    self.guard_map[start + length] = GUARD_END
                    return self.base + start
        raise GuestMemoryError(f"guest memory exhausted: cannot allocate {length} bytes (size {self.size})")

    def free(self, addr: int) -> None:
        off = addr - self.base
        with self._lock:
            length = self._live.pop(off, None)
            if length is None:
                raise GuestMemoryError(f"free of {addr:#x}, which is not an allocation")
            self.guard_map[off] = self.guard_map[off + length] = 0
            self.frees += 1
            self._free.append((off - GUARD, length + 2 * GUARD))
            self._free.sort()
            merged = []
            for o, n in self._free:
                if merged and merged[-1][0] + merged[-1][1] == o:
                    merged[-1] = (merged[-1][0], merged[-1][1] + n)
                else:
                    merged.append((o, n))
            self._free = merged

    def free_all(self) -> None:
        with self._lock:
            for off, length in self._live.items():
                self.guard_map[off] = self.guard_map[off + length] = 0
            self.frees += 1
            self._live.clear()
            self._free = [(PAGE, self.size - PAGE)]

    @property
    def allocated(self) -> int:
        return sum(self._live.values())

    # -- canaries and digests (what a device must not write) --------------------------------------
    def guards_of(self, addr, length) -> np.ndarray:
        """Guest offsets of the canaries next to elements [addr, +length) (scalars or arrays): the
        one before an element that starts an allocation, the one after an element that ends one.
        An element inside a larger allocation (a pool of buffers) has none of its own."""
        off = np.atleast_1d(np.asarray(addr, dtype=np.uint64) - np.uint64(self.base)).astype(np.intp)
        end = off + np.asarray(length, dtype=np.intp)
        ok = (off >= 0) & (end <= self.size) & (off <= end)
        off, end = off[ok], end[ok]
        gm = self.guard_map
        return np.concatenate((off[gm[off] == GUARD_START] - GUARD, end[gm[end] == GUARD_END]))

    def guard_index(self, guards: np.ndarray) -> np.ndarray:
        """Byte indexes of the canaries at offsets ``guards`` (for ``canaries_broken``)."""
        return (np.unique(guards)[:, None] + _GUARD_AR).ravel()

    def canaries_broken(self, index: np.ndarray) -> bool:
        """Has any canary byte at ``index`` (from guard_index) changed?"""
        return bool(count_nonzero(self.bytes[index].reshape(-1, GUARD) != _CANARY))

    def still_guards(self, guards: np.ndarray) -> np.ndarray:
        """The offsets in ``guards`` that are still canaries of a live allocation."""
        gm = self.guard_map
        before = gm[np.minimum(guards + GUARD, self.size)] == GUARD_START
        after = gm[guards] == GUARD_END
        return guards[before | after]

    def canary_damage(self, guard: int) -> str | None:
        """What changed in the canary at offset ``guard``, or None if it is intact."""
        now = self.mmap[guard : guard + GUARD]
        if now == CANARY:
            return None
        return changed_bytes(CANARY, now, self.base + guard)

    def first_damage(self, guard: int) -> int | None:
        """Guest address of the first changed byte of the canary at offset ``guard``, or None."""
        now = self.mmap[guard : guard + GUARD]
        return next((self.base + guard + i for i in range(GUARD) if now[i] != CANARY[i]), None)

    def allocation_of(self, guard: int) -> tuple[int, int] | None:
        """(guest address, length) of the allocation the canary at ``guard`` belongs to."""
        if self.guard_map[guard + GUARD] == GUARD_START:
            start = guard + GUARD
            return self.base + start, self._live.get(start, 0)
        for start, length in self._live.items():
            if start + length == guard:
                return self.base + start, length
        return None

    def digests(self, addrs: np.ndarray, length) -> np.ndarray:
        """A digest of each element [addrs[i], +length or length[i]) as uint64, vectorized when every
        element has the same small length: equal digests mean (to 2**-32 or better) equal bytes."""
        n = len(addrs)
        if isinstance(length, np.ndarray) and n and (length == length[0]).all():
            length = int(length[0])
        if not isinstance(length, np.ndarray):
            length = int(length)
            if length <= SMALL_DIGEST:
                off = np.asarray(addrs, dtype=np.uint64) - np.uint64(self.base)
                if length == 0 or not n:
                    return np.zeros(n, dtype=np.uint64)
                if int(off.max()) + length > self.size:
                    raise GuestMemoryError(f"digest of elements outside guest memory (length {length})")
                idx = off.astype(np.intp)[:, None] + np.arange(length, dtype=np.intp)
                return (self.bytes[idx].astype(np.uint64) * _WEIGHTS[:length]).sum(axis=1, dtype=np.uint64)
            length = np.full(n, length, dtype=np.intp)
        out = np.empty(n, dtype=np.uint64)
        for i, (a, k) in enumerate(zip(np.asarray(addrs).tolist(), np.asarray(length).tolist())):
            if k <= SMALL_DIGEST:
                out[i] = self.digests(np.array([a], dtype=np.uint64), k)[0]
            else:
                out[i] = zlib.crc32(self.view(a, k))
        return out

    # -- access -------------------------------------------------------------------------------
    def offset(self, addr: int, length: int) -> int:
        """Offset of [addr, addr+length) in the mapping; raises if any byte lies outside it."""
        off = addr - self.base
        if length < 0 or off < 0 or off + length > self.size:
            raise GuestMemoryError(
                f"access [{addr:#x}, +{length}) outside guest memory [{self.base:#x}, +{self.size:#x})"
            )
        return off

    def contains(self, addr: int, length: int) -> bool:
        off = addr - self.base
        return length >= 0 and off >= 0 and off + length <= self.size

    def view(self, addr: int, length: int) -> memoryview:
        off = self.offset(addr, length)
        return self.buf[off : off + length]

    def read(self, addr: int, length: int) -> bytes:
        off = self.offset(addr, length)
        return self.mmap[off : off + length]

    def write(self, addr: int, data) -> None:
        off = self.offset(addr, len(data))
        self.buf[off : off + len(data)] = data

    def fill(self, addr: int, length: int, value: int) -> None:
        off = self.offset(addr, length)
        self.bytes[off : off + length] = value

    def array(self, addr: int, dtype, count: int) -> np.ndarray:
        """A typed numpy view: element stores are single aligned stores of the element width."""
        dtype = np.dtype(dtype)
        off = self.offset(addr, dtype.itemsize * count)
        align = dtype.alignment if dtype.fields is None else min(8, dtype.itemsize)
        if off % align:
            raise GuestMemoryError(f"typed view at {addr:#x} is not {align}-byte aligned")
        return np.frombuffer(self.mmap, dtype=dtype, count=count, offset=off)

    def close(self) -> None:
        try:
            self.buf.release()
        except (ValueError, AttributeError):
            pass
        self.bytes = None
        try:
            self.mmap.close()
        except BufferError:
            # A numpy view is still alive somewhere; the mapping goes when it does.
            pass
        os.close(self.fd)


def u64_view(mem_bytes: np.ndarray) -> np.ndarray | None:
    """Guest memory as le64 words, for 8-byte stores at 8-aligned offsets; None when the mapping
    does not start 8-aligned (a vhost-user region may start anywhere)."""
    if mem_bytes.ctypes.data % 8:
        return None
    return mem_bytes[: len(mem_bytes) // 8 * 8].view(np.uint64)
