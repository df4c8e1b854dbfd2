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


@dataclass(frozen=True)
class RingAddrs:
    """Guest addresses of a virtqueue's Descriptor Area, Driver Area and Device Area, and its size."""

    num: int
    desc: int
    driver: int
    device: int
