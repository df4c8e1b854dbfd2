"""Devices that batch VIRTIO_F_IN_ORDER exactly as 2.7.9 (split) and 2.8.8 (packed) allow: one
used entry for a batch of buffers, with the id and len of the batch's last buffer, where the
batch's first buffer was made available (split: used idx moved by the batch's size; packed: the
used descriptor over the batch's first available descriptor), every buffer before the last used
completely. Batch sizes vary from batch to batch (1..n at random, or everything at once, or
one entry per buffer); the suites run them on both layouts and must find them CONFORMANT."""

from __future__ import annotations

import random

from targets.model.blk import BlkDevice
from targets.model.rng import RngDevice

from . import Unusual


class _RandomBatches:
    """Each IN_ORDER batch holds 1..``BATCH_MAX`` buffers, drawn anew for every batch (a fixed
    seed: a failure repeats)."""

    BATCH_MAX = 7

    def __init__(self, mode: str = "notify"):
        self._rnd = random.Random(2_7_9)
        super().__init__(mode=mode)

    def in_order_batch_size(self, index: int) -> int:
        return self._rnd.randint(1, self.BATCH_MAX)


class RngInOrderRandomBatches(_RandomBatches, RngDevice):
    name = "rng-in-order-random-batches"


class BlkInOrderRandomBatches(_RandomBatches, BlkDevice):
    name = "blk-in-order-random-batches"


class RngInOrderAllAtOnce(RngDevice):
    """Everything taken in one pass is one batch (the models' default, named for the registry)."""

    name = "rng-in-order-all-at-once"
    in_order_batch_max = 0


class BlkInOrderOnePerBuffer(BlkDevice):
    """IN_ORDER negotiated, yet one used entry per buffer, as 2.7.9 also allows."""

    name = "blk-in-order-one-per-buffer"
    in_order_batch_max = 1


def rng_random_batches(mode: str = "notify"):
    return RngInOrderRandomBatches(mode=mode)


def blk_random_batches(mode: str = "notify"):
    return BlkInOrderRandomBatches(mode=mode)


def rng_all_at_once(mode: str = "notify"):
    return RngInOrderAllAtOnce(mode=mode)


def blk_one_per_buffer(mode: str = "notify"):
    return BlkInOrderOnePerBuffer(mode=mode)


_T = "python:tests.unusual.in_order:"
DEVICES = [
    Unusual("rng-in-order-random-batches", _T + "rng_random_batches",
            "IN_ORDER batches of 1..7 buffers at random, one used entry each (2.7.9, 2.8.8)"),
    Unusual("rng-in-order-random-batches-threaded", _T + "rng_random_batches,mode=threaded",
            "the same, processed by a device thread concurrently with the driver (2.7.9, 2.8.8)"),
    Unusual("blk-in-order-random-batches", _T + "blk_random_batches",
            "IN_ORDER batches of 1..7 requests at random, one used entry each (2.7.9, 2.8.8)"),
    Unusual("rng-in-order-all-at-once", _T + "rng_all_at_once",
            "every buffer taken in one pass answered by a single used entry (2.7.9, 2.8.8)"),
    Unusual("blk-in-order-one-per-buffer", _T + "blk_one_per_buffer",
            "IN_ORDER negotiated, one used entry per buffer (2.7.9: batching is a may)"),
]
