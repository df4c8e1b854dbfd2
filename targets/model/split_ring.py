"""Device side of a split virtqueue (VIRTIO 1.4, 2.7): read the driver area, walk descriptor chains,
write used elems. Uses the same layout (virtio/split.py) as the driver side.

The driver is the harness, but a model must still treat what it reads as untrusted: a malformed
chain raises ChainError instead of reading outside guest memory or looping forever.
"""

from __future__ import annotations

import numpy as np

from virtio import constants as C
from virtio.areas import RingAddrs
from virtio.buffers import ChainError, DeviceChain
from virtio.memory import GuestMemory, count_nonzero, u64_view
from virtio.split import VIRTQ_DESC, SplitRing, vring_need_event


class DeviceSplitQueue:
    def __init__(self, mem: GuestMemory, index: int, addrs: RingAddrs, features: int):
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
        self._init_batch_views(mem, addrs)

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

    # -- batch fast path: runs of simple chains, vectorized ------------------------------------
    # A simple chain is one descriptor: neither NEXT nor INDIRECT, its buffer inside guest memory,
    # its head within the queue. Anything else ends the run and goes through pop()/walk(), which
    # take or reject it exactly as before (ChainError).
    def _init_batch_views(self, mem: GuestMemory, addrs: RingAddrs) -> None:
        num = self.num
        self._desc_addr = self.ring.desc_addr
        self._desc_word = self.ring.desc_word
        self._idx2 = np.arange(2 * num, dtype=np.intp) % num
        self._basec = np.full(num, mem.base, dtype=np.uint64)
        self._sizec = np.full(num, mem.size, dtype=np.uint64)
        # len, plus NEXT/INDIRECT moved far above any guest memory size: one add checks both.
        self._len_ni = np.full(num, 0xFFFF_FFFF | (C.VIRTQ_DESC_F_NEXT | C.VIRTQ_DESC_F_INDIRECT) << 32, dtype=np.uint64)
        self._used_id = self.ring.used_ring[:, 0]
        self._used_len = self.ring.used_ring[:, 1]
        self._mem_bytes = mem.bytes
        self._mem_u64 = u64_view(mem.bytes)
        self._tiles: dict[int, np.ndarray] = {}
        self._run: tuple = (None, None)
        # The NEXT/INDIRECT trick in pop_simple needs guest memory below 4 GiB (it always is here).
        self._batch_ok = mem.size < 1 << 32
        # 16-bit index fields as memoryviews ('H'): one aligned 16-bit load/store each, no numpy scalar.
        self._avail_idx_h = memoryview(self.ring.avail_idx)
        self._avail_event_h = memoryview(self.ring.avail_event)
        self._used_idx_h = memoryview(self.ring.used_idx)

    def pop_simple(self):
        """Take the leading run of simple available chains at once: ``(heads, addrs, lens, flags)``
        arrays (one descriptor each); None when nothing is available; False when the next chain is
        not simple (then ``pop()`` takes, or rejects, it as usual)."""
        avail_idx = self._avail_idx_h[0]
        last = self.last_avail_idx
        n = (avail_idx - last) & 0xFFFF
        if n == 0:
            return None
        if n > self.num or not self._batch_ok:
            return False  # pop() reports the bad avail idx
        s = last % self.num
        if s + n <= self.num:
            heads = self.ring.avail_ring[s : s + n].astype(np.intp)  # one copy of the slice
        else:
            heads = self.ring.avail_ring[self._idx2[s : s + n]].astype(np.intp)
        try:
            addrs = self._desc_addr[heads]  # gathered copies: what is checked is what is used
        except IndexError:  # a head beyond the table: the run stops before it
            n = int(np.argmax(heads >= self.num))
            if n == 0:
                return False
            heads = heads[:n]
            addrs = self._desc_addr[heads]
        words = self._desc_word[heads]
        lens = words & self._len_ni[:n]  # == len unless NEXT or INDIRECT is set
        off = addrs - self._basec[:n]  # an address below guest memory wraps to a huge offset
        end = off + lens
        bad = np.maximum(off, end) > self._sizec[:n]  # off <= size rules out a wrap in end
        if count_nonzero(bad):
            n = int(bad.argmax())
            if n == 0:
                return False
            heads, addrs, words, lens, off = heads[:n], addrs[:n], words[:n], lens[:n], off[:n]
        self._run = (addrs, off)  # write_batch reuses the checked offsets
        self.last_avail_idx = (last + n) & 0xFFFF
        if self.event_idx:
            self._avail_event_h[0] = self.last_avail_idx  # as pop() leaves it (2.7.10)
        return heads, addrs, lens, words.view(np.uint16)[2::4]

    def push_batch(self, heads: np.ndarray, lens: np.ndarray) -> None:
        """Write the used elems of a batch, then publish used idx once (2.7.8.2: len before idx)."""
        n = len(heads)
        s = self.used_idx % self.num
        e = s + n
        if e <= self.num:
            self._used_id[s:e] = heads
            self._used_len[s:e] = lens
        else:
            k = self.num - s
            self._used_id[s:] = heads[:k]
            self._used_id[: n - k] = heads[k:]
            self._used_len[s:] = lens[:k]
            self._used_len[: n - k] = lens[k:]
        self.used_idx = (self.used_idx + n) & 0xFFFF
        self._used_idx_h[0] = self.used_idx

    def push_in_order_run(self, heads: np.ndarray, ends: np.ndarray, lens: np.ndarray) -> None:
        """VIRTIO_F_IN_ORDER (2.7.9): answer ``heads`` (in the order made available) in batches
        that end at the positions ``ends``, one used elem each -- the id of the batch's last
        buffer and its len ``lens[j]``, at the offset of the batch's first buffer; the slots
        between are skipped, not written -- then used idx moved by the number of buffers."""
        n = len(heads)
        starts = np.empty(len(ends), dtype=np.intp)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        slots = (self.used_idx + starts) % self.num
        self._used_id[slots] = heads[ends]
        self._used_len[slots] = lens
        self.used_idx = (self.used_idx + n) & 0xFFFF
        self._used_idx_h[0] = self.used_idx

    def write_batch(self, addrs: np.ndarray, lens: np.ndarray, data: np.ndarray, width: int | None = None) -> None:
        """Write ``data`` (uint8, ``sum(lens)`` bytes) into the buffers at ``addrs``: ``lens[i]``
        bytes from the start of buffer ``i``. The buffers come from pop_simple, so they lie in
        guest memory. ``width``: every len equals it (lets the model skip the general scatter)."""
        total = len(data)
        if total == 0:
            return
        n = len(addrs)
        run_addrs, off = self._run
        if run_addrs is not addrs:
            off = addrs - self._basec[:n]
            if count_nonzero((off >= self._sizec[:n]) | (off + lens > self._sizec[:n])):
                raise ChainError("write_batch: a buffer outside guest memory")
        off = off.view(np.intp)  # offsets within guest memory: far below 2**63
        if width is not None and width & 7 == 0 and self._mem_u64 is not None and not count_nonzero(off & 7):
            # Every buffer 8-byte aligned and a multiple of 8 long: 8-byte stores, 1/8 the indexes.
            words = width >> 3
            if words == 1:
                idx = off >> 3
            else:
                tile = self._tiles.get(-words)
                if tile is None or len(tile) < n * words:
                    tile = self._tiles[-words] = np.tile(np.arange(words, dtype=np.intp), self.num)
                idx = (off >> 3).repeat(words)
                idx += tile[: n * words]
            self._mem_u64[idx] = data.view(np.uint64)
            return
        if width is not None:
            tile = self._tiles.get(width)
            if tile is None or len(tile) < n * width:
                tile = self._tiles[width] = np.tile(np.arange(width, dtype=np.intp), self.num)
            idx = off.repeat(width)
            idx += tile[: n * width]
        else:
            lens = np.asarray(lens).astype(np.intp)
            starts = np.cumsum(lens)
            starts -= lens
            idx = np.repeat(off - starts, lens)
            idx += np.arange(total, dtype=np.intp)
        self._mem_bytes[idx] = data

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
