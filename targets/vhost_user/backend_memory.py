"""Guest memory as a vhost-user back-end sees it: the front-end's regions, mapped from its fds.

QEMU docs/interop/vhost-user.rst, "Memory access" and VHOST_USER_SET_MEM_TABLE / ADD_MEM_REG /
REM_MEM_REG: each region is ``size`` bytes of an fd from ``mmap_offset``, seen by the device at
guest-physical ``guest_addr`` (descriptors carry these, VIRTIO 1.4 2.7.5) and by the front-end at
``user_addr`` (SET_VRING_ADDR carries those). ``BackendMemory`` offers the access API of
virtio.memory.GuestMemory (view/read/write/fill/array/contains/offset) that the model devices use,
with the same bounds checks: an access outside every region raises GuestMemoryError. An access may
not straddle two regions (they need not be adjacent in the back-end's address space).

``base``/``size``/``bytes`` name one region (the largest) for the split ring's vectorized fast
path, which checks buffers against a single range and hands anything outside it to the per-chain
path, which goes through ``contains`` and so sees every region.
"""

from __future__ import annotations

import mmap
import os
import stat
from dataclasses import dataclass

import numpy as np

from virtio.errors import GuestMemoryError

from .protocol import MemRegion

MAX_MEM_SLOTS = 32  # what we answer to GET_MAX_MEM_SLOTS (libvhost-user's figure as well)


@dataclass
class MappedRegion:
    guest_addr: int
    size: int
    user_addr: int
    mmap_offset: int
    mapping: mmap.mmap
    buf: memoryview
    bytes: np.ndarray

    def same(self, r: MemRegion) -> bool:
        """REM_MEM_REG names a region by guest address, user address and size (not the offset)."""
        return (self.guest_addr, self.user_addr, self.size) == (r.guest_addr, r.user_addr, r.size)


def _map(region: MemRegion, fd: int) -> MappedRegion:
    """mmap ``region`` from ``fd``; refuses what would fault later instead of mapping it."""
    if region.size <= 0:
        raise GuestMemoryError(f"memory region of size {region.size}")
    for name, start in (("guest", region.guest_addr), ("user", region.user_addr)):
        if start + region.size > 1 << 64:
            raise GuestMemoryError(f"memory region wraps the {name} address space ({start:#x}, +{region.size:#x})")
    st = os.fstat(fd)
    # Mapping past the end of a file succeeds but the first access there is SIGBUS: check first.
    if stat.S_ISREG(st.st_mode) and region.mmap_offset + region.size > st.st_size:
        raise GuestMemoryError(
            f"memory region [{region.mmap_offset:#x}, +{region.size:#x}) of the fd beyond its size {st.st_size:#x}"
        )
    # mmap wants a page-aligned offset; map from the page below and slice.
    skew = region.mmap_offset % mmap.ALLOCATIONGRANULARITY
    try:
        mapping = mmap.mmap(fd, region.size + skew, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                            offset=region.mmap_offset - skew)
    except (OSError, ValueError, OverflowError) as e:
        raise GuestMemoryError(f"cannot map memory region (guest {region.guest_addr:#x}, +{region.size:#x}): {e}") from None
    buf = memoryview(mapping)[skew : skew + region.size]
    arr = np.frombuffer(mapping, dtype=np.uint8, count=region.size, offset=skew)
    return MappedRegion(region.guest_addr, region.size, region.user_addr, region.mmap_offset, mapping, buf, arr)


class BackendMemory:
    """The front-end's memory table, mapped. Mutated in place by SET_MEM_TABLE / ADD / REM, so a
    device attached once keeps the same object; rings must be rebuilt by the caller after a change
    (their typed views point into the old mappings)."""

    def __init__(self) -> None:
        self.regions: list[MappedRegion] = []
        self._last: MappedRegion | None = None  # the region that served the last lookup
        self._set_primary()

    # -- the table ------------------------------------------------------------------------------
    def _set_primary(self) -> None:
        r = max(self.regions, key=lambda r: r.size, default=None)
        self.base = r.guest_addr if r else 0
        self.size = r.size if r else 0
        self.bytes = r.bytes if r else np.zeros(0, dtype=np.uint8)
        self._last = r

    def _check_overlap(self, new: MappedRegion, others: list[MappedRegion]) -> None:
        for r in others:
            for what, a, b in (("guest", new.guest_addr, r.guest_addr), ("user", new.user_addr, r.user_addr)):
                if a < b + r.size and b < a + new.size:
                    raise GuestMemoryError(
                        f"memory region ({what} {a:#x}, +{new.size:#x}) overlaps ({what} {b:#x}, +{r.size:#x})"
                    )

    def set_table(self, regions: list[MemRegion], fds: list[int]) -> None:
        """SET_MEM_TABLE: replace every region (all or nothing: on error the old table stays)."""
        if len(fds) != len(regions):
            raise GuestMemoryError(f"memory table of {len(regions)} regions came with {len(fds)} fds")
        mapped: list[MappedRegion] = []
        try:
            for region, fd in zip(regions, fds):
                m = _map(region, fd)
                self._check_overlap(m, mapped)
                mapped.append(m)
        except GuestMemoryError:
            for m in mapped:
                _unmap(m)
            raise
        old, self.regions = self.regions, mapped
        self._set_primary()
        for m in old:
            _unmap(m)

    def add_region(self, region: MemRegion, fd: int) -> None:
        """ADD_MEM_REG."""
        if len(self.regions) >= MAX_MEM_SLOTS:
            raise GuestMemoryError(f"all {MAX_MEM_SLOTS} memory slots are in use")
        m = _map(region, fd)
        try:
            self._check_overlap(m, self.regions)
        except GuestMemoryError:
            _unmap(m)
            raise
        self.regions.append(m)
        self._set_primary()

    def remove_region(self, region: MemRegion) -> None:
        """REM_MEM_REG."""
        for i, m in enumerate(self.regions):
            if m.same(region):
                del self.regions[i]
                self._set_primary()
                _unmap(m)
                return
        raise GuestMemoryError(
            f"no memory region at guest {region.guest_addr:#x} user {region.user_addr:#x} size {region.size:#x}"
        )

    def clear(self) -> None:
        old, self.regions = self.regions, []
        self._set_primary()
        for m in old:
            _unmap(m)

    close = clear

    # -- address translation --------------------------------------------------------------------
    def user_to_guest(self, uaddr: int, length: int) -> int:
        """A front-end user address (SET_VRING_ADDR) as a guest-physical address; the whole
        ``length`` bytes must lie in one region."""
        for r in self.regions:
            off = uaddr - r.user_addr
            if 0 <= off and off + length <= r.size:
                return r.guest_addr + off
        raise GuestMemoryError(f"user address range [{uaddr:#x}, +{length}) is in no memory region")

    def _find(self, addr: int, length: int) -> tuple[MappedRegion, int]:
        r = self._last
        if r is not None:
            off = addr - r.guest_addr
            if length >= 0 and off >= 0 and off + length <= r.size:
                return r, off
        for r in self.regions:
            off = addr - r.guest_addr
            if length >= 0 and off >= 0 and off + length <= r.size:
                self._last = r
                return r, off
        raise GuestMemoryError(f"access [{addr:#x}, +{length}) outside every memory region of the front-end")

    # -- the GuestMemory access API -------------------------------------------------------------
    def offset(self, addr: int, length: int) -> int:
        """Offset of [addr, addr+length) inside the region holding it."""
        return self._find(addr, length)[1]

    def contains(self, addr: int, length: int) -> bool:
        try:
            self._find(addr, length)
        except GuestMemoryError:
            return False
        return True

    def view(self, addr: int, length: int) -> memoryview:
        r, off = self._find(addr, length)
        return r.buf[off : off + length]

    def read(self, addr: int, length: int) -> bytes:
        r, off = self._find(addr, length)
        return bytes(r.buf[off : off + length])

    def write(self, addr: int, data) -> None:
        r, off = self._find(addr, len(data))
        r.buf[off : off + len(data)] = data

    def fill(self, addr: int, length: int, value: int) -> None:
        r, off = self._find(addr, length)
        r.bytes[off : off + length] = value

    def array(self, addr: int, dtype, count: int) -> np.ndarray:
        """A typed numpy view: element stores are single aligned stores of the element width."""
        dtype = np.dtype(dtype)
        r, off = self._find(addr, dtype.itemsize * count)
        align = dtype.alignment if dtype.fields is None else min(8, dtype.itemsize)
        if addr % align:
            raise GuestMemoryError(f"typed view at {addr:#x} is not {align}-byte aligned")
        return r.bytes[off : off + dtype.itemsize * count].view(dtype)


def _unmap(m: MappedRegion) -> None:
    m.buf.release()
    try:
        m.mapping.close()
    except BufferError:
        pass  # a ring view still points here; the mapping goes with the last view
