"""Devices that send a used buffer notification after every buffer they use, not once per pass:
2.7.7.2 / 2.8.14 leave the device free to notify whenever the driver has not suppressed
notifications (no NO_INTERRUPT, no DISABLE, or used_event / the event descriptor reached), and
every such decision here still honours the suppression in force."""

from __future__ import annotations

from targets.model.blk import BlkDevice
from targets.model.rng import RngDevice
from virtio import constants as C
from virtio.buffers import ChainError

from . import Unusual


class EveryBuffer:
    """Mixin over a model: each buffer is used and the notification decided on its own."""

    def process_queue(self, index: int) -> None:
        with self.lock:
            if self.driver_features >> C.VIRTIO_F_IN_ORDER & 1:
                return super().process_queue(index)  # the model's in-order batching
            q = self.queues[index] if self.running() and 0 <= index < self.num_queues else None
            if q is None:
                return
            try:
                while (chain := q.pop()) is not None:
                    n = self.handle(index, q, chain)
                    if n is None:
                        self.held.setdefault(index, {})[chain.head] = chain
                        continue
                    q.push(chain.head, n)
                    self.signal(index)
            except ChainError:
                self.needs_reset()  # a malformed chain: DEVICE_NEEDS_RESET, as the model does (2.1.2)
                return
            self.after_process(index)
            self.signal(index)


class RngEveryBuffer(EveryBuffer, RngDevice):
    name = "rng-notifies-every-buffer"


class BlkEveryBuffer(EveryBuffer, BlkDevice):
    name = "blk-notifies-every-buffer"


def rng_every_buffer(mode: str = "notify"):
    return RngEveryBuffer(mode=mode)


def blk_every_buffer(mode: str = "notify"):
    return BlkEveryBuffer(mode=mode)


_M = "python:tests.unusual.notifications"
DEVICES = [
    Unusual("rng-notifies-every-buffer", f"{_M}:rng_every_buffer", "a used buffer notification per buffer, where not suppressed (2.7.7.2, 2.8.14)"),
    Unusual("blk-notifies-every-buffer", f"{_M}:blk_every_buffer", "a used buffer notification per request, where not suppressed (2.7.7.2, 2.8.14)"),
]
