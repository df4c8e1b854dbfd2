"""Driver side of a split virtqueue (VIRTIO 1.4, 2.7), after Linux's virtio_ring.c.

The driver owns the descriptor table and the driver area and only reads the device area. Every value
read from the device area (used idx, used elem id and len) is validated; a bad one raises a
DeviceViolation naming the clause and marks the queue broken, as Linux's BAD_RING does.

Two ways to use a queue, freely mixed: one buffer at a time (``add`` / ``get_buf``, with a
BufferChain per buffer) and in batches (``add_batch`` / ``get_used_batch`` / ``wait_used_batch``:
numpy fancy indexing over the ring views, every used elem still validated). The in-flight state of
both lives in per-head numpy arrays (see ``reset_state``), so a buffer added either way can be
completed either way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from . import constants as C
from .buffers import BufferChain, Sg, SgArray
from .errors import HarnessError, InvalidUsedIdx, RingTooSmall, ordinal
from .memory import count_nonzero, virtio_mb
from .split import (
    MAX_QUEUE_SIZE,
    USED_ELEM_SIZE,
    VIRTQ_DESC,
    WORD_FLAGS_SHIFT,
    WORD_NEXT_SHIFT,
    SplitRing,
    alloc_split_ring,
    avail_size,
    desc_table_size,
    free_split_ring,
    used_size,
    vring_need_event,
)
from .virtqueue import NO_IDS, NO_LENS, UsedRules, Virtqueue

# Clause ids this module reports (see virtio/clauses.toml).
CLAUSE_USED_LEN = "dev.basic.virtqueues.the-virtqueue-used-ring.2"
CLAUSE_USED_ID = "def.split.used-elem-id"
CLAUSE_USED_IDX = "def.split.used-idx"
CLAUSE_PROCESS = "def.basic.buffers-are-used"
CLAUSE_IN_ORDER = "dev.reserved-features.5"  # 6.2 MUST, with the 2.7.9 batch rule it implies

def check_split_queue_size(num: int, name: str = "") -> None:
    """2.7: a split queue's size is a power of 2, at most 32768 (the ring indexes are taken
    modulo the size as 16-bit counters wrap, which only works for a power of 2). Linux refuses
    any other size the same way (vring_alloc_queue_split)."""
    if not (1 <= num <= MAX_QUEUE_SIZE and num & (num - 1) == 0):
        raise HarnessError(f"{name or 'split queue'}: size {num} is not a power of 2 in 1..{MAX_QUEUE_SIZE} (2.7)")


class SplitVirtqueue(Virtqueue):
    """A split virtqueue, driver side (the interface: virtio/virtqueue.py ``Virtqueue``).

    ``notify`` is the transport's "kick" (driver -> device notification); ``interrupt()`` is what the
    transport calls on a used buffer notification (device -> driver).
    """

    layout = "split"
    used_rules = UsedRules(
        id_clause=CLAUSE_USED_ID,
        len_clause=CLAUSE_USED_LEN,
        elem="used elem id",
        out_of_range="out of range",
        not_in_flight="not the head of a buffer in flight",
        ids="heads",
        slot="used ring slot",
    )
    direct_before_indirect_ok = True  # 2.7.5.3.2
    _check_size = staticmethod(check_split_queue_size)
    _alloc_ring = staticmethod(alloc_split_ring)
    _free_ring_areas = staticmethod(free_split_ring)
    _ring_views = SplitRing

    @staticmethod
    def area_sizes(num: int) -> tuple[int, int, int]:
        return desc_table_size(num), avail_size(num), used_size(num)

    # -- state ---------------------------------------------------------------------------------
    def _reset_layout(self) -> None:
        """The split ring's own state (the shared bookkeeping: Virtqueue.reset_state).

        - ``_next[i]``: the driver's private copy of each descriptor's next (Linux desc_extra),
          so freeing never trusts the table the device could have scribbled on.
        - the free stack holds descriptor ids; with IN_ORDER ids are taken in table order from
          ``_next_desc`` and only the count matters.
        - IN_ORDER: ``_seq[h]`` the avail sequence number of head ``h``, ``_order[s % num]`` the
          head made available as number ``s``; ``_seq_next`` is the oldest one not yet used.
        - ``_ready``: buffers already taken off the used ring (IN_ORDER batches) not yet handed out.
        - recycled buffers keep their descriptors written and reserved.
        """
        num = self.num
        self._desc_addr = self.ring.desc_addr
        self._desc_word = self.ring.desc_word  # one 8-byte store per descriptor
        self._used32 = self.ring.used_ring.reshape(2 * num)  # the used ring is only 4-byte aligned
        # The 16-bit index fields as memoryviews ('H'): still one aligned 16-bit load or store
        # each (docs/BACKENDS.md #10), without a numpy scalar per access on the hot path.
        self._avail_idx_h = memoryview(self.ring.avail_idx)
        self._avail_event_h = memoryview(self.ring.avail_event)
        self._used_idx_h = memoryview(self.ring.used_idx)
        self._used_event_h = memoryview(self.ring.used_event)
        self._next = np.zeros(num, dtype=np.intp)
        self._mark = np.zeros(num + 1, dtype=np.intp)
        self._next_desc = 0  # IN_ORDER: next descriptor id in table order
        self._seq = np.zeros(num + 1, dtype=np.int64)
        self._order = np.zeros(num, dtype=np.intp)
        self._seq_next = 0
        self._seq_end = 0
        self._ready: deque[BufferChain] = deque()
        self.avail_idx_shadow = 0
        self.last_used_idx = 0
        self.avail_flags_shadow = 0

    @property
    def num_free(self) -> int:
        return self._nfree

    def _take_ids(self, n: int) -> np.ndarray:
        """``n`` free descriptor ids: the next in table order with IN_ORDER, else free-stack pops."""
        if not self.in_order:
            return self._pop_ids(n)
        s = self._next_desc
        ids = self._idx2[s : s + n].copy()
        self._next_desc = (s + n) % self.num
        self._nfree -= n
        return ids

    def _chain_ids(self, head: int) -> list[int]:
        ids = [head]
        for _ in range(int(self._nd[head]) - 1):
            ids.append(int(self._next[ids[-1]]))
        return ids

    def _free_chain(self, head: int) -> None:
        """Give one buffer's descriptors back and forget it is in flight."""
        nd = int(self._nd[head])
        if not self.in_order:
            ids = self._chain_ids(head)
            self._free[self._nfree : self._nfree + nd] = ids[::-1]
        self._nfree += nd
        self._room[head] = 0
        self._nflight -= 1
        if nd > 1:
            self._nd[head] = 1
            self._multi -= 1

    def _free_heads(self, heads: np.ndarray) -> None:
        """Vectorized _free_chain for distinct in-flight heads (completion order kept)."""
        k = len(heads)
        self._room[heads] = 0
        self._nflight -= k
        if self._multi == 0:
            if not self.in_order:
                self._free[self._nfree : self._nfree + k] = heads
            self._nfree += k
            return
        nd = self._nd[heads]
        width = int(nd.max())
        if width == 1:
            cols = heads[:, None]
        else:
            cols = np.empty((k, width), dtype=np.intp)
            cols[:, 0] = heads
            for d in range(1, width):
                cols[:, d] = self._next[cols[:, d - 1]]
        # Each chain's ids pushed last-first, chain after chain, as _free_chain would.
        keep = self._ar[:width][::-1] < nd[:, None]
        ids = cols[:, ::-1][keep]
        if not self.in_order:
            self._free[self._nfree : self._nfree + len(ids)] = ids
        self._nfree += len(ids)
        multi = nd > 1
        self._multi -= int(count_nonzero(multi))
        self._nd[heads[multi]] = 1

    def _synth_chain(self, head: int) -> BufferChain:
        """A BufferChain for a buffer that add_batch made available (read back from the table)."""
        ids = self._chain_ids(head)
        out_sgs, in_sgs = [], []
        for i in ids:
            addr, length, flags, _ = self.ring.desc[i].item()
            (in_sgs if flags & C.VIRTQ_DESC_F_WRITE else out_sgs).append(Sg(addr, length))
        return BufferChain(head, None, out_sgs, in_sgs, len(ids), ids=ids, batch=True)

    def _complete_one(self, head: int, used_len: int) -> BufferChain:
        chain = self._chains.pop(head, None)
        if chain is None:
            chain = self._synth_chain(head)
        chain.used_len = used_len
        self._check_chain(chain)
        self._free_chain(head)
        return chain

    def _note_available(self, heads) -> None:
        """IN_ORDER: remember the order in which heads were made available."""
        n = len(heads)
        s = self._seq_end
        self._seq[heads] = s + self._ar[:n]
        self._order[self._idx2[s % self.num : s % self.num + n]] = heads
        self._seq_end = s + n

    # -- adding buffers (2.7.13) -----------------------------------------------------------------
    def _write_indirect_table(self, table: int, segs: list[tuple[Sg, int]]) -> None:
        t = self.mem.array(table, VIRTQ_DESC, len(segs))
        for j, (s, fl) in enumerate(segs):
            last = j == len(segs) - 1
            t[j] = (s.addr, s.len, fl | (0 if last else C.VIRTQ_DESC_F_NEXT), 0 if last else j + 1)

    def _no_room(self, n: int) -> RingTooSmall | None:
        if n <= self._nfree:
            return None
        return RingTooSmall(self.name, f"{n} free descriptors for one buffer", f"a queue of {self.num}, {self._nfree} of them free")

    def _write_chain(self, ring_segs: list[tuple[Sg, int]]) -> tuple[int, list[int]]:
        """Chained descriptors in the table, then the head's avail ring entry (2.7.13.1-2)."""
        n = len(ring_segs)
        ids = self._take_ids(n).tolist()
        desc = self.ring.desc
        for j, (s, fl) in enumerate(ring_segs):
            last = j == n - 1
            desc[ids[j]] = (s.addr, s.len, fl | (0 if last else C.VIRTQ_DESC_F_NEXT), 0 if last else ids[j + 1])
            if not last:
                self._next[ids[j]] = ids[j + 1]
        head = ids[0]
        if self.in_order:
            self._note_available([head])
        self.ring.avail_ring[self.avail_idx_shadow % self.num] = head
        self.avail_idx_shadow = (self.avail_idx_shadow + 1) & 0xFFFF
        return head, ids

    def add_batch(self, out: Sequence[Sg | SgArray] = (), in_: Sequence[Sg | SgArray] = (), count: int = 1) -> np.ndarray:
        """Make ``count`` buffers of one shape available with vectorized table and ring writes.

        Every buffer gets one descriptor per element: ``out`` device-readable, then ``in_``
        device-writable (2.7.4.2). An ``Sg`` element is the same memory in every buffer; an
        ``SgArray`` gives each buffer its own. Nothing is published until ``publish``/``kick``.
        Returns the head descriptor ids (intp, in the order made available). No BufferChain is
        kept: complete them with ``get_used_batch`` (or ``get_buf``, which reads the table back).
        """
        nd, count, need = self._batch_shape(out, in_, count, self._nfree, self._nfree)
        if count <= 0:
            return NO_IDS.copy()
        if nd == 1:  # the common shape: one descriptor per buffer
            heads = self._take_ids(count)
            if in_:
                self._room[heads] = self._write_descs(heads, in_[0], C.VIRTQ_DESC_F_WRITE, None, count) + 1
            else:
                self._write_descs(heads, out[0], 0, None, count)
                self._room[heads] = 1
        else:
            grid = self._take_ids(need).reshape(count, nd)
            heads = grid[:, 0].copy()
            writable = 0
            segs = [(x, 0) for x in out] + [(x, C.VIRTQ_DESC_F_WRITE) for x in in_]
            for j, (x, fl) in enumerate(segs):
                col = grid[:, j]
                nxt = grid[:, j + 1] if j < nd - 1 else None
                lens = self._write_descs(col, x, fl if nxt is None else fl | C.VIRTQ_DESC_F_NEXT, nxt, count)
                if nxt is not None:
                    self._next[col] = nxt
                if fl:
                    writable = writable + lens
            self._room[heads] = writable + 1
            self._nd[heads] = nd
            self._multi += count
        self._nflight += count
        if self.in_order:
            self._note_available(heads)
        self._watch_batch(out, in_, heads)
        self._make_available(heads)
        return heads

    def _make_available(self, heads: np.ndarray) -> None:
        """Avail ring entries for ``heads`` (wrapping), shadow idx moved; published later."""
        count = len(heads)
        s = self.avail_idx_shadow % self.num
        ring = self.ring.avail_ring
        if s + count <= self.num:
            ring[s : s + count] = heads
        else:
            k = self.num - s
            ring[s:] = heads[:k]
            ring[: count - k] = heads[k:]
        self.avail_idx_shadow = (self.avail_idx_shadow + count) & 0xFFFF
        self.num_added += count

    def _readd(self, heads: np.ndarray) -> None:
        """Only avail ring entries are written: the chains are still in the descriptor table."""
        self._multi += int(count_nonzero(self._nd[heads] > 1))
        self._make_available(heads)

    def _release_recycled(self, heads: np.ndarray) -> None:
        self._nflight += len(heads)  # _free_heads counts them out of flight
        self._multi += int(count_nonzero(self._nd[heads] > 1))
        self._free_heads(heads)

    def _write_descs(self, ids: np.ndarray, x: Sg | SgArray, flags: int, nxt: np.ndarray | None, count: int):
        """Store addr, then len | flags << 32 | next << 48 as one 8-byte store, per descriptor (all
        before the avail ring entries and idx that make them visible). Returns the len(s)."""
        if type(x) is Sg:
            self._desc_addr[ids] = x.addr
            lens = x.len
            word = lens | flags << WORD_FLAGS_SHIFT
        else:
            self._desc_addr[ids] = x.addr
            lens = x.len
            if isinstance(lens, np.ndarray):
                lens = lens.astype(np.uint64)
                word = lens | np.uint64(flags << WORD_FLAGS_SHIFT)
            else:
                lens = int(lens)
                word = lens | flags << WORD_FLAGS_SHIFT
        if nxt is not None:
            word = nxt.astype(np.uint64) << np.uint64(WORD_NEXT_SHIFT) | (np.uint64(word) if type(word) is int else word)
        self._desc_word[ids] = word
        return lens

    def publish(self) -> None:
        """Make added buffers visible: one 16-bit store of avail idx (2.7.13.3)."""
        # Ring entries are stored before idx in program order; x86 keeps stores in order.
        self._avail_idx_h[0] = self.avail_idx_shadow

    def kick_prepare(self) -> bool:
        """Publish and decide whether the device wants a notification (2.7.10)."""
        self.publish()
        virtio_mb()
        new = self.avail_idx_shadow
        old = (new - self.num_added) & 0xFFFF
        self.num_added = 0
        if self.event_idx:
            return vring_need_event(self._avail_event_h[0], new, old)
        return not (int(self.ring.used_flags[0]) & C.VIRTQ_USED_F_NO_NOTIFY)

    # -- used buffers (2.7.14) -------------------------------------------------------------------
    def more_used(self) -> bool:
        return bool(self._ready) or self.last_used_idx != int(self.ring.used_idx[0])

    def _bad_idx(self, used_idx: int, pending: int) -> None:
        self._bad(
            InvalidUsedIdx(
                CLAUSE_USED_IDX,
                "used idx advanced past the buffers in flight",
                expected=f"at most {self._nflight} new used elems (last_used_idx {self.last_used_idx})",
                observed=f"used idx {used_idx} ({pending} new)",
                queue=self.name,
            )
        )

    def _after_used(self) -> None:
        if self.event_idx and not (self.avail_flags_shadow & C.VIRTQ_AVAIL_F_NO_INTERRUPT):
            # Ask to be interrupted for the next used entry, as Linux does (2.7.7).
            self.ring.used_event[0] = self.last_used_idx

    def get_buf(self) -> BufferChain | None:
        """Take the next used buffer, validated, or None if the device has returned nothing new."""
        self._check_broken()
        if self._ready:
            return self._ready.popleft()
        used_idx = int(self.ring.used_idx[0])
        if used_idx == self.last_used_idx:
            return None
        pending = (used_idx - self.last_used_idx) & 0xFFFF
        if pending > self._nflight:
            self._bad_idx(used_idx, pending)
        slot = self.last_used_idx % self.num
        uid, ulen = self.ring.used_ring[slot].tolist()  # one snapshot of the elem
        writable = int(self._room[min(uid, self.num)]) - 1
        if self.in_order:
            if writable < 0 or ulen > writable or self._seq[uid] != self._seq_next:
                # A batch (2.7.9), or a bad elem: _in_order_scan reads and judges it.
                heads, lens, reported = self._in_order_used(used_idx, pending, 1)
                if not len(heads):  # only buffers detached since (never while the device runs)
                    return None
                chain = self._complete_one(int(heads[0]), int(lens[0]))
                chain.len_reported = bool(reported[0])
                return chain
            self._seq_next += 1  # the oldest buffer in flight, its own elem
        if writable < 0:
            self._bad_id(uid, slot)
        if ulen > writable:
            self._bad_len(uid, ulen, writable)
        chain = self._complete_one(uid, ulen)
        self.last_used_idx = (self.last_used_idx + 1) & 0xFFFF
        self._after_used()
        return chain

    # -- IN_ORDER (2.7.9) ------------------------------------------------------------------------
    def _in_order_scan(self, used_idx: int, pending: int, limit: int) -> tuple[list[tuple[int, int, int]], int]:
        """Read the used elems from last_used_idx on as 2.7.9 has them: each names the last buffer
        of a batch (its id, its len) and sits at the offset of the batch's first buffer, and used
        idx moved by the size of the batch. Returns ``([(id, len, batch size), ...], buffers)``,
        stopping once ``limit`` buffers are covered; validates every elem read (id a buffer in
        flight not already implied, the batch within the used idx advance, len within the last
        buffer's writable bytes) and changes no state. The slots a batch skips are not read."""
        num, last, cur = self.num, self.last_used_idx, self._seq_next
        ring, room, seq = self.ring.used_ring, self._room, self._seq
        out, pos = [], 0
        while pos < pending and pos < limit:
            slot = (last + pos) % num
            uid, ulen = ring[slot].tolist()  # one snapshot of the elem
            writable = int(room[min(uid, num)]) - 1
            if writable < 0:
                self._bad_id(uid, slot)
            k = int(seq[uid]) - cur + 1
            if k <= 0:  # in flight, yet an earlier elem of this read already implied it
                self._bad_id(uid, slot, " (implied by an earlier used elem's in-order batch)")
            if k > pending - pos:
                self._bad(
                    InvalidUsedIdx(
                        CLAUSE_IN_ORDER,
                        "used elem names a buffer whose in-order batch goes beyond the used idx advance",
                        expected=f"used idx moved by at least {k} from {(last + pos) & 0xFFFF} (the elem names "
                        f"the {ordinal(k)} oldest buffer in flight: a batch of {k}, 2.7.9)",
                        observed=f"used idx {used_idx} ({pending - pos} new from there); id {uid} at used ring slot {slot}",
                        queue=self.name,
                    )
                )
            if ulen > writable:
                self._bad_len(uid, ulen, writable, slot)
            out.append((uid, ulen, k))
            pos += k
            cur += k
        return out, pos

    def _in_order_used(self, used_idx: int, pending: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Take the IN_ORDER batches covering up to ``limit`` buffers: (heads, lens, reported), in
        the order made available; the buffers of a batch beyond ``limit`` are completed and wait
        in ``_ready``. A buffer answered by a later buffer's elem gets its writable length as len
        (2.7.9: "assumed to have been used ... completely") and reported False."""
        batches, total = self._in_order_scan(used_idx, pending, limit)
        s0, num = self._seq_next, self.num
        heads = self._order[self._idx2[s0 % num : s0 % num + total]]
        room = self._room[heads]
        live = (room > 0) & (self._seq[heads] == s0 + self._ar[:total])
        lens = (room.astype(np.int64) - 1).clip(0).astype(np.uint32)
        reported = np.zeros(total, dtype=bool)
        ends = np.cumsum([k for _, _, k in batches]) - 1
        lens[ends] = [n for _, n, _ in batches]
        reported[ends] = True
        if count_nonzero(live) != total:  # a buffer detached since (never while the device runs)
            heads, lens, reported = heads[live], lens[live], reported[live]
        self._seq_next = s0 + total
        self.last_used_idx = (self.last_used_idx + total) & 0xFFFF
        self._after_used()
        if len(heads) > limit:
            for h, n, r in zip(heads[limit:].tolist(), lens[limit:].tolist(), reported[limit:].tolist()):
                c = self._complete_one(h, n)
                c.len_reported = r
                self._ready.append(c)
            heads, lens, reported = heads[:limit], lens[:limit], reported[:limit]
        return heads, lens, reported

    def get_used_batch(
        self, max_count: int | None = None, chains: list | None = None, recycle: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Take up to ``max_count`` used buffers at once: ``(ids, lens)`` arrays (intp head ids,
        uint32 used lens, in used ring order), empty when the device has returned nothing new.

        The used elems are read in one copy and validated together, exactly as ``get_buf`` would
        one by one: used idx moved by at most the buffers in flight (InvalidUsedIdx), each id a
        head in flight and not named twice (InvalidUsedId), each len within the buffer's writable
        bytes (InvalidUsedLen); the first bad elem in ring order is the one reported. With
        IN_ORDER (2.7.9) an elem may answer a batch: it names the batch's last buffer, sits at
        the offset of its first, and used idx moved by the batch's size; the buffers before the
        last come back too, with their writable length as len (BufferChain.len_reported False:
        the device reported none). Buffers made available
        by ``add()`` get their BufferChain's used_len set and are appended to ``chains``; without
        a ``chains`` list their guest memory is released.

        With ``recycle`` the used buffers keep their descriptors: nothing is freed, and
        ``readd_batch(ids)`` makes the same buffers available again without rewriting the
        descriptor table -- a driver's preformatted request pool, as DPDK's and SPDK's virtio
        drivers keep one. Only for buffers made available by ``add_batch``, without IN_ORDER.
        """
        if self.broken is not None:
            raise self.broken
        if recycle:
            self._check_recycle()
        if self._ready:
            return self._hand_out_ready(max_count, chains)
        last = self.last_used_idx
        used_idx = self._used_idx_h[0]
        pending = (used_idx - last) & 0xFFFF
        if pending == 0:
            return NO_IDS, NO_LENS
        if pending > self._nflight:
            self._bad_idx(used_idx, pending)
        m = pending if max_count is None or max_count >= pending else int(max_count)
        if m <= 0:
            return NO_IDS, NO_LENS
        if self.in_order:
            return self._in_order_batch(used_idx, pending, m, chains)
        s = last % self.num
        e = s + m
        if e <= self.num:  # one copy of the elems: what is validated is what is used
            elems = self._used32[2 * s : 2 * e].copy()  # (id, len) pairs
        else:
            elems = np.concatenate((self._used32[2 * s :], self._used32[: 2 * (e - self.num)]))
        ids = elems[0::2].astype(np.intp)
        lens = elems[1::2]
        try:
            room = self._room[ids]
        except IndexError:  # an id beyond the queue (and beyond the sentinel)
            self._batch_violation(elems, s)
        if count_nonzero(lens >= room):  # not in flight (room 0), or len too big
            self._batch_violation(elems, s)
        # A repeated id: zeroing the batch's rooms frees fewer than m heads (for big queues,
        # where counting every room costs more, a mark per position shows it instead).
        room_arr = self._room
        if self.num <= 4096:
            room_arr[ids] = 0
            repeated = count_nonzero(room_arr) != self._nflight - m
            if repeated:
                room_arr[ids] = room  # undo: the violation leaves the state as it found it
        else:
            ar = self._ar[:m]
            self._mark[ids] = ar  # a later repeat overwrites an earlier one's mark
            repeated = count_nonzero(self._mark[ids] != ar)
            if not repeated:
                room_arr[ids] = 0
        if repeated:
            self._batch_violation(elems, s)
        self._check_batch(ids, recycle)
        if recycle:
            self._recycle(ids, room)
            if self._multi:
                self._multi -= int(count_nonzero(self._nd[ids] > 1))
        elif self._multi:
            self._free_heads(ids)
        else:  # _free_heads, inline for the common case of one descriptor per buffer
            top = self._nfree
            self._free[top : top + m] = ids
            self._nfree = top + m
            self._nflight -= m
        if self._chains:
            self._collect_chains(ids, lens, chains)
        self.last_used_idx = last = (last + m) & 0xFFFF
        if self.event_idx and not (self.avail_flags_shadow & C.VIRTQ_AVAIL_F_NO_INTERRUPT):
            self._used_event_h[0] = last  # as _after_used
        return ids, lens

    def _in_order_batch(self, used_idx: int, pending: int, m: int, chains) -> tuple[np.ndarray, np.ndarray]:
        """get_used_batch with IN_ORDER: every buffer its own used elem (the common case) is read
        and checked in one copy; anything else (a batch answered by one elem, 2.7.9, or a bad elem)
        goes through _in_order_used, elem by elem."""
        num, s0 = self.num, self._seq_next
        s = self.last_used_idx % num
        e = s + m
        if e <= num:
            elems = self._used32[2 * s : 2 * e].copy()
        else:
            elems = np.concatenate((self._used32[2 * s :], self._used32[: 2 * (e - num)]))
        ids = elems[0::2].astype(np.intp)
        lens = elems[1::2]
        if ids.max() < num and not count_nonzero(lens >= self._room[ids]) and not count_nonzero(self._seq[ids] != s0 + self._ar[:m]):
            self._seq_next = s0 + m
            self.last_used_idx = (self.last_used_idx + m) & 0xFFFF
            self._after_used()
            heads = ids
        else:
            heads, lens, reported = self._in_order_used(used_idx, pending, m)
            if self._chains and not reported.all():
                for h in heads[~reported].tolist():
                    c = self._chains.get(h)
                    if c is not None:
                        c.len_reported = False
        self._check_batch(heads)
        self._free_heads(heads)
        if self._chains:
            self._collect_chains(heads, lens, chains)
        return heads, lens

    def _hand_out_ready(self, max_count, chains) -> tuple[np.ndarray, np.ndarray]:
        out = []
        while self._ready and (max_count is None or len(out) < max_count):
            out.append(self._ready.popleft())
        return self._hand_out(out, chains)

    def _batch_violation(self, elems: np.ndarray, start: int) -> None:
        """The batch holds a bad elem: find the first one in ring order, as get_buf would, and raise
        (without IN_ORDER; _in_order_scan checks its elems one by one)."""
        num = self.num
        gone: set[int] = set()
        pairs = elems.tolist()
        for j in range(len(pairs) // 2):
            uid, ulen, slot = pairs[2 * j], pairs[2 * j + 1], (start + j) % num
            writable = -1 if uid >= num or uid in gone else int(self._room[uid]) - 1
            if writable < 0:
                self._bad_id(uid, slot, " (returned earlier in this batch)" if uid in gone else "")
            if ulen > writable:
                self._bad_len(uid, ulen, writable, slot)
            gone.add(uid)
        raise HarnessError(f"{self.name}: batch validation flagged a used elem that checks out one by one")

    def next_notification(self) -> int:
        """VIRTIO_F_NOTIFICATION_DATA (2.9): next_off | next_wrap << 15 -- for a split ring, the
        avail idx the driver will write next, whose bit 15 is the wrap bit."""
        return self.avail_idx_shadow & 0xFFFF

    def device_area(self) -> bytes:
        """A copy of everything the device writes in this queue (2.7.8: the used ring, flags,
        idx and avail_event): two copies differ iff the device wrote in between."""
        return self.mem.read(self.addrs.device, used_size(self.num))

    def used_state(self) -> str:
        """The device area's indexes, for messages (what a wait saw)."""
        return f"used idx {int(self.ring.used_idx[0])}, last_used_idx {self.last_used_idx}"

    def detach_unused_buf(self) -> BufferChain | None:
        """Reclaim a buffer the device never used (only after reset / queue reset)."""
        if not self._nflight:
            return None
        head = next(iter(self._chains)) if self._chains else self._heads_in_flight()[0]
        chain = self._chains.pop(head, None) or self._synth_chain(head)
        self._unwatch([head])
        self._free_chain(head)
        return chain

    # -- used buffer notifications (2.7.7) --------------------------------------------------------
    def disable_cb(self) -> None:
        self.avail_flags_shadow |= C.VIRTQ_AVAIL_F_NO_INTERRUPT
        if not self.event_idx:
            self.ring.avail_flags[0] = self.avail_flags_shadow

    def enable_cb(self) -> bool:
        """Re-enable interrupts; returns False if used buffers are already pending (race check)."""
        self.avail_flags_shadow &= ~C.VIRTQ_AVAIL_F_NO_INTERRUPT
        if not self.event_idx:
            self.ring.avail_flags[0] = self.avail_flags_shadow
        self.ring.used_event[0] = self.last_used_idx
        virtio_mb()
        return not self.more_used()

    def set_used_event(self, value: int) -> None:
        self.ring.used_event[0] = value & 0xFFFF

    def _used_pending(self) -> bool:
        return self.more_used()

    def _overrun_area(self) -> tuple[int, int]:
        return self.addrs.device, used_size(self.num)

    def _overrun_beyond(self, first: int) -> bool:
        # avail_event sits right after the used ring: at used + 4 + 8 * size for a ring of
        # another power-of-2 size.
        k = first - self.addrs.device - 4  # from the used ring's first elem (after flags and idx)
        e = k // USED_ELEM_SIZE
        return k > USED_ELEM_SIZE * self.num and k % USED_ELEM_SIZE in (0, 1) and e & (e - 1) == 0
