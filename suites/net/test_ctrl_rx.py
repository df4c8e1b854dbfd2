"""Packet receive filtering through the control virtqueue (VIRTIO 1.4, 5.1.9.5.1): the RX class
commands and their acks, and their effect seen in which frames come back."""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio import net_ctrl as NC
from virtio.checks import require
from virtio.net_ctrl import mac_table

from .ctrl import BROADCAST, MULTICAST_MAC, OTHER_MAC, start_ctrl

pytestmark = pytest.mark.device_types("net")

PRF = "dev.net.device-operation.control-virtqueue.packet-receive-filtering."
CMDS = {C.VIRTIO_NET_CTRL_RX_PROMISC: "PROMISC", C.VIRTIO_NET_CTRL_RX_ALLMULTI: "ALLMULTI"}
EXTRA = {NC.VIRTIO_NET_CTRL_RX_ALLUNI: "ALLUNI", NC.VIRTIO_NET_CTRL_RX_NOMULTI: "NOMULTI",
         NC.VIRTIO_NET_CTRL_RX_NOUNI: "NOUNI", NC.VIRTIO_NET_CTRL_RX_NOBCAST: "NOBCAST"}


def rx_mode(n, cmd: int, on: bool, clause: str, name: str) -> None:
    n.ctrl.expect_ok(C.VIRTIO_NET_CTRL_RX, cmd, bytes([on]), clause, f"VIRTIO_NET_CTRL_RX_{name} {'on' if on else 'off'}")


def came_back_in_mode(n, cmd: int, name: str, ack_clause: str, dest: bytes, clause: str) -> bool:
    """With RX mode ``cmd`` on, whether a frame to ``dest`` came back; the mode is off again after."""
    rx_mode(n, cmd, True, ack_clause, name)
    seqs, frames = n.frames(dest)
    back = n.came_back(frames, seqs[-1], clause)
    rx_mode(n, cmd, False, ack_clause, name)
    return seqs[0] in back


@pytest.mark.clause(PRF + "1")
def test_rx_commands_acked_ok(session):
    """With CTRL_RX, PROMISC and ALLMULTI on and off are each answered VIRTIO_NET_OK."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_RX,))
    for cmd, name in CMDS.items():
        for on in (True, False):
            rx_mode(n, cmd, on, PRF + "1", name)


@pytest.mark.clause(PRF + "2")
def test_promisc_receives_other_unicast(session):
    """Promiscuous mode on: a frame to an address that is nobody's comes back."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_RX,))
    back = came_back_in_mode(n, C.VIRTIO_NET_CTRL_RX_PROMISC, "PROMISC", PRF + "1", OTHER_MAC, PRF + "2")
    require(back, PRF + "2", "promiscuous mode on, a frame to another unicast address did not come back",
            expected=f"frame to {OTHER_MAC.hex(':')} received", observed="only the frame to the device's own MAC came back")


@pytest.mark.clause(PRF + "4")
def test_allmulti_receives_multicast(session):
    """All-multicast on: a frame to a group address not in any table comes back."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_RX,))
    back = came_back_in_mode(n, C.VIRTIO_NET_CTRL_RX_ALLMULTI, "ALLMULTI", PRF + "1", MULTICAST_MAC, PRF + "4")
    require(back, PRF + "4", "all-multicast on, a multicast frame did not come back",
            expected=f"frame to {MULTICAST_MAC.hex(':')} received", observed="not received")


@pytest.mark.clause(PRF + "5")
def test_rx_extra_commands_acked_ok(session):
    """With CTRL_RX_EXTRA, ALLUNI, NOMULTI, NOUNI and NOBCAST on and off are answered VIRTIO_NET_OK."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_RX, C.VIRTIO_NET_F_CTRL_RX_EXTRA))
    for cmd, name in EXTRA.items():
        for on in (True, False):
            rx_mode(n, cmd, on, PRF + "5", name)


@pytest.mark.clause(PRF + "12")
def test_nobcast_drops_broadcast(session):
    """NOBCAST on: a broadcast frame is not handed to the driver; off again, it is."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_RX, C.VIRTIO_NET_F_CTRL_RX_EXTRA))
    back = came_back_in_mode(n, NC.VIRTIO_NET_CTRL_RX_NOBCAST, "NOBCAST", PRF + "5", BROADCAST, PRF + "12")
    require(not back, PRF + "12", "NOBCAST on, a broadcast frame came back",
            expected="broadcast frame dropped", observed="received")


@pytest.mark.clause(PRF + "9")
def test_nomulti_leaves_broadcast(session):
    """NOMULTI on: broadcast frames still come back, multicast ones do not."""
    n = start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_RX, C.VIRTIO_NET_F_CTRL_RX_EXTRA))
    back = came_back_in_mode(n, NC.VIRTIO_NET_CTRL_RX_NOMULTI, "NOMULTI", PRF + "5", BROADCAST, PRF + "9")
    require(back, PRF + "9", "NOMULTI on, a broadcast frame was dropped",
            expected="broadcast frame received", observed="not received")


def _with_modes(n, modes: list[int], dests: list[bytes], clause: str, *, witness: bytes | None = None) -> list[bool]:
    """With every RX mode of ``modes`` on, which frames to ``dests`` came back; all off again after."""
    names = {**CMDS, **EXTRA}
    for cmd in modes:
        rx_mode(n, cmd, True, PRF + "5" if cmd in EXTRA else PRF + "1", names[cmd])
    seqs, frames = n.frames(*dests, witness=witness)
    back = n.came_back(frames, seqs[-1], clause)
    for cmd in modes:
        rx_mode(n, cmd, False, PRF + "5" if cmd in EXTRA else PRF + "1", names[cmd])
    return [s in back for s in seqs[:-1]]


def _extra(session):
    return start_ctrl(session, want=(C.VIRTIO_NET_F_CTRL_RX, C.VIRTIO_NET_F_CTRL_RX_EXTRA))


def _table_group(n) -> None:
    """MULTICAST_MAC into the multicast MAC table (so that it is received without ALLMULTI)."""
    n.ctrl.expect_ok(C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_TABLE_SET, mac_table([], [MULTICAST_MAC]),
                     "dev.net.device-operation.control-virtqueue.setting-mac-address-filtering.1",
                     "VIRTIO_NET_CTRL_MAC_TABLE_SET with one multicast entry")


def _mode_alone(n, modes: list[int], dests: list[bytes], back: bool, clause: str, what: str, *, witness=None) -> None:
    """The control of a "holds even while" test: ``modes`` alone already have their effect on
    frames to ``dests`` (all received if ``back``, else none); if not, that is ``clause``'s failure."""
    got = _with_modes(n, modes, dests, clause, witness=witness)
    wrong = [d.hex(":") for d, b in zip(dests, got) if b != back]
    require(not wrong, clause, f"the control: {what}", expected="received" if back else "dropped",
            observed=f"{'not received' if back else 'received'}: {', '.join(wrong)}")


@pytest.mark.clause(PRF + "3")
def test_promisc_wins_over_the_other_modes(session):
    """PROMISC on while NOUNI, NOMULTI and NOBCAST are on too: frames to another unicast address,
    to a multicast group and to broadcast all come back (the promiscuous mode takes effect). The
    control: PROMISC alone lets them all through."""
    n = _extra(session)
    dests = [OTHER_MAC, MULTICAST_MAC, BROADCAST]
    _mode_alone(n, [C.VIRTIO_NET_CTRL_RX_PROMISC], dests, True, PRF + "2", "PROMISC alone, frames to every address")
    modes = [NC.VIRTIO_NET_CTRL_RX_NOUNI, NC.VIRTIO_NET_CTRL_RX_NOMULTI, NC.VIRTIO_NET_CTRL_RX_NOBCAST, C.VIRTIO_NET_CTRL_RX_PROMISC]
    back = _with_modes(n, modes, dests, PRF + "3")
    missing = [d.hex(":") for d, b in zip(dests, back) if not b]
    require(not missing, PRF + "3", "PROMISC on together with NOUNI, NOMULTI and NOBCAST",
            expected="frames to every address received", observed=f"not received: {', '.join(missing)}")


@pytest.mark.clause(PRF + "6")
def test_alluni_receives_other_unicast(session):
    """All-unicast on: a frame to a unicast address that is nobody's comes back."""
    n = _extra(session)
    (back,) = _with_modes(n, [NC.VIRTIO_NET_CTRL_RX_ALLUNI], [OTHER_MAC], PRF + "6")
    require(back, PRF + "6", "ALLUNI on, a frame to another unicast address", expected=f"frame to {OTHER_MAC.hex(':')} received",
            observed="not received")


@pytest.mark.clause(PRF + "7")
def test_nomulti_drops_multicast_of_the_table(session):
    """A multicast group put in the MAC table is received; with NOMULTI on, a frame to it is not."""
    n = _extra(session)
    _table_group(n)
    (control,) = _with_modes(n, [], [MULTICAST_MAC], PRF + "7")
    if not control:
        pytest.skip("a frame to the multicast group of the MAC table does not come back even without NOMULTI")
    (back,) = _with_modes(n, [NC.VIRTIO_NET_CTRL_RX_NOMULTI], [MULTICAST_MAC], PRF + "7")
    require(not back, PRF + "7", "NOMULTI on, a frame to a multicast group of the MAC table",
            expected="dropped", observed="received")


@pytest.mark.clause(PRF + "8")
def test_nomulti_holds_while_allmulti_is_on(session):
    """ALLMULTI and NOMULTI both on: a multicast frame is not received (NOMULTI takes effect). The
    controls: ALLMULTI alone lets it through, NOMULTI alone drops a group of the MAC table."""
    n = _extra(session)
    _mode_alone(n, [C.VIRTIO_NET_CTRL_RX_ALLMULTI], [MULTICAST_MAC], True, PRF + "4", "ALLMULTI alone, a multicast frame")
    _table_group(n)
    _mode_alone(n, [NC.VIRTIO_NET_CTRL_RX_NOMULTI], [MULTICAST_MAC], False, PRF + "7", "NOMULTI alone, a group of the MAC table")
    (back,) = _with_modes(n, [C.VIRTIO_NET_CTRL_RX_ALLMULTI, NC.VIRTIO_NET_CTRL_RX_NOMULTI], [MULTICAST_MAC], PRF + "8")
    require(not back, PRF + "8", "ALLMULTI and NOMULTI on, a multicast frame", expected="dropped", observed="received")


@pytest.mark.clause(PRF + "10")
def test_nouni_drops_unicast(session):
    """NOUNI on: a frame to the device's own MAC is not received (a broadcast frame witnesses)."""
    n = _extra(session)
    (back,) = _with_modes(n, [NC.VIRTIO_NET_CTRL_RX_NOUNI], [n.mac], PRF + "10", witness=BROADCAST)
    require(not back, PRF + "10", "NOUNI on, a frame to the device's own MAC", expected="dropped", observed="received")


@pytest.mark.clause(PRF + "11")
def test_nouni_holds_while_alluni_is_on(session):
    """ALLUNI and NOUNI both on: frames to the device's own and to another unicast address are not
    received. The controls: ALLUNI alone lets the other address through, NOUNI alone drops its own."""
    n = _extra(session)
    _mode_alone(n, [NC.VIRTIO_NET_CTRL_RX_ALLUNI], [OTHER_MAC], True, PRF + "6", "ALLUNI alone, a frame to another unicast address")
    _mode_alone(n, [NC.VIRTIO_NET_CTRL_RX_NOUNI], [n.mac], False, PRF + "10", "NOUNI alone, a frame to the device's own MAC",
                witness=BROADCAST)
    dests = [n.mac, OTHER_MAC]
    back = _with_modes(n, [NC.VIRTIO_NET_CTRL_RX_ALLUNI, NC.VIRTIO_NET_CTRL_RX_NOUNI], dests, PRF + "11", witness=BROADCAST)
    require(not any(back), PRF + "11", "ALLUNI and NOUNI on, unicast frames", expected="dropped",
            observed=f"received: {', '.join(d.hex(':') for d, b in zip(dests, back) if b)}")


@pytest.mark.clause(PRF + "13")
def test_nobcast_holds_while_allmulti_is_on(session):
    """ALLMULTI and NOBCAST both on: a broadcast frame is not received. The control: NOBCAST alone drops it."""
    n = _extra(session)
    _mode_alone(n, [NC.VIRTIO_NET_CTRL_RX_NOBCAST], [BROADCAST], False, PRF + "12", "NOBCAST alone, a broadcast frame")
    (back,) = _with_modes(n, [C.VIRTIO_NET_CTRL_RX_ALLMULTI, NC.VIRTIO_NET_CTRL_RX_NOBCAST], [BROADCAST], PRF + "13")
    require(not back, PRF + "13", "ALLMULTI and NOBCAST on, a broadcast frame", expected="dropped", observed="received")
