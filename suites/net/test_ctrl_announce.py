"""Gratuitous packet sending (VIRTIO 1.4, 5.1.9.5.4): the device asks with VIRTIO_NET_S_ANNOUNCE,
the driver answers VIRTIO_NET_CTRL_ANNOUNCE_ACK, and the bit is clear once that buffer is used."""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio import net_ctrl as NC
from virtio.checks import poll, require
from virtio.errors import UnsupportedOp

from .ctrl import start_ctrl

pytestmark = pytest.mark.device_types("net")

GPS = "dev.net.device-operation.control-virtqueue.gratuitous-packet-sending.1"


@pytest.mark.clause(GPS)
def test_announce_ack_clears_announce(session):
    """Config changes are triggered (at most two: a link flap) until the device sets ANNOUNCE; then
    ANNOUNCE_ACK must be acked OK with the bit clear when its buffer comes back."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_GUEST_ANNOUNCE, C.VIRTIO_NET_F_STATUS))
    d = session.driver

    def announcing() -> bool:
        return bool(d.config_field("status") & C.VIRTIO_NET_S_ANNOUNCE)

    for _ in range(2):
        if announcing():
            break
        try:
            d.ops.trigger_config_change()
        except UnsupportedOp as e:
            pytest.skip(f"no way to make the device ask for an announcement: {e}")
    if not poll(announcing, min(0.5, session.timeout)):
        pytest.skip("the device did not set VIRTIO_NET_S_ANNOUNCE after a config change (it need not)")
    n.ctrl.expect_ok(NC.VIRTIO_NET_CTRL_ANNOUNCE, NC.VIRTIO_NET_CTRL_ANNOUNCE_ACK, b"", GPS, "VIRTIO_NET_CTRL_ANNOUNCE_ACK")
    status = d.config_field("status")
    require(not status & C.VIRTIO_NET_S_ANNOUNCE, GPS, "VIRTIO_NET_S_ANNOUNCE still set after ANNOUNCE_ACK was used",
            expected="ANNOUNCE clear", observed=f"status {status:#x}")
    if not status & C.VIRTIO_NET_S_LINK_UP:
        d.ops.trigger_config_change()  # leave the link as found
