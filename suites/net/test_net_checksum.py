"""VIRTIO 1.4, 5.1.6.2 and 5.1.9.4.1: checksum offload. The driver hands over TCP/UDP frames with
VIRTIO_NET_HDR_F_NEEDS_CSUM (the checksum field holding the pseudo-header sum, csum_start and
csum_offset naming where the sum goes, 5.1.9.2.1) to a device that offers VIRTIO_NET_F_CSUM. What
comes back through the target's forwarding is judged with the checksums scapy recomputes:

- without VIRTIO_NET_F_GUEST_CSUM, flags are 0 and the frame SHOULD be fully checksummed;
- with it, a frame the device hands over still partial (NEEDS_CSUM) has the checksums before
  csum_start right, the pseudo-header sum in its checksum field, and csum_start / csum_offset that
  complete it -- as a driver would, this test completes it and has scapy check the result.
"""

from __future__ import annotations

import pytest

from fixtures.devices import need
from virtio import constants as C
from virtio import net_hdr as H
from virtio.checks import require
from virtio.net_frames import IP_KINDS, checksum_problems, partial_checksum

from .netio import CSUM_FIELDS_COMPLETE, PRECEDING_VALIDATED, PSEUDO_HEADER_SUM, NetIO, judge_needs_csum, with_mrg_rxbuf

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("net")]

P = "dev.net.device-operation.processing-of-incoming-packets."
FLAGS_ZERO_FULL_CSUM = P + "5"  # MUST flags 0; SHOULD a fully checksummed frame
RX_BUF = 1518 + 64


def _send_partial(io: NetIO, vlan=(None,)) -> list[tuple[int, bytes]]:
    """Each IP kind (also VLAN-tagged where asked) sent with NEEDS_CSUM; returns (seq, frame sent)."""
    sent = []
    for kind in IP_KINDS:
        for v in vlan:
            seq, frame = io.ip(kind, 300, vlan=v)
            frame, start, off = partial_checksum(frame)
            io.send(frame, H.NetHdrFull(flags=H.NEEDS_CSUM, csum_start=start, csum_offset=off))
            sent.append((seq, frame))
    return sent


@pytest.mark.clause(FLAGS_ZERO_FULL_CSUM)
def test_tx_checksum_completed_without_guest_csum(session):
    """VIRTIO_NET_F_CSUM without GUEST_CSUM: frames sent partially checksummed come back with flags
    0 and (SHOULD) every checksum complete."""
    need(session.driver, C.VIRTIO_NET_F_CSUM)
    io = NetIO(session, want=with_mrg_rxbuf(session, C.VIRTIO_NET_F_CSUM), refuse=(C.VIRTIO_NET_F_GUEST_CSUM,))
    io.post_rx(2 * len(IP_KINDS) + 2, io.hsize + RX_BUF)
    sent = _send_partial(io, vlan=(None, 5))
    for seq, f, r in io.receive_each(sent):
        require(r.hdr.flags == 0, FLAGS_ZERO_FULL_CSUM, f"flags of received frame {seq} without VIRTIO_NET_F_GUEST_CSUM",
                expected=0, observed=H.describe(r.hdr), queue=io.rx.name)
        problems = checksum_problems(r.frame[:len(f)])
        require(not problems, FLAGS_ZERO_FULL_CSUM, f"checksums of frame {seq}, sent with NEEDS_CSUM, received without GUEST_CSUM",
                expected="complete (the device finished the checksum the driver left to it)", observed="; ".join(problems),
                queue=io.rx.name, level="SHOULD")


@pytest.mark.clause(PRECEDING_VALIDATED, PSEUDO_HEADER_SUM, CSUM_FIELDS_COMPLETE)
def test_needs_csum_frames_received_complete_correctly(session):
    """VIRTIO_NET_F_CSUM and GUEST_CSUM: a device may hand frames over still partial. Each one
    marked NEEDS_CSUM has a right IPv4 header checksum, the pseudo-header sum in its TCP/UDP
    checksum field, and csum_start / csum_offset that, applied as 5.1.6.2 says, give a frame whose
    checksums scapy finds right. One delivered without NEEDS_CSUM is not judged here."""
    need(session.driver, C.VIRTIO_NET_F_CSUM, C.VIRTIO_NET_F_GUEST_CSUM)
    io = NetIO(session, want=with_mrg_rxbuf(session, C.VIRTIO_NET_F_CSUM, C.VIRTIO_NET_F_GUEST_CSUM))
    io.post_rx(len(IP_KINDS) + 2, io.hsize + RX_BUF)
    sent = _send_partial(io)
    partial = 0
    for seq, f, r in io.receive_each(sent):
        if not r.hdr.flags & H.NEEDS_CSUM:
            continue
        partial += 1
        judge_needs_csum(r.frame[:len(f)], r.hdr, f"received frame {seq} marked NEEDS_CSUM ({H.describe(r.hdr)})", io.rx.name)
    if not partial:
        pytest.skip("the device completed every checksum itself (no frame came back NEEDS_CSUM): nothing to judge")
