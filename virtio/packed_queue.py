"""Driver side of a packed virtqueue (VIRTIO 1.4, 2.8), after Linux's virtio_ring.c (*_packed).

Same API as SplitVirtqueue (virtio/split_queue.py), so workloads and suites run on either layout.
Buffer ids are driver-chosen tokens (a free list, independent of ring slots); the driver keeps the
avail and used wrap counters, driver event suppression (enable / disable / descriptor-specific with
EVENT_IDX), and reads the device event suppression structure to decide on a kick. Everything read
from the ring is validated; a bad value raises a DeviceViolation naming the clause and marks the
queue broken (Linux's BAD_RING), never an IndexError.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Sequence

from . import constants as C
from .errors import DeviceTimeout, HarnessError, InvalidUsedFlags, InvalidUsedId, InvalidUsedLen
from .memory import GuestMemory
from .packed import (
    DESC_SIZE,
    EVENT_SUPPRESS_SIZE,
    PVIRTQ_DESC,
    PackedRing,
    PackedRingAddrs,
    alloc_packed_ring,
    avail_flags,
    check_queue_size,
    free_packed_ring,
    is_avail,
    is_used,
    need_event,
    off_wrap,
    split_event,
)
from .split_queue import BufferChain, Sg, virtio_mb
from .virtqueue import VirtqueueBase

# Clause ids this module reports (see virtio/clauses.toml).
CLAUSE_USED_ID = "def.packed.used-buffer-id"
CLAUSE_USED_LEN = "def.packed.used-len"
CLAUSE_USED_FLAGS = "def.packed.used-flags"
CLAUSE_USED_POSITION = "def.packed.used-position"
CLAUSE_PROCESS = "def.basic.buffers-are-used"

# Written into the id field of the non-last descriptors of a list when ``id_in_every_desc`` is
# off: never a buffer id in flight (ids are < queue size <= 32768).
ID_DECOY = 0xFFFF


def _pair(flags: int) -> str:
    return f"flags {flags:#06x} (AVAIL={int(bool(flags & C.VIRTQ_DESC_F_AVAIL))}, USED={int(bool(flags & C.VIRTQ_DESC_F_USED))})"


class PackedVirtqueue(VirtqueueBase):
    """A packed virtqueue, driver side.

    ``notify`` is the transport's kick; ``interrupt()`` is what the transport calls on a used buffer
    notification. ``last_used_idx``/``used_wrap_counter`` and ``next_avail_idx``/``avail_wrap_counter``
    are ring positions (0..num-1) and wrap counters as the spec names them (2.8.1).
    """

    layout = "packed"

    def __init__(
        self,
        mem: GuestMemory,
        index: int,
        num: int,
        notify: Callable[["PackedVirtqueue"], None],
        *,
        features: int = 0,
        callback: Callable[["PackedVirtqueue"], None] | None = None,
        name: str = "",
        addrs: PackedRingAddrs | None = None,
    ):
        check_queue_size(num)
        self.mem = mem
        self.index = index
        self.num = num
        self.name = name or f"vq{index}"
        self.notify_fn = notify
        self.callback = callback
        self.event_idx = bool(features >> C.VIRTIO_F_EVENT_IDX & 1)
        self.indirect_ok = bool(features >> C.VIRTIO_F_INDIRECT_DESC & 1)
        self.in_order = bool(features >> C.VIRTIO_F_IN_ORDER & 1)
        self.notification_data = bool(features >> C.VIRTIO_F_NOTIFICATION_DATA & 1)
        self.addrs = addrs or alloc_packed_ring(mem, num)
        self._owns_ring = addrs is None
        self.ring = PackedRing(mem, self.addrs)
        # Linux writes the buffer id into every descriptor of a list; the spec puts it in the last
        # one (2.8.6) and a device must read it there. False: only the last carries it.
        self.id_in_every_desc = True
        self.reset_state()

    # -- state ---------------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Forget everything in flight (after a device or queue reset); the ring memory is zeroed."""
        self.mem.fill(self.addrs.desc, DESC_SIZE * self.num, 0)
        self.mem.fill(self.addrs.driver, EVENT_SUPPRESS_SIZE, 0)
        self.mem.fill(self.addrs.device, EVENT_SUPPRESS_SIZE, 0)
        self._free_ids = list(range(self.num - 1, -1, -1))  # a stack of free buffer ids
        self.free_desc = self.num
        self.in_flight: dict[int, BufferChain] = {}
        self.next_avail_idx = 0
        self.avail_wrap_counter = 1
        self.last_used_idx = 0
        self.used_wrap_counter = 1
        self.avail_wraps = 0  # times the avail wrap counter flipped (for tests)
        self.used_wraps = 0
        self.num_added = 0  # buffers added since the last kick_prepare (as SplitVirtqueue)
        self._descs_added = 0  # descriptors added since the last kick_prepare (Linux num_added)
        self._pending: dict[int, int] = {}  # head slot -> head flags, added but not yet published
        self._avail_order: deque[int] = deque()  # IN_ORDER: buffer ids in the order made available
        self._batch: deque[BufferChain] = deque()  # IN_ORDER: buffers a batch used descriptor returned
        self.event_flags_shadow = C.RING_EVENT_FLAGS_ENABLE  # the driver area starts zeroed
        self._event_manual = False
        self.broken: Exception | None = None
        self.kicks = 0
        self.interrupts = 0
        self.spurious_interrupts = 0
        self.irq_event = threading.Event()

    @property
    def num_free(self) -> int:
        return self.free_desc

    @property
    def num_in_flight(self) -> int:
        """Buffers made available and not yet taken back (used or detached)."""
        return len(self.in_flight)

    def resize(self, num: int) -> None:
        """Give the queue a fresh ring of ``num`` entries (only while the queue is reset, 2.6.1).
        Buffers still in flight are forgotten: reclaim them with detach_unused_buf first."""
        check_queue_size(num)
        if self._owns_ring:
            free_packed_ring(self.mem, self.addrs)
        self.addrs = alloc_packed_ring(self.mem, num)
        self._owns_ring = True
        self.num = num
        self.ring = PackedRing(self.mem, self.addrs)
        self.reset_state()

    # -- adding buffers (2.8.21) ----------------------------------------------------------------
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
        """Write one buffer into the descriptor ring; its first descriptor's flags are stored by
        ``publish``/``kick`` (2.8.21.1: the list's other descriptors are exposed first).

        ``out`` are device-readable elements (bytes are copied into fresh guest memory), ``in_``
        device-writable ones (an int allocates that many bytes). With ``indirect`` the elements go
        into an indirect table of pvirtq_desc (2.8.7); a packed ring cannot chain direct
        descriptors before an indirect one, so ``direct_before_indirect`` must be 0.
        """
        self._check_broken()
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
        segs = [(s, 0) for s in out_sgs] + [(s, C.VIRTQ_DESC_F_WRITE) for s in in_sgs]

        def refuse(msg: str):
            for a in owned:
                self.mem.free(a)
            raise HarnessError(f"{self.name}: {msg}")

        if not segs:
            refuse("a buffer needs at least one element")
        table = None
        if indirect:
            if direct_before_indirect:
                refuse("a packed ring cannot chain an indirect descriptor after direct ones (2.8.19)")
            table = self.mem.alloc(DESC_SIZE * len(segs), 16)
            owned.append(table)
            t = self.mem.array(table, PVIRTQ_DESC, len(segs))
            for j, (s, fl) in enumerate(segs):
                t[j] = (s.addr, s.len, 0, fl)  # WRITE is the only valid flag in the table (2.8.7)
            ind_flags = C.VIRTQ_DESC_F_INDIRECT | (C.VIRTQ_DESC_F_WRITE if indirect_desc_write_flag else 0)
            ring_segs = [(Sg(table, DESC_SIZE * len(segs)), ind_flags)]
        else:
            ring_segs = segs
        n = len(ring_segs)
        if n > self.free_desc or not self._free_ids:
            refuse(f"{n} descriptors needed, {self.free_desc} free")
        bid = self._free_ids.pop()
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
        chain = BufferChain(bid, token, out_sgs, in_sgs, n, table, owned, slots)
        self.in_flight[bid] = chain
        self._pending[head_slot] = head_flags
        if self.in_order:
            self._avail_order.append(bid)
        self.num_added += 1
        self._descs_added += n
        return chain

    def publish(self) -> None:
        """Make added buffers available: one 16-bit store of each head's flags, in ring order."""
        flags = self.ring.desc_flags
        for slot, f in self._pending.items():
            flags[slot] = f
        self._pending.clear()

    def expose_pending(self, i: int) -> None:
        """Publish only the ``i``-th buffer added since the last publish, ahead of the ones added
        before it. Never done by a normal driver: tests use it to show a device that polls past
        the next descriptor (2.8.12)."""
        slot = list(self._pending)[i]
        self.ring.desc_flags[slot] = self._pending.pop(slot)

    def kick_prepare(self) -> bool:
        """Publish, then read the device event suppression structure (one 32-bit load) to decide
        whether the device wants a notification (Linux virtqueue_kick_prepare_packed)."""
        self.publish()
        virtio_mb()
        new = self.next_avail_idx
        old = new - self._descs_added
        self._descs_added = 0
        self.num_added = 0
        desc, flags = split_event(int(self.ring.device_event[0]))
        if flags != C.RING_EVENT_FLAGS_DESC:
            return flags != C.RING_EVENT_FLAGS_DISABLE
        return need_event(desc, self.avail_wrap_counter, self.num, new, old)

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
        ours = outstanding > 0 and slot not in self._pending  # we wrote this slot in this lap
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
                    expected=f"no used descriptor at slot {slot} ({len(self.in_flight)} buffers in flight, "
                    f"{'its head not yet published' if slot in self._pending else 'none available there'})",
                    observed=f"{_pair(flags)} id {int(ring.desc_id[slot])} at ring slot {slot}",
                    queue=self.name,
                )
            )
        bid = int(ring.desc_id[slot])
        ulen = int(ring.desc_len[slot])
        chain = self.in_flight.get(bid)
        if chain is None:
            self._bad(
                InvalidUsedId(
                    CLAUSE_USED_ID,
                    "used descriptor's buffer id is not a buffer in flight",
                    expected=f"one of ids {sorted(self.in_flight)[:16]} (queue size {self.num})",
                    observed=f"id {bid} at ring slot {slot}",
                    queue=self.name,
                )
            )
        if flags & C.VIRTQ_DESC_F_WRITE:
            if ulen > chain.writable:
                self._bad(
                    InvalidUsedLen(
                        CLAUSE_USED_LEN,
                        "used len exceeds the device-writable bytes of the buffer",
                        expected=f"len <= {chain.writable}",
                        observed=f"len {ulen} for id {bid}",
                        queue=self.name,
                    )
                )
            used_len = ulen
        else:
            # 2.8.4: without WRITE, len is reserved; Linux reads it anyway, so a plausible one is kept.
            used_len = ulen if ulen <= chain.writable else 0
        batch: list[BufferChain] = []
        if self.in_order:
            # 2.8.8: one used descriptor may stand for every buffer made available before it; the
            # skipped ones count as used completely.
            while self._avail_order and self._avail_order[0] != bid:
                earlier = self.in_flight.pop(self._avail_order.popleft())
                earlier.used_len = earlier.writable
                batch.append(earlier)
            if self._avail_order:
                self._avail_order.popleft()
        del self.in_flight[bid]
        skip = chain.ndesc + sum(c.ndesc for c in batch)
        pos = self.last_used_idx + skip
        if pos >= self.num:
            pos -= self.num
            self.used_wrap_counter ^= 1
            self.used_wraps += 1
        self.last_used_idx = pos
        self.free_desc += skip
        for c in batch:
            self._free_ids.append(c.head)
        self._free_ids.append(bid)
        chain.used_len = used_len
        if self.event_flags_shadow == C.RING_EVENT_FLAGS_DESC and not self._event_manual:
            # Ask to be notified for the next used descriptor, as Linux does.
            ring.driver_event_desc[0] = off_wrap(self.last_used_idx, self.used_wrap_counter)
        if batch:
            self._batch.extend(batch[1:])
            self._batch.append(chain)
            return batch[0]
        return chain

    def wait_used(self, count: int = 1, timeout: float = 5.0, awaited: str | None = None) -> list[BufferChain]:
        """Collect ``count`` used buffers, bounded by ``timeout``; DeviceTimeout names what is missing."""
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
                slot = self.last_used_idx
                raise DeviceTimeout(
                    CLAUSE_PROCESS,
                    awaited or f"{count} used buffer(s)",
                    timeout=timeout,
                    queue=self.name,
                    observed=f"{len(got)} used; slot {slot} {_pair(int(self.ring.desc_flags[slot]))}, "
                    f"used wrap counter {self.used_wrap_counter}, {len(self.in_flight)} in flight",
                )
            idle += 1
            if idle < 50:
                time.sleep(0)
            else:
                self.irq_event.wait(min(left, 0.00005 * min(idle - 49, 40)))
                self.irq_event.clear()

    def detach_unused_buf(self) -> BufferChain | None:
        """Reclaim a buffer the device never used (only after reset / queue reset)."""
        if not self.in_flight:
            return None
        bid, chain = next(iter(self.in_flight.items()))
        del self.in_flight[bid]
        if bid in self._avail_order:
            self._avail_order.remove(bid)
        self._free_ids.append(bid)
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

    def interrupt(self) -> None:
        """Used buffer notification from the device (Linux vring_interrupt)."""
        self.interrupts += 1
        self.irq_event.set()
        if not self.more_used_or_batched():
            self.spurious_interrupts += 1
            return
        if self.callback is not None:
            self.callback(self)

    def free_ring(self) -> None:
        if self._owns_ring:
            free_packed_ring(self.mem, self.addrs)
            self._owns_ring = False
