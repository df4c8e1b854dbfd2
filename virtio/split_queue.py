"""Driver side of a split virtqueue (VIRTIO 1.4, 2.7), after Linux's virtio_ring.c.

The driver owns the descriptor table and the driver area and only reads the device area. Every value
read from the device area (used idx, used elem id and len) is validated; a bad one raises a
DeviceViolation naming the clause and marks the queue broken, as Linux's BAD_RING does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from . import constants as C
from .errors import DeviceTimeout, HarnessError, InvalidUsedId, InvalidUsedIdx, InvalidUsedLen
from .memory import GuestMemory
from .split import VIRTQ_DESC, SplitRing, SplitRingAddrs, alloc_split_ring, free_split_ring, vring_need_event

# Clause ids this module reports (see virtio/clauses.toml).
CLAUSE_USED_LEN = "dev.basic.virtqueues.the-virtqueue-used-ring.2"
CLAUSE_USED_ID = "def.split.used-elem-id"
CLAUSE_USED_IDX = "def.split.used-idx"
CLAUSE_PROCESS = "def.basic.buffers-are-used"

# Any locked instruction is a full fence on x86 (and a lock is a full barrier elsewhere): it orders
# the avail idx store before the loads that decide whether to kick (see Linux virtio_mb()).
_FENCE = threading.Lock()


def virtio_mb() -> None:
    _FENCE.acquire()
    _FENCE.release()


@dataclass(frozen=True)
class Sg:
    """One scatter-gather element: a guest address and a length."""

    addr: int
    len: int


@dataclass
class BufferChain:
    """A buffer made available to the device: what the driver put in, and what came back."""

    head: int
    token: object
    out_sgs: list[Sg]
    in_sgs: list[Sg]
    ndesc: int
    indirect: int | None = None  # guest address of the indirect table, if any
    owned: list[int] = field(default_factory=list)  # allocations freed on completion
    ids: list[int] = field(default_factory=list)  # descriptor ids, freed on completion
    used_len: int | None = None

    @property
    def writable(self) -> int:
        return sum(s.len for s in self.in_sgs)


class SplitVirtqueue:
    """A split virtqueue, driver side.

    ``notify`` is the transport's "kick" (driver -> device notification); ``interrupt()`` is what the
    transport calls on a used buffer notification (device -> driver).
    """

    layout = "split"

    def __init__(
        self,
        mem: GuestMemory,
        index: int,
        num: int,
        notify: Callable[["SplitVirtqueue"], None],
        *,
        features: int = 0,
        callback: Callable[["SplitVirtqueue"], None] | None = None,
        name: str = "",
        addrs: SplitRingAddrs | None = None,
    ):
        self.mem = mem
        self.index = index
        self.num = num
        self.name = name or f"vq{index}"
        self.notify_fn = notify
        self.callback = callback
        self.event_idx = bool(features >> C.VIRTIO_F_EVENT_IDX & 1)
        self.indirect_ok = bool(features >> C.VIRTIO_F_INDIRECT_DESC & 1)
        # 2.7.9: with IN_ORDER the driver takes descriptors in table order and the device may
        # answer a batch of buffers with one used elem (the last buffer's id).
        self.in_order = bool(features >> C.VIRTIO_F_IN_ORDER & 1)
        self.notification_data = bool(features >> C.VIRTIO_F_NOTIFICATION_DATA & 1)
        self.addrs = addrs or alloc_split_ring(mem, num)
        self._owns_ring = addrs is None
        self.ring = SplitRing(mem, self.addrs)
        self.reset_state()

    # -- state ---------------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Forget everything in flight (after a device or queue reset); the ring memory is zeroed."""
        self.mem.fill(self.addrs.desc, 16 * self.num, 0)
        self.mem.fill(self.addrs.avail, 2 * (3 + self.num), 0)
        self.mem.fill(self.addrs.used, 4 + 8 * self.num + 2, 0)
        self._free_ids = list(range(self.num - 1, -1, -1))  # a stack of free descriptor ids
        self._next_desc = 0  # IN_ORDER: next descriptor id in table order
        self._avail_order: deque[int] = deque()  # IN_ORDER: heads in the order made available
        self._batch: deque[BufferChain] = deque()  # IN_ORDER: buffers a batch used elem returned
        self.in_flight: dict[int, BufferChain] = {}
        self.avail_idx_shadow = 0
        self.last_used_idx = 0
        self.num_added = 0
        self.avail_flags_shadow = 0
        self.broken: Exception | None = None
        self.kicks = 0
        self.interrupts = 0
        self.spurious_interrupts = 0
        self.irq_event = threading.Event()

    @property
    def num_free(self) -> int:
        return len(self._free_ids)


    def _check_broken(self) -> None:
        if self.broken is not None:
            raise self.broken

    # -- adding buffers (2.7.13) -----------------------------------------------------------------
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
        """Make one buffer available (without publishing idx until ``publish``/``kick``).

        ``out`` are device-readable elements (bytes are copied into fresh guest memory), ``in_``
        device-writable ones (an int allocates that many bytes). Readable elements precede
        writable ones (2.7.4.2). With ``indirect`` the elements go into an indirect table
        (2.7.5.3); ``direct_before_indirect`` keeps that many leading elements as normal chained
        descriptors before the indirect one (2.7.5.3.2 allows that layout).
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
        if not segs:
            raise HarnessError("a buffer needs at least one element")
        table = None
        if indirect:
            if not 0 <= direct_before_indirect < len(segs):
                raise HarnessError("direct_before_indirect must leave at least one element for the table")
            direct = segs[:direct_before_indirect]
            rest = segs[direct_before_indirect:]
            table = self.mem.alloc(16 * len(rest), 16)
            owned.append(table)
            t = self.mem.array(table, VIRTQ_DESC, len(rest))
            for j, (s, fl) in enumerate(rest):
                last = j == len(rest) - 1
                t[j] = (s.addr, s.len, fl | (0 if last else C.VIRTQ_DESC_F_NEXT), 0 if last else j + 1)
            ind_flags = C.VIRTQ_DESC_F_INDIRECT | (C.VIRTQ_DESC_F_WRITE if indirect_desc_write_flag else 0)
            ring_segs = direct + [(Sg(table, 16 * len(rest)), ind_flags)]
        else:
            ring_segs = segs
        if len(ring_segs) > len(self._free_ids):
            for a in owned:
                self.mem.free(a)
            raise HarnessError(f"{self.name}: {len(ring_segs)} descriptors needed, {len(self._free_ids)} free")
        if self.in_order:
            ids = [(self._next_desc + j) % self.num for j in range(len(ring_segs))]
            self._next_desc = (self._next_desc + len(ring_segs)) % self.num
            taken = set(ids)
            self._free_ids = [i for i in self._free_ids if i not in taken]
        else:
            ids = [self._free_ids.pop() for _ in ring_segs]
        desc = self.ring.desc
        for j, (s, fl) in enumerate(ring_segs):
            last = j == len(ring_segs) - 1
            desc[ids[j]] = (s.addr, s.len, fl | (0 if last else C.VIRTQ_DESC_F_NEXT), 0 if last else ids[j + 1])
        head = ids[0]
        chain = BufferChain(head, token, out_sgs, in_sgs, len(ids), table, owned, ids)
        self.in_flight[head] = chain
        if self.in_order:
            self._avail_order.append(head)
        self.ring.avail_ring[self.avail_idx_shadow % self.num] = head
        self.avail_idx_shadow = (self.avail_idx_shadow + 1) & 0xFFFF
        self.num_added += 1
        return chain

    def publish(self) -> None:
        """Make added buffers visible: one 16-bit store of avail idx (2.7.13.3)."""
        # Ring entries are stored before idx in program order; x86 keeps stores in order.
        self.ring.avail_idx[0] = self.avail_idx_shadow

    def kick_prepare(self) -> bool:
        """Publish and decide whether the device wants a notification (2.7.10)."""
        self.publish()
        virtio_mb()
        new = self.avail_idx_shadow
        old = (new - self.num_added) & 0xFFFF
        self.num_added = 0
        if self.event_idx:
            return vring_need_event(int(self.ring.avail_event[0]), new, old)
        return not (int(self.ring.used_flags[0]) & C.VIRTQ_USED_F_NO_NOTIFY)

    def notify(self) -> None:
        self.kicks += 1
        self.notify_fn(self)

    def kick(self) -> bool:
        """kick_prepare + notify; returns whether a notification was sent."""
        if self.kick_prepare():
            self.notify()
            return True
        return False

    # -- used buffers (2.7.14) -------------------------------------------------------------------
    def more_used(self) -> bool:
        return bool(self._batch) or self.last_used_idx != int(self.ring.used_idx[0])

    def get_buf(self) -> BufferChain | None:
        """Take the next used buffer, validated, or None if the device has returned nothing new."""
        self._check_broken()
        if self._batch:
            return self._batch.popleft()
        used_idx = int(self.ring.used_idx[0])
        if used_idx == self.last_used_idx:
            return None
        pending = (used_idx - self.last_used_idx) & 0xFFFF
        if pending > len(self.in_flight):
            self._bad(
                InvalidUsedIdx(
                    CLAUSE_USED_IDX,
                    "used idx advanced past the buffers in flight",
                    expected=f"at most {len(self.in_flight)} new used elems (last_used_idx {self.last_used_idx})",
                    observed=f"used idx {used_idx} ({pending} new)",
                    queue=self.name,
                )
            )
        slot = self.last_used_idx % self.num
        elem = self.ring.used_ring[slot]
        uid, ulen = int(elem[0]), int(elem[1])
        chain = self.in_flight.get(uid)
        if chain is None:
            why = "out of range" if uid >= self.num else "not the head of a buffer in flight"
            self._bad(
                InvalidUsedId(
                    CLAUSE_USED_ID,
                    f"used elem id {why}",
                    expected=f"one of heads {sorted(self.in_flight)[:16]} (queue size {self.num})",
                    observed=f"id {uid} at used ring slot {slot}",
                    queue=self.name,
                )
            )
        if ulen > chain.writable:
            self._bad(
                InvalidUsedLen(
                    CLAUSE_USED_LEN,
                    "used len exceeds the device-writable bytes of the buffer",
                    expected=f"len <= {chain.writable}",
                    observed=f"len {ulen} for id {uid}",
                    queue=self.name,
                )
            )
        if self.in_order:
            # Every buffer made available before this one is used too (2.7.9); their len is
            # not reported, so it reads as 0.
            while self._avail_order and self._avail_order[0] != uid:
                earlier = self.in_flight.pop(self._avail_order.popleft())
                earlier.used_len = 0
                self._free_ids.extend(reversed(earlier.ids))
                self._batch.append(earlier)
            if self._avail_order:
                self._avail_order.popleft()
        del self.in_flight[uid]
        self.last_used_idx = (self.last_used_idx + 1) & 0xFFFF
        self._free_ids.extend(reversed(chain.ids))
        chain.used_len = ulen
        if self.event_idx and not (self.avail_flags_shadow & C.VIRTQ_AVAIL_F_NO_INTERRUPT):
            # Ask to be interrupted for the next used entry, as Linux does (2.7.7).
            self.ring.used_event[0] = self.last_used_idx
        if self._batch:
            self._batch.append(chain)
            return self._batch.popleft()
        return chain

    def next_notification(self) -> int:
        """VIRTIO_F_NOTIFICATION_DATA (2.9): next_off | next_wrap << 15 -- for a split ring, the
        avail idx the driver will write next, whose bit 15 is the wrap bit."""
        return self.avail_idx_shadow & 0xFFFF

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

    def _bad(self, exc: Exception) -> None:
        self.broken = exc
        raise exc

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
                raise DeviceTimeout(
                    CLAUSE_PROCESS,
                    awaited or f"{count} used buffer(s)",
                    timeout=timeout,
                    queue=self.name,
                    observed=f"{len(got)} used; used idx {int(self.ring.used_idx[0])}, "
                    f"last_used_idx {self.last_used_idx}, {len(self.in_flight)} in flight",
                )
            # A concurrent device usually answers within microseconds: yield first, then sleep
            # in growing steps (woken early by a used buffer notification).
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
        head, chain = next(iter(self.in_flight.items()))
        del self.in_flight[head]
        if head in self._avail_order:
            self._avail_order.remove(head)
        self._free_ids.extend(reversed(chain.ids))
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

    def interrupt(self) -> None:
        """Used buffer notification from the device (Linux vring_interrupt)."""
        self.interrupts += 1
        self.irq_event.set()
        if not self.more_used():
            self.spurious_interrupts += 1
            return
        if self.callback is not None:
            self.callback(self)

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

    def resize(self, num: int) -> None:
        """Give the queue a fresh ring of ``num`` entries (only while the queue is reset, 2.6.1).

        Buffers still in flight are forgotten: reclaim them with detach_unused_buf first.
        """
        if self._owns_ring:
            free_split_ring(self.mem, self.addrs)
        self.addrs = alloc_split_ring(self.mem, num)
        self._owns_ring = True
        self.num = num
        self.ring = SplitRing(self.mem, self.addrs)
        self.reset_state()

    def free_ring(self) -> None:
        if self._owns_ring:
            free_split_ring(self.mem, self.addrs)
            self._owns_ring = False
