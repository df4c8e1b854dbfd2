"""VIRTIO 1.4, 5.1.9.5.7: receive-side scaling. With VIRTIO_NET_F_RSS the driver sends
VIRTIO_NET_CTRL_MQ_RSS_CONFIG (hash types, indirection table, unclassified queue, key); the device
then places each frame on the receive queue its hash selects (5.1.9.4.3 names the fields hashed,
Toeplitz over them: virtio/net_rss.py, checked against Microsoft's RSS verification values in
tests/test_net_rss.py), frames it does not hash on the unclassified queue, and drops a frame whose
destination queue is being reset. TCP and UDP flows over IPv4 and IPv6 differ by source port, so
they spread over the table.
"""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio import net_ctrl as NC
from virtio import net_rss as R
from virtio.checks import require
from virtio.net_frames import IP_KINDS, ip_frame

from .ctrl import start_ctrl

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("net")]

RSS = "dev.net.device-operation.control-virtqueue.receive-side-scaling-rss.rss-processing."
STEERED_BY_HASH = RSS + "1"
DROPPED_IF_RESET = RSS + "2"
BUFFERS_USED = "def.basic.buffers-are-used"
# A 40-byte key (the one Microsoft's RSS verification suite uses): hashes IPv6 addresses and ports.
KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")
WANTED_TYPES = R.HASH_TYPE_IPv4 | R.HASH_TYPE_TCPv4 | R.HASH_TYPE_UDPv4 | R.HASH_TYPE_IPv6 | R.HASH_TYPE_TCPv6 | R.HASH_TYPE_UDPv6
SPORTS = (40000, 40001, 40002, 50007, 61234)


class Rss:
    def __init__(self, session, clause: str):
        self.n = start_ctrl(session, want=(C.VIRTIO_NET_F_MQ, C.VIRTIO_NET_F_RSS), refuse=())
        d = session.driver
        self.rxqs = self.n.rx_queues()
        if len(self.rxqs) < 2:
            pytest.skip(f"{len(self.rxqs)} receive queue: nothing to steer between")
        if d.config_field("rss_max_key_size") < len(KEY):
            pytest.skip(f"rss_max_key_size {d.config_field('rss_max_key_size')} < 40 (test_rss_max_key_size_at_least_40 reports it)")
        self.types = d.config_field("supported_hash_types") & WANTED_TYPES
        if not self.types:
            pytest.skip("supported_hash_types has none of the IPv4 / IPv6 / TCP / UDP types")
        longest = min(d.config_field("rss_max_indirection_table_length"), 64)
        self.length = 1 << (longest.bit_length() - 1) if longest else 0
        if not self.length:
            pytest.skip("rss_max_indirection_table_length is 0")
        self.name = {vq.index: vq.name for vq in self.rxqs}
        self.clause = clause

    def configure(self, table: list[int], unclassified: int) -> None:
        data = R.rss_config(self.types, table, unclassified, len(self.n.tx_queues()), KEY)
        ack = self.n.ctrl.command(NC.VIRTIO_NET_CTRL_MQ, NC.VIRTIO_NET_CTRL_MQ_RSS_CONFIG, data, self.clause,
                                  f"VIRTIO_NET_CTRL_MQ_RSS_CONFIG ({len(table)} entries, hash types {self.types:#x})")
        require(ack == C.VIRTIO_NET_OK, self.clause, "VIRTIO_NET_CTRL_MQ_RSS_CONFIG within every limit the device declares",
                expected="VIRTIO_NET_OK", observed=NC.ack_name(ack), queue="controlq")

    def flows(self) -> list[tuple[int, bytes]]:
        """(seq, frame): each IP kind from each source port, then one frame of no IP at all."""
        out = []
        for kind in IP_KINDS:
            for sport in SPORTS:
                self.n.probe.seq += 1
                out.append((self.n.probe.seq, ip_frame(self.n.probe.tags, self.n.mac, self.n.probe.seq, kind, 64, sport=sport)))
        out.append(self.n.probe.frame(self.n.mac))
        return out

    def destination(self, frame: bytes, table: list[int], unclassified: int) -> int:
        fields = R.hash_input(frame, self.types)
        return unclassified if fields is None else table[R.toeplitz(KEY, fields) & (len(table) - 1)]


@pytest.mark.clause(STEERED_BY_HASH)
def test_rss_places_frames_by_hash(session):
    """An indirection table over every receive queue and unclassified_queue the last one: each
    frame comes back on table[hash & mask], the one with no IP header on unclassified_queue."""
    r = Rss(session, STEERED_BY_HASH)
    rx = [vq.index for vq in r.rxqs]
    table = [rx[(7 * i + 3) % len(rx)] for i in range(r.length)]
    r.configure(table, rx[-1])
    flows = r.flows()
    arrived = r.n.probe.run(r.n.work.tx, [f for _, f in flows], flows[-1][0], STEERED_BY_HASH)
    wrong = []
    for seq, frame in flows:
        want = r.name[r.destination(frame, table, rx[-1])]
        got = arrived.get(seq)
        if got is None or got.rxq != want:
            wrong.append(f"{seq}: {want} expected, {'not received' if got is None else got.rxq}")
    require(not wrong, STEERED_BY_HASH, f"receive queues of {len(flows)} frames under RSS",
            expected="each on the queue its Toeplitz hash selects (unclassified_queue for the one not hashed)",
            observed="; ".join(wrong), queue="receiveq*")


@pytest.mark.clause(DROPPED_IF_RESET)
def test_rss_drops_frames_for_a_queue_being_reset(session):
    """Every table entry receiveq2, unclassified_queue receiveq1; receiveq2 being reset while IP
    frames and a frame of no IP are sent: the one of no IP comes back on receiveq1, the IP frames
    are dropped -- not placed elsewhere, nor kept for when receiveq2 is enabled again."""
    r = Rss(session, DROPPED_IF_RESET)
    first, second = r.rxqs[0], r.rxqs[1]
    r.configure([second.index] * r.length, first.index)
    flows = r.flows()
    hashed = [s for s, f in flows if R.hash_input(f, r.types) is not None]
    r.n.probe.post(len(flows) + 2)
    seen = {}

    def send():
        r.n.probe.send(r.n.work.tx, [f for _, f in flows])
        seen.update(r.n.probe.arrivals([flows[-1][0]], r.n.probe.timeout))

    session.driver.reset_vq(second, while_reset=send)
    r.n.probe.forget(second)
    require(flows[-1][0] in seen, BUFFERS_USED, f"the unhashed frame {flows[-1][0]} while {second.name} was being reset",
            expected=f"received on {first.name}, the unclassified_queue", observed="not received", queue=first.name)
    r.n.probe.post(len(flows) + 2)
    witness_seq, witness = r.n.probe.frame(r.n.mac)
    arrived = r.n.probe.run(r.n.work.tx, [witness], witness_seq, BUFFERS_USED)
    placed = [f"{s} on {arrived[s].rxq}" for s in hashed if s in arrived]
    require(not placed, DROPPED_IF_RESET, f"{len(hashed)} frames RSS sends to {second.name} while it was being reset",
            expected="dropped", observed=f"received: {', '.join(placed)}", queue=second.name)
