"""VIRTIO 1.4, 5.1.9.5.10: notifications coalescing over the control virtqueue.

With VIRTIO_NET_F_NOTF_COAL the driver sets max_packets / max_usecs for every transmit queue
(TX_SET) or every receive queue (RX_SET); with VIRTIO_NET_F_VQ_NOTF_COAL for one enabled data
queue (VQ_SET) and reads them back (VQ_GET, whose struct virtio_net_ctrl_coal follows the ack).
Coalescing itself is best effort (a device MAY notify more or less often), so what is judged is
what the commands answer and report: a set that is acked VIRTIO_NET_OK took effect, reserved is
ignored, queues that are not enabled data queues are refused, a reset (of the device, or of one
queue) puts the parameters where the chapter says -- and no notification while the driver
suppresses them. Read-backs are compared with read-backs, never with the values sent, since a
device may round what it was given to what it can do.
"""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio import net_ctrl as NC
from virtio.checks import poll, require

from .ctrl import start_ctrl

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("net")]

NC_ = "dev.net.device-operation.control-virtqueue.notifications-coalescing."
RESERVED_IGNORED = NC_ + "1"
TX_RX_SET_ERR_IF_NOT_APPLIED = NC_ + "2"
VQ_SET_ERR_IF_NOT_APPLIED = NC_ + "3"
ONLY_ENABLED_DATA_QUEUES = NC_ + "4"
TX_QUEUE_RESET_PARAMS = NC_ + "5"
RX_QUEUE_RESET_PARAMS = NC_ + "6"
NONE_WHILE_SUPPRESSED = NC_ + "8"
RESET_ZEROES = NC_ + "9"
BUFFERS_USED = "def.basic.buffers-are-used"
OK = C.VIRTIO_NET_OK


class Coal:
    """The VIRTIO_NET_CTRL_NOTF_COAL commands of one started device."""

    def __init__(self, n):
        self.n = n

    def queue(self, name: str):
        return next(vq for vq in self.n.work.vqs if vq.name == name)

    def set_all(self, cmd: int, packets: int, usecs: int, clause: str) -> int:
        what = "TX_SET" if cmd == NC.VIRTIO_NET_CTRL_NOTF_COAL_TX_SET else "RX_SET"
        return self.n.ctrl.command(NC.VIRTIO_NET_CTRL_NOTF_COAL, cmd, NC.NET_CTRL_COAL.pack(packets, usecs), clause,
                                   f"VIRTIO_NET_CTRL_NOTF_COAL_{what} max_packets {packets} max_usecs {usecs}")

    def vq_set(self, index: int, packets: int, usecs: int, clause: str, reserved: int = 0) -> int:
        return self.n.ctrl.command(NC.VIRTIO_NET_CTRL_NOTF_COAL, NC.VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET,
                                   NC.NET_CTRL_COAL_VQ.pack(index, reserved, packets, usecs), clause,
                                   f"VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET vq_index {index} reserved {reserved:#x} "
                                   f"max_packets {packets} max_usecs {usecs}")

    def vq_get(self, index: int, clause: str) -> tuple[int, tuple[int, int] | None]:
        r = self.n.ctrl.command_with_result(
            NC.VIRTIO_NET_CTRL_NOTF_COAL, NC.VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET, NC.NET_CTRL_COAL_VQ_INDEX.pack(index, 0),
            NC.NET_CTRL_COAL.size, clause, f"VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET vq_index {index}")
        return r.ack, (NC.NET_CTRL_COAL.unpack(r.result) if r.ack == OK else None)

    def params(self, index: int, clause: str) -> tuple[int, int]:
        """VQ_GET of an enabled data queue; a refusal leaves nothing to judge (the chapter does not
        say VQ_GET of an enabled queue succeeds, only that the driver then ignores the values)."""
        ack, got = self.vq_get(index, clause)
        if ack != OK:
            pytest.skip(f"VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET of queue {index} answered VIRTIO_NET_ERR: nothing to compare")
        return got


def _start(session, *want: int, refuse=(C.VIRTIO_NET_F_MQ,)) -> Coal:
    return Coal(start_ctrl(session, want=want, refuse=refuse))  # the transport's capability, then ``want``


def _other(values: tuple[int, int]) -> tuple[int, int]:
    """Parameters different from ``values`` in both fields, still small."""
    return values[0] % 50 + 7, values[1] % 50 + 11


@pytest.mark.clause(VQ_SET_ERR_IF_NOT_APPLIED)
def test_vq_set_acked_ok_takes_effect(session):
    """VQ_SET on receiveq1 and transmitq1 with parameters other than those VQ_GET reports: acked
    VIRTIO_NET_OK, VQ_GET reports a change (a set it could not apply must be answered
    VIRTIO_NET_ERR). Refused sets are allowed."""
    co = _start(session, C.VIRTIO_NET_F_VQ_NOTF_COAL)
    for name in ("receiveq1", "transmitq1"):
        index = co.queue(name).index
        before = co.params(index, VQ_SET_ERR_IF_NOT_APPLIED)
        packets, usecs = _other(before)
        if co.vq_set(index, packets, usecs, VQ_SET_ERR_IF_NOT_APPLIED) != OK:
            continue
        after = co.params(index, VQ_SET_ERR_IF_NOT_APPLIED)
        require(after != before, VQ_SET_ERR_IF_NOT_APPLIED, f"VQ_GET of {name} after a VQ_SET acked VIRTIO_NET_OK",
                expected=f"parameters changed from {before} (max_packets, max_usecs) toward ({packets}, {usecs})",
                observed=f"{after}: unchanged, yet the set was acked VIRTIO_NET_OK", queue="controlq")


@pytest.mark.clause(RESERVED_IGNORED)
def test_vq_set_reserved_ignored(session):
    """VQ_SET with reserved 0xffff answers and acts as the same VQ_SET with reserved 0."""
    co = _start(session, C.VIRTIO_NET_F_VQ_NOTF_COAL)
    index = co.queue("receiveq1").index
    values = _other(co.params(index, RESERVED_IGNORED))
    plain = co.vq_set(index, *values, RESERVED_IGNORED)
    want = co.params(index, RESERVED_IGNORED)
    co.vq_set(index, *_other(values), RESERVED_IGNORED)
    ack = co.vq_set(index, *values, RESERVED_IGNORED, reserved=0xFFFF)
    require(ack == plain, RESERVED_IGNORED, "VQ_SET of receiveq1 with reserved 0xffff",
            expected=f"{NC.ack_name(plain)}, as with reserved 0", observed=NC.ack_name(ack), queue="controlq")
    got = co.params(index, RESERVED_IGNORED)
    require(got == want, RESERVED_IGNORED, "VQ_GET of receiveq1 after a VQ_SET with reserved 0xffff",
            expected=f"{want}, what the same VQ_SET with reserved 0 gave", observed=got, queue="controlq")


@pytest.mark.clause(ONLY_ENABLED_DATA_QUEUES)
def test_vq_commands_refused_for_other_queues(session):
    """VQ_SET and VQ_GET naming controlq, or a queue index the device does not have, are answered
    VIRTIO_NET_ERR."""
    co = _start(session, C.VIRTIO_NET_F_VQ_NOTF_COAL)
    ctrl = co.queue("controlq").index
    for index, what in ((ctrl, "controlq"), (0x7FFF, "queue 0x7fff (no such queue)")):
        for cmd, ack in (("VQ_SET", co.vq_set(index, 10, 20, ONLY_ENABLED_DATA_QUEUES)),
                         ("VQ_GET", co.vq_get(index, ONLY_ENABLED_DATA_QUEUES)[0])):
            require(ack != OK, ONLY_ENABLED_DATA_QUEUES, f"VIRTIO_NET_CTRL_NOTF_COAL_{cmd} naming {what}",
                    expected="VIRTIO_NET_ERR (not an enabled transmit or receive queue)", observed=NC.ack_name(ack),
                    queue="controlq")


@pytest.mark.clause(TX_RX_SET_ERR_IF_NOT_APPLIED)
def test_tx_rx_set_acked_ok_take_effect(session):
    """TX_SET / RX_SET acked VIRTIO_NET_OK change what VQ_GET reports for transmitq1 / receiveq1
    (SHOULD: a set the device could not apply is answered VIRTIO_NET_ERR)."""
    co = _start(session, C.VIRTIO_NET_F_NOTF_COAL, C.VIRTIO_NET_F_VQ_NOTF_COAL)
    for cmd, name in ((NC.VIRTIO_NET_CTRL_NOTF_COAL_TX_SET, "transmitq1"), (NC.VIRTIO_NET_CTRL_NOTF_COAL_RX_SET, "receiveq1")):
        index = co.queue(name).index
        before = co.params(index, TX_RX_SET_ERR_IF_NOT_APPLIED)
        values = _other(before)
        if co.set_all(cmd, *values, TX_RX_SET_ERR_IF_NOT_APPLIED) != OK:
            continue
        after = co.params(index, TX_RX_SET_ERR_IF_NOT_APPLIED)
        require(after != before, TX_RX_SET_ERR_IF_NOT_APPLIED, f"VQ_GET of {name} after a {'TX' if name[0] == 't' else 'RX'}_SET acked VIRTIO_NET_OK",
                expected=f"parameters changed from {before} toward {values}", observed=f"{after}: unchanged",
                queue="controlq", level="SHOULD")


def _queue_reset_takes_set_params(session, name: str, cmd: int, clause: str) -> None:
    """A queue reset (2.6.1) of ``name`` after VQ_SET: first with no TX_SET / RX_SET, the queue
    comes back with 0; then after one, with what VQ_GET reported right after it."""
    co = _start(session, C.VIRTIO_NET_F_NOTF_COAL, C.VIRTIO_NET_F_VQ_NOTF_COAL, C.VIRTIO_F_RING_RESET)
    vq = co.queue(name)
    for with_set in (False, True):
        want = (0, 0)
        if with_set:
            if co.set_all(cmd, 9, 30, clause) != OK:
                pytest.skip("the device refused the TX_SET / RX_SET: no parameters for a re-enabled queue to take")
            want = co.params(vq.index, clause)
        if co.vq_set(vq.index, *_other(want), clause) != OK:
            pytest.skip(f"the device refused VQ_SET of {name}: nothing a queue reset could undo")
        session.driver.reset_vq(vq)
        got = co.params(vq.index, clause)
        source = "the last TX_SET / RX_SET, as VQ_GET reported it" if with_set else "0 (no TX_SET / RX_SET was sent)"
        require(got == want, clause, f"coalescing parameters of {name} after it was reset and re-enabled",
                expected=f"{want}: {source}", observed=got, queue="controlq")


@pytest.mark.clause(TX_QUEUE_RESET_PARAMS)
def test_transmit_queue_reset_takes_tx_set_params(session):
    _queue_reset_takes_set_params(session, "transmitq1", NC.VIRTIO_NET_CTRL_NOTF_COAL_TX_SET, TX_QUEUE_RESET_PARAMS)


@pytest.mark.clause(RX_QUEUE_RESET_PARAMS)
def test_receive_queue_reset_takes_rx_set_params(session):
    _queue_reset_takes_set_params(session, "receiveq1", NC.VIRTIO_NET_CTRL_NOTF_COAL_RX_SET, RX_QUEUE_RESET_PARAMS)


@pytest.mark.clause(RESET_ZEROES)
def test_device_reset_zeroes_every_parameter(session):
    """Parameters set with VQ_SET (and TX_SET / RX_SET where offered), then a device reset and a
    new initialization: VQ_GET reports 0 for every data queue."""
    features = [C.VIRTIO_NET_F_VQ_NOTF_COAL]
    if session.driver.device_features() >> C.VIRTIO_NET_F_NOTF_COAL & 1:
        features.append(C.VIRTIO_NET_F_NOTF_COAL)
    co = _start(session, *features)
    if C.VIRTIO_NET_F_NOTF_COAL in features:
        co.set_all(NC.VIRTIO_NET_CTRL_NOTF_COAL_TX_SET, 12, 40, RESET_ZEROES)
        co.set_all(NC.VIRTIO_NET_CTRL_NOTF_COAL_RX_SET, 13, 41, RESET_ZEROES)
    for name in ("receiveq1", "transmitq1"):
        co.vq_set(co.queue(name).index, 14, 42, RESET_ZEROES)
    co = _start(session, *features)  # session.start resets the device first (3.1.1)
    for name in ("receiveq1", "transmitq1"):
        got = co.params(co.queue(name).index, RESET_ZEROES)
        require(got == (0, 0), RESET_ZEROES, f"coalescing parameters of {name} after a device reset",
                expected="(0, 0)", observed=got, queue="controlq")


@pytest.mark.clause(NONE_WHILE_SUPPRESSED)
def test_no_notification_while_suppressed(session):
    """RX_SET max_packets 1 (a notification condition met by every frame), receive notifications
    suppressed (VRING_AVAIL_F_NO_INTERRUPT / RING_EVENT_FLAGS_DISABLE; EVENT_IDX refused, so the
    flag is the driver's word), frames received: no used buffer notification on receiveq1
    (SHOULD NOT)."""
    co = _start(session, C.VIRTIO_NET_F_NOTF_COAL, refuse=(C.VIRTIO_NET_F_MQ, C.VIRTIO_F_EVENT_IDX))
    if co.set_all(NC.VIRTIO_NET_CTRL_NOTF_COAL_RX_SET, 1, 1, NONE_WHILE_SUPPRESSED) != OK:
        pytest.skip("the device refused RX_SET: no coalescing condition to meet")
    rx = co.queue("receiveq1")
    rx.disable_cb()
    before = rx.interrupts
    seqs, frames = co.n.frames(co.n.mac, co.n.mac, co.n.mac)
    co.n.came_back(frames, seqs[-1], BUFFERS_USED)
    poll(lambda: rx.interrupts > before, 0.1)  # a notification sent just after the used buffers
    require(rx.interrupts == before, NONE_WHILE_SUPPRESSED, "used buffer notifications on receiveq1 while suppressed",
            expected="none", observed=f"{rx.interrupts - before} for {len(frames)} frames", queue=rx.name, level="SHOULD")
