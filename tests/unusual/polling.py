"""Devices that poll their rings and ask the driver not to notify them, as a polling back-end
(DPDK's vhost PMD, a busy-polling SmartNIC) does: split rings carry VIRTQ_USED_F_NO_NOTIFY
(2.7.10: the device MAY set it; the driver then SHOULD NOT notify), or with EVENT_IDX an
avail_event the driver's index will not cross for a whole lap of the index; packed rings the
device event suppression flags RING_EVENT_FLAGS_DISABLE (2.8.14). The device thread polls
(threaded mode), so nothing is lost when the driver honours the hint."""

from __future__ import annotations

from targets.model.blk import BlkDevice
from targets.model.net import NetDevice
from targets.model.rng import RngDevice
from virtio import constants as C

from . import Unusual


class Polls:
    """Mixin over a model: threaded mode, and notifications from the driver suppressed on every
    queue each time the device has looked at it (and when it is created)."""

    def __init__(self, mode: str = "threaded", **kw):
        super().__init__(mode="threaded", **kw)  # a polling device has its own loop, whatever is asked

    def set_status(self, status: int) -> None:
        super().set_status(status)
        self._suppress_all()

    def queue_enable(self, index: int) -> None:
        super().queue_enable(index)
        self._suppress_all()

    def process_queue(self, index: int) -> None:
        super().process_queue(index)
        with self.lock:
            self._suppress(self.queues[index] if 0 <= index < self.num_queues else None)

    def _suppress_all(self) -> None:
        with self.lock:
            for q in self.queues:
                self._suppress(q)

    @staticmethod
    def _suppress(q) -> None:
        if q is None:
            return
        if getattr(q, "layout", "split") == "packed":
            q.ring.device_event_flags[0] = C.RING_EVENT_FLAGS_DISABLE
        elif q.event_idx:
            # 2.7.10: the driver notifies once avail idx passes avail_event; one behind what was
            # taken, it would have to add 65535 buffers first.
            q.ring.avail_event[0] = (q.last_avail_idx - 1) & 0xFFFF
        else:
            q.ring.used_flags[0] = C.VIRTQ_USED_F_NO_NOTIFY


class RngPolls(Polls, RngDevice):
    name = "rng-polls"


class BlkPolls(Polls, BlkDevice):
    name = "blk-polls"


class NetPolls(Polls, NetDevice):
    name = "net-polls"


def rng_polls(mode: str = "threaded"):
    return RngPolls()


def blk_polls(mode: str = "threaded"):
    return BlkPolls()


def net_polls(mode: str = "threaded"):
    return NetPolls()


_M = "python:tests.unusual.polling"
DEVICES = [
    Unusual("rng-polls", f"{_M}:rng_polls", "polls and suppresses driver notifications: NO_NOTIFY / avail_event / packed DISABLE (2.7.10, 2.8.14)"),
    Unusual("blk-polls", f"{_M}:blk_polls", "polls and suppresses driver notifications (2.7.10, 2.8.14)"),
    Unusual("net-polls", f"{_M}:net_polls", "polls all three queues and suppresses driver notifications (2.7.10, 2.8.14)"),
]
