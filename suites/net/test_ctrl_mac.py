"""MAC address filtering through the control virtqueue (VIRTIO 1.4, 5.1.9.5.2): MAC_TABLE_SET and
MAC_ADDR_SET, their acks, when they take effect, and the table after a reset."""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio.checks import require
from virtio.net_ctrl import mac_table

from .ctrl import OTHER_MAC, start_ctrl

pytestmark = pytest.mark.device_types("net")

SMAF = "dev.net.device-operation.control-virtqueue.setting-mac-address-filtering."
TABLE_MAC = bytes.fromhex("02000000a001")  # locally administered, put in the unicast table
NEW_MAC = bytes.fromhex("02000000a002")


def table_set(n, unicast, clause):
    n.ctrl.expect_ok(C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_TABLE_SET, mac_table(unicast, []), clause,
                     f"VIRTIO_NET_CTRL_MAC_TABLE_SET with {len(unicast)} unicast entries")


def drops_unmatched(n, clause) -> bool:
    """Whether the device drops a frame to an address neither its own nor in a table (a SHOULD)."""
    seqs, frames = n.frames(OTHER_MAC)
    return seqs[0] not in n.came_back(frames, seqs[-1], clause)


@pytest.mark.clause(SMAF + "2")
def test_table_in_force_when_used(session):
    """A frame to an address of the new table, sent once the command's buffer is used, comes back."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_RX,))
    table_set(n, [TABLE_MAC], SMAF + "2")
    seqs, frames = n.frames(TABLE_MAC)
    back = n.came_back(frames, seqs[-1], SMAF + "2")
    table_set(n, [], SMAF + "2")
    require(seqs[0] in back, SMAF + "2", "a frame to an address of the MAC table just set did not come back",
            expected=f"frame to {TABLE_MAC.hex(':')} received", observed="not received")


@pytest.mark.clause(SMAF + "1")
def test_table_empty_after_reset(session):
    """An address put in the table before a device reset no longer lets frames in after it.
    Only where the device drops unmatched frames at all (a SHOULD) can this be seen."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_RX,))
    if not drops_unmatched(n, SMAF + "1"):
        pytest.skip("the device passes frames to addresses not in its filter (5.1.9.5.2.1 SHOULD): the table cannot be observed")
    table_set(n, [TABLE_MAC], SMAF + "1")
    session.driver.reset()
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_RX,))
    seqs, frames = n.frames(TABLE_MAC)
    back = n.came_back(frames, seqs[-1], SMAF + "1")
    require(seqs[0] not in back, SMAF + "1", "after a device reset, a frame to an address of the old MAC table came back",
            expected="empty MAC filter table: frame dropped", observed="received")


@pytest.mark.clause(SMAF + "4")
def test_unmatched_destination_dropped(session):
    """With the default filter a frame to somebody else's unicast address is dropped."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_RX,))
    require(drops_unmatched(n, SMAF + "4"), SMAF + "4", "a frame to an address neither the device's nor in its table came back",
            expected=f"frame to {OTHER_MAC.hex(':')} dropped", observed="received")


@pytest.mark.clause(SMAF + "3")
def test_addr_set_updates_config_mac(session):
    """MAC_ADDR_SET: config mac reads the new address as soon as the command's buffer is used."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_MAC_ADDR, C.VIRTIO_NET_F_MAC))
    old = session.driver.config_field("mac")
    n.ctrl.expect_ok(C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_ADDR_SET, NEW_MAC, SMAF + "3", "VIRTIO_NET_CTRL_MAC_ADDR_SET")
    now = bytes(session.driver.config_field("mac"))
    n.ctrl.expect_ok(C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_ADDR_SET, bytes(old), SMAF + "3", "VIRTIO_NET_CTRL_MAC_ADDR_SET (back)")
    require(now == NEW_MAC, SMAF + "3", "config mac not updated by the time MAC_ADDR_SET was used",
            expected=NEW_MAC.hex(":"), observed=now.hex(":"))
