"""What the split (2.7) and packed (2.8) driver-side virtqueues share: notifying the device, reading
back used buffers, bounded waits for notifications, and the broken state after a device violation."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .split_queue import BufferChain


class VirtqueueBase:
    """Mixin for SplitVirtqueue and PackedVirtqueue; expects ``mem``, ``broken``, ``kicks``,
    ``interrupts``, ``irq_event``, ``notify_fn`` and ``kick_prepare()`` on the subclass."""

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
