"""Reference entropy device (VIRTIO 1.4, 5.4): one request queue, filled with random bytes."""

from __future__ import annotations

import os

from virtio import constants as C

from .device import Device
from .split_ring import DeviceChain, DeviceSplitQueue


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

    def __init__(self, mode: str = "notify"):
        self.bytes_supplied = 0
        super().__init__(mode=mode)

    def handle(self, qindex: int, queue: DeviceSplitQueue, chain: DeviceChain) -> int:
        n = queue.write_writable(chain, os.urandom(chain.writable_len))
        self.bytes_supplied += n
        return n
