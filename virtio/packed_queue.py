"""Driver side of a packed virtqueue (VIRTIO 1.4, 2.8), after Linux's virtio_ring.c (*_packed).

Same API as SplitVirtqueue (virtio/split_queue.py), so workloads and suites run on either layout.
Buffer ids are driver-chosen tokens (a free list, independent of ring slots); the driver keeps the
avail and used wrap counters, driver event suppression (enable / disable / descriptor-specific with
EVENT_IDX), and reads the device event suppression structure to decide on a kick. Everything read
from the ring is validated; a bad value raises a DeviceViolation naming the clause and marks the
queue broken (Linux's BAD_RING), never an IndexError.

As on the split queue, buffers go one at a time (``add`` / ``get_buf``) or in batches (``add_batch``
/ ``get_used_batch`` / ``wait_used_batch``: numpy fancy indexing over the descriptor ring, every used
descriptor still validated: flags against the used wrap counter, id in flight and not repeated, len
within the buffer). The in-flight state of both is per buffer id in numpy arrays (see
``reset_state``), so either API completes buffers made available by the other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from . import constants as C
from .buffers import BufferChain, Sg, SgArray
from .errors import HarnessError, InvalidUsedFlags, InvalidUsedId, RingTooSmall, ordinal
from .memory import count_nonzero, virtio_mb
from .packed import (
    EVENT_SUPPRESS_SIZE,
    PVIRTQ_DESC,
    PackedRing,
    alloc_packed_ring,
    avail_flags,
    check_queue_size,
    free_packed_ring,
    is_avail,
    is_used,
    lap_flags,
    need_event,
    off_wrap,
    ring_size,
)
from .virtqueue import NO_IDS, NO_LENS, UsedRules, Virtqueue

# Clause ids this module reports (see virtio/clauses.toml).
CLAUSE_USED_ID = "def.packed.used-buffer-id"
CLAUSE_USED_LEN = "def.packed.used-len"
CLAUSE_USED_FLAGS = "def.packed.used-flags"
CLAUSE_USED_POSITION = "def.packed.used-position"
CLAUSE_PROCESS = "def.basic.buffers-are-used"
CLAUSE_IN_ORDER = "dev.reserved-features.5"

# Written into the id field of the non-last descriptors of a list when ``id_in_every_desc`` is
# off: never a buffer id in flight (ids are < queue size <= 32768).
ID_DECOY = 0xFFFF

_AU = C.VIRTQ_DESC_F_AVAIL | C.VIRTQ_DESC_F_USED


def _pair(flags: int) -> str:
    return f"flags {flags:#06x} (AVAIL={int(bool(flags & C.VIRTQ_DESC_F_AVAIL))}, USED={int(bool(flags & C.VIRTQ_DESC_F_USED))})"


def _check_size(num: int, name: str) -> None:
    check_queue_size(num)


class PackedVirtqueue(Virtqueue):
    """A packed virtqueue, driver side (the interface: virtio/virtqueue.py ``Virtqueue``).

    ``notify`` is the transport's kick; ``interrupt()`` is what the transport calls on a used buffer
    notification. ``last_used_idx``/``used_wrap_counter`` and ``next_avail_idx``/``avail_wrap_counter``
    are ring positions (0..num-1) and wrap counters as the spec names them (2.8.1).
    """

    layout = "packed"
    used_rules = UsedRules(
        id_clause=CLAUSE_USED_ID,
        len_clause=CLAUSE_USED_LEN,
        elem="used descriptor's buffer id",
        out_of_range="is not a buffer in flight",
        not_in_flight="is not a buffer in flight",
        ids="ids",
        slot="ring slot",
    )
    direct_before_indirect_ok = False  # 2.8.19
    _check_size = staticmethod(_check_size)
    _alloc_ring = staticmethod(alloc_packed_ring)
    _free_ring_areas = staticmethod(free_packed_ring)
    _ring_views = PackedRing
    # Linux writes the buffer id into every descriptor of a list; the spec puts it in the last
    # one (2.8.6) and a device must read it there. False: only the last carries it.
    id_in_every_desc = True

    @staticmethod
    def area_sizes(num: int) -> tuple[int, int, int]:
        return ring_size(num), EVENT_SUPPRESS_SIZE, EVENT_SUPPRESS_SIZE

    # -- state ---------------------------------------------------------------------------------
    def _reset_layout(self) -> None:
        """The packed ring's own state (the shared bookkeeping: Virtqueue.reset_state).

        - the free stack holds buffer ids (driver-chosen tokens, independent of ring slots);
          ``free_desc``: free ring slots.
        - ``_baddr[b]`` / ``_bword[b]`` (len | flags << 32): the driver's private copy of a
          one-descriptor ``add_batch`` buffer, since the device may overwrite its ring slot with
          another buffer's used descriptor while it is still in flight (2.8.12); lists keep a
          BufferChain in ``_chains``. Each batch's copy is first a record in ``_bsrc`` (its ids,
          addresses, words), scattered into the arrays only when something reads them
          (``_copies``): a batch that comes back before that -- a buffer pool's usual round
          trip -- costs no scatter at all.
        - not yet published heads: ``_pending`` (slot -> flags, from ``add``) and ``_pending_runs``
          (slot and flags arrays, from ``add_batch``); ``_unpub_bufs`` / ``_unpub_desc`` count them.
        """
        num = self.num
        self._desc_word = self.ring.desc_word  # len | id << 32 | flags << 48, one le64 per descriptor
        # The device event suppression structure as one le32 memoryview: a single aligned load,
        # without a numpy scalar per kick.
        self._device_event_w = memoryview(self.ring.device_event)
        self._flags_h = memoryview(self.ring.desc_flags)  # each read one aligned le16 load
        # AVAIL/USED of each slot's lap with WRITE: an available writable descriptor's flags, and
        # the flags a device writes on a used one it wrote into (2.8.1, 2.8.4).
        self._availwf = tuple(a | C.VIRTQ_DESC_F_WRITE for a in lap_flags(num)[0])
        self._usedwf = tuple(u | C.VIRTQ_DESC_F_WRITE for u in lap_flags(num)[1])
        self._usedwf_b = tuple(u.tobytes() for u in self._usedwf)  # the same as bytes, 2 per slot
        self._baddr = np.zeros(num, dtype=np.uint64)
        self._bword = np.zeros(num, dtype=np.uint64)
        self._bsrc: list[tuple] = []  # (ids, addr, word) per add_batch, oldest first, see _copies
        self._desc_addr, self._desc_len, self._desc_id = self.ring.desc_addr, self.ring.desc_len, self.ring.desc_id
        self._availf, self._usedf = lap_flags(num)  # [w][i], 2.8.1
        self.free_desc = num
        self.next_avail_idx = 0
        self.avail_wrap_counter = 1
        self.last_used_idx = 0
        self.used_wrap_counter = 1
        self.avail_wraps = 0  # times the avail wrap counter flipped (for tests)
        self.used_wraps = 0
        self._descs_added = 0  # descriptors added since the last kick_prepare (Linux num_added)
        self._pending: dict[int, int] = {}  # head slot -> head flags, added but not yet published
        self._pending_runs: list[tuple[slice | np.ndarray, np.ndarray, slice | np.ndarray]] = []  # (slots, flags, where)
        self._unpub_bufs = 0
        self._unpub_desc = 0
        self._avail_order: deque[int] = deque()  # IN_ORDER: buffer ids in the order made available
        self._batch: deque[BufferChain] = deque()  # IN_ORDER: buffers a batch used descriptor returned
        self.event_flags_shadow = C.RING_EVENT_FLAGS_ENABLE  # the driver area starts zeroed
        self._event_manual = False

    @property
    def num_free(self) -> int:
        return self.free_desc

    def _copies(self) -> None:
        """Bring ``_baddr``/``_bword`` up to date with the add_batch records, oldest first (a
        later batch's copy of an id replaces an earlier one's)."""
        for bids, addr, word in self._bsrc:
            self._baddr[bids] = addr
            self._bword[bids] = word
        self._bsrc.clear()

    def _synth_chain(self, bid: int) -> BufferChain:
        if self._bsrc:
            self._copies()
        addr, word = int(self._baddr[bid]), int(self._bword[bid])
        sg = [Sg(addr, word & 0xFFFF_FFFF)]
        write = (word >> 32) & C.VIRTQ_DESC_F_WRITE
        return BufferChain(bid, None, [] if write else sg, sg if write else [], 1, batch=True)

    def _complete(self, bid: int, used_len: int | None, used: bool = True) -> BufferChain:
        """Take buffer ``bid`` out of flight (its ring slots are counted back by the caller);
        a ``used`` one is checked first (canaries, device-readable bytes)."""
        chain = self._chains.pop(bid, None) or self._synth_chain(bid)
        chain.used_len = used_len
        if used:
            self._check_chain(chain)
        self._room[bid] = 0
        if self._nd[bid] > 1:
            self._nd[bid] = 1
            self._multi -= 1
        self._free[self._nfree] = bid
        self._nfree += 1
        self._nflight -= 1
        return chain

    # -- adding buffers (2.8.21) ----------------------------------------------------------------
    def _write_indirect_table(self, table: int, segs: list[tuple[Sg, int]]) -> None:
        t = self.mem.array(table, PVIRTQ_DESC, len(segs))
        for j, (s, fl) in enumerate(segs):
            t[j] = (s.addr, s.len, 0, fl)  # WRITE is the only valid flag in the table (2.8.7)

    def _no_room(self, n: int) -> RingTooSmall | None:
        if n <= self.free_desc and self._nfree:
            return None
        return RingTooSmall(self.name, f"{n} free descriptors and a free buffer id for one buffer",
                            f"a queue of {self.num}, {self.free_desc} descriptors and {self._nfree} ids free")

    def _write_chain(self, ring_segs: list[tuple[Sg, int]]) -> tuple[int, list[int]]:
        """The list's descriptors in consecutive ring slots; its first descriptor's flags are
        stored by ``publish``/``kick`` (2.8.21.1: the list's other descriptors are exposed first)."""
        n = len(ring_segs)
        self._nfree -= 1
        bid = int(self._free[self._nfree])
        ring = self.ring
        head_slot = pos = self.next_avail_idx
        wrap = self.avail_wrap_counter
        head_flags = 0
        slots = []
        for j, (s, fl) in enumerate(ring_segs):
            last = j == n - 1
            f = fl | (0 if last else C.VIRTQ_DESC_F_NEXT) | avail_flags(wrap)
            ring.desc_addr[pos] = s.addr
            ring.desc_len[pos] = s.len
            ring.desc_id[pos] = bid if (last or self.id_in_every_desc) else ID_DECOY
            if j == 0:
                head_flags = f
            else:
                ring.desc_flags[pos] = f  # one 16-bit store, after the rest of the descriptor
            slots.append(pos)
            pos += 1
            if pos == self.num:
                pos = 0
                wrap ^= 1
                self.avail_wraps += 1
        self.next_avail_idx, self.avail_wrap_counter = pos, wrap
        self.free_desc -= n
        self._pending[head_slot] = head_flags
        self._unpub_bufs += 1
        self._unpub_desc += n
        if self.in_order:
            self._avail_order.append(bid)
        self._descs_added += n
        return bid, slots

    def add_batch(self, out: Sequence[Sg | SgArray] = (), in_: Sequence[Sg | SgArray] = (), count: int = 1) -> np.ndarray:
        """Make ``count`` buffers of one shape available with vectorized ring writes, as
        SplitVirtqueue.add_batch: one descriptor per element (``out`` device-readable, then ``in_``
        device-writable), an ``Sg`` the same memory in every buffer, an ``SgArray`` one address per
        buffer. Each buffer's descriptors go in consecutive ring slots, all but the head's flags
        stored now; the heads' flags wait for ``publish``/``kick`` (2.8.21.1). Returns the buffer
        ids (intp, in ring order)."""
        nd, count, need = self._batch_shape(out, in_, count, self.free_desc, self._nfree)
        if count <= 0:
            return NO_IDS.copy()
        bids = self._pop_ids(count)
        pos, wrap = self.next_avail_idx, self.avail_wrap_counter
        if nd == 1:
            x = (out or in_)[0]
            fl = C.VIRTQ_DESC_F_WRITE if in_ else 0
            self._room[bids] = (x.len + 1) if in_ else 1
            src = self._bsrc
            if src and not (self._nflight or self._nrecycled):
                src.clear()  # every buffer the records describe is back: no copy is read again
            elif len(src) >= 8:
                self._copies()  # bounds the records kept
            word = x.len | fl << 32 if type(x.len) is int else np.asarray(x.len, dtype=np.uint64) | np.uint64(fl << 32)
            # A copy of the addresses: the caller may change its array once the batch is added.
            src.append((bids, x.addr if type(x.addr) is int else x.addr.copy(), word))
            self._put_simple(bids, x.addr, x.len, fl)
            self._watch_batch(out, in_, bids)
            if self.in_order:
                self._avail_order.extend(bids.tolist())
            self._nflight += count
            self._avail_moved(count, count)
            return bids
        ring = self.ring
        availf = self._availf[wrap][pos : pos + need]  # AVAIL/USED of each slot's lap
        grid = self._idx2[pos : pos + need].reshape(count, nd)
        fgrid = availf.reshape(count, nd)
        segs = [(x, 0) for x in out] + [(x, C.VIRTQ_DESC_F_WRITE) for x in in_]
        for j, (x, fl) in enumerate(segs):
            col, last = grid[:, j], j == nd - 1
            ring.desc_addr[col] = x.addr
            ring.desc_len[col] = x.len
            ring.desc_id[col] = bids if (last or self.id_in_every_desc) else ID_DECOY
            f = fgrid[:, j] | (fl if last else fl | C.VIRTQ_DESC_F_NEXT)
            if j == 0:
                heads, head_flags = col, f
            else:
                ring.desc_flags[col] = f  # after the rest of each descriptor
        # Lists are rare: a BufferChain each (token None), as add would keep.
        addr_cols = [np.broadcast_to(np.asarray(x.addr, dtype=np.uint64), (count,)).tolist() for x, _ in segs]
        len_cols = [np.broadcast_to(np.asarray(x.len), (count,)).tolist() for x, _ in segs]
        for i, b in enumerate(bids.tolist()):
            o = [Sg(addr_cols[j][i], len_cols[j][i]) for j in range(len(out))]
            w = [Sg(addr_cols[j][i], len_cols[j][i]) for j in range(len(out), nd)]
            c = BufferChain(b, None, o, w, nd, ids=grid[i].tolist(), batch=True)
            self._chains[b] = c
            self._room[b] = c.writable + 1
        self._nd[bids] = nd
        self._multi += count
        self._watch_batch(out, in_, bids)
        heads = heads.copy()
        self._pending_runs.append((heads, head_flags, heads))
        if self.in_order:
            self._avail_order.extend(bids.tolist())
        self._nflight += count
        self._avail_moved(count, need)
        return bids

    def _put_simple(self, bids: np.ndarray, addrs, lens, fl) -> None:
        """One-descriptor buffers in the ring slots from next_avail_idx on: addr, len and id now,
        each head's flags (``fl``: WRITE or 0, one or per buffer) at publish."""
        pos = self.next_avail_idx
        e = pos + len(bids)
        at = slice(pos, e) if e <= self.num else self._idx2[pos:e]  # a slice stores faster
        self._desc_addr[at] = addrs
        self._desc_len[at] = lens
        self._desc_id[at] = bids
        n = e - pos
        wrap = self.avail_wrap_counter
        if type(fl) is int:  # the same flags for all: the lap's table (constant, never written)
            head_flags = (self._availwf if fl else self._availf)[wrap][pos : pos + n]
        else:
            head_flags = self._availf[wrap][pos : pos + n] | fl
        self._pending_runs.append((at, head_flags, at))

    def _avail_moved(self, count: int, need: int) -> None:
        """``count`` buffers of ``need`` descriptors made available from next_avail_idx on."""
        pos = self.next_avail_idx + need
        if pos >= self.num:
            pos -= self.num
            self.avail_wrap_counter ^= 1
            self.avail_wraps += 1
        self.next_avail_idx = pos
        self.free_desc -= need
        self.num_added += count
        self._descs_added += need
        self._unpub_bufs += count
        self._unpub_desc += need

    def _readd_room(self, k: int) -> RingTooSmall | None:
        if k <= self.free_desc:
            return None
        return RingTooSmall(self.name, f"{k} free descriptors to make recycled buffers available again",
                            f"a queue of {self.num}, {self.free_desc} of them free")

    def _readd(self, bids: np.ndarray) -> None:
        """Each buffer's descriptor rewritten from the driver's copy: the device wrote used
        descriptors over the slots they had (2.8.12)."""
        if self._bsrc:
            self._copies()
        word = self._bword[bids]
        self._put_simple(bids, self._baddr[bids], word & np.uint64(0xFFFF_FFFF), (word >> np.uint64(32)).astype(np.uint16))
        self._avail_moved(len(bids), len(bids))

    def _release_recycled(self, bids: np.ndarray) -> None:
        self._push_ids(bids)  # their ring slots came back when they were used

    def _unpublished(self, slot: int) -> bool:
        """Is ``slot`` the head of a buffer added but not yet published?"""
        return slot in self._pending or any(count_nonzero(self._idx2[s] == slot) for s, _, _ in self._pending_runs)

    def publish(self) -> None:
        """Make added buffers available: one 16-bit store of each head's flags, in ring order."""
        flags = self.ring.desc_flags
        if self._pending_runs:
            if self._pending:  # both APIs since the last publish: merge into ring order
                start = (self.next_avail_idx - self._unpub_desc) % self.num
                slots = np.concatenate([np.fromiter(self._pending, np.intp)] + [self._idx2[r[0]] for r in self._pending_runs])
                fl = np.concatenate([np.fromiter(self._pending.values(), np.uint16)] + [r[1] for r in self._pending_runs])
                order = np.argsort((slots - start) % self.num, kind="stable")
                slots = slots[order]
                self._pending_runs = [(slots, fl[order], slots)]
                self._pending.clear()
            for _, fl, where in self._pending_runs:
                flags[where] = fl
            self._pending_runs.clear()
        else:
            for slot, f in self._pending.items():
                flags[slot] = f
            self._pending.clear()
        self._unpub_bufs = self._unpub_desc = 0

    def expose_pending(self, i: int) -> None:
        """Publish only the ``i``-th buffer added by ``add`` since the last publish, ahead of the
        ones added before it. Never done by a normal driver: tests use it to show a device that
        polls past the next descriptor (2.8.12)."""
        slot = list(self._pending)[i]
        self.ring.desc_flags[slot] = self._pending.pop(slot)
        self._unpub_bufs -= 1

    def kick_prepare(self) -> bool:
        """Publish, then read the device event suppression structure (one 32-bit load) to decide
        whether the device wants a notification (Linux virtqueue_kick_prepare_packed)."""
        self.publish()
        virtio_mb()
        new = self.next_avail_idx
        old = new - self._descs_added
        self._descs_added = 0
        self.num_added = 0
        ev = self._device_event_w[0]  # desc | flags << 16 (split_event, inline)
        flags = ev >> 16
        if flags != C.RING_EVENT_FLAGS_DESC:
            return flags != C.RING_EVENT_FLAGS_DISABLE
        return need_event(ev & 0xFFFF, self.avail_wrap_counter, self.num, new, old)

    def next_notification(self) -> int:
        """VIRTIO_F_NOTIFICATION_DATA (2.9): next_off | next_wrap << 15 -- the ring position and
        avail wrap counter of the next descriptor the driver will make available."""
        return off_wrap(self.next_avail_idx, self.avail_wrap_counter)

    # -- used buffers (2.8.22) ------------------------------------------------------------------
    def more_used(self) -> bool:
        return is_used(int(self.ring.desc_flags[self.last_used_idx]), self.used_wrap_counter)

    def more_used_or_batched(self) -> bool:
        return bool(self._batch) or self.more_used()

    def get_buf(self) -> BufferChain | None:
        """Take the next used buffer, validated, or None if the device has returned nothing new."""
        self._check_broken()
        if self._batch:
            return self._batch.popleft()
        ring = self.ring
        slot, wrap = self.last_used_idx, self.used_wrap_counter
        flags = int(ring.desc_flags[slot])  # flags first; id and len only once it reads used
        outstanding = self.num - self.free_desc
        ours = outstanding > 0 and not self._unpublished(slot)  # we wrote this slot in this lap
        if not is_used(flags, wrap):
            if ours and not is_avail(flags, wrap):
                self._bad(
                    InvalidUsedFlags(
                        CLAUSE_USED_FLAGS,
                        "descriptor flags are neither those the driver wrote nor a used descriptor's",
                        expected=f"AVAIL=USED={wrap} (used, wrap counter {wrap}) or AVAIL={wrap},USED={1 - wrap} (still available)",
                        observed=f"{_pair(flags)} at ring slot {slot}",
                        queue=self.name,
                    )
                )
            return None
        if not ours:
            self._bad(
                InvalidUsedFlags(
                    CLAUSE_USED_POSITION,
                    "used descriptor where the driver made none available",
                    expected=f"no used descriptor at slot {slot} ({self._nflight} buffers in flight, "
                    f"{'its head not yet published' if outstanding else 'none available there'})",
                    observed=f"{_pair(flags)} id {int(ring.desc_id[slot])} at ring slot {slot}",
                    queue=self.name,
                )
            )
        bid = int(ring.desc_id[slot])
        ulen = int(ring.desc_len[slot])
        writable = int(self._room[min(bid, self.num)]) - 1
        if writable < 0:
            self._bad_id(bid, slot)
        if flags & C.VIRTQ_DESC_F_WRITE:
            if ulen > writable:
                self._bad_len(bid, ulen, writable, slot)
            used_len = ulen
        else:
            # 2.8.4: without WRITE, len is reserved; Linux reads it anyway, so a plausible one is kept.
            used_len = ulen if ulen <= writable else 0
        batch: list[BufferChain] = []
        if self.in_order:
            # 2.8.8: one used descriptor, written over the first available descriptor of a batch,
            # may stand for every buffer up to the one it names; the skipped ones count as used
            # completely (their len is their writable length, not one the device reported).
            k = self._in_order_rank(bid, slot)
            for _ in range(k - 1):
                earlier = self._complete(self._avail_order.popleft(), None)
                earlier.used_len = earlier.writable
                earlier.len_reported = False
                batch.append(earlier)
            self._avail_order.popleft()
        chain = self._complete(bid, used_len)
        skip = chain.ndesc + sum(c.ndesc for c in batch)
        pos = self.last_used_idx + skip
        if pos >= self.num:
            pos -= self.num
            self.used_wrap_counter ^= 1
            self.used_wraps += 1
        self.last_used_idx = pos
        self.free_desc += skip
        if self.event_flags_shadow == C.RING_EVENT_FLAGS_DESC and not self._event_manual:
            # Ask to be notified for the next used descriptor, as Linux does.
            ring.driver_event_desc[0] = off_wrap(self.last_used_idx, self.used_wrap_counter)
        if batch:
            self._batch.extend(batch[1:])
            self._batch.append(chain)
            return batch[0]
        return chain

    def _in_order_rank(self, bid: int, slot: int) -> int:
        """IN_ORDER: the batch size a used descriptor naming buffer ``bid`` implies -- its rank
        among the buffers in flight, oldest first (2.8.8) -- checked against what the device can
        have seen: a buffer whose first descriptor's flags are not yet published is not available."""
        order = self._avail_order
        try:
            k = order.index(bid) + 1
        except ValueError:  # in flight yet not in the avail order: a harness bug, never the device's
            raise HarnessError(f"{self.name}: buffer {bid} in flight but not in the IN_ORDER avail order") from None
        published = len(order) - self._unpub_bufs
        if k > published:
            self._bad(
                InvalidUsedId(
                    CLAUSE_IN_ORDER,
                    "used descriptor names a buffer whose in-order batch includes buffers not yet made available",
                    expected=f"one of the {published} oldest buffers in flight (a batch of at most {published}, 2.8.8)",
                    observed=f"id {bid}, the {ordinal(k)} oldest, at ring slot {slot}",
                    queue=self.name,
                )
            )
        return k

    def get_used_batch(
        self, max_count: int | None = None, chains: list | None = None, recycle: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Take up to ``max_count`` used buffers at once: ``(ids, lens)`` arrays (intp buffer ids,
        uint32 used lens, in ring order), empty when the device has returned nothing new.

        Validated exactly as ``get_buf`` would one by one: the run of used descriptors is the
        leading slots whose AVAIL and USED both equal their lap's used wrap counter, never beyond
        the published buffers in flight; each id a buffer in flight and not named twice; each len
        within the buffer's writable bytes when WRITE is set (reserved, kept only if plausible,
        without it). Vectorized while every buffer in flight takes one descriptor and IN_ORDER is
        off; otherwise ``get_buf`` one by one. Buffers made available by ``add()`` get their
        BufferChain's used_len set and are appended to ``chains`` (else their memory is released).

        With ``recycle`` the used buffers keep their ids and the driver's copy of their
        descriptor: ``readd_batch(ids)`` makes the same buffers available again (a driver's
        preformatted request pool). Only for add_batch buffers, without IN_ORDER.
        """
        if self.broken is not None:
            raise self.broken
        if recycle:
            self._check_recycle()
        if max_count is not None and max_count <= 0:
            return NO_IDS, NO_LENS
        if self._multi or self.in_order or self._batch:
            return self._get_used_one_by_one(max_count, chains)
        pos, wrap = self.last_used_idx, self.used_wrap_counter
        m = self._nflight - self._unpub_bufs  # published, in flight: one slot each, from pos on
        if max_count is not None and max_count < m:
            m = max_count
        if m <= 0 or (self._flags_h[pos] & _AU) != (_AU if wrap else 0):
            return self._get_used_one_by_one(1, chains)  # none used: get_buf's checks of the slot
        # One 8-byte load per descriptor (len | id << 32 | flags << 48): its flags and the id and
        # len they vouch for come from one snapshot, and what is checked is what is used.
        e = pos + m
        words = self._desc_word[pos:e].copy() if e <= self.num else self._desc_word[self._idx2[pos:e]]
        w16 = words.view(np.uint16)  # [len lo, len hi, id, flags] per descriptor (little-endian)
        fl = w16[3::4]
        # Most often every one is used and written into (exactly the lap's AVAIL=USED and WRITE):
        # one compare shows it; else AVAIL/USED alone decide where the run of used ones ends.
        if fl.tobytes() != self._usedwf_b[wrap][2 * pos : 2 * e]:  # one bytes compare, no bool array
            used = (fl & _AU) == self._usedf[wrap][pos:e]
            if count_nonzero(used) != m:
                m = int(used.argmin())
                words, w16, fl = words[:m], w16[: 4 * m], fl[:m]
        ids = w16[2::4].astype(np.intp)
        lens = words.view(np.uint32)[0::2]
        try:
            room = self._room[ids]
        except IndexError:  # an id beyond the queue (and beyond the sentinel)
            return self._batch_violation(m, chains)
        fits = lens < room  # in flight (room > 0) and len within the buffer
        if count_nonzero(fits) == m:
            used_lens = lens
        else:  # an id not in flight, or a len beyond the buffer: only allowed without WRITE (2.8.4)
            write = (fl & C.VIRTQ_DESC_F_WRITE) != 0
            if count_nonzero(room == 0) or count_nonzero(write & ~fits):
                return self._batch_violation(m, chains)
            used_lens = np.where(fits, lens, 0).astype(np.uint32)
        room_arr = self._room
        room_arr[ids] = 0
        if count_nonzero(room_arr) != self._nflight - m:  # an id named twice
            room_arr[ids] = room  # undo: get_buf finds the repeat in ring order
            return self._batch_violation(m, chains)
        self._check_batch(ids, recycle)
        if recycle:
            self._recycle(ids, room)
        else:
            top = self._nfree
            self._free[top : top + m] = ids
            self._nfree = top + m
            self._nflight -= m
        self.free_desc += m
        if self._chains:
            self._collect_chains(ids, used_lens, chains)
        pos += m
        if pos >= self.num:
            pos -= self.num
            self.used_wrap_counter ^= 1
            self.used_wraps += 1
        self.last_used_idx = pos
        if self.event_flags_shadow == C.RING_EVENT_FLAGS_DESC and not self._event_manual:
            self.ring.driver_event_desc[0] = off_wrap(pos, self.used_wrap_counter)  # as get_buf
        return ids, used_lens

    def _batch_violation(self, m: int, chains: list | None):
        """A bad used descriptor in the run: get_buf, one by one, reports the first in ring order."""
        self._get_used_one_by_one(m, chains)
        raise HarnessError(f"{self.name}: batch validation flagged a used descriptor that checks out one by one")

    def _get_used_one_by_one(self, max_count: int | None, chains: list | None) -> tuple[np.ndarray, np.ndarray]:
        got: list[BufferChain] = []
        while max_count is None or len(got) < max_count:
            c = self.get_buf()
            if c is None:
                break
            got.append(c)
        return self._hand_out(got, chains)

    def device_area(self) -> bytes:
        """A copy of everything the device writes in this queue (2.8: the descriptor ring, where
        it writes used descriptors, and the device event suppression structure): two copies
        differ iff someone wrote in between (the driver, too, writes the ring when it adds)."""
        return self.mem.read(self.addrs.desc, ring_size(self.num)) + self.mem.read(self.addrs.device, EVENT_SUPPRESS_SIZE)

    def used_state(self) -> str:
        """The next used position and what is there, for messages (what a wait saw)."""
        slot = self.last_used_idx
        return f"slot {slot} {_pair(int(self.ring.desc_flags[slot]))}, used wrap counter {self.used_wrap_counter}"

    def detach_unused_buf(self) -> BufferChain | None:
        """Reclaim a buffer the device never used (only after reset / queue reset)."""
        if not self._nflight:
            return None
        bid = next(iter(self._chains)) if self._chains else int(np.flatnonzero(self._room[: self.num])[0])
        if bid in self._avail_order:
            self._avail_order.remove(bid)
        self._unwatch([bid])
        chain = self._complete(bid, None, used=False)
        self.free_desc += chain.ndesc
        return chain

    # -- driver event suppression (2.8.10) --------------------------------------------------------
    def _set_event_flags(self, flags: int) -> None:
        self.event_flags_shadow = flags
        self.ring.driver_event_flags[0] = flags

    def disable_cb(self) -> None:
        self._event_manual = False
        if self.event_flags_shadow != C.RING_EVENT_FLAGS_DISABLE:
            self._set_event_flags(C.RING_EVENT_FLAGS_DISABLE)

    def enable_cb(self) -> bool:
        """Re-enable used buffer notifications (descriptor-specific for the next used descriptor
        with EVENT_IDX); returns False if used buffers are already pending (race check)."""
        self._event_manual = False
        if self.event_idx:
            self.ring.driver_event_desc[0] = off_wrap(self.last_used_idx, self.used_wrap_counter)
            virtio_mb()
        self._set_event_flags(C.RING_EVENT_FLAGS_DESC if self.event_idx else C.RING_EVENT_FLAGS_ENABLE)
        virtio_mb()
        return not self.more_used_or_batched()

    def set_driver_event(self, flags: int, offset: int | None = None, wrap: int | None = None) -> None:
        """Write the driver event suppression structure as given (desc first, then flags) and
        keep it: get_buf no longer moves the event offset until enable_cb/disable_cb."""
        if offset is not None:
            self.ring.driver_event_desc[0] = off_wrap(offset, self.used_wrap_counter if wrap is None else wrap)
        self._set_event_flags(flags)
        self._event_manual = True
        virtio_mb()

    def set_used_event(self, value: int) -> None:
        """The split queue's used_event counterpart: the raw driver event ``desc`` (off | wrap << 15)."""
        self.ring.driver_event_desc[0] = value & 0xFFFF

    def position_after(self, descriptors: int) -> tuple[int, int]:
        """(offset, wrap) of the ring position ``descriptors`` past the next used one."""
        pos = self.last_used_idx + descriptors
        return pos % self.num, self.used_wrap_counter ^ ((pos // self.num) & 1)

    def _used_pending(self) -> bool:
        return self.more_used_or_batched()

    def _overrun_area(self) -> tuple[int, int]:
        return self.addrs.desc, ring_size(self.num)
