"""What the split (2.7) and packed (2.8) driver-side virtqueues share: notifying the device, reading
back used buffers, bounded waits for notifications, and the broken state after a device violation."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import DeviceTimeout, HarnessError, RingTooSmall, WroteOutsideBuffer, WroteReadableBuffer
from .memory import CANARY, GUARD, GUARD_END, GUARD_START, changed_bytes

CLAUSE_BUFFERS_USED = "def.basic.buffers-are-used"  # 2.6: what is made available comes back, in bounded time

if TYPE_CHECKING:
    from .buffers import BufferChain, Sg, SgArray

_U32_MAX = 0xFFFF_FFFF

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


class VirtqueueBase:
    """Mixin for SplitVirtqueue and PackedVirtqueue; expects ``mem``, ``broken``, ``kicks``,
    ``interrupts``, ``irq_event``, ``notify_fn``, ``kick_prepare()``, ``get_buf()``,
    ``get_used_batch()``, ``used_state()``, ``_nflight`` and ``_chains`` (buffers from ``add``) on the subclass."""

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
        if self.layout == "split":
            area, size, tail = self.addrs.device, 6 + 8 * self.num, 4
        else:
            area, size, tail = self.addrs.desc, 16 * self.num, 0
        own = mem.guards_of(area, size).tolist()  # the device area's own canaries
        first = mem.first_damage(guard)
        hit = any(mem.canary_damage(g) is not None for g in own)
        if not hit and first is not None and self.layout == "split":
            k = first - area - tail  # split avail_event sits at used + 4 + 8 * size
            hit = k > 8 * self.num and k % 8 in (0, 1) and (k // 8) & (k // 8 - 1) == 0
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

    @property
    def num_in_flight(self) -> int:
        """Buffers made available and not yet taken back (used or detached)."""
        return self._nflight

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
        from .buffers import Sg

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
        from .buffers import Sg, SgArray

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
