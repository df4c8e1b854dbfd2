"""VIRTIO 1.4, 2.9: VIRTIO_F_NOTIFICATION_DATA -- driver notifications carry the queue number and
where the driver's next buffer goes (next offset and wrap)."""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio.checks import blame

pytestmark = pytest.mark.usefixtures("target_spec", "ring_layout")

CLAUSE = "def.notify.notification-data"


@pytest.mark.clause(CLAUSE)
@pytest.mark.parametrize("per_kick", [1, 5])
def test_buffers_announced_by_notification_data_are_served(session, per_kick):
    session.control_then_variant(C.VIRTIO_F_NOTIFICATION_DATA, CLAUSE, f"{per_kick} buffer(s) per notification",
                                 lambda work: [_exchanges(work, per_kick) for _ in range(4)])


@pytest.mark.heavy
@pytest.mark.clause(CLAUSE, "def.split.used-idx")
def test_notification_data_across_index_wrap(session):
    """next_wrap is bit 15 of the split ring's avail idx: run past 32767 and 65535."""
    work = session.start(want=(C.VIRTIO_F_NOTIFICATION_DATA,))
    vq = work.vq
    out, in_ = work.light_buffers()
    batch = max(1, vq.num // (2 * (len(out) + len(in_))))
    done = 0

    def run():
        nonlocal done
        while done <= 65536 + vq.num:
            for _ in range(batch):
                vq.add(out, in_)
            vq.kick()
            vq.wait_used(batch, session.timeout, awaited=f"{batch} buffers after {done} (notification data)")
            done += batch

    blame(CLAUSE, "buffers stopped being served as the avail idx wrapped", run)


def _exchanges(work, n):
    exchanges = [work.submit() for _ in range(n)]
    work.kick()
    for ex in exchanges:
        work.finish(ex)
