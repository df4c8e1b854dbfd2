"""Device side of a packed virtqueue (VIRTIO 1.4, 2.8): poll the next descriptor for the AVAIL/USED
pair of the device's avail wrap counter, walk lists and indirect tables, write used descriptors in
completion order, and honour the driver event suppression structure. Uses the same layout
(virtio/packed.py) as the driver side. Only the ring format lives here; the interface and what
does not depend on the layout are DeviceQueue's (device_queue.py).
"""

from __future__ import annotations

import numpy as np

from virtio import constants as C
from virtio.buffers import ChainError, DeviceChain
from virtio.memory import count_nonzero
from virtio.packed import (
    DESC_SIZE,
    PVIRTQ_DESC,
    PackedRing,
    avail_flags,
    is_avail,
    lap_flags,
    need_event,
    off_wrap,
    split_event,
    used_flags,
)
from virtio.queue_state import QueueState

from .device_queue import DeviceQueue

_AU = C.VIRTQ_DESC_F_AVAIL | C.VIRTQ_DESC_F_USED
# Flag bits that decide whether a descriptor is a simple available one: a run of those ends at
# the first descriptor with NEXT or INDIRECT set, or not available in its lap.
_SIMPLE_MASK = _AU | C.VIRTQ_DESC_F_NEXT | C.VIRTQ_DESC_F_INDIRECT
# AVAIL/USED of a descriptor available in a lap with wrap counter w: [w] (2.8.1, is_avail).
_AVAIL_PAIR = (avail_flags(0), avail_flags(1))
_RUN_MAX = 1024  # slots looked at per pop_simple: bounds the work of one call


class DevicePackedQueue(DeviceQueue, layout="packed", ring_class=PackedRing, desc_size=DESC_SIZE):
    def _init_layout(self) -> None:
        # Device event suppression (device area): with EVENT_IDX ask for a notification when the
        # next descriptor is made available (set_state wrote which), as Linux's vhost does; else
        # plain ENABLE.
        self.ring.device_event_flags[0] = C.RING_EVENT_FLAGS_DESC if self.event_idx else C.RING_EVENT_FLAGS_ENABLE
        # -- batch fast path: runs of simple lists, vectorized --
        # A simple list is one descriptor: available in its lap, neither NEXT nor INDIRECT, its
        # buffer inside guest memory, its id not in flight. Anything else ends the run and goes
        # through pop()/walk(), which take or reject it exactly as before (ChainError).
        self.max_chain = self.num  # descriptors one list may take
        self._availf, self._usedf = lap_flags(self.num)
        self._availw = tuple(a.astype(np.uint64) << np.uint64(48) for a in self._availf)
        self._usedwf = tuple(u | C.VIRTQ_DESC_F_WRITE for u in self._usedf)  # used flags of a written buffer
        self._availwf = tuple(a | C.VIRTQ_DESC_F_WRITE for a in self._availf)  # an available writable one
        self._availwf_b = tuple(a.tobytes() for a in self._availwf)  # the same as bytes, 2 per slot
        self._last_run = 0  # length of the last run pop_simple found (before the id and bounds checks)
        self._flags_h = memoryview(self.ring.desc_flags)  # each read one aligned le16 load
        self._id_mark = np.zeros(1 << 16, dtype=np.uint16)  # per buffer id (le16): its place in the run
        self._ar = np.arange(min(self.num, _RUN_MAX), dtype=np.uint16)
        self._device_event_desc_h = memoryview(self.ring.device_event_desc)  # one le16 store, no numpy scalar
        self._simple_mask = np.uint64(_SIMPLE_MASK << 48)
        self._len_mask = np.full(min(self.num, _RUN_MAX), 0xFFFF_FFFF, dtype=np.uint64)  # an array: faster than a scalar
        self._u32, self._u48 = np.uint64(32), np.uint64(48)

    # -- state (QueueState: ring slots and wrap counters, 2.8.1) --
    def state(self) -> QueueState:
        return QueueState(self.num, True, self.addrs, self.last_avail_idx, self.used_idx,
                          bool(self.avail_wrap_counter), bool(self.used_wrap_counter), self.event_idx)

    def set_state(self, state: QueueState) -> None:
        self._check_state(state)
        if not (0 <= state.next_avail < self.num and 0 <= state.next_used < self.num):
            raise ValueError(f"queue {self.index}: ring positions {state.next_avail}/{state.next_used} outside 0..{self.num - 1}")
        self.last_avail_idx, self.avail_wrap_counter = state.next_avail, int(state.avail_wrap_counter)
        self.used_idx, self.used_wrap_counter = state.next_used, int(state.used_wrap_counter)  # next used descriptor
        self.signalled_used, self.signalled_wrap = self.used_idx, self.used_wrap_counter  # at the last notification decision
        self.pushed = 0  # used descriptors written since the last decision
        self._pending: dict[int, int] = {}  # buffer id -> descriptors it took in the ring, in pop order
        self._run_ids = None  # ids of the last pop_simple run: in flight, not yet in _pending
        if self.event_idx:
            self.ring.device_event_desc[0] = off_wrap(self.last_avail_idx, self.avail_wrap_counter)

    @property
    def pending(self) -> dict[int, int]:
        """Buffers in flight: id -> descriptors it took in the ring, in pop order. A pop_simple
        run joins the dict only when something reads it: the usual push_batch of that very run
        then costs no dict work at all."""
        if self._run_ids is not None:
            self._pending.update(dict.fromkeys(self._run_ids.tolist(), 1))
            self._run_ids = None
        return self._pending

    def published_used(self) -> int:
        """The device area holds no used position on a packed ring (2.8.10): the queue's own."""
        return self.used_idx

    def pop_simple(self):
        """Take the leading run of simple available lists at once: ``(ids, addrs, lens, flags)``
        arrays (one descriptor each); None when nothing is available; False when the next list is
        not simple (then ``pop()`` takes, or rejects, it as usual)."""
        if not self._batch_ok:
            return False  # before anything is read: pop() decides what is available
        pos, wrap = self.last_avail_idx, self.avail_wrap_counter
        f0 = self._flags_h[pos]  # one le16 load, without a numpy scalar
        if f0 & _AU != _AVAIL_PAIR[wrap]:  # is_avail, inline: most calls end here
            return None
        pend = self._pending if self._run_ids is None else self.pending  # an earlier run not yet pushed joins it
        if f0 & (C.VIRTQ_DESC_F_NEXT | C.VIRTQ_DESC_F_INDIRECT) or (self.in_order and pend):
            return False
        # The run stops at the end of the lap (the next call goes on from slot 0), so it is one slice.
        w = min(self.num - pos, _RUN_MAX)
        if pend:
            w = min(w, self.num - sum(pend.values()))
        # One 8-byte load per descriptor: len | id << 32 | flags << 48, flags read with the rest.
        words = self._desc_word[pos : pos + w].copy()
        w16 = words.view(np.uint16)  # [len lo, len hi, id, flags] per descriptor (little-endian)
        # Most often the flags are exactly an available writable descriptor's: one compare finds
        # the run; else NEXT/INDIRECT and the lap's AVAIL/USED decide.
        # A driver's runs mostly repeat in length: first try the last run's length k, one bytes
        # compare of k flags and a look at the one after (the same n as the scan below).
        fl = w16[3::4]
        k = min(self._last_run, w)
        if k and fl[:k].tobytes() == self._availwf_b[wrap][2 * pos : 2 * (pos + k)] and (
            k == w or int(fl[k]) != _AVAIL_PAIR[wrap] | C.VIRTQ_DESC_F_WRITE  # same lap: k < w <= num - pos
        ):
            n = k
        else:
            simple = fl == self._availwf[wrap][pos : pos + w]
            n = int(simple.argmin())  # the first one not simple; 0 if none is, or if all are
            if not n:
                if not simple[0]:
                    simple = (words & self._simple_mask) == self._availw[wrap][pos : pos + w]
                    n = int(simple.argmin())
                n = n or w  # the first one is simple (f0 above): argmin 0 means all are
        self._last_run = n
        # Only the run's n descriptors from here on (slices with a stop: no separate truncation).
        ids = w16[2 : 4 * n : 4].astype(np.intp)
        lens = words[:n] & self._len_mask[:n]  # uint64 as off: the bounds sum below needs no cast
        addrs = self._desc_addr[pos : pos + n].copy()  # read after the flags
        off = addrs - self._basec[:n]  # an address below guest memory wraps to a huge offset
        bad = np.maximum(off, off + lens) > self._sizec[:n]  # off <= size rules out a wrap in off + lens
        # An id in flight, or twice in the run: the run stops before it and pop() rejects it.
        # A repeat shows as a mark overwritten by a later one: one scatter, one gather, a count.
        ar = self._ar[:n]
        mark = self._id_mark
        mark[ids] = ar
        outside = count_nonzero(bad)
        if outside or count_nonzero(mark[ids] != ar) or (pend and not pend.keys().isdisjoint(ids.tolist())):
            # The run ends before the first buffer outside guest memory, or the first id in
            # flight or repeated, in ring order.
            end = int(bad.argmax()) if outside else n
            seen = set(pend)
            for j, b in enumerate(ids[:end].tolist()):
                if b in seen:
                    end = j
                    break
                seen.add(b)
            if end < n:
                if end == 0:
                    return False
                n = end
                ids, addrs, lens, off = ids[:n], addrs[:n], lens[:n], off[:n]
        self._run = (addrs, off)  # write_batch reuses the checked offsets
        self._run_ids = ids  # in flight from now on (see pending)
        pos += n
        if pos >= self.num:
            pos -= self.num
            self.avail_wrap_counter ^= 1
        self.last_avail_idx = pos
        if self.event_idx:  # as pop() leaves it: off_wrap, inline (pos < num <= 2**15)
            self._device_event_desc_h[0] = pos | self.avail_wrap_counter << C.RING_EVENT_WRAP_SHIFT
        return ids, addrs, lens, w16[3 : 4 * n : 4]

    def push_batch(self, ids: np.ndarray, lens: np.ndarray) -> None:
        """Write the used descriptors of a run from pop_simple, one slot each: ids and lens, then
        the flags (one 16-bit store each, after its descriptor's id and len)."""
        n = len(ids)
        if ids is self._run_ids:  # the run pop_simple took, still out of the dict: nothing to remove
            self._run_ids = None
        else:
            pend = self.pending
            for b in ids.tolist():
                del pend[b]
        pos, wrap = self.used_idx, self.used_wrap_counter
        e = pos + n
        at = slice(pos, e) if e <= self.num else self._idx2[pos:e]  # a slice stores faster
        ring = self.ring
        ring.desc_id[at] = ids
        ring.desc_len[at] = lens
        if count_nonzero(lens) == n:  # every one written to: WRITE in all
            ring.desc_flags[at] = self._usedwf[wrap][pos:e]
        else:
            ring.desc_flags[at] = self._usedf[wrap][pos:e] | np.where(lens != 0, C.VIRTQ_DESC_F_WRITE, 0).astype(np.uint16)
        pos = e
        if pos >= self.num:
            pos -= self.num
            self.used_wrap_counter ^= 1
        self.used_idx = pos
        self.pushed += n

    def has_avail(self) -> bool:
        return is_avail(int(self.ring.desc_flags[self.last_avail_idx]), self.avail_wrap_counter)

    def notification_position(self) -> int:
        """Where the driver's next descriptor goes (next_off | next_wrap << 15, 2.9): the first
        slot past the ones whose AVAIL bit is that of their lap."""
        pos, wrap = self.last_avail_idx, self.avail_wrap_counter
        flags = self.ring.desc_flags
        for _ in range(self.num):
            if bool(int(flags[pos]) & C.VIRTQ_DESC_F_AVAIL) != bool(wrap):
                break
            pos += 1
            if pos == self.num:
                pos, wrap = 0, wrap ^ 1
        return off_wrap(pos, wrap)

    def pop(self) -> DeviceChain | None:
        """Take the next available buffer (the descriptor at last_avail_idx), or None."""
        pos, wrap = self.last_avail_idx, self.avail_wrap_counter
        flags = int(self.ring.desc_flags[pos])
        if not is_avail(flags, wrap):
            return None
        chain, pos, wrap = self.walk(pos, wrap, flags)
        self.last_avail_idx, self.avail_wrap_counter = pos, wrap
        if self.event_idx:
            self._device_event_desc_h[0] = off_wrap(pos, wrap)
        return chain

    def walk(self, pos: int, wrap: int, flags: int) -> tuple[DeviceChain, int, int]:
        """Read the list whose first descriptor is at ``pos`` (its flags already read and
        available); returns the chain (``head`` = buffer id, from the last descriptor, 2.8.6) and
        the ring position and wrap counter after it."""
        chain = DeviceChain(-1)  # the buffer id comes with the last descriptor
        desc, dflags = self.ring.desc, self.ring.desc_flags
        n = 0
        while True:
            n += 1
            if n > self.max_chain:
                raise ChainError(f"descriptor list at slot {pos} is longer than {self.max_chain}")
            if n > 1:
                flags = int(dflags[pos])  # each descriptor's flags are read before the rest of it
                if not is_avail(flags, wrap):
                    raise ChainError(f"descriptor {pos} continues a list but is not available (flags {flags:#x})")
            addr, length, bid, _ = desc[pos].item()
            if flags & C.VIRTQ_DESC_F_INDIRECT:
                if n > 1 or flags & C.VIRTQ_DESC_F_NEXT:
                    raise ChainError("indirect descriptor in a list linked by NEXT (2.8.19)")
                self._walk_indirect(chain, addr, length)
            else:
                self._add_element(chain, flags & C.VIRTQ_DESC_F_WRITE, addr, length, pos)
            pos += 1
            if pos == self.num:
                pos, wrap = 0, wrap ^ 1
            if not flags & C.VIRTQ_DESC_F_NEXT:
                break
        if bid in self.pending:
            raise ChainError(f"buffer id {bid} made available again while still in flight")
        self.pending[bid] = n
        chain.head, chain.ndesc = bid, n
        return chain, pos, wrap

    def _walk_indirect(self, chain: DeviceChain, addr: int, length: int) -> None:
        n = self._indirect_entries(addr, length)
        # A copy: the table is read once. 2.8.7: every entry is used, WRITE is the only valid flag
        # (NEXT and the id are reserved and ignored), and the WRITE flag of the descriptor that
        # points at the table is ignored.
        table = np.frombuffer(self.mem.read(addr, n * DESC_SIZE), dtype=PVIRTQ_DESC)
        for a, length, _, f in table.tolist():
            self._add_element(chain, f & C.VIRTQ_DESC_F_WRITE, a, length, None)

    def push(self, head: int, length: int) -> None:
        """Write one used descriptor at the next used position: id and len, then flags (one 16-bit
        store) -- and skip the rest of the buffer's descriptors (with IN_ORDER, of every buffer
        taken before it too, 2.8.8)."""
        pos, flags = self._place(head, length)
        self.ring.desc_flags[pos] = flags

    def push_together(self, heads: list[int], lens: list[int]) -> None:
        """Used descriptors the driver must see at once (the buffers of one received frame,
        5.1.9.4.1): each one's id and len written in order, then their flags, the first one's last
        -- the first used descriptor publishes the batch (2.8.6)."""
        placed = [self._place(h, n) for h, n in zip(heads, lens)]
        for pos, flags in placed[1:]:
            self.ring.desc_flags[pos] = flags
        if placed:
            self.ring.desc_flags[placed[0][0]] = placed[0][1]

    def _place(self, head: int, length: int) -> tuple[int, int]:
        """Write id and len of one used descriptor and move past its buffer; -> (its position, the
        flags to store there to make it used)."""
        if head not in self.pending:
            raise ValueError(f"buffer id {head} is not in flight on queue {self.index}")
        if self.in_order:
            skip = 0
            for bid in list(self.pending):
                skip += self.pending.pop(bid)
                if bid == head:
                    break
        else:
            skip = self.pending.pop(head)
        at = self.used_idx
        self.ring.desc_id[at] = head
        self.ring.desc_len[at] = length
        flags = used_flags(self.used_wrap_counter) | (C.VIRTQ_DESC_F_WRITE if length else 0)
        pos = at + skip
        if pos >= self.num:
            pos -= self.num
            self.used_wrap_counter ^= 1
        self.used_idx = pos
        self.pushed += 1
        return at, flags

    def push_in_order_run(self, heads: np.ndarray, ends: np.ndarray, lens: np.ndarray) -> None:
        """VIRTIO_F_IN_ORDER (2.8.8): answer ``heads`` (buffer ids, in the order made available)
        in batches ending at ``ends``: one used descriptor each, with the id of the batch's last
        buffer and its len ``lens[j]``, written over the batch's first available descriptor."""
        for e, n in zip(ends.tolist(), lens.tolist()):
            self.push(int(heads[e]), n)  # push skips every buffer taken before the one it names

    def should_interrupt(self) -> bool:
        """Decide on a used buffer notification for what was pushed since the last decision, from
        the driver event suppression structure (one 32-bit read): DISABLE -> no, DESC with
        EVENT_IDX -> only if the named descriptor was used, otherwise yes."""
        if not self.pushed:
            return False
        old, new = self.signalled_used, self.used_idx
        if self.signalled_wrap != self.used_wrap_counter:
            old -= self.num  # the last decision was in the previous lap
        self.signalled_used, self.signalled_wrap, self.pushed = new, self.used_wrap_counter, 0
        desc, flags = split_event(int(self.ring.driver_event[0]))
        if flags == C.RING_EVENT_FLAGS_DISABLE:
            return False
        if flags == C.RING_EVENT_FLAGS_DESC and self.event_idx:
            return need_event(desc, self.used_wrap_counter, self.num, new, old)
        return True
