"""Device side of a split virtqueue (VIRTIO 1.4, 2.7): read the driver area, walk descriptor chains,
write used elems. Uses the same layout (virtio/split.py) as the driver side.

The driver is the harness, but a model must still treat what it reads as untrusted: a malformed
chain raises ChainError instead of reading outside guest memory or looping forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtio import constants as C
from virtio.memory import GuestMemory
from virtio.split import VIRTQ_DESC, SplitRing, SplitRingAddrs, vring_need_event


class ChainError(Exception):
    """The driver made a malformed descriptor chain available (a harness bug when we are the driver)."""


@dataclass
class DeviceChain:
    """One available buffer as the device sees it: readable then writable (addr, len) elements."""

    head: int
    readable: list[tuple[int, int]] = field(default_factory=list)
    writable: list[tuple[int, int]] = field(default_factory=list)

    @property
    def readable_len(self) -> int:
        return sum(n for _, n in self.readable)

    @property
    def writable_len(self) -> int:
        return sum(n for _, n in self.writable)


class DeviceSplitQueue:
    def __init__(self, mem: GuestMemory, index: int, addrs: SplitRingAddrs, features: int):
        self.mem = mem
        self.index = index
        self.num = addrs.num
        self.ring = SplitRing(mem, addrs)
        self.event_idx = bool(features >> C.VIRTIO_F_EVENT_IDX & 1)
        self.indirect = bool(features >> C.VIRTIO_F_INDIRECT_DESC & 1)
        self.last_avail_idx = 0
        self.used_idx = 0  # shadow of the used idx we publish
        self.signalled_used = 0  # used idx at the last interrupt decision (for event idx)
        self.max_chain = self.num

    def notification_position(self) -> int:
        """Where the driver's next buffer goes, as VIRTIO_F_NOTIFICATION_DATA encodes it for a
        split ring: the 16-bit avail idx (its bit 15 doubles as next_wrap), 2.9."""
        return int(self.ring.avail_idx[0])

    def has_avail(self) -> bool:
        return self.last_avail_idx != int(self.ring.avail_idx[0])

    def pop(self) -> DeviceChain | None:
        """Take the next available buffer (2.7.13 seen from the device), or None."""
        avail_idx = int(self.ring.avail_idx[0])
        if avail_idx == self.last_avail_idx:
            return None
        if (avail_idx - self.last_avail_idx) & 0xFFFF > self.num:
            raise ChainError(f"avail idx {avail_idx} is more than {self.num} ahead of {self.last_avail_idx}")
        head = int(self.ring.avail_ring[self.last_avail_idx % self.num])
        self.last_avail_idx = (self.last_avail_idx + 1) & 0xFFFF
        if self.event_idx:
            # Ask for a notification once the driver adds past what we have taken (2.7.10).
            self.ring.avail_event[0] = self.last_avail_idx
        return self.walk(head)

    def walk(self, head: int) -> DeviceChain:
        if head >= self.num:
            raise ChainError(f"avail ring names descriptor {head}, queue size {self.num}")
        chain = DeviceChain(head)
        table, idx, limit, in_indirect = self.ring.desc, head, self.num, False
        seen = 0
        while True:
            addr, length, flags, nxt = table[idx].item()  # one read of the 16-byte descriptor
            seen += 1
            if seen > limit:
                raise ChainError(f"descriptor chain from head {head} is longer than {limit} (a loop?)")
            if flags & C.VIRTQ_DESC_F_INDIRECT:
                if in_indirect:
                    raise ChainError("indirect descriptor inside an indirect table")
                if length % 16 or length == 0:
                    raise ChainError(f"indirect table length {length} is not a multiple of 16")
                if not self.mem.contains(addr, length):
                    raise ChainError(f"indirect table [{addr:#x},+{length}) outside guest memory")
                # 2.7.5.3.2: the WRITE flag of the descriptor pointing at the table is ignored.
                table, idx, limit, in_indirect, seen = self.mem.array(addr, VIRTQ_DESC, length // 16), 0, length // 16, True, 0
                continue
            if not self.mem.contains(addr, length):
                raise ChainError(f"descriptor {idx} buffer [{addr:#x},+{length}) outside guest memory")
            if flags & C.VIRTQ_DESC_F_WRITE:
                chain.writable.append((addr, length))
            else:
                if chain.writable:
                    raise ChainError("device-readable descriptor after a device-writable one")
                chain.readable.append((addr, length))
            if not flags & C.VIRTQ_DESC_F_NEXT:
                return chain
            if nxt >= limit:
                raise ChainError(f"descriptor next {nxt} out of range {limit}")
            idx = nxt

    def push(self, head: int, length: int) -> None:
        """Write one used elem, then publish used idx: len is set before idx (2.7.8.2)."""
        slot = self.used_idx % self.num
        self.ring.used_ring[slot, 0] = head
        self.ring.used_ring[slot, 1] = length
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.ring.used_idx[0] = self.used_idx

    def should_interrupt(self) -> bool:
        """2.7.7.2: decide on a used buffer notification for the elems pushed since the last one."""
        old, new = self.signalled_used, self.used_idx
        if old == new:
            return False
        self.signalled_used = new
        if self.event_idx:
            return vring_need_event(int(self.ring.used_event[0]), new, old)
        return not (int(self.ring.avail_flags[0]) & C.VIRTQ_AVAIL_F_NO_INTERRUPT)

    # -- buffer contents --
    def read_readable(self, chain: DeviceChain) -> bytes:
        return b"".join(self.mem.read(a, n) for a, n in chain.readable)

    def write_writable(self, chain: DeviceChain, data: bytes, offset: int = 0) -> int:
        """Write ``data`` into the writable elements starting ``offset`` bytes in; returns bytes written."""
        written = 0
        pos = 0
        for a, n in chain.writable:
            if offset >= pos + n:
                pos += n
                continue
            start = max(0, offset - pos)
            take = min(n - start, len(data) - written)
            if take <= 0:
                break
            self.mem.write(a + start, data[written : written + take])
            written += take
            pos += n
        return written
