"""What the split (2.7) and packed (2.8) driver-side virtqueues share: notifying the device, reading
back used buffers, bounded waits for notifications, and the broken state after a device violation."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import DeviceTimeout, HarnessError

CLAUSE_BUFFERS_USED = "def.basic.buffers-are-used"  # 2.6: what is made available comes back, in bounded time

if TYPE_CHECKING:
    from .split_queue import BufferChain, Sg, SgArray

_U32_MAX = 0xFFFF_FFFF


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
        from .split_queue import Sg

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
            raise HarnessError(f"{self.name}: {need} descriptors needed, {free_desc} free")
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
        from .split_queue import Sg, SgArray

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
