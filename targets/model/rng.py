"""Reference entropy device (VIRTIO 1.4, 5.4): one request queue, filled with random bytes."""

from __future__ import annotations

import os

import numpy as np

from virtio import constants as C
from virtio.buffers import DeviceChain
from virtio.memory import count_nonzero

from .device import Device
from .device_queue import DeviceQueue

_WRITE = np.full(1 << 15, C.VIRTQ_DESC_F_WRITE, dtype=np.uint16)  # flags operand of handle_batch


class RngDevice(Device):
    """Entropy device model (5.4.6): every device-writable byte of a buffer gets random data.

    5.4.6.2 lets a device use less than the whole buffer; this model always fills it, so used len
    is the buffer's writable length. A buffer with no writable part (a driver error, 5.4.6.1) is
    returned with used len 0. No feature bits and no configuration space, so change_config()
    stays unsupported.
    """

    device_id = C.VIRTIO_ID_RNG
    name = "rng"
    num_queues = 1
    queue_names = ("requestq",)
    queue_size_max = 256

    POOL_BYTES = 1 << 16  # entropy drawn from os.urandom ahead of a batch; every byte used once

    def __init__(self, mode: str = "notify"):
        self.bytes_supplied = 0
        self._pool = np.empty(0, dtype=np.uint8)
        self._pool_pos = 0
        super().__init__(mode=mode)

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int:
        n = queue.write_writable(chain, os.urandom(chain.writable_len))
        self.bytes_supplied += n
        return n

    def handle_batch(self, qindex: int, queue: DeviceQueue, addrs, lens, flags):
        """handle() for a run of one-descriptor buffers (DeviceQueue.pop_simple): each writable
        buffer is filled completely with fresh entropy; a readable-only one gets used len 0."""
        n = len(lens)
        width = int(lens[0])
        if count_nonzero(flags & _WRITE[:n]) == n and not count_nonzero(lens[1:] != lens[:-1]):
            used, total = lens, n * width  # the usual case: all writable, all one size
        else:
            used = np.where(flags & C.VIRTQ_DESC_F_WRITE, lens, 0).astype(np.uint32)
            total, width = int(used.sum()), None
        if total:
            pos = self._pool_pos  # _entropy(total), inline
            if total > self.POOL_BYTES // 4:
                data = np.frombuffer(os.urandom(total), dtype=np.uint8)
            else:
                if pos + total > len(self._pool):
                    self._pool, pos = np.frombuffer(os.urandom(self.POOL_BYTES), dtype=np.uint8), 0
                data = self._pool[pos : pos + total]
                self._pool_pos = pos + total
            queue.write_batch(addrs, used, data, width)
            self.bytes_supplied += total
        return used

    def _entropy(self, n: int) -> np.ndarray:
        if n > self.POOL_BYTES // 4:
            return np.frombuffer(os.urandom(n), dtype=np.uint8)
        if self._pool_pos + n > len(self._pool):
            self._pool = np.frombuffer(os.urandom(self.POOL_BYTES), dtype=np.uint8)
            self._pool_pos = 0
        out = self._pool[self._pool_pos : self._pool_pos + n]
        self._pool_pos += n
        return out
