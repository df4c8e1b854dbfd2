"""VIRTIO 1.4, 2.7.9 and 6: VIRTIO_F_IN_ORDER -- the device uses buffers in the order they were made
available, and may answer a batch with one used entry: the id and len of the batch's last buffer,
where the batch's first was made available, used idx moved by the batch's size (2.7.9; packed:
the used descriptor over the batch's first available descriptor, 2.8.8). The driver side accounts
such a batch in full; an entry whose batch does not fit what the device published is charged to
IN_ORDER. Without IN_ORDER (the controls) buffers may come back in any order (2.7.8)."""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio.checks import require

pytestmark = pytest.mark.usefixtures("target_spec", "ring_layout")

IN_ORDER = "dev.reserved-features.5"


def _batch(work, n):
    exchanges = [work.submit() for _ in range(n)]
    work.kick()
    for ex in exchanges:
        work.finish(ex)


@pytest.mark.clause(IN_ORDER)
@pytest.mark.parametrize("batch", [1, 8])
def test_buffers_used_in_order(session, batch):
    """A batch of requests comes back in the order it was made available, each buffer intact."""
    session.control_then_variant(C.VIRTIO_F_IN_ORDER, IN_ORDER, f"batches of {batch}",
                                 lambda work: [_batch(work, batch) for _ in range(3)], ring_violations_too=True)


@pytest.mark.clause(IN_ORDER, "def.split.used-idx")
def test_in_order_across_wrap(session):
    """In-order use keeps going as the descriptor table and the indexes wrap."""

    def run(work, rounds):
        vq = work.vq
        out, in_ = work.light_buffers()
        per = max(1, vq.num // (2 * (len(out) + len(in_))))
        for r in range(rounds):
            tokens = list(range(r * per, (r + 1) * per))
            for t in tokens:
                vq.add(out, in_, t)
            vq.kick()
            got = [c.token for c in vq.wait_used(per, session.timeout, awaited=f"{per} in-order buffers")]
            if vq.in_order:  # without IN_ORDER any completion order is allowed (2.7.8)
                require(got == tokens, IN_ORDER, "buffers came back out of order", expected=tokens[:8], observed=got[:8], queue=vq.name)

    def wraps(work):
        run(work, 3 * work.vq.num // max(1, work.vq.num // 4) + 1)

    session.control_then_variant(C.VIRTIO_F_IN_ORDER, IN_ORDER, "traffic as the ring wraps", wraps, ring_violations_too=True)
