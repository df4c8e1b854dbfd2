"""Driver side of ring options against the models: IN_ORDER batch accounting, notification data
the model checks, per-queue reset and resize."""

from __future__ import annotations

import pytest

from targets.registry import open_target, parse_target
from virtio import constants as C
from virtio.driver import VirtioDriver, VqInfo
from virtio.messages import NetHdr
from virtio.workloads import workload_for


@pytest.fixture(params=["notify", "threaded"])
def mode(request):
    return request.param


def bring_up(spec, want=()):
    ops = open_target(parse_target(spec))
    d = VirtioDriver(ops)
    f = d.wanted_features()
    for b in want:
        f |= 1 << b
    d.negotiate(f)
    vqs = d.find_vqs([VqInfo(n) for n in d.default_vq_names()])
    d.driver_ok()
    return ops, d, vqs


def test_in_order_batch_is_accounted_in_full(mode):
    """net answers a batch of transmit buffers with one used elem (2.7.9): every buffer still returns."""
    ops, d, vqs = bring_up(f"model:net,mode={mode}", want=(C.VIRTIO_F_IN_ORDER,))
    try:
        tx = vqs[1]
        frame = NetHdr().pack() + bytes.fromhex("020000000001") + bytes(54)
        chains = [tx.add([frame], [], i) for i in range(20)]
        tx.kick()
        got = tx.wait_used(20, 5.0)
        assert [c.token for c in got] == list(range(20))
        assert all(c.used_len == 0 for c in got) and not tx.in_flight
        # 2.7.9: used idx moved by every buffer; in notify mode the device saw all 20 at once and
        # wrote one used elem, the last buffer's id, at the first buffer's offset (slot 0).
        assert int(tx.ring.used_idx[0]) == 20
        if mode == "notify":
            assert tx.ring.used_ring[0].tolist() == [chains[-1].head, 0]
            assert not tx.ring.used_ring[1:20].any()  # skipped, never written
            assert [c.len_reported for c in got] == [False] * 19 + [True]
        del chains
    finally:
        ops.close()


def test_notification_data_matches_the_ring(mode):
    ops, d, vqs = bring_up(f"model:rng,mode={mode}", want=(C.VIRTIO_F_NOTIFICATION_DATA,))
    try:
        vq = vqs[0]
        for _i in range(70_000 // 32):
            for _ in range(32):
                vq.add([], [8])
            vq.kick()
            for c in vq.wait_used(32, 5.0):
                vq.release(c)
        assert vq.kicks > 0 and ops.device.notification_data_errors == []
    finally:
        ops.close()


def test_reset_vq_resize_and_reclaim(mode):
    ops, d, vqs = bring_up(f"model:blk,mode={mode}", want=(C.VIRTIO_F_RING_RESET,))
    try:
        work = workload_for(d, vqs, 5.0)
        work.roundtrip()
        vq = work.vq
        vq.add(*work.light_buffers())
        reclaimed = d.reset_vq(vq, num=16)
        assert len(reclaimed) == 1 and vq.num == 16 and not vq.in_flight
        for _ in range(20):
            work.roundtrip()
    finally:
        ops.close()
