"""VLAN filtering (VIRTIO 1.4, 5.1.9.5.3): tagged frames with and without CTRL_VLAN, VLAN_ADD and
VLAN_DEL with their acks."""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio import net_ctrl as NC
from virtio.checks import require
from virtio.net_control import vlan_tagged

from .ctrl import start_ctrl

pytestmark = pytest.mark.device_types("net")

VLAN = "dev.net.device-operation.control-virtqueue.vlan-filtering."
VID_IN, VID_OUT = 100, 200


def tagged_round(n, vid: int, clause: str) -> bool:
    """Whether a frame to the device's MAC tagged with ``vid`` came back (an untagged witness follows)."""
    (s, w), (f, fw) = n.frames(n.mac)
    return s in n.came_back([vlan_tagged(f, vid), fw], w, clause)


def round_with_vlan_added(n, vid: int, clause: str) -> bool:
    """With VID_IN added to the filter, whether a frame tagged ``vid`` came back; VID_IN is deleted after."""
    vlan_cmd(n, NC.VIRTIO_NET_CTRL_VLAN_ADD, VID_IN, VLAN + "2")
    back = tagged_round(n, vid, clause)
    vlan_cmd(n, NC.VIRTIO_NET_CTRL_VLAN_DEL, VID_IN, VLAN + "2")
    return back


def vlan_cmd(n, cmd: int, vid: int, clause: str) -> None:
    name = "ADD" if cmd == NC.VIRTIO_NET_CTRL_VLAN_ADD else "DEL"
    n.ctrl.expect_ok(NC.VIRTIO_NET_CTRL_VLAN, cmd, NC.VLAN_VID.pack(vid), clause, f"VIRTIO_NET_CTRL_VLAN_{name} {vid}")


@pytest.mark.clause(VLAN + "1")
def test_tagged_frames_pass_without_ctrl_vlan(session):
    """CTRL_VLAN not negotiated: a tagged frame to the device's MAC comes back, whatever its VLAN."""
    n = start_ctrl(session, refuse=(C.VIRTIO_NET_F_CTRL_VLAN, C.VIRTIO_NET_F_MQ))
    require(tagged_round(n, VID_OUT, VLAN + "1"), VLAN + "1", "without CTRL_VLAN a VLAN-tagged frame was dropped",
            expected=f"frame tagged VLAN {VID_OUT} received", observed="not received")


@pytest.mark.clause(VLAN + "2")
def test_added_vlan_passes(session):
    """CTRL_VLAN: after VLAN_ADD, a frame tagged with that VLAN comes back."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_VLAN,))
    back = round_with_vlan_added(n, VID_IN, VLAN + "2")
    require(back, VLAN + "2", "a frame tagged with a VLAN added to the filter was dropped",
            expected=f"frame tagged VLAN {VID_IN} received", observed="not received")


@pytest.mark.clause(VLAN + "3")
def test_absent_vlan_dropped(session):
    """CTRL_VLAN: a frame tagged with a VLAN not in the filter (one added, another asked) is dropped."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_VLAN,))
    back = round_with_vlan_added(n, VID_OUT, VLAN + "3")
    require(not back, VLAN + "3", "a frame tagged with a VLAN absent from the filter came back",
            expected=f"frame tagged VLAN {VID_OUT} dropped", observed="received")
