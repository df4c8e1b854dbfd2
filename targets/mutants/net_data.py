"""Mutants of the virtio-net data path and configuration (VIRTIO 1.4, 5.1.4.1, 5.1.9.2.2,
5.1.9.4.1): each breaks one header, frame or config duty of targets/model/net.py."""

from __future__ import annotations

import threading

from targets.model.net import DEFAULT_MTU, NET_HDR_SIZE, RX, NetDevice, tcp_segments
from targets.model.net_ctrl import CTRL_FEATURES
from virtio import constants as C
from virtio import net_hdr as H
from virtio.messages import NetHdr
from virtio.net_frames import ETH_HLEN, csum_offset_of, l3_offset, l4_offset

P = "dev.net.device-operation.processing-of-incoming-packets."
T = "dev.net.device-operation.packet-transmission."
CFG = "dev.net.device-configuration-layout."


class _NetMutant(NetDevice):
    both_layouts = True  # no ring internals touched: the split and the packed suites both judge it


class NetNumBuffersZero(_NetMutant):
    """Writes num_buffers 0 without MRG_RXBUF (a driver reading it as "no buffer" loses the frame).

    5.1.9.4.1: without VIRTIO_NET_F_MRG_RXBUF num_buffers MUST be 1."""

    name = "net-num-buffers-zero"
    clause = P + "1"

    def fill_rx(self, q, chains, data, rxq=0):
        if not self.negotiated(C.VIRTIO_NET_F_MRG_RXBUF):
            h = NetHdr.unpack(data)
            h.num_buffers = 0  # BUG
            data = h.pack() + data[12:]
        super().fill_rx(q, chains, data, rxq)


class NetMrgNumBuffersOne(_NetMutant):
    """Spreads a frame over several buffers but says num_buffers 1.

    5.1.9.4.1: with MRG_RXBUF num_buffers MUST give the number of buffers the frame is spread over."""

    name = "net-mrg-num-buffers-one"
    clause = P + "2"

    def fill_rx(self, q, chains, data, rxq=0):
        h = NetHdr.unpack(data)
        h.num_buffers = 1  # BUG
        super().fill_rx(q, chains, h.pack() + data[12:], rxq)


class NetSpreadsWithoutMrgRxbuf(_NetMutant):
    """Without MRG_RXBUF, spreads a frame too large for the buffer at the head over as many buffers
    as it needs (num_buffers still 1), instead of keeping to one buffer.

    5.1.9.3.2: without VIRTIO_NET_F_MRG_RXBUF the device MUST use only a single buffer."""

    name = "net-spreads-without-mrg-rxbuf"
    clause = "dev.net.device-operation.setting-up-receive-buffers.2"

    def _deliver(self, rxq=RX):
        if self.negotiated(C.VIRTIO_NET_F_MRG_RXBUF):
            return super()._deliver(rxq)
        held, q, pending = self.held.get(rxq, {}), self.queues[rxq], self.pending_on(rxq)
        while pending and held and q is not None:
            frame, use, room = pending[0], [], 0
            for c in held.values():
                use.append(c)
                room += c.writable_len
                if room >= NET_HDR_SIZE + len(frame):
                    break
            else:
                return
            pending.popleft()
            hdr = NetHdr(flags=self.rx_flags(frame), num_buffers=1)
            self.fill_rx(q, use, hdr.pack() + frame, rxq)  # BUG: len(use) may be more than one


class NetMrgShortBuffers(_NetMutant):
    """Fills merged receive buffers only 200 bytes deep, leaving each buffer's tail unused.

    5.1.9.4.1: every buffer but the last of a merged frame MUST be used to its full length."""

    name = "net-mrg-short-buffers"
    clause = P + "3"

    def _deliver(self, rxq=0):
        held, q = self.held.get(rxq, {}), self.queues[rxq]
        if not self.negotiated(C.VIRTIO_NET_F_MRG_RXBUF):
            return super()._deliver(rxq)
        pending = self.pending_on(rxq)
        while pending and held and q is not None:
            frame = pending[0]
            data = bytes(12) + frame
            chains = list(held.values())
            n = -(-len(data) // 200)
            if len(chains) < n:
                return
            pending.popleft()
            data = NetHdr(num_buffers=n).pack() + frame
            for i, c in enumerate(chains[:n]):
                part = data[200 * i:200 * (i + 1)]  # BUG: 200 bytes, whatever the buffer holds
                self.complete(rxq, c, q.write_writable(c, part))


class NetMrgBuffersUsedOneByOne(_NetMutant):
    """With MRG_RXBUF, makes the first buffer of a spread frame used at once and the rest a moment
    later (a device that publishes each buffer as it fills it, from another thread).

    5.1.9.4.1: the buffers of one frame MUST be used together, so that at least num_buffers are
    seen used by the driver."""

    name = "net-mrg-buffers-used-one-by-one"
    clause = P + "4"

    def fill_rx(self, q, chains, data, rxq=0):
        if len(chains) < 2:
            return super().fill_rx(q, chains, data, rxq)
        lens, pos = [], 0
        for c in chains:
            n = q.write_writable(c, data[pos:pos + c.writable_len])
            pos += n
            lens.append(n)
        self.complete(rxq, chains[0], lens[0])  # BUG: the rest follow later

        def rest():
            with self.lock:
                if self.queues[rxq] is q:
                    for c, n in zip(chains[1:], lens[1:]):
                        self.complete(rxq, c, n)
            self.signal(rxq)

        timer = threading.Timer(0.3, rest)
        timer.daemon = True
        timer.start()


class NetFlagsWithoutGuestCsum(_NetMutant):
    """Marks received IP frames DATA_VALID although GUEST_CSUM was not negotiated.

    5.1.9.4.1: without VIRTIO_NET_F_GUEST_CSUM flags MUST be zero."""

    name = "net-flags-without-guest-csum"
    clause = P + "5"

    def rx_flags(self, frame):
        if self.negotiated(C.VIRTIO_NET_F_GUEST_CSUM):
            return super().rx_flags(frame)
        return H.DATA_VALID  # BUG: without GUEST_CSUM


class NetGsoTcpv4WithoutGuestTso4(_NetMutant):
    """Labels received IPv4 TCP frames GSO_TCPV4 although GUEST_TSO4 was not negotiated.

    5.1.9.4.1: without VIRTIO_NET_F_GUEST_TSO4 gso_type MUST NOT be VIRTIO_NET_HDR_GSO_TCPV4."""

    name = "net-gso-tcpv4-without-guest-tso4"
    clause = P + "6"
    ethertype, l4_proto = b"\x08\x00", 6  # the frames it labels
    gso_type = H.GSO_TCPV4

    def allowed_by(self) -> tuple[int, ...]:
        """The features with which its label would be allowed (then it labels nothing)."""
        if self.gso_type & H.GSO_UDP_TUNNEL:
            return (C.VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO,)
        return H.GUEST_GSO_FEATURE.get(self.gso_type, H.GUEST_GSO_FEATURES)

    def fill_rx(self, q, chains, data, rxq=0):
        frame = data[12:]
        if any(self.negotiated(f) for f in self.allowed_by()):
            return super().fill_rx(q, chains, data, rxq)  # the label would be no bug here
        at = l3_offset(frame) - 2  # the ethertype after any tags
        proto_at = at + 2 + (9 if self.ethertype == b"\x08\x00" else 6)  # IPv4 protocol / IPv6 next header
        if frame[at:at + 2] == self.ethertype and len(frame) > proto_at and frame[proto_at] == self.l4_proto:
            h = NetHdr.unpack(data)
            h.gso_type, h.gso_size = self.gso_type, 1448 if self.gso_type != H.GSO_ECN else 0  # BUG
            data = h.pack() + frame
        super().fill_rx(q, chains, data, rxq)


class NetGsoUdpWithoutGuestUfo(NetGsoTcpv4WithoutGuestTso4):
    """Labels received IPv4 UDP frames GSO_UDP although GUEST_UFO was not negotiated.

    5.1.9.4.1: without VIRTIO_NET_F_GUEST_UFO gso_type MUST NOT be VIRTIO_NET_HDR_GSO_UDP."""

    name = "net-gso-udp-without-guest-ufo"
    clause = P + "7"
    ethertype, l4_proto, gso_type = b"\x08\x00", 17, H.GSO_UDP


class NetGsoTcpv6WithoutGuestTso6(NetGsoTcpv4WithoutGuestTso4):
    """Labels received IPv6 TCP frames GSO_TCPV6 although GUEST_TSO6 was not negotiated.

    5.1.9.4.1: without VIRTIO_NET_F_GUEST_TSO6 gso_type MUST NOT be VIRTIO_NET_HDR_GSO_TCPV6."""

    name = "net-gso-tcpv6-without-guest-tso6"
    clause = P + "8"
    ethertype, l4_proto, gso_type = b"\x86\xdd", 6, H.GSO_TCPV6


class NetGsoUdpL4WithoutGuestUso(NetGsoTcpv4WithoutGuestTso4):
    """Labels received IPv6 UDP frames GSO_UDP_L4 although neither GUEST_USO4 nor GUEST_USO6 was negotiated.

    5.1.9.4.1: without them gso_type MUST NOT be VIRTIO_NET_HDR_GSO_UDP_L4."""

    name = "net-gso-udp-l4-without-guest-uso"
    clause = P + "9"
    ethertype, l4_proto, gso_type = b"\x86\xdd", 17, H.GSO_UDP_L4


class NetGsoTunnelWithoutGuestTunnelGso(NetGsoTcpv4WithoutGuestTso4):
    """Labels received IPv4 UDP frames GSO_UDP_TUNNEL_IPV4 (a VXLAN flag passed through) although
    VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO was not negotiated.

    5.1.9.4.1: without it the device MUST NOT set either UDP tunnel bit in gso_type."""

    name = "net-gso-tunnel-without-guest-tunnel-gso"
    clause = P + "10"
    ethertype, l4_proto, gso_type = b"\x08\x00", 17, H.GSO_UDP_TUNNEL_IPV4


class NetGsoEcnBitWithoutGso(NetGsoTcpv4WithoutGuestTso4):
    """Sets the ECN bit alone in gso_type of received IPv6 TCP frames with no GUEST_* GSO feature
    negotiated (a congestion mark passed through from the host stack).

    5.1.9.4.1: with none of GUEST_TSO4/TSO6/UFO/USO4/USO6 negotiated, gso_type MUST be GSO_NONE."""

    name = "net-gso-ecn-bit-without-gso"
    clause = P + "21"
    ethertype, l4_proto, gso_type = b"\x86\xdd", 6, H.GSO_ECN


class NetDataValidUnchecked(_NetMutant):
    """With GUEST_CSUM, marks every received frame DATA_VALID without checking its checksum.

    5.1.9.4.1: a device setting VIRTIO_NET_HDR_F_DATA_VALID MUST have validated the checksum."""

    name = "net-data-valid-unchecked"
    clause = P + "26"

    def rx_flags(self, frame):
        return H.DATA_VALID if self.negotiated(C.VIRTIO_NET_F_GUEST_CSUM) else 0  # BUG: no check


class NetRscInfoWithoutRscExt(_NetMutant):
    """With GUEST_CSUM, marks received frames RSC_INFO although VIRTIO_NET_F_RSC_EXT was not negotiated.

    5.1.9.4.1: without VIRTIO_NET_F_RSC_EXT the device MUST NOT set VIRTIO_NET_HDR_F_RSC_INFO."""

    name = "net-rsc-info-without-rsc-ext"
    clause = P + "24"

    def rx_flags(self, frame):
        flags = super().rx_flags(frame)
        return flags | H.RSC_INFO if self.negotiated(C.VIRTIO_NET_F_GUEST_CSUM) else flags  # BUG


class NetUdpTunnelCsumWithoutFeature(_NetMutant):
    """With GUEST_CSUM, marks received frames UDP_TUNNEL_CSUM although
    VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM was not negotiated.

    5.1.9.4.1: without it the device MUST NOT set VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM."""

    name = "net-udp-tunnel-csum-without-feature"
    clause = P + "11"

    def rx_flags(self, frame):
        flags = super().rx_flags(frame)
        return flags | H.UDP_TUNNEL_CSUM if self.negotiated(C.VIRTIO_NET_F_GUEST_CSUM) else flags  # BUG


class NetDropsUnknownFlags(_NetMutant):
    """Drops a transmitted frame whose header has a flag bit it does not know.

    5.1.9.2.2: the device MUST ignore flag bits it does not recognize."""

    name = "net-drops-unknown-flags"
    clause = T + "1"

    def _tx(self, queue, chain, rxq=0):
        raw = queue.read_readable(chain)
        if len(raw) >= 12 and raw[0] & ~H.KNOWN_FLAGS:
            return 0  # BUG: refused
        return super()._tx(queue, chain, rxq)


class NetChecksumWithoutNeedsCsum(_NetMutant):
    """Fills in a checksum at csum_start + csum_offset even when NEEDS_CSUM is clear.

    5.1.9.2.2: without NEEDS_CSUM the device MUST NOT use csum_start and csum_offset."""

    name = "net-checksum-without-needs-csum"
    clause = T + "2"

    def _tx(self, queue, chain, rxq=0):
        raw = queue.read_readable(chain)
        h = NetHdr.unpack(raw)
        if not h.flags & H.NEEDS_CSUM and (h.csum_start or h.csum_offset) and self.link_up():
            frame = self.complete_checksum(raw[12:], h.csum_start, h.csum_offset)  # BUG
            if frame is not None:
                self.stats["tx_packets"] += 1
                self.receive(frame, rxq)
                return 0
        return super()._tx(queue, chain, rxq)


class NetTxChecksumLeftPartial(_NetMutant):
    """Forwards a NEEDS_CSUM frame still partial (flags 0) to a driver that did not accept GUEST_CSUM.

    5.1.9.4.1: without VIRTIO_NET_F_GUEST_CSUM the device SHOULD supply a fully checksummed frame."""

    name = "net-tx-checksum-left-partial"
    clause = P + "5"

    def passes_partial(self, frame, start, offset):
        return start + offset + 2 <= len(frame)  # BUG: whatever the receiving driver accepted


def _with_partial(data: bytes, change) -> bytes:
    """``data`` (header + frame) with ``change(header, frame bytearray)`` applied to a NEEDS_CSUM frame."""
    h = NetHdr.unpack(data)
    if not h.flags & H.NEEDS_CSUM:
        return data
    frame = bytearray(data[12:])
    change(h, frame)
    return h.pack() + bytes(frame)


class NetPartialIpv4HeaderStale(_NetMutant):
    """Decrements the TTL of IPv4 frames it hands over NEEDS_CSUM without fixing the header checksum.

    5.1.9.4.1: with NEEDS_CSUM the device MUST have validated the checksums before csum_start."""

    name = "net-partial-ipv4-header-stale"
    clause = P + "16"

    def fill_rx(self, q, chains, data, rxq=0):
        def stale(h, frame):
            at = l3_offset(bytes(frame))
            if frame[at] >> 4 == 4:
                frame[at + 8] = (frame[at + 8] - 1) & 0xFF  # BUG: header checksum not updated
        super().fill_rx(q, chains, _with_partial(data, stale), rxq)


class NetPartialChecksumFieldZero(_NetMutant):
    """Hands over NEEDS_CSUM frames with their TCP/UDP checksum field zeroed, not the pseudo-header sum.

    5.1.9.4.1: with NEEDS_CSUM the device MUST set the checksum field to the pseudo-header sum."""

    name = "net-partial-checksum-field-zero"
    clause = P + "17"

    def fill_rx(self, q, chains, data, rxq=0):
        def zero(h, frame):
            at = l4_offset(bytes(frame)) + csum_offset_of(bytes(frame))
            frame[at:at + 2] = b"\0\0"  # BUG
        super().fill_rx(q, chains, _with_partial(data, zero), rxq)


class NetPartialCsumOffsetWrong(_NetMutant):
    """Hands over NEEDS_CSUM frames with csum_offset two bytes past the checksum field.

    5.1.9.4.1: csum_start and csum_offset MUST let the driver complete the checksum."""

    name = "net-partial-csum-offset-wrong"
    clause = P + "18"

    def fill_rx(self, q, chains, data, rxq=0):
        def skew(h, frame):
            h.csum_offset += 2  # BUG
        super().fill_rx(q, chains, _with_partial(data, skew), rxq)


class NetTsoTrustsHdrLen(_NetMutant):
    """Replicates the first hdr_len bytes of a TSO frame as its headers, as hdr_len says.

    5.1.9.2.2: without VIRTIO_NET_F_GUEST_HDRLEN the device MUST NOT rely on hdr_len being correct."""

    name = "net-tso-trusts-hdr-len"
    clause = T + "7"

    def segment(self, hdr, frame):
        if super().segment(hdr, frame) is None:
            return None
        try:
            return tcp_segments(frame, hdr.gso_size, header_len=hdr.hdr_len)  # BUG
        except (IndexError, ValueError):
            return None


class NetTsoSegmentsOversized(_NetMutant):
    """Cuts TSO frames into packets of gso_size + 8 payload bytes (room for TCP options it never adds).

    5.1.9.2: gso_size is the most payload each packet carries beyond the replicated header."""

    name = "net-tso-segments-oversized"
    clause = "def.net.tx-segmentation"

    def segment(self, hdr, frame):
        if super().segment(hdr, frame) is None:
            return None
        return tcp_segments(frame, hdr.gso_size + 8)  # BUG


class NetGsoReceivedWithoutNeedsCsum(_NetMutant):
    """Hands a TCP GSO frame to a GUEST_TSO driver whole but with flags 0 (the checksum still partial).

    5.1.9.4.1: a gso_type other than NONE MUST come with NEEDS_CSUM and gso_size set."""

    name = "net-gso-received-without-needs-csum"
    clause = P + "22"

    def fill_rx(self, q, chains, data, rxq=0):
        h = NetHdr.unpack(data)
        if h.gso_type != H.GSO_NONE:
            h.flags &= ~H.NEEDS_CSUM  # BUG
            data = h.pack() + data[12:]
        super().fill_rx(q, chains, data, rxq)


class NetGsoReceivedHdrLenZero(_NetMutant):
    """Hands a TCP GSO frame to a GUEST_TSO driver with hdr_len 0.

    5.1.9.4.1: with a GUEST_* GSO feature the device SHOULD set hdr_len to at least the headers'
    length, the transport header included."""

    name = "net-gso-received-hdr-len-zero"
    clause = P + "25"

    def fill_rx(self, q, chains, data, rxq=0):
        h = NetHdr.unpack(data)
        if h.gso_type != H.GSO_NONE:
            h.hdr_len = 0  # BUG
            data = h.pack() + data[12:]
        super().fill_rx(q, chains, data, rxq)


class NetMaxPairsZero(_NetMutant):
    """Offers VIRTIO_NET_F_MQ with max_virtqueue_pairs 0 (an unset field), working as one pair.

    5.1.4.1: with MQ offered, max_virtqueue_pairs MUST lie in 1..0x8000."""

    name = "net-max-pairs-zero"
    clause = CFG + "1"
    pairs_max = 1  # its queues: one pair and the control queue

    def initial_config(self) -> bytes:
        config = super().initial_config()
        f = self.layout["max_virtqueue_pairs"]
        config[f.offset:f.offset + f.size] = f.encode(0)  # BUG
        return config


class NetMtuBelow1280(_NetMutant):
    """Offers VIRTIO_NET_F_MTU with mtu 1000 and holds to it: below the IPv6 minimum link MTU. Every
    suite still runs on it, keeping its frames within the mtu the device declares.

    5.1.4.1: the device SHOULD set mtu to at least 1280."""

    name = "net-mtu-below-1280"
    clause = CFG + "3"
    mtu = 1000  # BUG


class NetMtuTooSmall(_NetMutant):
    """Offers VIRTIO_NET_F_MTU with mtu 60, below the 68 an IPv4 host must handle.

    5.1.4.1: an offered mtu MUST lie in 68..65535."""

    name = "net-mtu-too-small"
    clause = CFG + "2"
    mtu = 60  # BUG

    def max_frame(self, frame):
        return DEFAULT_MTU + ETH_HLEN + 4  # carries frames as the clean model does


class NetMtuChanges(_NetMutant):
    """Raises mtu after the first frame it transmits.

    5.1.4.1: the device MUST NOT modify mtu once set."""

    name = "net-mtu-changes"
    clause = CFG + "4"

    def _tx(self, queue, chain, rxq=0):
        n = super()._tx(queue, chain, rxq)
        self._set_field("mtu", DEFAULT_MTU + 500)  # BUG
        return n


class NetNoMtuLimit(_NetMutant):
    """Passes received frames of any length up, ignoring the negotiated mtu.

    5.1.4.1: with MTU negotiated, no non-GSO received frame MUST exceed mtu plus link header."""

    name = "net-no-mtu-limit"
    clause = CFG + "5"

    def max_frame(self, frame):
        return 1 << 20  # BUG


class NetDropsJumbo(_NetMutant):
    """Drops transmitted frames within 100 bytes of the mtu (9000) limit.

    5.1.4.1: with MTU negotiated, frames up to mtu plus link header MUST be forwarded whole."""

    name = "net-drops-jumbo"
    clause = CFG + "6"

    def receive(self, frame, rxq=0):
        if len(frame) > DEFAULT_MTU + ETH_HLEN - 100:
            return False  # BUG
        return super().receive(frame, rxq)


class NetSpeedOutOfRange(_NetMutant):
    """Reports speed 0x80000000, neither a speed in range nor "unknown".

    5.1.4.1: speed MUST be 0..0x7fffffff or 0xffffffff."""

    name = "net-speed-out-of-range"
    clause = CFG + "10"

    def initial_config(self):
        raw = bytearray(super().initial_config())
        f = self.layout["speed"]
        raw[f.offset:f.offset + f.size] = f.encode(0x80000000)  # BUG
        return bytes(raw)


class NetSpeedChangesWhileUp(_NetMutant):
    """Reports a new speed after every frame it transmits, the link staying up.

    5.1.4.1: the device SHOULD NOT change speed or duplex while VIRTIO_NET_S_LINK_UP is set."""

    name = "net-speed-changes-while-up"
    clause = CFG + "12"

    def _tx(self, queue, chain, rxq=0):
        n = super()._tx(queue, chain, rxq)
        with self.lock:  # generation bumped and the driver notified, as a change must be
            self.update_config(speed=(self.config_value("speed") + 1000) & 0x7FFFFFFF)  # BUG
        return n


class NetDuplexInvalid(_NetMutant):
    """Reports duplex 2, a value the spec gives no meaning.

    5.1.4.1: duplex MUST be 0x00, 0x01 or 0xff."""

    name = "net-duplex-invalid"
    clause = CFG + "11"

    def initial_config(self):
        raw = bytearray(super().initial_config())
        f = self.layout["duplex"]
        raw[f.offset:f.offset + f.size] = f.encode(2)  # BUG
        return bytes(raw)


class _OffersHashing(_NetMutant):
    """Offers a hash feature the harness's driver never accepts (so no header or command changes),
    with the config fields it brings set to ``config_values``."""

    config_values: dict = {}

    def initial_config(self):
        raw = bytearray(super().initial_config())
        for name, value in self.config_values.items():
            f = self.layout[name]
            raw[f.offset:f.offset + f.size] = f.encode(value)
        return bytes(raw)


class NetRssKeyTooShort(_OffersHashing):
    """Offers VIRTIO_NET_F_HASH_REPORT with rss_max_key_size 20, half the 40-byte Toeplitz key.

    5.1.4.1: with RSS or HASH_REPORT offered, rss_max_key_size MUST be at least 40."""

    name = "net-rss-key-too-short"
    clause = CFG + "7"
    features = NetDevice.features | 1 << C.VIRTIO_NET_F_HASH_REPORT
    config_values = {"rss_max_key_size": 20}  # BUG


class NetRssIndirectionTooShort(_OffersHashing):
    """Offers VIRTIO_NET_F_RSS with an indirection table of at most 64 entries.

    5.1.4.1: with RSS offered, rss_max_indirection_table_length MUST be at least 128."""

    name = "net-rss-indirection-too-short"
    clause = CFG + "8"
    features = NetDevice.features | 1 << C.VIRTIO_NET_F_RSS
    config_values = {"rss_max_key_size": 40, "rss_max_indirection_table_length": 64}  # BUG


_NO_CTRL = NetDevice.features & ~sum(1 << b for b in CTRL_FEATURES)


class NetHashReportWithoutCtrlVq(_OffersHashing):
    """Offers VIRTIO_NET_F_HASH_REPORT but no control virtqueue (nor any feature that needs one).

    5.1.4.1: the device SHOULD NOT offer HASH_REPORT without CTRL_VQ."""

    name = "net-hash-report-without-ctrl-vq"
    clause = CFG + "13"
    features = _NO_CTRL | 1 << C.VIRTIO_NET_F_HASH_REPORT  # BUG
    config_values = {"rss_max_key_size": 40}


class NetRxExtraWithoutCtrlVq(_NetMutant):
    """Offers VIRTIO_NET_F_CTRL_RX_EXTRA but no control virtqueue (nor any feature that needs one).

    5.1.4.1: the device SHOULD NOT offer CTRL_RX_EXTRA without CTRL_VQ."""

    name = "net-rx-extra-without-ctrl-vq"
    clause = CFG + "14"
    features = _NO_CTRL | 1 << C.VIRTIO_NET_F_CTRL_RX_EXTRA  # BUG


NET_DATA_MUTANTS = [
    NetNumBuffersZero, NetMrgNumBuffersOne, NetMrgShortBuffers, NetMrgBuffersUsedOneByOne, NetFlagsWithoutGuestCsum,
    NetGsoTcpv4WithoutGuestTso4, NetGsoUdpWithoutGuestUfo, NetGsoTcpv6WithoutGuestTso6, NetGsoUdpL4WithoutGuestUso,
    NetGsoTunnelWithoutGuestTunnelGso, NetGsoEcnBitWithoutGso, NetRscInfoWithoutRscExt, NetUdpTunnelCsumWithoutFeature, NetDataValidUnchecked, NetDropsUnknownFlags, NetChecksumWithoutNeedsCsum,
    NetTxChecksumLeftPartial, NetPartialIpv4HeaderStale, NetPartialChecksumFieldZero, NetPartialCsumOffsetWrong,
    NetTsoTrustsHdrLen, NetTsoSegmentsOversized, NetGsoReceivedWithoutNeedsCsum, NetGsoReceivedHdrLenZero, NetMaxPairsZero,
    NetMtuBelow1280, NetMtuTooSmall, NetMtuChanges, NetNoMtuLimit, NetDropsJumbo, NetSpeedOutOfRange, NetDuplexInvalid,
    NetSpeedChangesWhileUp, NetSpreadsWithoutMrgRxbuf, NetRssKeyTooShort, NetRssIndirectionTooShort, NetHashReportWithoutCtrlVq, NetRxExtraWithoutCtrlVq,
]
