"""Reference network device (VIRTIO 1.4, 5.1): a loopback NIC with receive filtering.

Frames the driver transmits on a transmit queue come back on a receive queue if the receive
filter accepts them; the control queue and the steering over the queue pairs are in net_ctrl.py.
"""

from __future__ import annotations

from collections import deque

from virtio import constants as C
from virtio import net_hdr as H
from virtio.buffers import DeviceChain
from virtio.messages import NET_HDR_SIZE, NetHdr
from virtio.net_frames import (
    ETH_HLEN,
    VLAN_HLEN,
    VLAN_TPID,
    checksum_problems,
    complete_checksum,
    ipv4_header_problem,
    l3_offset,
    l4_offset,
    ones_sum,
    pseudo_header_sum,
)

from .device import Device
from .device_queue import DeviceQueue
from .net_ctrl import (
    CTRL_FEATURE_DEPENDS,
    CTRL_FEATURES,
    RSS_HASH_TYPES,
    RSS_MAX_INDIRECTION_TABLE_LENGTH,
    RSS_MAX_KEY_SIZE,
    NetControl,
)

RX, TX = 0, 1  # receiveq1, transmitq1; receiveqK is 2(K-1), transmitqK 2(K-1)+1
DEFAULT_MAC = bytes.fromhex("525400123456")
PENDING_MAX = 256  # frames waiting for a receive buffer; more are dropped
DEFAULT_MTU = 9000  # jumbo: the generic suites send frames of 2 KiB and more
SPEED_MBPS = 10000
DUPLEX_FULL = 0

# 5.1.3.1: features that need another feature (only the ones this model offers).
# 5.1.3.1: TCP segmentation offload needs checksum offload
FEATURE_DEPENDS = {**CTRL_FEATURE_DEPENDS, C.VIRTIO_NET_F_HOST_TSO4: C.VIRTIO_NET_F_CSUM, C.VIRTIO_NET_F_HOST_TSO6: C.VIRTIO_NET_F_CSUM,
                   C.VIRTIO_NET_F_GUEST_TSO4: C.VIRTIO_NET_F_GUEST_CSUM, C.VIRTIO_NET_F_GUEST_TSO6: C.VIRTIO_NET_F_GUEST_CSUM}
# gso_type -> (the HOST_* feature that lets a driver send it, the IP version it carries)
HOST_TSO = {H.GSO_TCPV4: (C.VIRTIO_NET_F_HOST_TSO4, 4), H.GSO_TCPV6: (C.VIRTIO_NET_F_HOST_TSO6, 6)}
GUEST_TSO = {H.GSO_TCPV4: C.VIRTIO_NET_F_GUEST_TSO4, H.GSO_TCPV6: C.VIRTIO_NET_F_GUEST_TSO6}

STATS_FIELDS = (
    "tx_packets",
    "tx_errors",  # malformed transmit buffers (short header, runt frame, GSO not negotiated)
    "tx_link_down",  # frames transmitted while the link was down
    "rx_packets",
    "rx_filtered",  # dropped by the receive filter
    "rx_too_big",  # larger than the receive buffer at the head of the queue
    "rx_overflow",  # dropped because PENDING_MAX frames were already waiting
    "ctrl_ok",
    "ctrl_err",
)


class NetDevice(NetControl, Device):
    """Network device model: receiveq1 (0), transmitq1 (1), controlq (2); MQ over two pairs.

    Judgement calls: frames transmitted while the link is down are dropped (no carrier); a
    receive buffer too small for the 12-byte header is returned at once with used len 0; the
    ack of a control command is its first writable byte (``ack`` precedes any
    command-specific-result in struct virtio_net_ctrl).
    """

    device_id = C.VIRTIO_ID_NET
    name = "net"
    num_queues = 2 * NetControl.pairs_max + 1
    queue_names = ("receiveq1", "transmitq1", "receiveq2", "transmitq2", "controlq")
    queue_size_max = 256
    net_forward = "unchanged"  # frames come back bit for bit (virtio/net_frames.py)
    features = sum(
        1 << b
        for b in (
            C.VIRTIO_NET_F_MAC,
            C.VIRTIO_NET_F_STATUS,
            *CTRL_FEATURES,
            # data path (5.1.6): TX checksum completion, RX checksum validation, merged buffers
            C.VIRTIO_NET_F_CSUM,
            C.VIRTIO_NET_F_GUEST_CSUM,
            C.VIRTIO_NET_F_HOST_TSO4,  # TCP segmentation of what the driver sends (5.1.9.2)
            C.VIRTIO_NET_F_HOST_TSO6,
            C.VIRTIO_NET_F_GUEST_TSO4,  # such a frame handed to a driver that takes GSO whole (5.1.9.4.1)
            C.VIRTIO_NET_F_GUEST_TSO6,
            C.VIRTIO_NET_F_MRG_RXBUF,
            C.VIRTIO_NET_F_MTU,
            C.VIRTIO_NET_F_SPEED_DUPLEX,
        )
    )
    mtu = DEFAULT_MTU

    def __init__(self, mode: str = "notify", mac: bytes | str = DEFAULT_MAC):
        if isinstance(mac, str):
            mac = bytes.fromhex(mac.replace(":", ""))
        if len(mac) != 6:
            raise ValueError(f"a MAC address is 6 bytes, got {len(mac)}")
        self.default_mac = bytes(mac)
        self.stats = dict.fromkeys(STATS_FIELDS, 0)
        self.pending: dict[int, deque[bytes]] = {}  # receive queue -> frames waiting for a buffer
        super().__init__(mode=mode)

    # -- configuration (5.1.4) ----------------------------------------------------------------
    def initial_config(self) -> bytes:
        return self.layout.pack({"mac": self.default_mac, "status": C.VIRTIO_NET_S_LINK_UP, "mtu": self.mtu,
                                 "speed": SPEED_MBPS, "duplex": DUPLEX_FULL,
                                 "max_virtqueue_pairs": self.pairs_max, "rss_max_key_size": RSS_MAX_KEY_SIZE,
                                 "rss_max_indirection_table_length": RSS_MAX_INDIRECTION_TABLE_LENGTH,
                                 "supported_hash_types": RSS_HASH_TYPES})

    def accept_features(self, driver_features: int) -> bool:
        """Refuse FEATURES_OK for a subset that breaks a 5.1.3.1 dependency (it is not valid)."""
        if not super().accept_features(driver_features):
            return False
        return all(
            not driver_features >> f & 1 or driver_features >> dep & 1 for f, dep in FEATURE_DEPENDS.items()
        )

    def on_reset(self) -> None:
        # The control queue's state goes (net_ctrl.py), the MAC set with ADDR_SET is forgotten and
        # the link comes back up (change_config() models a transient link flap, not a lasting state).
        self.ctrl_reset()
        self.mac = self.default_mac
        self.pending.clear()
        with self.lock:
            old = bytes(self.config)
            self._set_field("mac", self.default_mac)
            self._set_field("status", C.VIRTIO_NET_S_LINK_UP)
            if bytes(self.config) != old:
                self.bump_generation()

    def _set_field(self, name: str, value) -> None:
        f = self.layout[name]
        self.config[f.offset : f.offset + f.size] = f.encode(value)

    def link_up(self) -> bool:
        return bool(self.config_value("status") & C.VIRTIO_NET_S_LINK_UP)

    def change_config(self) -> None:
        """A link flap: toggle VIRTIO_NET_S_LINK_UP (5.1.4), with a config change notification."""
        with self.lock:
            self.update_config(status=self.announce_on_link_up(self.config_value("status") ^ C.VIRTIO_NET_S_LINK_UP))

    def negotiated(self, bit: int) -> bool:
        return bool(self.driver_features >> bit & 1)

    def on_queue_reset(self, index: int) -> None:
        self.coal_on_queue_reset(index)
        if self.data_queue_kind(index) == "rx":
            self.pending_on(index).clear()  # frames waiting for its buffers go with them

    def live_rx_queue(self, rxq: int) -> int | None:
        """5.1.9.5.6.2: a destination receive queue being reset gives way to another in use (the
        first); None when every one is being reset, and the frame is dropped."""
        if self.queues[rxq] is not None:
            return rxq
        return next((q for q in range(0, 2 * self.vq_pairs, 2) if self.queues[q] is not None), None)

    # -- queues ---------------------------------------------------------------------------------
    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int | None:
        if self.is_ctrl_queue(qindex):
            return self.ctrl(queue, chain)
        if qindex % 2 == 0:
            return self._rx_buffer(chain)
        return self._tx(queue, chain, self.rx_queue_for(qindex))

    def after_process(self, index: int) -> None:
        # New frames (TX) or new receive buffers (RX): move what can go, then one RX notification.
        if not self.is_ctrl_queue(index):
            for rxq in self.rx_queues():
                self._deliver(rxq)
                self.signal(rxq)

    def pending_on(self, rxq: int) -> deque[bytes]:
        return self.pending.setdefault(rxq, deque())

    # -- receive (5.1.9.3, 5.1.9.4) ----------------------------------------------------------------
    def _rx_buffer(self, chain: DeviceChain) -> int | None:
        """Keep a receive buffer until a frame arrives; one too small for the header is useless."""
        if chain.writable_len < NET_HDR_SIZE:
            return 0  # judgement call: return it at once, empty, rather than clog the queue
        return None

    def receive(self, frame: bytes, rxq: int = RX) -> bool:
        """A frame arrives from the wire (here: our own transmit path); queue it if accepted."""
        if not self.accepts(frame):  # the receive filter: net_ctrl.py
            self.stats["rx_filtered"] += 1
            self.count(rxq, rx_drops=1)
            return False
        gso = isinstance(frame, PartialFrame) and frame.gso_type != H.GSO_NONE
        if self.negotiated(C.VIRTIO_NET_F_MTU) and not gso and len(frame) > self.max_frame(frame):
            self.stats["rx_too_big"] += 1  # 5.1.4.1: nothing longer than mtu + link header
            self.count(rxq, rx_drops=1)
            return False
        rss = self.rss_destination(frame)
        live = self.live_rx_queue(rxq) if rss is None else (rss if self.queues[rss] is not None else None)
        if live is None:  # every receive queue being reset, or RSS's destination (5.1.9.5.7.2)
            self.count(rxq, rx_drops=1)
            return False
        rxq = live
        pending = self.pending_on(rxq)
        if len(pending) >= PENDING_MAX:
            self.stats["rx_overflow"] += 1
            self.count(rxq, rx_drops=1, rx_drop_overruns=1)
            return False
        pending.append(self.rewrite_accepted(frame))
        return True

    def rewrite_accepted(self, frame: bytes) -> bytes:
        """What the device does to a frame past its receive filter before the driver gets it:
        nothing here; a forwarding back-end may rewrite addresses (declared in ``net_forward``)."""
        return frame

    def max_frame(self, frame: bytes) -> int:
        """mtu plus the link-level header: 14 bytes, 18 with an 802.1Q tag (5.1.4.1)."""
        return self.config_value("mtu") + ETH_HLEN + (VLAN_HLEN if frame[12:14] == VLAN_TPID else 0)

    def rx_flags(self, frame: bytes) -> int:
        """5.1.9.4.1: flags 0 without GUEST_CSUM; with it DATA_VALID only for a checksum we checked."""
        if not self.negotiated(C.VIRTIO_NET_F_GUEST_CSUM):
            return 0
        if isinstance(frame, PartialFrame):
            return H.NEEDS_CSUM
        return H.DATA_VALID if _is_ip(frame) and not checksum_problems(frame) else 0

    def _deliver(self, rxq: int = RX) -> None:
        """Copy waiting frames into held receive buffers, in the order both arrived."""
        held = self.held.get(rxq, {})
        q = self.queues[rxq]
        pending = self.pending_on(rxq)
        mrg = self.negotiated(C.VIRTIO_NET_F_MRG_RXBUF)
        while pending and held and q is not None:
            frame = pending[0]
            chains = list(held.values())
            need = NET_HDR_SIZE + len(frame)
            if not mrg:
                if need > chains[0].writable_len:
                    # Without MRG_RXBUF a frame must fit one buffer (5.1.9.3.2): dropped, the buffer stays.
                    pending.popleft()
                    self.stats["rx_too_big"] += 1
                    self.count(rxq, rx_drops=1)
                    continue
                use = chains[:1]
            else:
                use, room = [], 0
                for c in chains:
                    use.append(c)
                    room += c.writable_len
                    if room >= need:
                        break
                if room < need:
                    return  # 5.1.9.4.1: wait for more buffers; the frame goes out whole or not yet
            pending.popleft()
            flags = self.rx_flags(frame)
            if isinstance(frame, PartialFrame) and flags & H.NEEDS_CSUM:
                hdr = frame.header(len(use))
                hdr.flags = flags
            else:  # GSO_NONE; num_buffers is the buffers used (5.1.9.3.2)
                hdr = NetHdr(flags=flags, gso_type=H.GSO_NONE, num_buffers=len(use))
            self.fill_rx(q, use, hdr.pack() + frame, rxq)
            self.stats["rx_packets"] += 1
            self.count(rxq, rx_packets=1, rx_bytes=len(frame), **self._rx_csum_counter(frame, flags))

    def _rx_csum_counter(self, frame: bytes, flags: int) -> dict:
        """Which RX_CSUM statistic a delivered frame counts in (5.1.9.5.11), with GUEST_CSUM."""
        if not self.negotiated(C.VIRTIO_NET_F_GUEST_CSUM):
            return {}
        if flags & H.DATA_VALID:
            return {"rx_csum_valid": 1}
        if flags & H.NEEDS_CSUM:
            return {"rx_needs_csum": 1}
        return {"rx_csum_bad": 1} if _is_ip(frame) and checksum_problems(frame) else {"rx_csum_none": 1}

    def count(self, index: int, **increments: int) -> None:
        """Device statistics of queue ``index`` (5.1.9.5.11), by their spec names."""
        counters = self.queue_counters[index]
        for name, n in increments.items():
            counters[name] += n

    def fill_rx(self, q: DeviceQueue, chains: list[DeviceChain], data: bytes, rxq: int = RX) -> None:
        """Every buffer but the last filled to its end, all made used together (5.1.9.4.1)."""
        pos, lens = 0, []
        for c in chains:
            n = q.write_writable(c, data[pos:pos + c.writable_len])
            pos += n
            lens.append(n)
        self.complete_together(rxq, chains, lens)

    # -- transmit (5.1.9.2) ------------------------------------------------------------------------
    def _tx(self, queue: DeviceQueue, chain: DeviceChain, rxq: int = RX) -> int:
        """Take one frame; the buffer is used with len 0 since the device writes nothing."""
        raw = queue.read_readable(chain)
        if len(raw) < NET_HDR_SIZE + ETH_HLEN:
            self.stats["tx_errors"] += 1  # short header or runt frame: nothing to send
            self.count(queue.index, tx_drops=1, tx_drop_malformed=1)
            return 0
        hdr = NetHdr.unpack(raw[:NET_HDR_SIZE])
        if not self.link_up():
            self.stats["tx_link_down"] += 1
            self.count(queue.index, tx_drops=1)
            return 0
        if self.negotiated(C.VIRTIO_NET_F_CSUM):
            self.count(queue.index, **{"tx_needs_csum" if hdr.flags & H.NEEDS_CSUM else "tx_csum_none": 1})
        frame = raw[NET_HDR_SIZE:]
        # Unknown flag bits are ignored (5.1.9.2.2); GSO only as a negotiated HOST_* feature allows.
        if hdr.gso_type != C.VIRTIO_NET_HDR_GSO_NONE:
            segments = self.segment(hdr, frame)
            if segments is None:
                self.stats["tx_errors"] += 1
                self.count(queue.index, tx_drops=1, tx_drop_malformed=1)
                return 0
            self.stats["tx_packets"] += 1
            self.count(queue.index, tx_packets=len(segments), tx_bytes=sum(map(len, segments)))
            for seg in segments:
                self.receive(seg, rxq)
            return 0
        if hdr.flags & H.NEEDS_CSUM and self.negotiated(C.VIRTIO_NET_F_CSUM):
            if self.passes_partial(frame, hdr.csum_start, hdr.csum_offset):
                frame = PartialFrame(frame, hdr.csum_start, hdr.csum_offset)
            else:
                frame = self.complete_checksum(frame, hdr.csum_start, hdr.csum_offset)
            if frame is None:
                self.stats["tx_errors"] += 1
                self.count(queue.index, tx_drops=1, tx_drop_malformed=1)
                return 0
        self.stats["tx_packets"] += 1
        self.count(queue.index, tx_packets=1, tx_bytes=len(frame))
        self.receive(frame, rxq)
        return 0

    complete_checksum = staticmethod(complete_checksum)

    def segment(self, hdr: NetHdr, frame: bytes) -> list[bytes] | None:
        """A TCP GSO frame cut into the packets its metadata describes (5.1.9.2), or None where the
        driver may not send it: its HOST_TSO feature not negotiated, ECN without HOST_ECN, no
        NEEDS_CSUM (5.1.9.2.1), no TCP in the frame. The header length comes from the frame itself,
        never from hdr_len (5.1.9.2.2: the device MUST NOT rely on it)."""
        feature, version = HOST_TSO.get(hdr.gso_type & ~H.GSO_ECN, (None, None))
        if feature is None or not self.negotiated(feature) or hdr.gso_type & H.GSO_ECN or not hdr.flags & H.NEEDS_CSUM:
            return None
        if not _is_ip(frame) or frame[l3_offset(frame)] >> 4 != version:
            return None
        guest = GUEST_TSO[hdr.gso_type]
        if self.negotiated(guest) and hdr.gso_size > 0:
            whole = gso_whole(frame, hdr.gso_type, hdr.gso_size)  # the receiving driver takes GSO (5.1.9.4.1)
            return None if whole is None else [whole]
        return tcp_segments(frame, hdr.gso_size)

    def passes_partial(self, frame: bytes, start: int, offset: int) -> bool:
        """Hand a driver's NEEDS_CSUM frame on still partial (as Linux's tap does) when the receiving
        driver accepted GUEST_CSUM: only with the checksums before csum_start validated (5.1.9.4.1)."""
        return (self.negotiated(C.VIRTIO_NET_F_GUEST_CSUM) and _is_ip(frame) and start + offset + 2 <= len(frame)
                and ipv4_header_problem(frame) is None)


class PartialFrame(bytes):
    """A received frame whose L4 checksum is left to the driver: delivered with NEEDS_CSUM and
    these csum_start / csum_offset (5.1.9.4.1; the checksum field holds the pseudo-header sum) --
    and, for a GSO frame handed over whole, its gso_type, gso_size and hdr_len."""

    def __new__(cls, data: bytes, csum_start: int, csum_offset: int, gso_type: int = H.GSO_NONE,
                gso_size: int = 0, hdr_len: int = 0):
        self = super().__new__(cls, data)
        self.csum_start, self.csum_offset = csum_start, csum_offset
        self.gso_type, self.gso_size, self.hdr_len = gso_type, gso_size, hdr_len
        return self

    def header(self, num_buffers: int) -> NetHdr:
        return NetHdr(flags=H.NEEDS_CSUM, gso_type=self.gso_type, hdr_len=self.hdr_len, gso_size=self.gso_size,
                      csum_start=self.csum_start, csum_offset=self.csum_offset, num_buffers=num_buffers)


def tcp_segments(frame: bytes, mss: int, header_len: int | None = None) -> list[bytes] | None:
    """Cut a TCP frame into segments of at most ``mss`` payload bytes, as a NIC's TSO does: the
    headers replicated, IPv4 total length / id / header checksum and IPv6 payload length per
    segment, the sequence number advanced, FIN and PSH on the last segment only, CWR on the first
    only, every TCP checksum complete. None for a frame that is not TCP. ``header_len`` (what
    is replicated) defaults to the headers found in the frame."""
    l3, l4 = l3_offset(frame), l4_offset(frame)
    v4 = frame[l3] >> 4 == 4
    if mss <= 0 or len(frame) < l4 + 20 or (frame[l3 + 9] if v4 else frame[l3 + 6]) != 6:
        return None
    thl = (frame[l4 + 12] >> 4) * 4
    if thl < 20 or len(frame) < l4 + thl:
        return None
    cut = l4 + thl if header_len is None else header_len
    head, data = frame[:cut], frame[cut:]
    seq0, flags, ip_id = int.from_bytes(frame[l4 + 4:l4 + 8], "big"), frame[l4 + 13], int.from_bytes(frame[l3 + 4:l3 + 6], "big")
    chunks = [data[i:i + mss] for i in range(0, len(data), mss)] or [b""]
    out = []
    for i, chunk in enumerate(chunks):
        seg = bytearray(head + chunk)
        if v4:
            ihl = (seg[l3] & 0xF) * 4
            seg[l3 + 2:l3 + 4] = (len(seg) - l3).to_bytes(2, "big")
            seg[l3 + 4:l3 + 6] = ((ip_id + i) & 0xFFFF).to_bytes(2, "big")
            seg[l3 + 10:l3 + 12] = b"\0\0"
            seg[l3 + 10:l3 + 12] = (~ones_sum(bytes(seg[l3:l3 + ihl])) & 0xFFFF).to_bytes(2, "big")
        else:
            seg[l3 + 4:l3 + 6] = (len(seg) - l3 - 40).to_bytes(2, "big")
        seg[l4 + 4:l4 + 8] = ((seq0 + i * mss) & 0xFFFF_FFFF).to_bytes(4, "big")
        seg[l4 + 13] = flags & ~(TCP_FIN | TCP_PSH if i < len(chunks) - 1 else 0) & ~(TCP_CWR if i else 0)
        seg[l4 + 16:l4 + 18] = pseudo_header_sum(bytes(seg)).to_bytes(2, "big")
        out.append(complete_checksum(bytes(seg), l4, 16))
    return out


TCP_FIN, TCP_PSH, TCP_CWR = 0x01, 0x08, 0x80


def gso_whole(frame: bytes, gso_type: int, mss: int) -> PartialFrame | None:
    """A TCP frame handed to the driver uncut (5.1.9.4.1): GSO with NEEDS_CSUM, gso_size the MSS,
    hdr_len the headers through TCP, the checksum field holding the pseudo-header sum."""
    l4 = l4_offset(frame)
    if len(frame) < l4 + 20:
        return None
    thl = (frame[l4 + 12] >> 4) * 4
    raw = bytearray(frame)
    raw[l4 + 16:l4 + 18] = pseudo_header_sum(frame).to_bytes(2, "big")
    return PartialFrame(bytes(raw), l4, 16, gso_type=gso_type, gso_size=mss, hdr_len=l4 + thl)


def _is_ip(frame: bytes) -> bool:
    at = l3_offset(frame) - 2  # the ethertype after any tags
    return frame[at:at + 2] in (b"\x08\x00", b"\x86\xdd")
