"""VIRTIO 1.4, 5.1.9.2, 5.1.9.2.2 and 5.1.9.4.1: TCP segmentation offload.

Transmit: TCP segmentation offload of what the driver sends. With
VIRTIO_NET_F_HOST_TSO4 / TSO6 the driver hands over one TCP frame far larger than the MTU,
partially checksummed, with gso_type, gso_size (the MSS) and hdr_len; what comes back through the
target's forwarding must be that frame cut as its metadata says -- packets of at most gso_size
bytes beyond the replicated headers, every checksum complete, their payloads (reassembled by
sequence number with scapy) exactly the payload sent. Then the same with a wrong hdr_len, too
short and too long: without VIRTIO_NET_F_GUEST_HDRLEN the device MUST NOT rely on it, so the
result is the same. The receiving driver accepts no GUEST_* GSO feature, so the device cannot hand
the frame back whole.

Receive: where the receiving driver accepts GUEST_TSO4 / TSO6 too, the device may hand such a
frame over whole, as GSO: it then comes with NEEDS_CSUM, gso_size the MSS, and (SHOULD) an hdr_len
that covers the headers through TCP; completed and cut as its metadata says, it is the frame sent."""

from __future__ import annotations

import pytest

from fixtures.devices import need
from virtio import constants as C
from virtio import net_hdr as H
from virtio.checks import require
from virtio.net_frames import (
    ETH_HLEN,
    complete_checksum,
    l4_offset,
    l4_payload,
    partial_checksum,
    tcp_segments_payload,
)

from .netio import CSUM_FIELDS_COMPLETE, PRECEDING_VALIDATED, PSEUDO_HEADER_SUM, NetIO, judge_needs_csum, with_mrg_rxbuf

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("net")]

TX_SEGMENTATION = "def.net.tx-segmentation"
HDR_LEN_NOT_RELIED = "dev.net.device-operation.packet-transmission.7"
P = "dev.net.device-operation.processing-of-incoming-packets."
GSO_WITH_NEEDS_CSUM = P + "22"
HDR_LEN_COVERS_HEADERS = P + "25"
TSO = {"ipv4-tcp": (C.VIRTIO_NET_F_HOST_TSO4, H.GSO_TCPV4), "ipv6-tcp": (C.VIRTIO_NET_F_HOST_TSO6, H.GSO_TCPV6)}
GUEST_TSO = {"ipv4-tcp": C.VIRTIO_NET_F_GUEST_TSO4, "ipv6-tcp": C.VIRTIO_NET_F_GUEST_TSO6}
BIG_RX_BUF = 65562  # without MRG_RXBUF a driver accepting GUEST_TSO posts buffers this large (5.1.9.3.1)
TCP_HLEN = 20  # the frames carry no TCP options
MSS = 1000
RX_BUF = 1518 + 64


def _received(r) -> bytes:
    """A received packet as a driver sees it: one still NEEDS_CSUM (GUEST_CSUM) completed first."""
    if r.hdr.flags & H.NEEDS_CSUM:
        return complete_checksum(r.frame, r.hdr.csum_start, r.hdr.csum_offset) or r.frame
    return r.frame


def _send_tso(io: NetIO, kind: str, hdr_len: int | None = None) -> tuple[int, bytes, int]:
    """One TCP GSO frame of 3 MSS + 123 payload bytes, then a sentinel; -> (seq, frame, sentinel seq)."""
    seq, frame = io.ip(kind, 3 * MSS + 123)
    frame, start, off = partial_checksum(frame)
    headers = start + TCP_HLEN
    io.send(frame, H.NetHdrFull(flags=H.NEEDS_CSUM, gso_type=TSO[kind][1], gso_size=MSS,
                                hdr_len=headers if hdr_len is None else hdr_len, csum_start=start, csum_offset=off))
    sentinel, tail = io.raw(80)
    io.send(tail)
    return seq, frame, sentinel


@pytest.mark.clause(TX_SEGMENTATION, HDR_LEN_NOT_RELIED)
@pytest.mark.parametrize("kind", sorted(TSO))
def test_tso_frame_leaves_cut_by_its_metadata(session, kind):
    feature = TSO[kind][0]
    need(session.driver, C.VIRTIO_NET_F_CSUM, feature)
    io = NetIO(session, want=with_mrg_rxbuf(session, C.VIRTIO_NET_F_CSUM, feature),
               refuse=(*H.GUEST_GSO_FEATURES, C.VIRTIO_NET_F_GUEST_HDRLEN, C.VIRTIO_NET_F_HOST_ECN, C.VIRTIO_NET_F_MTU))
    _, probe = io.ip(kind, 0)
    headers = l4_offset(probe) + TCP_HLEN  # the header length a driver gives in hdr_len
    mss = MSS  # packets of 1000 bytes past the headers fit the 1500-byte MTU assumed without VIRTIO_NET_F_MTU
    io.post_rx(3 * 8, io.hsize + RX_BUF)
    for what, hdr_len, clause in (("with hdr_len right", headers, TX_SEGMENTATION),
                                  ("with hdr_len too short (the Ethernet header only)", ETH_HLEN, HDR_LEN_NOT_RELIED),
                                  ("with hdr_len too long", headers + 100, HDR_LEN_NOT_RELIED)):
        seq, frame, sentinel = _send_tso(io, kind, hdr_len)
        got = [_received(r) for tag, r in io.until(sentinel) if tag in (None, seq)]
        sent = f"a {len(frame)}-byte {kind} GSO frame, gso_size {mss}, {what}"
        require(got, clause, f"{sent}: its packets", expected="its segments back before the sentinel frame",
                observed="none (dropped)", queue=io.rx.name)
        stream, problems = tcp_segments_payload(got)
        payload = l4_payload(frame)
        require(not problems and stream == payload, clause, f"{sent}: the packets reassembled",
                expected=f"the {len(payload)} payload bytes sent, every checksum right",
                observed="; ".join(problems) or f"{len(stream)} bytes that differ from those sent", queue=io.rx.name)
        sizes = [len(l4_payload(g)) for g in got]
        require(max(sizes) <= mss, clause, f"{sent}: the TCP payload of each packet",
                expected=f"at most gso_size {mss} bytes", observed=f"payloads of {sizes} bytes", queue=io.rx.name)


@pytest.mark.clause(GSO_WITH_NEEDS_CSUM, HDR_LEN_COVERS_HEADERS, PRECEDING_VALIDATED, PSEUDO_HEADER_SUM, CSUM_FIELDS_COMPLETE)
@pytest.mark.parametrize("kind", sorted(TSO))
def test_gso_frame_received_with_its_metadata(session, kind):
    """HOST_TSO and GUEST_TSO of one IP version: a TCP GSO frame handed over whole (gso_type not
    NONE) has NEEDS_CSUM and gso_size > 0, hdr_len (SHOULD) at least its headers through TCP, the
    checksum duties of any NEEDS_CSUM frame (5.1.9.4.1), and its payload is the payload sent. A device that cuts it before
    handing it over leaves nothing to judge here (the transmit test judges the cutting)."""
    host = TSO[kind][0]
    need(session.driver, C.VIRTIO_NET_F_CSUM, host, C.VIRTIO_NET_F_GUEST_CSUM, GUEST_TSO[kind])
    io = NetIO(session, want=with_mrg_rxbuf(session, C.VIRTIO_NET_F_CSUM, host, C.VIRTIO_NET_F_GUEST_CSUM, GUEST_TSO[kind]),
               refuse=(C.VIRTIO_NET_F_HOST_ECN, C.VIRTIO_NET_F_GUEST_ECN, C.VIRTIO_NET_F_MTU))
    mrg = io.has(C.VIRTIO_NET_F_MRG_RXBUF)
    io.post_rx(24 if mrg else 4, io.hsize + (RX_BUF if mrg else BIG_RX_BUF))
    seq, frame, sentinel = _send_tso(io, kind)
    got = [r for tag, r in io.until(sentinel) if tag in (None, seq)]
    whole = [r for r in got if r.hdr.gso_type != H.GSO_NONE]
    if not whole:
        pytest.skip(f"the device handed the GSO frame over as {len(got)} packet(s) without GSO: nothing to judge here")
    for r in whole:
        what = f"a received GSO frame ({H.describe(r.hdr)})"
        require(r.hdr.flags & H.NEEDS_CSUM and r.hdr.gso_size > 0, GSO_WITH_NEEDS_CSUM, what,
                expected="VIRTIO_NET_HDR_F_NEEDS_CSUM set and gso_size the MSS (> 0)", observed=H.describe(r.hdr), queue=io.rx.name)
        headers = l4_offset(r.frame) + (r.frame[l4_offset(r.frame) + 12] >> 4) * 4
        require(r.hdr.hdr_len >= headers, HDR_LEN_COVERS_HEADERS, f"hdr_len of {what}", expected=f">= {headers} (through the TCP header)",
                observed=r.hdr.hdr_len, queue=io.rx.name, level="SHOULD")
        judge_needs_csum(r.frame, r.hdr, what, io.rx.name)
    stream = b"".join(l4_payload(r.frame) for r in got)
    require(stream == l4_payload(frame), GSO_WITH_NEEDS_CSUM, "the payload of what came back for the GSO frame",
            expected=f"the {len(l4_payload(frame))} bytes sent", observed=f"{len(stream)} bytes that differ", queue=io.rx.name)
