"""Guest memory: one shared mapping, an allocator over it, and addresses as the device sees them.

The mapping is a memfd so that a later transport (vhost-user) can pass it to another process; the
addresses handed to the device are guest-physical: ``base + offset`` (VIRTIO 1.4, 2.7: descriptors
carry guest-physical addresses).
"""

from __future__ import annotations

import mmap
import os
import threading

import numpy as np

from .errors import GuestMemoryError

DEFAULT_BASE = 0x1_0000_0000  # above 4 GiB: a device that truncates addresses to 32 bits misses
DEFAULT_SIZE = 64 << 20
PAGE = 4096


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

    # -- allocation ---------------------------------------------------------------------------
    def alloc(self, length: int, align: int = 16) -> int:
        """Allocate ``length`` bytes aligned to ``align``; return the guest address."""
        if length <= 0:
            raise ValueError("allocation length must be positive")
        with self._lock:
            for i, (off, flen) in enumerate(self._free):
                start = -(-off // align) * align
                pad = start - off
                if flen - pad >= length:
                    tail = flen - pad - length
                    pieces = []
                    if pad:
                        pieces.append((off, pad))
                    if tail:
                        pieces.append((start + length, tail))
                    self._free[i : i + 1] = pieces
                    self._live[start] = length
                    return self.base + start
        raise GuestMemoryError(f"guest memory exhausted: cannot allocate {length} bytes (size {self.size})")

    def free(self, addr: int) -> None:
        off = addr - self.base
        with self._lock:
            length = self._live.pop(off, None)
            if length is None:
                raise GuestMemoryError(f"free of {addr:#x}, which is not an allocation")
            self._free.append((off, length))
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
            self._live.clear()
            self._free = [(PAGE, self.size - PAGE)]

    @property
    def allocated(self) -> int:
        return sum(self._live.values())

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
