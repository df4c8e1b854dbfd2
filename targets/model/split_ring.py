"""Device side of a split virtqueue (VIRTIO 1.4, 2.7): read the driver area, walk descriptor chains,
write used elems. Only the ring format lives here; the interface and what does not depend on the
layout are DeviceQueue's (device_queue.py). Uses the same layout (virtio/split.py) as the driver side.
"""

from __future__ import annotations

import numpy as np

from virtio import constants as C
from virtio.buffers import ChainError, DeviceChain
from virtio.memory import count_nonzero
from virtio.queue_state import QueueState
from virtio.split import DESC_SIZE, VIRTQ_DESC, SplitRing, vring_need_event

from .device_queue import DeviceQueue


class DeviceSplitQueue(DeviceQueue, layout="split", ring_class=SplitRing, desc_size=DESC_SIZE):
    def _init_layout(self) -> None:
        # len, plus NEXT/INDIRECT moved far above any guest memory size: one add checks both.
        self._len_ni = np.full(self.num, 0xFFFF_FFFF | (C.VIRTQ_DESC_F_NEXT | C.VIRTQ_DESC_F_INDIRECT) << 32, dtype=np.uint64)
        self._used_id = self.ring.used_ring[:, 0]
        self._used_len = self.ring.used_ring[:, 1]
        # The NEXT/INDIRECT trick in pop_simple needs guest memory below 4 GiB (it always is here).
        self._batch_ok = self._batch_ok and self.mem.size < 1 << 32
        # 16-bit index fields as memoryviews ('H'): one aligned 16-bit load/store each, no numpy scalar.
        self._avail_idx_h = memoryview(self.ring.avail_idx)
        self._avail_event_h = memoryview(self.ring.avail_event)
        self._used_idx_h = memoryview(self.ring.used_idx)

    # -- state (QueueState: free-running 16-bit counters, no wrap counters) --
    def state(self) -> QueueState:
        return QueueState(self.num, True, self.addrs, self.last_avail_idx, self.used_idx, event_idx=self.event_idx)

    def set_state(self, state: QueueState) -> None:
        self._check_state(state)
        self.last_avail_idx = state.next_avail & 0xFFFF
        self.used_idx = state.next_used & 0xFFFF  # shadow of the used idx we publish
        self.signalled_used = self.used_idx  # used idx at the last interrupt decision (for event idx)

    def published_used(self) -> int:
        """The used idx field of the device area (2.7.8): what the driver has been told."""
        return int(self.ring.used_idx[0])

    def track_inflight(self, region, resubmit: list[int]) -> None:
        self.inflight = (region, resubmit)

    def notification_position(self) -> int:
        """Where the driver's next buffer goes, as VIRTIO_F_NOTIFICATION_DATA encodes it for a
        split ring: the 16-bit avail idx (its bit 15 doubles as next_wrap), 2.9."""
        return int(self.ring.avail_idx[0])

    def has_avail(self) -> bool:
        return self.last_avail_idx != int(self.ring.avail_idx[0])

    def pop(self) -> DeviceChain | None:
        """Take the next available buffer (2.7.13 seen from the device), or None."""
        tracking = self.inflight
        if tracking is not None and tracking[1]:
            return self.walk(tracking[1].pop(0))  # still marked in flight: nothing to record
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
        chain = self.walk(head)
        if tracking is not None:
            tracking[0].take((chain.head,))
        return chain

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
                limit = self._indirect_entries(addr, length)
                # 2.7.5.3.2: the WRITE flag of the descriptor pointing at the table is ignored.
                table, idx, in_indirect, seen = self.mem.array(addr, VIRTQ_DESC, limit), 0, True, 0
                continue
            self._add_element(chain, flags & C.VIRTQ_DESC_F_WRITE, addr, length, idx)
            if not flags & C.VIRTQ_DESC_F_NEXT:
                return chain
            if nxt >= limit:
                raise ChainError(f"descriptor next {nxt} out of range {limit}")
            idx = nxt

    def push(self, head: int, length: int) -> None:
        """Write one used elem, then publish used idx: len is set before idx (2.7.8.2)."""
        tracking = self.inflight
        if tracking is not None:
            tracking[0].link_batch((head,))
        slot = self.used_idx % self.num
        self.ring.used_ring[slot, 0] = head
        self.ring.used_ring[slot, 1] = length
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.ring.used_idx[0] = self.used_idx
        if tracking is not None:
            tracking[0].retire((head,), self.used_idx)

    def push_together(self, heads: list[int], lens: list[int]) -> None:
        """Used elems the driver must see at once (the buffers of one received frame, 5.1.9.4.1):
        all written, then used idx published once."""
        self.push_batch(np.asarray(heads, dtype=np.uint32), np.asarray(lens, dtype=np.uint32))

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
    def pop_simple(self):
        """Take the leading run of simple available chains at once: ``(heads, addrs, lens, flags)``
        arrays (one descriptor each); None when nothing is available; False when the next chain is
        not simple (then ``pop()`` takes, or rejects, it as usual)."""
        avail_idx = self._avail_idx_h[0]
        last = self.last_avail_idx
        n = (avail_idx - last) & 0xFFFF
        tracking = self.inflight
        resubmit = tracking is not None and bool(tracking[1])  # pop() hands those out first
        if n == 0 and not resubmit:
            return None
        if n > self.num or not self._batch_ok or resubmit:
            return False  # pop() reports the bad avail idx, or resubmits
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
        if tracking is not None:
            tracking[0].take(heads)
        return heads, addrs, lens, words.view(np.uint16)[2::4]

    def push_batch(self, heads: np.ndarray, lens: np.ndarray) -> None:
        """Write the used elems of a batch, then publish used idx once (2.7.8.2: len before idx)."""
        tracking = self.inflight
        if tracking is not None:
            tracking[0].link_batch(heads)
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
        if tracking is not None:
            tracking[0].retire(heads, self.used_idx)

    def push_in_order_run(self, heads: np.ndarray, ends: np.ndarray, lens: np.ndarray) -> None:
        """VIRTIO_F_IN_ORDER (2.7.9): answer ``heads`` (in the order made available) in batches
        that end at the positions ``ends``, one used elem each -- the id of the batch's last
        buffer and its len ``lens[j]``, at the offset of the batch's first buffer; the slots
        between are skipped, not written -- then used idx moved by the number of buffers."""
        tracking = self.inflight
        if tracking is not None:
            tracking[0].link_batch(heads)  # used idx moves by every buffer: all of them are linked
        n = len(heads)
        starts = np.empty(len(ends), dtype=np.intp)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        slots = (self.used_idx + starts) % self.num
        self._used_id[slots] = heads[ends]
        self._used_len[slots] = lens
        self.used_idx = (self.used_idx + n) & 0xFFFF
        self._used_idx_h[0] = self.used_idx
        if tracking is not None:
            tracking[0].retire(heads, self.used_idx)
