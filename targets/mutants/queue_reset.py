"""Mutants of per-queue reset (VIRTIO 1.4, 2.6.1, VIRTIO_F_RING_RESET), on either ring layout: they
offer VIRTIO_F_RING_PACKED (``both_layouts``), so the reset suite catches them on split and packed
rings alike."""

from __future__ import annotations

import dataclasses

from targets.model.rng import RngDevice
from virtio.queue_state import QueueState


def kept_state(q, old: QueueState) -> QueueState:
    """``old``'s position (indexes, wrap counters) carried onto queue ``q``, as a device that
    forgets to reset it would (within ``q``'s ring: a packed slot past its end wraps)."""
    if q.layout == "packed":
        old = dataclasses.replace(old, next_avail=old.next_avail % q.num, next_used=old.next_used % q.num)
    return dataclasses.replace(old, size=q.num, addrs=q.addrs)


class RngQueueResetIgnored(RngDevice):
    """Acknowledges a queue reset but keeps serving the old ring.

    dev.basic.virtqueues.virtqueue-reset.virtqueue-reset.1 (2.6.1.1.1): after a queue reset the
    device MUST NOT execute requests from that queue or notify the driver for it.
    """

    name = "rng-queue-reset-ignored"
    both_layouts = True
    clause = "dev.basic.virtqueues.virtqueue-reset.virtqueue-reset.1"

    def queue_reset(self, index: int) -> None:
        return  # BUG: nothing stops, nothing is forgotten


class RngQueueResetKeepsIndexes(RngDevice):
    """Re-enables a reset queue but carries the old available/used positions into the new ring.

    dev.basic.virtqueues.virtqueue-reset.virtqueue-reset.2 (2.6.1.1.1): a queue reset MUST put the
    queue's state, available and used state included, back to its defaults.
    """

    name = "rng-queue-reset-keeps-indexes"
    both_layouts = True
    clause = "dev.basic.virtqueues.virtqueue-reset.virtqueue-reset.2"

    def queue_reset(self, index: int) -> None:
        old = self.queues[index]
        self._kept = old.state() if old is not None else None
        super().queue_reset(index)

    def queue_enable(self, index: int) -> None:
        super().queue_enable(index)
        q, kept = self.queues[index], getattr(self, "_kept", None)
        if q is not None and kept is not None:
            q.set_state(kept_state(q, kept))  # BUG: state survives the reset
            self._kept = None


class RngQueueResizeIgnored(RngDevice):
    """Keeps using the queue size it had before a queue reset, whatever size the driver set.

    dev.basic.virtqueues.virtqueue-reset.virtqueue-re-enable.1 (2.6.1.2.1): on re-enable the
    device MUST observe the queue configuration the driver changed, such as the queue size.
    """

    name = "rng-queue-resize-ignored"
    both_layouts = True
    clause = "dev.basic.virtqueues.virtqueue-reset.virtqueue-re-enable.1"

    def queue_reset(self, index: int) -> None:
        self._old_num = self.queues_cfg[index].size
        super().queue_reset(index)

    def queue_set(self, index: int, addrs) -> None:
        old = getattr(self, "_old_num", None)
        if old and old != addrs.num:
            addrs = dataclasses.replace(addrs, num=old)  # BUG: new size ignored (either layout)
        super().queue_set(index, addrs)
