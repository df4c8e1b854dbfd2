"""Frame traffic for the virtio-net suites (VIRTIO 1.4, 5.1.6): headers in the negotiated form,
receive buffers the test shapes, frames found by their tag (virtio/net_frames.py) and received
frames gathered over as many buffers as ``num_buffers`` says (5.1.9.4.1)."""

from __future__ import annotations

from dataclasses import dataclass

from virtio import constants as C
from virtio.checks import require
from virtio.net_frames import (
    FrameTags,
    checksum_problems,
    complete_checksum,
    csum_offset_of,
    ip_frame,
    ipv4_header_problem,
    l4_offset,
    pseudo_header_sum,
    same_ones_complement,
    vlan_id,
)
from virtio.net_hdr import NetHdrFull, hdr_size

# 5.1.9.4.1 statements the gathering itself checks
NUM_BUFFERS_ONE = "dev.net.device-operation.processing-of-incoming-packets.1"
NUM_BUFFERS_MRG = "dev.net.device-operation.processing-of-incoming-packets.2"
FILL_ALL_BUT_LAST = "dev.net.device-operation.processing-of-incoming-packets.3"
USED_TOGETHER = "dev.net.device-operation.processing-of-incoming-packets.4"
# 5.1.9.4.1: what a frame the device hands over still partial (NEEDS_CSUM) must be
PRECEDING_VALIDATED = "dev.net.device-operation.processing-of-incoming-packets.16"
PSEUDO_HEADER_SUM = "dev.net.device-operation.processing-of-incoming-packets.17"
CSUM_FIELDS_COMPLETE = "dev.net.device-operation.processing-of-incoming-packets.18"
# 5.1.9.5.3.1: without VIRTIO_NET_F_CTRL_VLAN the device accepts every VLAN-tagged frame
VLAN_ALL_ACCEPTED = "dev.net.device-operation.control-virtqueue.vlan-filtering.1"
# Features the suites control themselves: IN_ORDER batches hide used lens the checks read.
REFUSED = (C.VIRTIO_F_IN_ORDER,)


@dataclass
class Received:
    hdr: NetHdrFull
    frame: bytes
    lens: list[int]  # used len of each buffer the frame occupied


def with_mrg_rxbuf(session, *want: int) -> tuple[int, ...]:
    """``want`` and VIRTIO_NET_F_MRG_RXBUF where offered: for a test whose duty is not how a frame is
    spread over buffers, and that a device answering num_buffers right only with MRG_RXBUF (DPDK's
    vhost) still reaches."""
    offered = session.driver.device_features()
    return (*want, C.VIRTIO_NET_F_MRG_RXBUF) if offered >> C.VIRTIO_NET_F_MRG_RXBUF & 1 else want


def judge_needs_csum(got: bytes, hdr, what: str, queue: str) -> bytes:
    """5.1.9.4.1 for a received frame marked NEEDS_CSUM, GSO or not: the IPv4 header checksum
    (before csum_start) right, the pseudo-header sum in its TCP/UDP checksum field, and csum_start /
    csum_offset that complete it into a frame whose checksums scapy finds right. -> the completed frame."""
    problem = ipv4_header_problem(got)
    require(problem is None, PRECEDING_VALIDATED, f"{what}: the checksums before csum_start",
            expected="validated, right", observed=problem, queue=queue)
    at = l4_offset(got) + csum_offset_of(got)
    field, want = int.from_bytes(got[at:at + 2], "big"), pseudo_header_sum(got)
    require(same_ones_complement(field, want), PSEUDO_HEADER_SUM, f"{what}: its TCP/UDP checksum field",
            expected=f"the pseudo-header sum {want:#06x}", observed=f"{field:#06x}", queue=queue)
    done = complete_checksum(got, hdr.csum_start, hdr.csum_offset)
    problems = ["csum_start + csum_offset lies outside the frame"] if done is None else checksum_problems(done)
    require(not problems, CSUM_FIELDS_COMPLETE,
            f"{what}, completed from csum_start {hdr.csum_start} into csum_offset {hdr.csum_offset}",
            expected="a fully checksummed frame", observed="; ".join(problems), queue=queue)
    return done


class NetIO:
    def __init__(self, session, *, want=(), refuse=()):
        self.work = session.start(want=tuple(want), refuse=tuple(refuse) + REFUSED)
        self.driver = self.work.driver
        self.neg = self.driver.negotiated or 0
        self.rx, self.tx = self.work.rx, self.work.tx
        self.timeout = self.work.timeout
        self.hsize = hdr_size(self.neg)
        self.mac = self.work.mac
        self.tags: FrameTags = self.work.tags
        self.seq = 1000
        self.posted: dict[int, int] = {}  # head -> writable size of a receive buffer we posted
        self.early: dict[int, Received] = {}
        self.work.await_link_up()  # 5.1.4: link down -> no traffic expected (LinkDown: not applicable)

    def has(self, bit: int) -> bool:
        return bool(self.neg >> bit & 1)

    @property
    def mtu(self) -> int | None:
        return self.driver.config_field("mtu") if self.has(C.VIRTIO_NET_F_MTU) else None

    def post_rx(self, count: int, size: int) -> None:
        for _ in range(count):
            c = self.rx.add([], [size])
            self.posted[id(c)] = size
        self.rx.kick()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def ip(self, kind: str, payload_len: int, **kw) -> tuple[int, bytes]:
        seq = self.next_seq()
        return seq, ip_frame(self.tags, self.mac, seq, kind, payload_len, **kw)

    def raw(self, length: int) -> tuple[int, bytes]:
        seq = self.next_seq()
        return seq, self.tags.frame(self.mac, seq, length)

    def send(self, frame: bytes, hdr: NetHdrFull | None = None, *, duty: str | None = None) -> None:
        """Transmit one frame and wait for its transmit buffer (5.1.9.2)."""
        h = (hdr or NetHdrFull()).pack_as(self.hsize)
        c = self.tx.add([h + frame], [])
        self.tx.kick()
        self.tx.wait_used(1, self.timeout, awaited="transmit buffer on transmitq1", duty=duty)
        self.tx.release(c)

    def _one(self, awaited: str, duty: str | None) -> Received:
        first = self.rx.wait_used(1, self.timeout, awaited=awaited, duty=duty)[0]
        raw = self.rx.read_in(first)
        require(len(raw) >= self.hsize, NUM_BUFFERS_ONE, "a received buffer holds at least the header",
                expected=f">= {self.hsize} bytes", observed=f"used len {len(raw)}", queue=self.rx.name)
        hdr = NetHdrFull.unpack_as(raw, self.hsize)
        chains = [first]
        n = hdr.num_buffers if self.has(C.VIRTIO_NET_F_MRG_RXBUF) else 1
        if not self.has(C.VIRTIO_NET_F_MRG_RXBUF):
            require(hdr.num_buffers == 1, NUM_BUFFERS_ONE, "num_buffers without VIRTIO_NET_F_MRG_RXBUF",
                    expected=1, observed=hdr.num_buffers, queue=self.rx.name)
        else:
            require(1 <= n <= self.rx.num, NUM_BUFFERS_MRG, "num_buffers of a received frame",
                    expected=f"1..{self.rx.num}", observed=n, queue=self.rx.name)
        if n > 1:
            # 5.1.9.4.1: a frame's buffers are used together -- once its first is seen used, so are the rest.
            while len(chains) < n and (more := self.rx.get_buf()) is not None:
                chains.append(more)
            require(len(chains) == n, USED_TOGETHER, f"used buffers when the first of a frame with num_buffers {n} was seen used",
                    expected=f"all {n} used together", observed=f"{len(chains)} used", queue=self.rx.name)
        lens = [c.used_len for c in chains]
        for c in chains[:-1]:
            size = sum(s.len for s in c.in_sgs)
            require(c.used_len == size, FILL_ALL_BUT_LAST, "a buffer before the last of a merged frame is filled",
                    expected=size, observed=c.used_len, queue=self.rx.name)
        data = b"".join(self.rx.read_in(c) for c in chains)[self.hsize:]
        for c in chains:
            self.rx.release(c)
        return Received(hdr, data, lens)

    def receive(self, seq: int, *, duty: str | None = None) -> Received:
        """The received frame carrying tag ``seq``; frames of other tags are kept for later."""
        while seq not in self.early:
            r = self._one(f"received frame {seq} on receiveq1", duty)
            got = self.tags.seq_of(r.frame)
            if got is not None:
                self.early[got] = r
        return self.early.pop(seq)

    def receive_each(self, frames: list[tuple[int, bytes]], *, duty: str | None = None):
        """(seq, frame sent, Received) for each of ``frames``, the untagged ones awaited first: once
        they came, a tagged one that does not is the VLAN duty's (without CTRL_VLAN the device
        accepts every tagged frame), not the test's ``duty``."""
        vlan_duty = None if self.has(C.VIRTIO_NET_F_CTRL_VLAN) else VLAN_ALL_ACCEPTED
        for seq, f in sorted(frames, key=lambda sf: vlan_id(sf[1]) is not None):
            yield seq, f, self.receive(seq, duty=(vlan_duty or duty) if vlan_id(f) is not None else duty)

    def until(self, seq: int) -> list[tuple[int | None, Received]]:
        """Every frame received up to and including the one tagged ``seq`` (a sentinel)."""
        out = [(s, r) for s, r in self.early.items() if s != seq]
        self.early = {s: r for s, r in self.early.items() if s == seq}
        while seq not in self.early:
            r = self._one(f"received sentinel frame {seq} on receiveq1", None)
            got = self.tags.seq_of(r.frame)
            if got == seq:
                self.early[got] = r
            else:
                out.append((got, r))
        out.append((seq, self.early.pop(seq)))
        return out
