"""Entropy mutants (VIRTIO 1.4, 5.4.6.2): each breaks "one or more random bytes per buffer"."""

from __future__ import annotations

import os

from targets.model.device_queue import DeviceQueue
from targets.model.rng import RngDevice
from virtio.buffers import DeviceChain


class RngRepeatsBlock(RngDevice):
    """Serves the same 64 random bytes over and over: a stream with a period of 64 bytes.

    dev.rng.device-operation.1 (5.4.6.2): the device MUST place random bytes into the buffer; a
    short cycle is no randomness.
    """

    name = "rng-repeats-block"
    clause = "dev.rng.device-operation.1"
    both_layouts = True
    BLOCK = 64

    def __init__(self, mode: str = "notify"):
        self.block = os.urandom(self.BLOCK)
        self.offset = 0
        super().__init__(mode=mode)

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int:
        n = chain.writable_len
        reps = (self.offset + n) // self.BLOCK + 1
        data = (self.block * reps)[self.offset : self.offset + n]  # BUG: the same block again
        self.offset = (self.offset + n) % self.BLOCK
        return queue.write_writable(chain, data)


class RngZeroBytes(RngDevice):
    """Fills every buffer with zero bytes.

    dev.rng.device-operation.1 (5.4.6.2): the device MUST place random bytes into the buffer.
    """

    name = "rng-zero-bytes"
    clause = "dev.rng.device-operation.1"
    both_layouts = True

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int:
        return queue.write_writable(chain, bytes(chain.writable_len))  # BUG: constant

