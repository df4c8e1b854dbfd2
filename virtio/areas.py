"""Where a virtqueue lives in guest memory (VIRTIO 1.4, 2.6): its three parts, named as the spec
names them for both layouts, so a transport programs a ring without knowing its layout.

========  ==========================  =================================
part      split (2.7)                 packed (2.8)
========  ==========================  =================================
desc      descriptor table            descriptor ring
driver    available ring              driver event suppression
device    used ring                   device event suppression
========  ==========================  =================================

PCI's queue_desc / queue_driver / queue_device (4.1.4.3), MMIO's QueueDesc / QueueDriver /
QueueDevice and vhost-user's VHOST_USER_SET_VRING_ADDR (descriptor, available, used) all carry these
three addresses in this order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RingAddrs:
    """Guest addresses of a virtqueue's Descriptor Area, Driver Area and Device Area, and its size."""

    num: int
    desc: int
    driver: int
    device: int


class RingViews:
    """Typed views over a ring's Descriptor Area, the part both layouts share: ``desc`` (the
    layout's descriptor structure, ``desc_dtype``), and ``desc_addr`` / ``desc_word``, each
    descriptor's addr and its other 8 bytes as one le64 (so a descriptor is read or written with
    two aligned 8-byte accesses). The layouts' view classes add their driver and device areas."""

    desc_dtype: np.dtype

    def __init__(self, mem, addrs: RingAddrs):
        num = addrs.num
        self.num = num
        self.addrs = addrs
        self.desc = mem.array(addrs.desc, self.desc_dtype, num)
        d64 = mem.array(addrs.desc, np.uint64, 2 * num)
        self.desc_addr = d64[0::2]  # le64 addr
        self.desc_word = d64[1::2]  # le32 len | the layout's two le16 fields (WORD_*_SHIFT)
