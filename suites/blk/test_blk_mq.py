"""virtio-blk multiqueue (VIRTIO 1.4, 5.2.2 and 5.2.4): with VIRTIO_BLK_F_MQ the device has
num_queues request queues, requestq1..requestqN, all on one medium.

A request goes out on every queue at once (made available on all before any is waited for), each
on its own whole logical blocks; then each queue reads back what another queue wrote. A read-only
device gets reads of the same blocks on every queue at once, which must agree. Requests that are
in flight together touch different blocks: 5.2.6 orders none of them.
"""

from __future__ import annotations

import os

import pytest

from fixtures.devices import need
from virtio import blk as B
from virtio import constants as C
from virtio.checks import require
from virtio.messages import blk_outhdr
from virtio.workloads import blk_block_sectors

pytestmark = pytest.mark.device_types("blk")

MULTIQUEUE = "def.blk.multiqueue"
REQUEST_BYTES = 4096  # a whole number of blocks for every blk_size up to 4 KiB


def _all_at_once(session, vqs, requests, what: str) -> list[tuple[int, bytes]]:
    """``requests[i]`` = (out, in_lens) made available on ``vqs[i]``, all kicked, then each waited
    for; -> (status, data) per queue."""
    chains = [vq.add(out, in_lens, f"{what} on {vq.name}") for vq, (out, in_lens) in zip(vqs, requests)]
    for vq in vqs:
        vq.kick()
    got = []
    for vq, c in zip(vqs, chains):
        vq.wait_used(1, session.timeout, awaited=f"{what} on {vq.name}, made available with one on every queue", duty=MULTIQUEUE)
        raw = vq.read_in(c, c.writable)
        got.append((raw[-1], raw[:-1]))
    return got


@pytest.mark.clause(MULTIQUEUE)
def test_requests_on_every_queue_at_once(session):
    d = session.driver
    need(d, C.VIRTIO_BLK_F_MQ)
    work = session.start(want=(C.VIRTIO_BLK_F_MQ,))
    n = d.config_field("num_queues")
    vqs = [vq for vq in work.vqs if vq.name.startswith("requestq")]
    require(n >= 1 and len(vqs) == n, MULTIQUEUE, "num_queues with VIRTIO_BLK_F_MQ", expected=">= 1 request queue",
            observed=f"num_queues {n}")
    sectors = max(REQUEST_BYTES // C.SECTOR_SIZE, blk_block_sectors(d))
    if d.config_field("capacity") < n * sectors:
        pytest.skip(f"capacity {d.config_field('capacity')} sectors leaves no {sectors} sectors per queue")
    nbytes = sectors * C.SECTOR_SIZE
    read = [([blk_outhdr(C.VIRTIO_BLK_T_IN, i * sectors)], [nbytes, 1]) for i in range(n)]
    if (d.negotiated or 0) >> C.VIRTIO_BLK_F_RO & 1:
        first = _all_at_once(session, vqs, read, "a read")
        again = _all_at_once(session, vqs, read[1:] + read[:1], "the same read on the queue before")
        again = again[-1:] + again[:-1]  # again[i]: read[i], this time on the queue before vqs[i]
        for i, ((s1, a), (s2, b)) in enumerate(zip(first, again)):
            require(s1 == s2 == C.VIRTIO_BLK_S_OK and a == b, MULTIQUEUE, f"sectors {i * sectors}.. read on {vqs[i].name} and on {vqs[i - 1].name}",
                    expected="VIRTIO_BLK_S_OK twice, the same bytes", observed=f"{B.status_name(s1)}, {B.status_name(s2)}, "
                    f"{'same' if a == b else 'different'} bytes")
        return
    data = [os.urandom(nbytes) for _ in range(n)]
    writes = [([blk_outhdr(C.VIRTIO_BLK_T_OUT, i * sectors), data[i]], [1]) for i in range(n)]
    for i, (status, _) in enumerate(_all_at_once(session, vqs, writes, "a write")):
        require(status == C.VIRTIO_BLK_S_OK, MULTIQUEUE, f"a write of sectors {i * sectors}.. on {vqs[i].name}",
                expected="VIRTIO_BLK_S_OK", observed=B.status_name(status))
    # Each queue reads what the queue before it wrote (with one queue: what it wrote itself).
    shifted = [read[(i - 1) % n] for i in range(n)]
    for i, (status, got) in enumerate(_all_at_once(session, vqs, shifted, "a read back")):
        j = (i - 1) % n
        require(status == C.VIRTIO_BLK_S_OK and got == data[j], MULTIQUEUE,
                f"sectors {j * sectors}.. written on {vqs[j].name}, read on {vqs[i].name}",
                expected="VIRTIO_BLK_S_OK and the data written", observed=f"{B.status_name(status)}, "
                f"{'the data written' if got == data[j] else 'other bytes'}")
