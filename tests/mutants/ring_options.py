"""Mutants of ring options (VIRTIO 1.4, 2.7.9 / 6: IN_ORDER; 2.9: NOTIFICATION_DATA)."""

from __future__ import annotations

from targets.model.rng import RngDevice
from virtio import constants as C


class RngOutOfOrder(RngDevice):
    """Negotiates IN_ORDER yet returns each batch of buffers last-first.

    dev.reserved-features.5 (6.2): with VIRTIO_F_IN_ORDER negotiated the device MUST use buffers
    in the order in which they were made available.
    """

    name = "rng-out-of-order"
    clause = "dev.reserved-features.5"

    def process_queue(self, index: int) -> None:
        if not self.driver_features >> C.VIRTIO_F_IN_ORDER & 1:
            return super().process_queue(index)
        with self.lock:
            q = self.queues[index] if self.running() else None
            if q is None:
                return
            done = []
            while (chain := q.pop()) is not None:
                done.append((chain.head, self.handle(index, q, chain)))
            for head, n in reversed(done):  # BUG: completion order reversed
                q.push(head, n)
            self.signal(index)


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
