"""VIRTIO 1.4, 5.1.9.2.2 and 5.1.4.1: what a device does with the header and frame it is given to
transmit -- unknown flag bits ignored, csum_start/csum_offset left alone without NEEDS_CSUM, every
frame up to the mtu forwarded whole, nothing longer than the mtu received. The frames come back
through the target's forwarding (net_forward) and are found by their tag."""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio import net_hdr as H
from virtio.checks import require
from virtio.net_frames import ETH_HLEN, IP_KINDS, TAG_LEN, VLAN_HLEN, checksum_problems, difference, l4_offset, vlan_id

from .netio import NetIO

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("net")]

T = "dev.net.device-operation.packet-transmission."
UNKNOWN_FLAGS = T + "1"
CSUM_FIELDS_UNUSED = T + "2"
CFG = "dev.net.device-configuration-layout."
NO_RX_OVER_MTU = CFG + "5"
FORWARD_UP_TO_MTU = CFG + "6"
RX_BUF = 1518 + 64


def _same(io: NetIO, sent: bytes, got: bytes, clause: str, what: str) -> None:
    why = difference(sent, got, io.work.forward, whole=True)
    require(why is None, clause, what, expected=f"the {len(sent)}-byte frame sent", observed=why, queue=io.rx.name)


@pytest.mark.clause(UNKNOWN_FLAGS)
def test_unknown_flag_bits_ignored(session):
    """A header flag bit 1.4 does not define (bit 7) does not stop the frame going out."""
    io = NetIO(session)
    io.post_rx(2, io.hsize + RX_BUF)
    seq, frame = io.raw(100)
    io.send(frame, H.NetHdrFull(flags=H.UNKNOWN_FLAG))
    r = io.receive(seq, duty=UNKNOWN_FLAGS)
    _same(io, frame, r.frame[:len(frame)], UNKNOWN_FLAGS, "a frame sent with an unknown flag bit")


@pytest.mark.clause(CSUM_FIELDS_UNUSED)
def test_csum_fields_unused_without_needs_csum(session):
    """csum_start/csum_offset pointing into the payload, NEEDS_CSUM clear: the frame goes out as is
    (checksums still right, payload untouched), with or without VIRTIO_NET_F_CSUM."""
    io = NetIO(session)
    io.post_rx(len(IP_KINDS) + 2, io.hsize + RX_BUF)
    sent = []
    for kind in IP_KINDS:
        seq, frame = io.ip(kind, 200)
        start = l4_offset(frame)
        l4_hlen = 20 if kind.endswith("tcp") else 8  # past the tag: a spoiled tag would only look lost
        io.send(frame, H.NetHdrFull(csum_start=start, csum_offset=l4_hlen + TAG_LEN + 4))
        sent.append((seq, frame))
    for seq, frame in sent:
        r = io.receive(seq)
        got = r.frame[:len(frame)]
        _same(io, frame, got, CSUM_FIELDS_UNUSED, "a frame sent without NEEDS_CSUM but with csum_start/csum_offset set")
        problems = checksum_problems(got) if got[ETH_HLEN - 2:ETH_HLEN] in (b"\x08\x00", b"\x86\xdd") else []
        require(not problems, CSUM_FIELDS_UNUSED, "checksums of a frame sent without NEEDS_CSUM", expected="unchanged, correct",
                observed="; ".join(problems), queue=io.rx.name)


@pytest.mark.clause(FORWARD_UP_TO_MTU)
def test_frames_up_to_mtu_forwarded_whole(session):
    """With MTU negotiated: the minimum frame, IPv4/IPv6 TCP/UDP frames (also VLAN-tagged) and one
    of exactly mtu + 14 bytes all come back whole, unfragmented."""
    io = NetIO(session, want=(C.VIRTIO_NET_F_MTU,))
    mtu = io.mtu
    if not 68 <= mtu <= 65535:
        pytest.skip(f"mtu {mtu} is outside 68..65535 (test_mtu_in_range reports it)")
    frames = [io.raw(60)] + [io.ip(k, 300, vlan=v) for k in IP_KINDS for v in (None, 100)] + [io.raw(mtu + ETH_HLEN)]
    io.post_rx(len(frames) + 2, io.hsize + mtu + ETH_HLEN + 4 + 64)
    for _, f in frames:
        io.send(f)
    for _, f, r in io.receive_each(frames, duty=FORWARD_UP_TO_MTU):
        require(len(r.frame) >= len(f), FORWARD_UP_TO_MTU, f"a {len(f)}-byte frame (mtu {mtu}) comes back whole",
                expected=f">= {len(f)} bytes", observed=f"{len(r.frame)} bytes", queue=io.rx.name)
        _same(io, f, r.frame[:len(f)], FORWARD_UP_TO_MTU, f"a {len(f)}-byte frame with mtu {mtu}")


@pytest.mark.clause(NO_RX_OVER_MTU)
def test_nothing_received_over_mtu(session):
    """With MTU negotiated, a frame of mtu + 15 bytes (MTU + 1) never reaches the driver as
    received; the device may drop it anywhere. A sentinel frame bounds the wait."""
    io = NetIO(session, want=(C.VIRTIO_NET_F_MTU,))
    mtu = io.mtu
    if not 68 <= mtu <= 65535:
        pytest.skip(f"mtu {mtu} is outside 68..65535 (test_mtu_in_range reports it)")
    io.post_rx(4, io.hsize + mtu + ETH_HLEN + 64)
    _, big = io.raw(mtu + ETH_HLEN + 1)
    sentinel, small = io.raw(80)
    io.send(big)
    io.send(small)
    for seq, r in io.until(sentinel):
        limit = mtu + ETH_HLEN + (VLAN_HLEN if vlan_id(r.frame) is not None else 0)  # 5.1.4.1
        if r.hdr.gso_type & ~H.GSO_ECN == H.GSO_NONE:
            require(len(r.frame) <= limit, NO_RX_OVER_MTU, "length of a received non-GSO frame",
                    expected=f"<= mtu {mtu} + link header", observed=f"{len(r.frame)} bytes (frame {seq})", queue=io.rx.name)
