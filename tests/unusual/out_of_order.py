"""Devices that complete buffers out of the order they were made available: 2.7.8 (split: "the
device MAY use buffers in any order") and 2.8.12 (packed: used descriptors in completion order)
allow it whenever VIRTIO_F_IN_ORDER is not negotiated. Each pass takes every available buffer,
then uses them last first, as a device running requests concurrently whose later ones finish first."""

from __future__ import annotations

from targets.model.blk import BlkDevice
from targets.model.rng import RngDevice
from virtio import constants as C
from virtio.buffers import ChainError

from . import Unusual


class LastFirst:
    """Mixin over a model: every pass uses the buffers it took in reverse order (IN_ORDER not
    negotiated); with IN_ORDER the model's own in-order processing runs."""

    def process_queue(self, index: int) -> None:
        with self.lock:
            if self.driver_features >> C.VIRTIO_F_IN_ORDER & 1:
                return super().process_queue(index)
            q = self.queues[index] if self.running() and 0 <= index < self.num_queues else None
            if q is None:
                return
            done = []
            try:
                while (chain := q.pop()) is not None:
                    n = self.handle(index, q, chain)  # the model's own request handling
                    if n is None:
                        self.held.setdefault(index, {})[chain.head] = chain
                    else:
                        done.append((chain.head, n))
            except ChainError:
                self.needs_reset()  # a malformed chain: DEVICE_NEEDS_RESET, as the model does (2.1.2)
                return
            for head, n in reversed(done):
                q.push(head, n)
            self.after_process(index)
            self.signal(index)


class RngLastFirst(LastFirst, RngDevice):
    name = "rng-completes-out-of-order"


class BlkLastFirst(LastFirst, BlkDevice):
    name = "blk-completes-out-of-order"


class RngLastFirstNoInOrder(LastFirst, RngDevice):
    """The same, and VIRTIO_F_IN_ORDER is not even offered."""

    name = "rng-out-of-order-no-in-order-feature"
    base_features = RngDevice.base_features & ~(1 << C.VIRTIO_F_IN_ORDER)


def rng_last_first(mode: str = "notify"):
    return RngLastFirst(mode=mode)


def blk_last_first(mode: str = "notify"):
    return BlkLastFirst(mode=mode)


def rng_last_first_no_in_order(mode: str = "notify"):
    return RngLastFirstNoInOrder(mode=mode)


_M = "python:tests.unusual.out_of_order"
DEVICES = [
    Unusual("rng-completes-out-of-order", f"{_M}:rng_last_first", "uses the buffers of each pass last first without IN_ORDER (2.7.8, 2.8.12), split and packed"),
    Unusual("blk-completes-out-of-order", f"{_M}:blk_last_first", "completes the requests of each pass last first without IN_ORDER (2.7.8, 2.8.12, 5.2.6), split and packed"),
    Unusual("rng-out-of-order-no-in-order-feature", f"{_M}:rng_last_first_no_in_order", "does not offer IN_ORDER and uses each pass's buffers last first (2.7.8)"),
]
