"""VIRTIO 1.4, 5.1.9.3.2 and 5.1.9.4.1: what a device writes into the header of a received frame --
num_buffers with and without VIRTIO_NET_F_MRG_RXBUF, flags without VIRTIO_NET_F_GUEST_CSUM, no
GSO type the driver did not accept, DATA_VALID only on a checksum that is right. Frames are built
and their checksums recomputed with scapy (virtio/net_frames.py)."""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio import net_hdr as H
from virtio.checks import require
from virtio.net_frames import IP_KINDS, checksum_problems, difference

from .netio import NetIO

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("net")]

P = "dev.net.device-operation.processing-of-incoming-packets."
FLAGS_ZERO = P + "5"
NO_TCPV4, NO_UDP, NO_TCPV6, NO_UDP_L4 = P + "6", P + "7", P + "8", P + "9"
NO_TUNNEL_GSO, NO_TUNNEL_CSUM_FLAG = P + "10", P + "11"
GSO_NONE_ONLY = P + "21"
RSC_INFO_ONLY_WITH_RSC_EXT = P + "24"
DATA_VALID_CHECKED = P + "26"
SINGLE_BUFFER = "dev.net.device-operation.setting-up-receive-buffers.2"
NO_GSO_CLAUSE = {H.GSO_TCPV4: NO_TCPV4, H.GSO_UDP: NO_UDP, H.GSO_TCPV6: NO_TCPV6, H.GSO_UDP_L4: NO_UDP_L4}


def check_gso(io: NetIO, hdr) -> None:
    """No gso type whose GUEST_* feature the driver did not accept, and GSO_NONE itself (no ECN bit
    either) where it accepted none of them (5.1.9.4.1)."""
    if hdr.gso_type & H.GSO_UDP_TUNNEL and not io.has(C.VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO):
        require(False, NO_TUNNEL_GSO, "gso_type of a received frame", expected="no UDP_TUNNEL_IPV4/IPV6 bit (VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO not negotiated)",
                observed=f"{hdr.gso_type:#04x}: {H.describe(hdr)}", queue=io.rx.name)
    base = hdr.gso_type & ~(H.GSO_ECN | H.GSO_UDP_TUNNEL)
    feats = H.GUEST_GSO_FEATURE.get(base)
    if base != H.GSO_NONE and feats is not None and not any(io.has(f) for f in feats):
        require(False, NO_GSO_CLAUSE[base], "gso_type of a received frame", expected="not " + H.GSO_NAMES[base] + " (its GUEST_* feature not negotiated)", observed=H.describe(hdr), queue=io.rx.name)
    if not any(io.has(f) for f in H.GUEST_GSO_FEATURES):
        require(hdr.gso_type == H.GSO_NONE, GSO_NONE_ONLY, "gso_type with no GUEST_* GSO feature negotiated",
                expected="VIRTIO_NET_HDR_GSO_NONE (0)", observed=f"{hdr.gso_type:#04x}: {H.describe(hdr)}", queue=io.rx.name)


@pytest.mark.clause(P + "1", FLAGS_ZERO, NO_TCPV4, NO_UDP, NO_TCPV6, NO_UDP_L4, NO_TUNNEL_GSO, GSO_NONE_ONLY)
def test_rx_header_without_offloads(session):
    """No MRG_RXBUF, no GUEST_CSUM, no GUEST_* GSO: every received header has num_buffers 1, flags 0
    and gso_type NONE, for TCP and UDP over IPv4 and IPv6, VLAN-tagged too."""
    io = NetIO(session, refuse=(C.VIRTIO_NET_F_MRG_RXBUF, C.VIRTIO_NET_F_GUEST_CSUM, *H.GUEST_GSO_FEATURES))
    frames = [io.ip(kind, 200, vlan=vlan) for kind in IP_KINDS for vlan in (None, 7)]
    io.post_rx(len(frames) + 2, io.hsize + 1518)
    for _, f in frames:
        io.send(f)
    for _, _, r in io.receive_each(frames):  # num_buffers == 1 checked while gathering
        require(r.hdr.flags == 0, FLAGS_ZERO, "flags without VIRTIO_NET_F_GUEST_CSUM", expected=0, observed=H.describe(r.hdr), queue=io.rx.name)
        check_gso(io, r.hdr)


@pytest.mark.clause(P + "2", P + "3", P + "4")
def test_mrg_rxbuf_spreads_a_frame(session):
    """With MRG_RXBUF, a frame larger than one buffer is spread over several: each but the last is
    full, num_buffers counts them, all are used together (seen used as soon as the first is), and
    together they hold header and frame."""
    io = NetIO(session, want=(C.VIRTIO_NET_F_MRG_RXBUF,))
    size = 256
    seq, frame = io.raw(1000)
    io.post_rx(16, size)
    io.send(frame)
    r = io.receive(seq)
    want = -(-(io.hsize + len(frame)) // size)
    require(r.hdr.num_buffers == want, P + "2", "num_buffers of a frame spread over buffers of 256 bytes",
            expected=want, observed=f"{r.hdr.num_buffers} (used lens {r.lens})", queue=io.rx.name)
    why = difference(frame, r.frame, io.work.forward, whole=False)  # as the target forwards it
    require(why is None, P + "2", "the frame gathered from num_buffers buffers",
            expected=f"the {len(frame)}-byte frame sent", observed=why, queue=io.rx.name)


@pytest.mark.clause(DATA_VALID_CHECKED, RSC_INFO_ONLY_WITH_RSC_EXT, NO_TUNNEL_CSUM_FLAG)
def test_data_valid_only_on_good_checksum(session):
    """With GUEST_CSUM a device may mark a frame DATA_VALID, but only one whose checksum it checked:
    a frame sent with a wrong TCP/UDP checksum (and no NEEDS_CSUM) never comes back DATA_VALID.
    Without VIRTIO_NET_F_RSC_EXT no frame is marked RSC_INFO, and without
    VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM none UDP_TUNNEL_CSUM (the flags may be non-zero here)."""
    io = NetIO(session, want=(C.VIRTIO_NET_F_GUEST_CSUM,), refuse=(C.VIRTIO_NET_F_RSC_EXT,))
    bad = [io.ip(kind, 100, bad_csum=True) for kind in IP_KINDS]
    sentinel, last = io.ip("ipv4-udp", 100)
    io.post_rx(len(bad) + 4, io.hsize + 1518)
    for _, f in bad:
        io.send(f)
    io.send(last)
    for seq, r in io.until(sentinel):
        require(not r.hdr.flags & H.RSC_INFO, RSC_INFO_ONLY_WITH_RSC_EXT, f"flags of received frame {seq} without VIRTIO_NET_F_RSC_EXT",
                expected="VIRTIO_NET_HDR_F_RSC_INFO clear", observed=H.describe(r.hdr), queue=io.rx.name)
        require(not r.hdr.flags & H.UDP_TUNNEL_CSUM or io.has(C.VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM), NO_TUNNEL_CSUM_FLAG,
                f"flags of received frame {seq} without VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM",
                expected="VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM clear", observed=H.describe(r.hdr), queue=io.rx.name)
        if r.hdr.flags & H.DATA_VALID:
            problems = checksum_problems(r.frame)
            require(not problems, DATA_VALID_CHECKED, "a frame marked VIRTIO_NET_HDR_F_DATA_VALID",
                    expected="a correct checksum", observed=f"frame {seq}: {'; '.join(problems)}", queue=io.rx.name)


@pytest.mark.clause(SINGLE_BUFFER)
def test_frame_never_spread_without_mrg_rxbuf(session):
    """5.1.9.3.2: without VIRTIO_NET_F_MRG_RXBUF the device uses a single buffer for each received
    frame. Receive buffers of header + 300 bytes (smaller than the 1526 a driver SHOULD post, so
    that a frame can fail to fit), a 700-byte frame, then a 100-byte sentinel: the device may drop
    the large frame (or cut it short: not judged here), but no buffer may hold the rest of it. The
    buffers are read as they are, before any header in them is believed."""
    io = NetIO(session, refuse=(C.VIRTIO_NET_F_MRG_RXBUF,))
    io.post_rx(8, io.hsize + 300)
    seq, big = io.raw(700)
    sentinel, tail = io.raw(100)
    io.send(big)
    io.send(tail)
    for _ in range(8):
        chain = io.rx.wait_used(1, io.timeout, awaited=f"received sentinel frame {sentinel} on {io.rx.name}")[0]
        raw = io.rx.read_in(chain)
        io.rx.release(chain)
        at = big.find(raw[:32]) if len(raw) >= 16 else -1
        require(at <= 0, SINGLE_BUFFER, f"a receive buffer after the {len(big)}-byte frame {seq} that fits no buffer",
                expected="a frame of its own (VIRTIO_NET_F_MRG_RXBUF not negotiated: one buffer per frame)",
                observed=f"bytes {at}.. of frame {seq} at its start (used len {len(raw)}): the frame was spread over buffers",
                queue=io.rx.name)
        if io.tags.seq_of(raw[io.hsize:]) == sentinel:
            return
    require(False, SINGLE_BUFFER, f"the sentinel frame {sentinel}", expected="received within the 8 buffers posted",
            observed="8 buffers used without it", queue=io.rx.name)
