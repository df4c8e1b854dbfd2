"""Mutants of ring options (VIRTIO 1.4, 2.7.9 / 6: IN_ORDER; 2.9: NOTIFICATION_DATA)."""

from __future__ import annotations

import numpy as np

from targets.model.rng import RngDevice
from targets.model.split_ring import DeviceSplitQueue
from virtio import constants as C


class RngOutOfOrder(RngDevice):
    """Negotiates IN_ORDER yet returns the newest buffer of each pass first, on its own.

    dev.reserved-features.5 (6.2): with VIRTIO_F_IN_ORDER negotiated the device MUST use buffers
    in the order in which they were made available. One used elem naming the newest of k buffers
    with used idx moved by 1 is no in-order batch (2.7.9: that would move it by k), so the driver
    sees the newest buffer used before the older ones. (Reversing a whole pass with used idx
    moved by k at once would not show: the first elem then reads as a 2.7.9 batch of all k.)
    """

    name = "rng-out-of-order"
    clause = "dev.reserved-features.5"

    def on_reset(self) -> None:
        super().on_reset()
        self.older: dict[int, list] = {}

    def on_queue_reset(self, index: int) -> None:
        super().on_queue_reset(index)
        self.older.pop(index, None)

    def process_queue(self, index: int) -> None:
        if not self.driver_features >> C.VIRTIO_F_IN_ORDER & 1:
            return super().process_queue(index)
        with self.lock:
            q = self.queues[index] if self.running() else None
            if q is None:
                return
            for head, n in self.older.pop(index, []):  # the older buffers of the previous pass
                q.push(head, n)
            done = []
            while (chain := q.pop()) is not None:
                done.append((chain.head, self.handle(index, q, chain)))
            if done:
                q.push(*done[-1])  # BUG: the newest first, alone
                self.older[index] = done[:-1]
            self.signal(index)


class _IdxCountsEntries(DeviceSplitQueue):
    def push_in_order_run(self, heads, ends, lens) -> None:
        starts = np.concatenate(([0], ends[:-1] + 1))
        slots = (self.used_idx + starts) % self.num
        self._used_id[slots] = heads[ends]
        self._used_len[slots] = lens
        self.used_idx = (self.used_idx + len(ends)) & 0xFFFF  # BUG: one per used elem, not per buffer
        self._used_idx_h[0] = self.used_idx


class RngInOrderBatchCountsOne(RngDevice):
    """Answers an IN_ORDER batch with one used elem, as 2.7.9 allows, but moves used idx by one.

    dev.reserved-features.5 (6.2 with 2.7.9): an elem naming the last of k buffers stands for a
    batch of k, and the device "increments the used idx by the size of the batch"; by one, the
    ring says one buffer was used where the elem says k (and the next batch lands mid-batch).
    """

    name = "rng-in-order-batch-counts-one"
    clause = "dev.reserved-features.5"

    split_queue_class = _IdxCountsEntries


class RngNotificationDataOffByOne(RngDevice):
    """Trusts notification data but stops one buffer short of next_off.

    def.notify.notification-data (2.9): the notification says where the driver's next buffer
    goes; every buffer before it is available and must be served.
    """

    name = "rng-notification-data-off-by-one"
    clause = "def.notify.notification-data"

    def notify(self, index: int, data: int | None = None) -> None:
        if data is None:
            return super().notify(index)
        with self.lock:
            q = self.queues[index] if self.running() else None
            if q is None:
                return
            stop = ((data >> 16) - 1) & 0xFFFF  # BUG: one short of next_off
            while q.last_avail_idx != stop and (chain := q.pop()) is not None:
                q.push(chain.head, self.handle(index, q, chain))
            self.signal(index)
