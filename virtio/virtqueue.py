"""The driver-side virtqueue interface (VIRTIO 1.4, 2.6) and what the split (2.7) and packed (2.8)
layouts share: free ids, the in-flight table, batch argument checks, used-elem validation, recycled
batches, bounded waits, the broken state, notification counting, and the canaries and digests that
show a device writing where it must not.

``Virtqueue`` is the abstract base every driver-side queue derives from; suites, workloads,
benchmarks and transports use only what it documents. virtio/split_queue.py and
virtio/packed_queue.py hold each layout's ring format: how descriptors are written, how used
elems are read, event suppression and the notification decision.
"""

from __future__ import annotations

import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import constants as C
from .areas import RingAddrs
from .buffers import BufferChain, Sg, SgArray
from .errors import (
    DeviceTimeout,
    HarnessError,
    InvalidUsedId,
    InvalidUsedLen,
    RingTooSmall,
    WroteOutsideBuffer,
    WroteReadableBuffer,
)
from .memory import CANARY, GUARD, GUARD_END, GUARD_START, GuestMemory, changed_bytes, count_nonzero

CLAUSE_BUFFERS_USED = "def.basic.buffers-are-used"  # 2.6: what is made available comes back, in bounded time

_U32_MAX = 0xFFFF_FFFF
DESC_SIZE = 16  # a descriptor, split (2.7.5) or packed (2.8.13), and so an indirect table entry

# The device writes only inside the buffers it was given (2.7.5 / 2.8.4: each descriptor names
# one element, addr and len) and never into a device-readable one (2.7.5.1 / 2.8.15; an indirect
# table is device-readable too, 2.7.5.3 / 2.8.7), per layout.
CLAUSE_WRITABLE_BOUNDS = {"split": "def.split.writable-bounds", "packed": "def.packed.writable-bounds"}
CLAUSE_READONLY = {
    "split": "dev.basic.virtqueues.the-virtqueue-descriptor-table.1",
    "packed": "dev.basic.packed-virtqueues.the-virtqueue-descriptor-table.1",
}
# An indirect table: on a split ring its entries are descriptor table entries (2.7.5.1: the device
# MUST NOT write to any), on a packed ring a device-readable buffer (2.8.7, 2.8.15).
CLAUSE_TABLE = {"split": "dev.basic.virtqueues.the-virtqueue-descriptor-table.2", "packed": CLAUSE_READONLY["packed"]}
# Used elems or used descriptors written past the ring the driver gave (a device indexing its
# ring by a larger size than the queue size): they are not returned through the used ring.
CLAUSE_RING_OVERRUN = {"split": "def.basic.buffers-are-used", "packed": "def.packed.used-position"}
SNAPSHOT_MAX = 4096  # readable elements up to this size are kept as a copy (to say which bytes changed)
_GUARDS_MAX = 4096  # canaries a queue keeps watching for the batch API (beyond: start again)

NO_IDS = np.empty(0, dtype=np.intp)
NO_LENS = np.empty(0, dtype=np.uint32)


@dataclass(frozen=True)
class UsedRules:
    """How a layout names what the device hands back, for the violations the shared checks raise:
    the clause a bad id or len breaks, and the words its messages use."""

    id_clause: str
    len_clause: str
    elem: str  # what carries the id: "used elem id" / "used descriptor's buffer id"
    out_of_range: str  # why an id >= queue size is bad
    not_in_flight: str  # why an id in range is bad
    ids: str  # what the expected ids are: "heads" / "ids"
    slot: str  # where it was read: "used ring slot" / "ring slot"


class Virtqueue(ABC):
    """A driver-side virtqueue (2.6), whatever its layout. Constructed as
    ``Queue(mem, index, num, notify, *, features=0, callback=None, name="", addrs=None)``: ``notify``
    is the transport's kick (called with the queue), ``callback`` runs on a used buffer
    notification that found used buffers, ``addrs`` a ring the caller allocated (else the queue
    allocates one with the alignments its layout needs). ``features`` are the negotiated ones: the
    queue reads EVENT_IDX, INDIRECT_DESC, IN_ORDER and NOTIFICATION_DATA from them.

    Operations (all layouts; the layout-specific column says what differs and why):

    ==================================  =========================  ===============================
    operation                           spec                       layout-specific
    ==================================  =========================  ===============================
    ``add(out, in_, token, ...)``       2.7.13 / 2.8.21            ring writes; a packed ring
                                                                   cannot put direct descriptors
                                                                   before an indirect one (2.8.19),
                                                                   so ``direct_before_indirect``
                                                                   must be 0 there
    ``add_batch(out, in_, count)``      same, vectorized           ring writes
    ``publish()``                       2.7.13.3 / 2.8.21.1        split: one avail idx store;
                                                                   packed: each head's flags
    ``kick_prepare()`` -> bool          2.7.10 / 2.8.10            which structure says whether
                                                                   the device wants a notification
    ``kick()``, ``notify()``            2.9                        no
    ``next_notification()``             2.9 NOTIFICATION_DATA      what next_off/next_wrap are
    ``get_buf()``                       2.7.14 / 2.8.22            how used elems are read
    ``get_used_batch(max, chains,       same, vectorized           how used elems are read
    recycle)``
    ``wait_used``, ``wait_used_batch``  bounded waits (2.6)        no
    ``wait_chain(chain, timeout, ...)`` one given buffer           no
    ``readd_batch(ids)``,               a recycled buffer pool     split writes avail ring entries
    ``free_recycled(ids)``                                         only; packed rewrites each
                                                                   descriptor from the driver's copy
                                                                   (the device wrote a used
                                                                   descriptor over its slot)
    ``more_used()``                     2.7.14 / 2.8.22            used idx / the next slot's flags
    ``disable_cb()``, ``enable_cb()``   2.7.7 / 2.8.10             avail flags and used_event /
                                                                   driver event suppression
    ``set_used_event(value)``           2.7.7 used_event           split: used_event; packed: the
                                                                   driver event's raw ``desc``
    ``detach_unused_buf()``             after a reset (2.6.1)      no
    ``reset_state()``, ``resize(num)``  2.6.1 queue reset          ring sizes and alignments
    ``free_ring()``                                                no
    ``read_in(chain)``, ``release``     a used buffer's bytes      no
    ``interrupt()``, ``wait_interrupt`` used buffer notification   no
    ``device_area()`` -> bytes          2.7.8 / 2.8                what the device writes: the used
                                                                   ring / the descriptor ring and
                                                                   the device event suppression
    ``area_sizes(num)``                 2.7 / 2.8.10.1             the three areas' sizes
    ``used_state()`` -> str             for messages               what a wait saw
    ``used_rules``, ``readonly_clause`` the clauses of used-elem   each layout's clause ids
                                        and readable-buffer duties
    ==================================  =========================  ===============================

    Attributes: ``mem``, ``index``, ``num`` (queue size), ``name``, ``layout`` ("split" or
    "packed"), ``addrs`` (RingAddrs), ``ring`` (the layout's typed views), ``event_idx``,
    ``indirect_ok``, ``in_order``, ``notification_data``, ``num_free`` (free descriptors),
    ``num_in_flight``, ``in_flight`` (id -> BufferChain), ``num_added`` (buffers added since the
    last kick_prepare), ``kicks``, ``interrupts``, ``spurious_interrupts``, ``broken`` (the
    violation that broke the queue, or None: every later operation raises it again, as Linux's
    BAD_RING), ``callback``, ``last_used_idx`` (split: 16-bit counter; packed: ring position).

    Layout-specific only (not on the other layout, because the other has no such structure):
    packed ``set_driver_event(flags, offset, wrap)`` (2.8.10's descriptor-specific event),
    ``position_after(n)``, ``expose_pending(i)``, ``avail_wrap_counter`` / ``used_wrap_counter``
    (2.8.1), ``id_in_every_desc``; split ``avail_idx_shadow`` (2.7.6).

    Every value read from the device is validated; a bad one raises a DeviceViolation naming the
    clause (the layout's, from ``used_rules`` and the CLAUSE_* tables) and marks the queue broken.
    """

    layout: str
    used_rules: UsedRules
    # 2.7.5.3.2 lets a split buffer chain direct descriptors before its indirect one; 2.8.19
    # forbids it on a packed ring.
    direct_before_indirect_ok: bool

    def __init__(
        self,
        mem: GuestMemory,
        index: int,
        num: int,
        notify: Callable[[Virtqueue], None],
        *,
        features: int = 0,
        callback: Callable[[Virtqueue], None] | None = None,
        name: str = "",
        addrs: RingAddrs | None = None,
    ):
        self.name = name or f"vq{index}"
        self._check_size(num, self.name)
        self.mem = mem
        self.index = index
        self.num = num
        self.notify_fn = notify
        self.callback = callback
        self.event_idx = bool(features >> C.VIRTIO_F_EVENT_IDX & 1)
        self.indirect_ok = bool(features >> C.VIRTIO_F_INDIRECT_DESC & 1)
        # 2.7.9 / 2.8.8: with IN_ORDER buffers are used in the order made available, and the
        # device may answer a batch of them with one used elem (the last buffer's id).
        self.in_order = bool(features >> C.VIRTIO_F_IN_ORDER & 1)
        self.notification_data = bool(features >> C.VIRTIO_F_NOTIFICATION_DATA & 1)
        self.addrs = addrs or self._alloc_ring(mem, num)
        self._owns_ring = addrs is None
        self.ring = self._ring_views(mem, self.addrs)
        self.reset_state()

    # -- the layout's ring format (each layout module implements these) ---------------------------
    @staticmethod
    @abstractmethod
    def _check_size(num: int, name: str) -> None:
        """Refuse a queue size the layout does not allow (2.7: a power of 2; 2.8: up to 2^15)."""

    @staticmethod
    @abstractmethod
    def area_sizes(num: int) -> tuple[int, int, int]:
        """Bytes of the descriptor, driver and device areas of a ring of ``num`` entries."""

    @staticmethod
    @abstractmethod
    def _alloc_ring(mem: GuestMemory, num: int) -> RingAddrs: ...

    @staticmethod
    @abstractmethod
    def _free_ring_areas(mem: GuestMemory, addrs: RingAddrs) -> None: ...

    @staticmethod
    @abstractmethod
    def _ring_views(mem: GuestMemory, addrs: RingAddrs): ...

    @abstractmethod
    def _reset_layout(self) -> None:
        """Reset the layout's own positions and shadows (the ring memory is already zeroed)."""

    @abstractmethod
    def _write_indirect_table(self, table: int, segs: list[tuple[Sg, int]]) -> None:
        """Write ``segs`` ((element, WRITE or 0), ...) as the indirect table at ``table``."""

    @abstractmethod
    def _no_room(self, n: int) -> RingTooSmall | None:
        """Why a buffer of ``n`` ring descriptors does not fit now, or None."""

    @abstractmethod
    def _write_chain(self, ring_segs: list[tuple[Sg, int]]) -> tuple[int, list[int]]:
        """add: take an id, write the buffer's descriptors and make it available (unpublished);
        returns (the buffer's id, its descriptor ids or ring slots)."""

    @abstractmethod
    def _synth_chain(self, head: int) -> BufferChain:
        """A BufferChain for a buffer add_batch made available, from the driver's own records."""

    def _readd_room(self, k: int) -> RingTooSmall | None:
        """Why ``k`` recycled buffers cannot be made available again now, or None."""
        return None

    @abstractmethod
    def _readd(self, heads: np.ndarray) -> None:
        """readd_batch: make recycled buffers available again (their bookkeeping is restored)."""

    @abstractmethod
    def _release_recycled(self, heads: np.ndarray) -> None:
        """free_recycled: give recycled buffers' ids (and descriptors) back."""

    @abstractmethod
    def _used_pending(self) -> bool:
        """Used buffers to take (for the spurious-interrupt count)."""

    @abstractmethod
    def _overrun_area(self) -> tuple[int, int]:
        """(address, size) of the ring area the device writes used elems into."""

    def _overrun_beyond(self, first: int) -> bool:
        """Does a first damaged byte at address ``first`` outside the device area's own
        canaries look like the layout's ring written by a device using another queue size?"""
        return False

    @abstractmethod
    def add_batch(self, out: Sequence[Sg | SgArray] = (), in_: Sequence[Sg | SgArray] = (), count: int = 1) -> np.ndarray:
        """Make ``count`` buffers of one shape available with vectorized ring writes: one
        descriptor per element (``out`` device-readable, then ``in_`` device-writable), an ``Sg``
        the same memory in every buffer, an ``SgArray`` one address per buffer. Nothing is
        published until ``publish``/``kick``. Returns the buffer ids (intp, in the order made
        available)."""

    @abstractmethod
    def publish(self) -> None:
        """Make the buffers added since the last publish visible to the device."""

    @abstractmethod
    def kick_prepare(self) -> bool:
        """Publish, then decide whether the device wants a notification."""

    @abstractmethod
    def next_notification(self) -> int:
        """VIRTIO_F_NOTIFICATION_DATA (2.9): next_off | next_wrap << 15."""

    @abstractmethod
    def more_used(self) -> bool:
        """Has the device returned a buffer not yet taken?"""

    @abstractmethod
    def get_buf(self) -> BufferChain | None:
        """Take the next used buffer, validated, or None if the device has returned nothing new."""

    @abstractmethod
    def get_used_batch(
        self, max_count: int | None = None, chains: list | None = None, recycle: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Take up to ``max_count`` used buffers at once: ``(ids, lens)`` (intp, uint32), validated
        exactly as get_buf would one by one. Buffers from ``add`` get used_len set and go into
        ``chains`` (else their memory is released). With ``recycle`` (add_batch buffers on a
        queue without IN_ORDER) the buffers keep their ids for ``readd_batch``."""

    @abstractmethod
    def detach_unused_buf(self) -> BufferChain | None:
        """Reclaim a buffer the device never used (only after reset / queue reset)."""

    @abstractmethod
    def disable_cb(self) -> None:
        """Ask the device not to send used buffer notifications (a hint, 2.7.7 / 2.8.10)."""

    @abstractmethod
    def enable_cb(self) -> bool:
        """Ask for used buffer notifications again; False if used buffers are already pending."""

    @abstractmethod
    def set_used_event(self, value: int) -> None:
        """Write the raw event index the driver asks to be notified at (EVENT_IDX)."""

    @abstractmethod
    def device_area(self) -> bytes:
        """A copy of everything the device writes in this queue: two copies differ iff someone
        wrote in between."""

    @property
    @abstractmethod
    def num_free(self) -> int:
        """Free descriptors (split: table entries; packed: ring slots)."""

    @abstractmethod
    def used_state(self) -> str:
        """Where the device's used elems stand, for messages (what a wait saw)."""

    @property
    def readonly_clause(self) -> str:
        """The clause a device writing into a device-readable buffer breaks, on this layout."""
        return CLAUSE_READONLY[self.layout]

    # -- in-flight bookkeeping ------------------------------------------------------------------
    def reset_state(self) -> None:
        """Forget everything in flight (after a device or queue reset); the ring memory is zeroed.

        In-flight bookkeeping, one entry per id (a split head descriptor, a packed buffer id),
        the single source of truth for the per-buffer and the batch API alike:

        - ``_room[h]``: 1 + the device-writable bytes of the buffer ``h``, 0 when ``h`` is not in
          flight. So one unsigned compare, ``used len < _room[id]``, says both "id in flight" and
          "len within the buffer". ``_room[num]`` is a 0 sentinel; an id read from the device is
          an index only after a bounds check (or inside try/except IndexError).
        - ``_nd[h]``: descriptors the buffer took (1 unless a multi-descriptor buffer is in
          flight; ``_multi`` counts those); ``_nflight`` buffers in flight.
        - ``_free[:_nfree]``: a stack of free ids (top at the end).
        - ``_chains``: BufferChain objects of buffers made available by ``add()``.
        - recycled buffers (``get_used_batch(recycle=True)``): ``_recycled[h]``, ``_kept_room[h]``
          (the room readd_batch restores), ``_nrecycled``.
        - ``_unclaimed``: used buffers ``wait_chain`` took while waiting for another one.
        """
        num = self.num
        mem, addrs = self.mem, self.addrs
        for addr, size in zip((addrs.desc, addrs.driver, addrs.device), self.area_sizes(num)):
            mem.fill(addr, size, 0)
        self._idx2 = np.arange(2 * num, dtype=np.intp) % num  # ring slots of a run that may wrap
        self._ar = np.arange(num + 1, dtype=np.intp)
        self._room = np.zeros(num + 1, dtype=np.uint64)
        self._nd = np.ones(num, dtype=np.intp)
        self._multi = 0
        self._nflight = 0
        self._free = np.arange(num - 1, -1, -1, dtype=np.intp)
        self._nfree = num
        self._chains: dict[int, BufferChain] = {}
        self._recycled = np.zeros(num + 1, dtype=bool)
        self._kept_room = np.zeros(num + 1, dtype=np.uint64)
        self._nrecycled = 0
        self._unclaimed: dict[int, BufferChain] = {}
        self.num_added = 0
        self._reset_layout()
        self._reset_signals()

    def resize(self, num: int) -> None:
        """Give the queue a fresh ring of ``num`` entries (only while the queue is reset, 2.6.1).
        Buffers still in flight are forgotten: reclaim them with detach_unused_buf first."""
        self._check_size(num, self.name)
        if self._owns_ring:
            self._free_ring_areas(self.mem, self.addrs)
        self.addrs = self._alloc_ring(self.mem, num)
        self._owns_ring = True
        self.num = num
        self.ring = self._ring_views(self.mem, self.addrs)
        self.reset_state()

    def free_ring(self) -> None:
        """Free the ring memory the queue allocated (a ring given as ``addrs`` stays the caller's)."""
        if self._owns_ring:
            self._free_ring_areas(self.mem, self.addrs)
            self._owns_ring = False

    @property
    def num_in_flight(self) -> int:
        """Buffers made available and not yet taken back (used or detached)."""
        return self._nflight

    @property
    def in_flight(self) -> dict[int, BufferChain]:
        """Ids of the buffers in flight -> their BufferChain (read back from the driver's own
        records for buffers from add_batch)."""
        return {h: self._chains.get(h) or self._synth_chain(h) for h in self._heads_in_flight()}

    def _heads_in_flight(self) -> list[int]:
        return np.flatnonzero(self._room[: self.num]).tolist()

    @property
    def _free_ids(self) -> list[int]:
        return self._free[: self._nfree].tolist()

    def _pop_ids(self, n: int) -> np.ndarray:
        """``n`` free ids, in the order ``n`` pops of the free stack would give them."""
        top = self._nfree
        ids = self._free[top - n : top][::-1].copy()
        self._nfree = top - n
        return ids

    def _push_ids(self, ids) -> None:
        top = self._nfree
        self._free[top : top + len(ids)] = ids
        self._nfree = top + len(ids)

    # -- adding buffers --------------------------------------------------------------------------
    def add(
        self,
        out: Sequence[bytes | Sg] = (),
        in_: Sequence[int | Sg] = (),
        token: object = None,
        *,
        indirect: bool = False,
        direct_before_indirect: int = 0,
        indirect_desc_write_flag: bool = False,
    ) -> BufferChain:
        """Make one buffer available (without publishing it until ``publish``/``kick``).

        ``out`` are device-readable elements (bytes are copied into fresh guest memory), ``in_``
        device-writable ones (an int allocates that many bytes). Readable elements precede
        writable ones (2.7.4.2, 2.8.4). With ``indirect`` the elements go into an indirect table
        (2.7.5.3, 2.8.7); ``direct_before_indirect`` keeps that many leading elements as direct
        descriptors before the indirect one (2.7.5.3.2 allows that on a split ring only).
        """
        self._check_broken()
        out_sgs, in_sgs, owned = self._buffer_sgs(out, in_)
        segs = [(s, 0) for s in out_sgs] + [(s, C.VIRTQ_DESC_F_WRITE) for s in in_sgs]

        def refuse(exc: Exception):
            for a in owned:
                self.mem.free(a)
            raise exc

        if not segs:
            refuse(HarnessError(f"{self.name}: a buffer needs at least one element"))
        table = None
        if indirect:
            if direct_before_indirect and not self.direct_before_indirect_ok:
                refuse(HarnessError(f"{self.name}: a packed ring cannot chain an indirect descriptor after direct ones (2.8.19)"))
            if not 0 <= direct_before_indirect < len(segs):
                refuse(HarnessError("direct_before_indirect must leave at least one element for the table"))
            rest = segs[direct_before_indirect:]
            table = self.mem.alloc(DESC_SIZE * len(rest), 16)
            owned.append(table)
            self._write_indirect_table(table, rest)
            ind_flags = C.VIRTQ_DESC_F_INDIRECT | (C.VIRTQ_DESC_F_WRITE if indirect_desc_write_flag else 0)
            ring_segs = segs[:direct_before_indirect] + [(Sg(table, DESC_SIZE * len(rest)), ind_flags)]
        else:
            ring_segs = segs
        n = len(ring_segs)
        if (why := self._no_room(n)) is not None:
            refuse(why)
        head, ids = self._write_chain(ring_segs)
        chain = BufferChain(head, token, out_sgs, in_sgs, n, table, owned, ids)
        self._arm_chain(chain, ring_segs[-1][0] if table is not None else None)
        self._chains[head] = chain
        self._room[head] = chain.writable + 1
        if n > 1:
            self._nd[head] = n
            self._multi += 1
        self._nflight += 1
        self.num_added += 1
        return chain

    # -- recycled batches: a driver's preformatted request pool (DPDK's, SPDK's) -------------------
    def _check_recycle(self) -> None:
        if self.in_order or self._chains:
            raise HarnessError("recycle applies to add_batch buffers on a queue without IN_ORDER")

    def _recycle(self, ids: np.ndarray, room: np.ndarray) -> None:
        """get_used_batch(recycle=True): the used buffers keep their ids (out of flight)."""
        m = len(ids)
        self._kept_room[ids] = room
        self._recycled[ids] = True
        self._nrecycled += m
        self._nflight -= m

    def readd_batch(self, heads: np.ndarray) -> None:
        """Make recycled buffers (``get_used_batch(recycle=True)``) available again, in the order
        given, with the elements they had. Nothing is published until ``publish``/``kick``."""
        k = len(heads)
        if k == 0:
            return
        if (why := self._readd_room(k)) is not None:
            raise why
        self._take_recycled(heads, "readd_batch")
        self._rearm_recycled(heads)
        self._room[heads] = self._kept_room[heads]
        self._nflight += k
        self._readd(heads)

    def free_recycled(self, heads: np.ndarray) -> None:
        """Give recycled buffers' ids (and descriptors) back to the free list."""
        if len(heads) == 0:
            return
        self._take_recycled(heads, "free_recycled")
        self._forget_recycled(heads)
        self._release_recycled(heads)

    def _take_recycled(self, heads: np.ndarray, op: str) -> None:
        """Un-mark recycled ids; each must be recycled and named once (else nothing changes)."""
        k = len(heads)
        if k > self._nrecycled or not self._recycled[heads].all():
            raise HarnessError(f"{self.name}: {op} of buffers that are not recycled")
        self._recycled[heads] = False
        if count_nonzero(self._recycled) != self._nrecycled - k:  # an id named twice
            self._recycled[heads] = True
            raise HarnessError(f"{self.name}: {op} names a buffer twice")
        self._nrecycled -= k

    # -- used elems: validation shared by the layouts -----------------------------------------------
    def _bad_id(self, uid: int, slot: int, note: str = "") -> None:
        r = self.used_rules
        why = r.out_of_range if uid >= self.num else r.not_in_flight
        self._bad(
            InvalidUsedId(
                r.id_clause,
                f"{r.elem} {why}{note}",
                expected=f"one of {r.ids} {self._heads_in_flight()[:16]} (queue size {self.num})",
                observed=f"id {uid} at {r.slot} {slot}",
                queue=self.name,
            )
        )

    def _bad_len(self, uid: int, ulen: int, writable: int, slot: int | None = None) -> None:
        r = self.used_rules
        where = "" if slot is None else f" at {r.slot} {slot}"
        self._bad(
            InvalidUsedLen(
                r.len_clause,
                "used len exceeds the device-writable bytes of the buffer",
                expected=f"len <= {writable}",
                observed=f"len {ulen} for id {uid}{where}",
                queue=self.name,
            )
        )

    def _hand_out(self, got: list[BufferChain], chains: list | None) -> tuple[np.ndarray, np.ndarray]:
        """Used buffers taken one by one, as get_used_batch returns them: buffers from ``add``
        go to ``chains`` (or are released)."""
        for c in got:
            if not c.batch:
                if chains is not None:
                    chains.append(c)
                else:
                    self.release(c)
        if not got:
            return NO_IDS, NO_LENS
        return np.array([c.head for c in got], dtype=np.intp), np.array([c.used_len for c in got], dtype=np.uint32)

    def wait_chain(self, chain: BufferChain, timeout: float = 5.0, awaited: str | None = None) -> BufferChain:
        """Wait (bounded) for one specific buffer from ``add``; other buffers used meanwhile are
        kept until claimed by a later wait_chain (reset_state forgets them).

        Kept by identity, not by id: a kept buffer's id is free again and may already name a
        newer buffer that completes before it is claimed (an IN_ORDER batch returns several)."""
        done = self._unclaimed
        while id(chain) not in done:
            got = self.wait_used(1, timeout, awaited=awaited)[0]
            done[id(got)] = got
        del done[id(chain)]
        return chain

    # -- notification counters and broken state ---------------------------------------------------
    def _reset_signals(self) -> None:
        """Counters and state both layouts reset with the ring: not broken, no kicks, no interrupts."""
        self.broken: Exception | None = None
        self.kicks = 0
        self.interrupts = 0
        self.spurious_interrupts = 0
        self.irq_event = threading.Event()
        self._reset_watch()

    # -- what the device must not write: canaries and device-readable digests --------------------
    # Per-buffer API (add): each BufferChain keeps copies (or crc32s) of its device-readable
    # elements and indirect table; its elements' canaries and those copies are checked when it is
    # used. Batch API (add_batch): the canaries next to the elements' memory are watched per queue
    # (one vectorized compare each time buffers come back), and each buffer with device-readable
    # elements keeps a digest in _rsum, checked when it is used.
    def _reset_watch(self) -> None:
        n = self.num + 1
        self._gset: set[int] = set()  # canary offsets watched for the batch API
        self._glist: list[int] = []  # the same, sorted
        self._gidx: np.ndarray | None = None  # their byte indexes
        self._gfrees = self.mem.frees
        self._gseen: dict[int, object] = {}  # add_batch elements already looked at (by identity)
        self._wlast: tuple = (None, None)  # the last add_batch element tuples (all looked at)
        self._rsum = np.zeros(n, dtype=np.uint64)  # digest of a batch buffer's readable elements
        self._rmark = np.zeros(n, dtype=bool)  # ...to check when it comes back
        self._rkeep = np.zeros(n, dtype=bool)  # recycled with readable elements: digest again on readd
        self._rwhat = np.empty(n, dtype=object)  # its readable elements: ((addrs, len), ...)
        self._rpos = np.zeros(n, dtype=np.intp)  # ...and its index in them
        self._nread = 0

    def _arm_chain(self, chain: BufferChain, table=None) -> None:
        """Remember the device-readable bytes of a buffer from ``add`` (and its indirect table).
        Elements outside this queue's guest memory (a vhost-user test's extra memory region) are
        the caller's to watch: only memory this queue can read is remembered."""
        keep = []
        for s in chain.out_sgs + ([table] if table is not None else []):
            if not self.mem.contains(s.addr, s.len):
                continue
            if s.len <= SNAPSHOT_MAX:
                keep.append((s.addr, s.len, self.mem.read(s.addr, s.len)))
            else:
                keep.append((s.addr, s.len, zlib.crc32(self.mem.view(s.addr, s.len))))
        chain.readonly = keep
        chain.table = table

    def _check_chain(self, chain: BufferChain) -> None:
        """A used buffer from either API: its canaries intact, its device-readable bytes unchanged."""
        mem = self.mem
        gm, base, size, mm = mem.guard_map, mem.base, mem.size, mem.mmap
        sgs = chain.out_sgs + chain.in_sgs
        if chain.table is not None:
            sgs = sgs + [chain.table]
        for s in sgs:
            off = s.addr - base
            end = off + s.len
            if 0 <= off <= end <= size:
                if gm[off] == GUARD_START and mm[off - GUARD : off] != CANARY:
                    self._bad_guard(off - GUARD, chain.head, s, "before")
                if gm[end] == GUARD_END and mm[end : end + GUARD] != CANARY:
                    self._bad_guard(end, chain.head, s, "after")
        for addr, n, was in chain.readonly:
            now = mem.read(addr, n) if type(was) is bytes else zlib.crc32(mem.view(addr, n))
            if now != was:
                table = chain.table is not None and addr == chain.table.addr
                detail = changed_bytes(was, now, addr) if type(was) is bytes else f"crc32 {was:#010x} -> {now:#010x}"
                self._bad_readonly(chain.head, addr, n, "indirect table" if table else "device-readable element", detail,
                                   CLAUSE_TABLE[self.layout] if table else None)
        if chain.batch and self._nread:
            self._check_read_batch(np.array([chain.head], dtype=np.intp))

    def _ring_overrun(self, guard: int) -> None:
        """A changed canary that a device writing past this queue's device area explains (used
        elems beyond the queue size, or split avail_event where a ring of another power-of-2 size
        has it) is charged to that, not to a buffer next to it."""
        mem = self.mem
        area, size = self._overrun_area()
        own = mem.guards_of(area, size).tolist()  # the device area's own canaries
        first = mem.first_damage(guard)
        hit = any(mem.canary_damage(g) is not None for g in own)
        if not hit and first is not None:
            hit = self._overrun_beyond(first)
        if hit:
            self._bad(
                WroteOutsideBuffer(
                    CLAUSE_RING_OVERRUN[self.layout],
                    "device wrote past the end of its ring, as if the queue size were larger",
                    expected=f"writes inside the {size}-byte ring at {area:#x} (queue size {self.num})",
                    observed=mem.canary_damage(guard) or "a canary after the ring changed",
                    queue=self.name,
                )
            )

    def _bad_guard(self, guard: int, head: int, sg, side: str) -> None:
        mem = self.mem
        self._ring_overrun(guard)
        self._bad(
            WroteOutsideBuffer(
                CLAUSE_WRITABLE_BOUNDS[self.layout],
                f"device wrote outside the buffer: the canary {side} an element changed",
                expected=f"the {GUARD} bytes at {mem.base + guard:#x} ({side} element [{sg.addr:#x}, +{sg.len}) "
                f"of buffer {head}) untouched",
                observed=mem.canary_damage(guard) or "changed",
                queue=self.name,
            )
        )

    def _bad_readonly(self, head: int, addr: int, n: int, what: str, detail: str, clause: str | None = None) -> None:
        self._bad(
            WroteReadableBuffer(
                clause or CLAUSE_READONLY[self.layout],
                f"device wrote into a {what} of buffer {head}",
                expected=f"[{addr:#x}, +{n}) unchanged while the buffer was available",
                observed=detail,
                queue=self.name,
            )
        )

    def _watch_batch(self, out: Sequence, in_: Sequence, heads: np.ndarray) -> None:
        """add_batch: watch the canaries next to the elements' memory; digest readable elements."""
        if self._nread:
            self._unwatch(heads)
        if out is self._wlast[0] and in_ is self._wlast[1]:  # a buffer pool, batch after batch
            if out:
                self._watch_readable(out, heads)
            return
        self._wlast = (out, in_)
        seen = self._gseen
        for x in (*out, *in_):
            if id(x) in seen and seen[id(x)] is x:
                continue
            if len(seen) > 256:
                seen.clear()
            seen[id(x)] = x
            g = self.mem.guards_of(x.addr, x.len).tolist()
            if g and not self._gset.issuperset(g):
                if self.mem.frees != self._gfrees:
                    self._refresh_guards()
                self._set_guards((set() if len(self._gset) > _GUARDS_MAX else self._gset) | set(g))
        if out:
            self._watch_readable(out, heads)

    def _watch_readable(self, out: Sequence, heads: np.ndarray) -> None:
        """Digest each batch buffer's readable elements, to compare when it comes back."""
        count = len(heads)
        what = tuple((np.array(np.broadcast_to(np.asarray(x.addr, dtype=np.uint64), (count,))),
                      x.len.copy() if isinstance(x.len, np.ndarray) else int(x.len)) for x in out)
        holder = np.empty(count, dtype=object)
        holder[:] = [what] * count
        self._rwhat[heads] = holder
        self._rpos[heads] = np.arange(count, dtype=np.intp)
        self._arm_read_batch(heads)

    def _read_digests(self, heads: np.ndarray) -> np.ndarray:
        """Digest of each batch buffer's readable elements now (heads with _rwhat set)."""
        sums = np.zeros(len(heads), dtype=np.uint64)
        whats = self._rwhat[heads]
        pos = self._rpos[heads]
        for what in {id(w): w for w in whats.tolist()}.values():
            sel = np.flatnonzero(np.fromiter((w is what for w in whats.tolist()), dtype=bool, count=len(heads)))
            p = pos[sel]
            for addrs, n in what:
                sums[sel] += self.mem.digests(addrs[p], n[p] if isinstance(n, np.ndarray) else n)
        return sums

    def _arm_read_batch(self, heads: np.ndarray) -> None:
        self._rsum[heads] = self._read_digests(heads)
        k = len(heads) - int(np.count_nonzero(self._rmark[heads]))
        self._rmark[heads] = True
        self._nread += k

    def _check_batch(self, ids: np.ndarray, recycle: bool = False) -> None:
        """Buffers coming back through get_used_batch: every watched canary intact, the readable
        elements of these buffers unchanged. Called before their state is freed."""
        if self._glist:
            mem = self.mem
            if mem.frees != self._gfrees:
                self._refresh_guards()
            if len(self._glist) <= 16:  # a few slices compare faster than one numpy gather
                mm = mem.mmap
                for g in self._glist:
                    if mm[g : g + GUARD] != CANARY:
                        self._batch_guard_violation(ids)
            elif mem.canaries_broken(self._gidx):
                self._batch_guard_violation(ids)
        if self._nread:
            self._check_read_batch(ids, recycle)

    def _refresh_guards(self) -> None:
        """Memory was freed since the canaries were listed: keep those still guarding an allocation."""
        mem = self.mem
        self._gfrees = mem.frees
        self._gseen.clear()
        self._wlast = (None, None)
        self._set_guards(set(mem.still_guards(np.fromiter(self._gset, dtype=np.intp, count=len(self._gset))).tolist()))

    def _set_guards(self, gset: set[int]) -> None:
        self._gset = gset
        self._glist = sorted(gset)
        self._gidx = self.mem.guard_index(np.array(self._glist, dtype=np.intp)) if gset else None

    def _check_read_batch(self, ids: np.ndarray, recycle: bool = False) -> None:
        mark = self._rmark[ids]
        if not mark.any():
            return
        sel = ids[mark]
        bad = np.flatnonzero(self._read_digests(sel) != self._rsum[sel])
        if len(bad):
            h = int(sel[bad[0]])
            p = int(self._rpos[h])
            for addrs, n in self._rwhat[h]:
                k = int(n[p]) if isinstance(n, np.ndarray) else n
                a = int(addrs[p])
                self._bad_readonly(h, a, k, "device-readable element", "its digest changed")
        self._rmark[sel] = False
        self._nread -= len(sel)
        if recycle:
            self._rkeep[sel] = True

    def _rearm_recycled(self, heads: np.ndarray) -> None:
        """readd_batch: the driver may have rewritten readable elements; digest them again."""
        keep = self._rkeep[heads]
        if keep.any():
            self._arm_read_batch(heads[keep])

    def _forget_recycled(self, heads: np.ndarray) -> None:
        self._rkeep[heads] = False

    def _unwatch(self, heads) -> None:
        """Buffers leaving flight unchecked (detached after a reset) or ids reused: no digest due."""
        mark = self._rmark[heads]
        k = int(np.count_nonzero(mark))
        if k:
            self._rmark[heads] = False
            self._nread -= k

    def _batch_guard_violation(self, ids: np.ndarray) -> None:
        """A watched canary changed: name it and, if one is there, the buffer next to it."""
        mem = self.mem
        for g in sorted(self._gset):
            if mem.canary_damage(g) is None:
                continue
            self._ring_overrun(g)
            for h in list(ids.tolist()) + [b for b in self.in_flight if b not in set(ids.tolist())]:
                chain = self._chains.get(h) or self._synth_chain(h)
                for sg in chain.out_sgs + chain.in_sgs:
                    off = sg.addr - mem.base
                    if off + sg.len == g:
                        self._bad_guard(g, h, sg, "after")
                    if off == g + GUARD:
                        self._bad_guard(g, h, sg, "before")
            alloc = mem.allocation_of(g)
            where = f"allocation [{alloc[0]:#x}, +{alloc[1]})" if alloc else "an allocation"
            self._bad(
                WroteOutsideBuffer(
                    CLAUSE_WRITABLE_BOUNDS[self.layout],
                    "device wrote outside the buffers: a canary next to buffer memory changed",
                    expected=f"the {GUARD} bytes at {mem.base + g:#x} next to {where} untouched",
                    observed=mem.canary_damage(g),
                    queue=self.name,
                )
            )

    def interrupt(self) -> None:
        """Used buffer notification from the device (Linux vring_interrupt)."""
        self.interrupts += 1
        self.irq_event.set()
        if not self._used_pending():
            self.spurious_interrupts += 1
            return
        if self.callback is not None:
            self.callback(self)

    def _check_broken(self) -> None:
        if self.broken is not None:
            raise self.broken

    def _bad(self, exc: Exception) -> None:
        self.broken = exc
        raise exc

    def notify(self) -> None:
        self.kicks += 1
        self.notify_fn(self)

    def kick(self) -> bool:
        """kick_prepare + notify; returns whether a notification was sent."""
        if self.kick_prepare():
            self.notify()
            return True
        return False

    def read_in(self, chain: BufferChain, length: int | None = None) -> bytes:
        """The device-writable bytes of a used buffer, up to ``length`` (default: its used len)."""
        n = chain.used_len if length is None else length
        out = bytearray()
        for s in chain.in_sgs:
            if n <= 0:
                break
            take = min(n, s.len)
            out += self.mem.read(s.addr, take)
            n -= take
        return bytes(out)

    def release(self, chain: BufferChain) -> None:
        """Free the guest memory the harness allocated for a completed buffer."""
        for a in chain.owned:
            self.mem.free(a)
        chain.owned = []

    def wait_interrupt(self, since: int, timeout: float) -> bool:
        """True once more than ``since`` used buffer notifications have arrived (bounded wait)."""
        deadline = time.monotonic() + timeout
        while self.interrupts <= since:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.irq_event.wait(min(left, 0.002))
            self.irq_event.clear()
        return True

    # -- shared by add / add_batch on both layouts -------------------------------------------------
    def _buffer_sgs(self, out: Sequence, in_: Sequence) -> tuple[list, list, list[int]]:
        """``add``'s elements as Sg lists: bytes are copied into fresh guest memory, an int
        allocates that many device-writable bytes. Returns (out_sgs, in_sgs, owned allocations)."""
        owned: list[int] = []
        out_sgs, in_sgs = [], []
        for o in out:
            if isinstance(o, Sg):
                out_sgs.append(o)
            else:
                a = self.mem.alloc(max(1, len(o)), 8)
                self.mem.write(a, o)
                owned.append(a)
                out_sgs.append(Sg(a, len(o)))
        for i in in_:
            if isinstance(i, Sg):
                in_sgs.append(i)
            else:
                a = self.mem.alloc(max(1, i), 8)
                owned.append(a)
                in_sgs.append(Sg(a, i))
        return out_sgs, in_sgs, owned

    def _batch_shape(self, out: Sequence, in_: Sequence, count: int, free_desc: int, free_ids: int) -> tuple[int, int, int]:
        """Check add_batch's arguments before anything is taken or written: (descriptors per
        buffer, count, descriptors needed). The same element tuples with immutable lengths as
        the last call are not checked again (a driver's buffer pool, reused batch after batch)."""
        self._check_broken()
        nd = len(out) + len(in_)
        if not nd:
            raise HarnessError("a buffer needs at least one element")
        count = int(count)
        need = nd * count
        if need > free_desc or count > free_ids:
            raise RingTooSmall(self.name, f"{need} free descriptors for {count} buffers", f"a queue of {self.num}, {free_desc} descriptors free")
        last = self.__dict__.get("_checked")
        if count > 0 and not (last is not None and last[0] is out and last[1] is in_ and last[2] == count):
            for x in out:
                self._check_elem(x, count)
            for x in in_:
                self._check_elem(x, count)
            # Kept (a reference keeps the objects alive) only when nothing in them can change.
            fixed = type(out) is tuple and type(in_) is tuple and all(type(x.len) is int for x in (*out, *in_))
            self._checked = (out, in_, count) if fixed else None
        return nd, count, need

    def _check_elem(self, x: Sg | SgArray, count: int) -> None:
        """Refuse a malformed add_batch element before anything is taken or written."""
        if type(x) is Sg:
            if not (0 <= x.len <= _U32_MAX and 0 <= x.addr < 1 << 64):
                raise HarnessError(f"descriptor {x} does not fit the table's fields")
        elif type(x) is SgArray:
            if not isinstance(x.addr, np.ndarray) or x.addr.shape != (count,):
                raise HarnessError(f"{self.name}: SgArray.addr must be an array of {count} addresses")
            if isinstance(x.len, np.ndarray):
                if x.len.shape != (count,):
                    raise HarnessError(f"{self.name}: SgArray.len must be one length or {count} of them")
                if count and (int(x.len.min()) < 0 or int(x.len.max()) > _U32_MAX):
                    raise HarnessError("SgArray lengths must fit le32")
            elif not 0 <= int(x.len) <= _U32_MAX:
                raise HarnessError("SgArray length must fit le32")
        else:
            raise HarnessError(f"add_batch takes Sg or SgArray elements, not {type(x).__name__}")

    def _collect_chains(self, heads: np.ndarray, lens: np.ndarray, chains: list | None) -> None:
        """Batch completion of buffers made available by ``add``: set used_len, hand the
        BufferChain to ``chains`` (or release its guest memory when there is no list)."""
        pop = self._chains.pop
        for h, n in zip(heads.tolist(), lens.tolist()):
            c = pop(h, None)
            if c is not None:
                c.used_len = n
                self._check_chain(c)
                if c.batch:
                    continue
                if chains is not None:
                    chains.append(c)
                else:
                    self.release(c)

    # -- bounded waits for used buffers -------------------------------------------------------------
    def _timeout(self, count: int, got: int, timeout: float, awaited: str | None, duty: str | None) -> DeviceTimeout:
        # The duty a wait checks is the caller's to say (e.g. a queue reset's "restart from 0");
        # without one it is the general duty to use what is made available (2.6).
        return DeviceTimeout(
            duty or CLAUSE_BUFFERS_USED,
            awaited or f"{count} used buffer(s)",
            timeout=timeout,
            queue=self.name,
            observed=f"{got} used; {self.used_state()}, {self._nflight} in flight",
        )

    def _idle_wait(self, idle: int, left: float) -> None:
        # A concurrent device usually answers within microseconds: yield first, then sleep
        # in growing steps (woken early by a used buffer notification).
        if idle < 50:
            time.sleep(0)
        else:
            self.irq_event.wait(min(left, 0.00005 * min(idle - 49, 40)))
            self.irq_event.clear()

    def wait_used(self, count: int = 1, timeout: float = 5.0, awaited: str | None = None,
                  duty: str | None = None) -> list[BufferChain]:
        """Collect ``count`` used buffers, bounded by ``timeout``; DeviceTimeout names what is missing
        and, as its clause, ``duty`` (the duty this wait checks; default def.basic.buffers-are-used)."""
        got: list[BufferChain] = []
        deadline = time.monotonic() + timeout
        idle = 0
        while True:
            while len(got) < count:
                c = self.get_buf()
                if c is None:
                    break
                got.append(c)
            if len(got) >= count:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout(count, len(got), timeout, awaited, duty)
            idle += 1
            self._idle_wait(idle, left)

    def wait_used_batch(
        self, count: int, timeout: float = 5.0, awaited: str | None = None, chains: list | None = None,
        duty: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``get_used_batch`` until ``count`` buffers are back (exactly ``count``), bounded by ``timeout``."""
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        got = 0
        deadline = None
        idle = 0
        while True:
            ids, lens = self.get_used_batch(count - got, chains)
            if len(ids):
                if not parts and len(ids) >= count:
                    return ids, lens
                parts.append((ids, lens))
                got += len(ids)
                if got >= count:
                    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
                continue
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            left = deadline - now
            if left <= 0:
                raise self._timeout(count, got, timeout, awaited, duty)
            idle += 1
            self._idle_wait(idle, left)
