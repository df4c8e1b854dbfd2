"""The state of one virtqueue as the device sees it, in one plain value (after rust-vmm
virtio-queue's ``QueueState``): what a device needs to stop a queue and start it again elsewhere,
e.g. for vhost-user's GET_VRING_BASE / SET_VRING_BASE or a queue reset (2.6.1).

Fields, by the spec's words: ``size`` is the queue size (2.6); ``addrs`` the Descriptor, Driver
and Device Areas (2.6, virtio/areas.py); ``next_avail`` / ``next_used`` the device's position in
the ring -- split (2.7): the free-running 16-bit counters of the next available ring entry it will
take and of the used idx it publishes; packed (2.8): the ring slot (0..size-1) of the next
descriptor it will read and of the next used descriptor it will write, each with its wrap counter
(2.8.1: both start at 1; a split ring has none, so both stay True). ``event_idx``: whether
VIRTIO_F_EVENT_IDX was negotiated (2.7.10, 2.8.10).
"""

from __future__ import annotations

from dataclasses import dataclass

from .areas import RingAddrs


@dataclass
class QueueState:
    size: int  # queue size (num)
    ready: bool = False
    addrs: RingAddrs | None = None
    next_avail: int = 0  # device's next avail index (split: 16-bit counter; packed: slot 0..size-1)
    next_used: int = 0  # device's next used index / slot
    avail_wrap_counter: bool = True  # packed only (2.8.1); True for split
    used_wrap_counter: bool = True
    event_idx: bool = False  # VIRTIO_F_EVENT_IDX negotiated
