"""Multiqueue with automatic receive steering (VIRTIO 1.4, 5.1.9.5.5, 5.1.9.5.6): VQ_PAIRS_SET and
its acks, traffic on every queue pair, no frame beyond the pairs in use, pair counts out of range,
and frames while receive queues are being reset (2.6.1, VIRTIO_F_RING_RESET).

A frame may be steered to any receive queue in use (5.1.9.5.6: the device MAY pick one at random
where no flow is known), so a test checks where frames may not go, never which queue they chose.
"""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio import net_ctrl as NC
from virtio.checks import require

from .ctrl import start_ctrl

pytestmark = pytest.mark.device_types("net")

MQ = "dev.net.device-operation.control-virtqueue.automatic-receive-steering-in-multiqueue-mode."
FRAMES_PER_PAIR = 4
BUFFERS_USED = "def.basic.buffers-are-used"


def start_mq(session):
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_MQ,), refuse=())
    pairs = len(n.rx_queues())
    if pairs < 2:
        pytest.skip(f"max_virtqueue_pairs is {pairs}: no second pair to steer to")
    return n, pairs


def pairs_set(n, pairs: int, clause: str) -> int:
    return n.ctrl.command(NC.VIRTIO_NET_CTRL_MQ, NC.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, NC.NET_CTRL_MQ.pack(pairs), clause,
                          f"VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET {pairs}")


def traffic(n, tx, clause: str, allowed: int) -> None:
    """Frames on ``tx``; every one must land on receiveq1..receiveq``allowed``."""
    seqs, frames = n.frames(*[n.mac] * (FRAMES_PER_PAIR - 1))
    arrived = n.probe.run(tx, frames, seqs[-1], clause)
    names = {f"receiveq{k}" for k in range(1, allowed + 1)}
    for s in seqs:
        a = arrived.get(s)
        if a is not None:
            require(a.rxq in names, clause, f"a frame sent on {tx.name} was queued on {a.rxq}",
                    expected=f"one of receiveq1..receiveq{allowed}", observed=a.rxq, queue=a.rxq)


@pytest.mark.clause(MQ + "1")
def test_only_receiveq1_before_pairs_set(session):
    """After initialization, before any VQ_PAIRS_SET, frames come back on receiveq1 only
    (receive buffers are offered on every receive queue; the driver sends on transmitq1 only)."""
    n, _ = start_mq(session)
    traffic(n, n.work.tx, MQ + "1", 1)


@pytest.mark.clause(MQ + "2")
def test_traffic_on_every_pair(session):
    """VQ_PAIRS_SET max_virtqueue_pairs is acked OK; frames on each transmitq come back within the
    pairs in use; then VQ_PAIRS_SET 1 and frames on transmitq1 land on receiveq1 only."""
    n, pairs = start_mq(session)
    require(pairs_set(n, pairs, MQ + "2") == C.VIRTIO_NET_OK, MQ + "2", "VQ_PAIRS_SET max_virtqueue_pairs refused",
            expected="VIRTIO_NET_OK", observed="VIRTIO_NET_ERR")
    for tx in n.tx_queues():
        traffic(n, tx, MQ + "2", pairs)
    require(pairs_set(n, 1, MQ + "2") == C.VIRTIO_NET_OK, MQ + "2", "VQ_PAIRS_SET 1 refused",
            expected="VIRTIO_NET_OK", observed="VIRTIO_NET_ERR")
    traffic(n, n.work.tx, MQ + "2", 1)


@pytest.mark.clause(MQ + "2")
@pytest.mark.parametrize("bad", ["zero", "max+1"])
def test_pairs_out_of_range(session, bad):
    """VQ_PAIRS_SET 0 or max_virtqueue_pairs + 1 (a driver must not send them, 5.1.9.5.6.1): the
    device answers OK or ERR and keeps working; after ERR the pairs set before stay in force."""
    n, pairs = start_mq(session)
    require(pairs_set(n, 1, MQ + "2") == C.VIRTIO_NET_OK, MQ + "2", "VQ_PAIRS_SET 1 refused",
            expected="VIRTIO_NET_OK", observed="VIRTIO_NET_ERR")
    ack = pairs_set(n, 0 if bad == "zero" else pairs + 1, MQ + "2")
    if ack == C.VIRTIO_NET_OK:
        pytest.skip(f"the device accepted VQ_PAIRS_SET {bad}: which pairs are in use is then the device's to say")
    traffic(n, n.work.tx, MQ + "2", 1)


@pytest.mark.clause(MQ + "3")
def test_frames_for_a_queue_being_reset_go_elsewhere(session):
    """Every pair in use, receiveq2 being reset: frames sent on each transmit queue -- whichever
    receive queue the device meant for them -- come back on a queue not being reset (SHOULD:
    re-select another queue rather than drop)."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_MQ, C.VIRTIO_F_RING_RESET), refuse=())
    pairs = len(n.rx_queues())
    if pairs < 2:
        pytest.skip(f"max_virtqueue_pairs is {pairs}: no second receive queue to reset")
    require(pairs_set(n, pairs, MQ + "3") == C.VIRTIO_NET_OK, MQ + "3", f"VQ_PAIRS_SET {pairs} refused",
            expected="VIRTIO_NET_OK", observed="VIRTIO_NET_ERR")
    resetting = n.rx_queues()[1]
    n.probe.post(FRAMES_PER_PAIR * pairs)
    missing = []

    def send_all():
        for tx in n.tx_queues():
            seqs, frames = n.frames(*[n.mac] * (FRAMES_PER_PAIR - 1))
            n.probe.send(tx, frames)
            got = n.probe.arrivals(seqs, n.probe.timeout)
            missing.extend(f"{s} (sent on {tx.name})" for s in seqs if s not in got)

    session.driver.reset_vq(resetting, while_reset=send_all)
    n.probe.forget(resetting)
    require(not missing, MQ + "3", f"frames sent while {resetting.name} was being reset",
            expected=f"each received on a receive queue not being reset (one of {pairs - 1} others)",
            observed=f"not received: {', '.join(missing)}", queue=resetting.name, level="SHOULD")


@pytest.mark.clause(MQ + "4")
def test_frames_dropped_while_every_receive_queue_is_reset(session):
    """receiveq1, the only receive queue, being reset while frames are sent: the device drops them.
    After it is re-enabled with fresh buffers a witness frame comes back, and none of the frames
    sent during the reset does (kept and delivered later is not dropped)."""
    n = start_ctrl(session, want=(C.VIRTIO_F_RING_RESET,))
    rx = n.rx_queues()[0]
    during, frames = n.frames(n.mac, n.mac)
    session.driver.reset_vq(rx, while_reset=lambda: n.probe.send(n.work.tx, frames))
    n.probe.forget(rx)
    n.probe.post(len(during) + 2)  # room for any kept frame as well as the witness, so both are seen
    seqs, witness = n.frames()
    arrived = n.came_back(witness, seqs[-1], BUFFERS_USED)
    late = [s for s in during if s in arrived]
    require(not late, MQ + "4", f"frames sent while every receive queue ({rx.name}) was being reset",
            expected="dropped", observed=f"frames {late} received after {rx.name} was re-enabled", queue=rx.name)
