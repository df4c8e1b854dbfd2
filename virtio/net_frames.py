"""Frames the harness sends through a net device and how it recognises them when they come back.

A net back-end may forward what it receives with changes (DPDK testpmd's macswap and mac forward
modes rewrite the Ethernet addresses), and what it forwards is not a virtio duty. So every frame
carries a tag in its payload -- a 16-byte marker unique to the run and a sequence number -- and a
frame that comes back is matched by its tag, wherever the back-end moved it. What a target may
change is declared by the target (``net_forward``, one of FORWARD_MODES):

- ``unchanged``: the frame comes back bit for bit (our models, testpmd io);
- ``macswap``: destination and source addresses swapped, the rest as sent (testpmd macswap);
- ``any`` (the default): only the tag and the payload after it are judged (within the bytes the
  used len covers); the Ethernet header may be anything, and bytes may follow the payload.
"""

from __future__ import annotations

import os

ETH_HLEN = 14
ETHERTYPE = b"\x88\xb5"  # IEEE 802 local experimental: no forwarder parses its payload
MARKER_LEN = 16
SEQ_LEN = 4
TAG_LEN = MARKER_LEN + SEQ_LEN
FORWARD_MODES = ("any", "unchanged", "macswap")
SOURCE_MAC = bytes.fromhex("02000000cafe")  # a locally administered address of nobody
VLAN_TPID = b"\x81\x00"  # IEEE 802.1Q tag protocol identifier
QINQ_TPID = b"\x88\xa8"  # IEEE 802.1ad service tag
VLAN_HLEN = 4  # an 802.1Q tag adds 4 bytes to the link header (5.1.4.1: mtu excludes it)


def check_forward_mode(mode: str) -> str:
    if mode not in FORWARD_MODES:
        raise ValueError(f"net_forward {mode!r}: expected one of {', '.join(FORWARD_MODES)}")
    return mode


class FrameTags:
    """Builds tagged frames and finds the tag in what comes back."""

    def __init__(self, marker: bytes | None = None):
        self.marker = marker or os.urandom(MARKER_LEN)

    def frame(self, dst: bytes, seq: int, length: int, filler: bytes | None = None) -> bytes:
        """A frame of ``length`` bytes (at least header and tag) to ``dst`` carrying tag ``seq``."""
        head = dst + SOURCE_MAC + ETHERTYPE + self.marker + (seq & 0xFFFF_FFFF).to_bytes(SEQ_LEN, "little")
        rest = max(0, length - len(head))
        return head + (filler[:rest] if filler is not None else os.urandom(rest))

    def seq_of(self, frame: bytes) -> int | None:
        """The sequence number of the tag in ``frame``, or None when it carries none of ours."""
        at = frame.find(self.marker)
        if at < 0 or at + TAG_LEN > len(frame):
            return None
        return int.from_bytes(frame[at + MARKER_LEN : at + TAG_LEN], "little")


def forwarded(sent: bytes, mode: str) -> bytes | None:
    """The frame a back-end of ``mode`` sends back for ``sent``; None where it may vary (``any``)."""
    if mode == "unchanged":
        return sent
    if mode == "macswap":
        return sent[6:12] + sent[0:6] + sent[12:]
    return None


def difference(sent: bytes, got: bytes, mode: str, *, whole: bool = True) -> str | None:
    """What is wrong with ``got`` as the forwarded ``sent``, or None. ``whole``: ``got`` is the
    frame as long as the used len says; else a prefix of the buffer (length unknown) that must
    hold the frame."""
    want = forwarded(sent, mode)
    if want is not None:
        if (got == want) if whole else got[: len(want)] == want:
            return None
        n = min(len(got), len(want))
        at = next((i for i in range(n) if got[i] != want[i]), n)
        return f"{len(got)} bytes, first difference with the {mode} frame of {len(want)} bytes at byte {at}"
    payload = sent[ETH_HLEN:]  # the tag and what follows: no forwarder touches them
    at = got.find(payload[:TAG_LEN])
    if at < 0:
        return "the frame's tag is gone"
    if got[at : at + len(payload)] != payload:
        return "the payload after the tag differs from the one sent (or is cut short)"
    return None  # a back-end may also add bytes after it (padding, a trailer): not a virtio duty


# -- IP frames built and checked with scapy (5.1.6: checksum and segmentation offloads) -----------
# scapy is imported when first needed: importing it costs a second, which a run without IP frames
# should not pay.

IP_KINDS = ("ipv4-tcp", "ipv4-udp", "ipv6-tcp", "ipv6-udp")
SRC_IP4, DST_IP4 = "198.51.100.1", "198.51.100.2"  # TEST-NET-2 (RFC 5737): nobody's addresses
SRC_IP6, DST_IP6 = "2001:db8::1", "2001:db8::2"  # documentation prefix (RFC 3849)
TCP_SEQ = 1000


def _scapy():
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether

    return Ether, Dot1Q, IP, IPv6, TCP, UDP


def ip_frame(tags: FrameTags, dst: bytes, seq: int, kind: str, payload_len: int, *, vlan: int | None = None,
             ecn: bool = False, bad_csum: bool = False, sport: int = 40000) -> bytes:
    """An Ethernet frame (optionally 802.1Q-tagged) carrying IPv4/IPv6 and TCP/UDP with correct
    checksums, whose L4 payload starts with the tag of ``seq`` and is ``payload_len`` bytes long.
    ``bad_csum`` spoils the L4 checksum (to see whether a device claims to have validated it);
    ``sport`` (the source port) makes one flow differ from another."""
    Ether, Dot1Q, IP, IPv6, TCP, UDP = _scapy()
    tag = tags.marker + (seq & 0xFFFF_FFFF).to_bytes(SEQ_LEN, "little")
    payload = (tag + bytes((seq + i) & 0xFF for i in range(max(0, payload_len - TAG_LEN))))[:max(payload_len, TAG_LEN)]
    l2 = Ether(dst=_mac(dst), src=_mac(SOURCE_MAC))
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    tos = 0x02 if ecn else 0  # ECT(0)
    l3 = IP(src=SRC_IP4, dst=DST_IP4, tos=tos, id=seq & 0xFFFF) if kind.startswith("ipv4") else IPv6(src=SRC_IP6, dst=DST_IP6, tc=tos)
    l4 = TCP(sport=sport, dport=9, seq=TCP_SEQ, flags="PA", window=65535) if kind.endswith("tcp") else UDP(sport=sport, dport=9)
    raw = bytearray(bytes(l2 / l3 / l4 / payload))
    if bad_csum:
        at = l4_offset(bytes(raw)) + (16 if kind.endswith("tcp") else 6)
        raw[at] ^= 0x5A
    return bytes(raw)


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def vlan_id(frame: bytes) -> int | None:
    """The VLAN identifier of an 802.1Q-tagged frame, None for an untagged one."""
    if len(frame) >= 16 and frame[12:14] == VLAN_TPID:
        return int.from_bytes(frame[14:16], "big") & 0x0FFF
    return None


def l3_offset(frame: bytes) -> int:
    """Offset of the IP header: after the Ethernet header and any 802.1Q/802.1ad tags."""
    at = 12
    while frame[at:at + 2] in (VLAN_TPID, QINQ_TPID):
        at += VLAN_HLEN
    return at + 2


def l4_offset(frame: bytes) -> int:
    at = l3_offset(frame)
    if frame[at] >> 4 == 4:
        return at + (frame[at] & 0xF) * 4
    return at + 40  # IPv6 without extension headers (the only kind we send)


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data = data + b"\0"
    return _fold(sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)))


def pseudo_header_sum(frame: bytes) -> int:
    """Folded ones' complement sum of the TCP/UDP pseudo header of ``frame`` (RFC 793 / 8200)."""
    at, l4 = l3_offset(frame), l4_offset(frame)
    length = len(frame) - l4
    if frame[at] >> 4 == 4:
        return ones_sum(frame[at + 12:at + 20] + bytes([0, frame[at + 9]]) + length.to_bytes(2, "big"))
    return ones_sum(frame[at + 8:at + 40] + length.to_bytes(4, "big") + bytes([0, 0, 0, frame[at + 6]]))


def csum_offset_of(frame: bytes) -> int:
    """Where the L4 checksum sits, from the start of the L4 header (TCP 16, UDP 6)."""
    at = l3_offset(frame)
    proto = frame[at + 9] if frame[at] >> 4 == 4 else frame[at + 6]
    return 16 if proto == 6 else 6


def partial_checksum(frame: bytes) -> tuple[bytes, int, int]:
    """``frame`` as a driver hands it over with VIRTIO_NET_HDR_F_NEEDS_CSUM (5.1.9.2.1): the L4
    checksum field holds the pseudo-header sum; returns (frame, csum_start, csum_offset)."""
    start, off = l4_offset(frame), csum_offset_of(frame)
    raw = bytearray(frame)
    raw[start + off:start + off + 2] = pseudo_header_sum(frame).to_bytes(2, "big")
    return bytes(raw), start, off


def complete_checksum(frame: bytes, start: int, offset: int) -> bytes | None:
    """What NEEDS_CSUM asks (5.1.6.2): the ones' complement sum from ``start`` to the end of the
    frame, stored at ``start + offset``; None where that lies outside the frame."""
    at = start + offset
    if start < 0 or offset < 0 or at + 2 > len(frame):
        return None
    total = ones_sum(frame[start:])
    return frame[:at] + ((~total) & 0xFFFF or 0xFFFF).to_bytes(2, "big") + frame[at + 2:]


def same_ones_complement(a: int, b: int) -> bool:
    """Equal as ones' complement 16-bit values (0x0000 and 0xffff are both zero)."""
    return a == b or {a, b} == {0, 0xFFFF}


def ipv4_header_problem(frame: bytes) -> str | None:
    """What is wrong with the IPv4 header checksum of ``frame`` (None if right or not IPv4)."""
    at = l3_offset(frame)
    if len(frame) < at + 20 or frame[at] >> 4 != 4:
        return None
    ihl = (frame[at] & 0xF) * 4
    if ihl < 20 or len(frame) < at + ihl or ones_sum(frame[at:at + ihl]) == 0xFFFF:
        return None
    return f"IPv4 header checksum {int.from_bytes(frame[at + 10:at + 12], 'big'):#06x} is wrong"


def checksum_problems(frame: bytes) -> list[str]:
    """What scapy, recomputing them, finds wrong with the IPv4 header and TCP/UDP checksums."""
    Ether, Dot1Q, IP, IPv6, TCP, UDP = _scapy()
    problems = []
    pkt = Ether(frame)
    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    if ip is None:
        return ["no IPv4/IPv6 header"]
    if pkt.getlayer(IP) is not None:
        want = IP(bytes(ip)[: ip.ihl * 4])
        got = want.chksum
        del want.chksum
        if IP(bytes(want)).chksum != got:
            problems.append(f"IPv4 header checksum {got:#06x} is wrong")
    l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
    if l4 is None:
        return problems + ["no TCP/UDP header"]
    got = l4.chksum
    if isinstance(l4, UDP) and got == 0 and pkt.getlayer(IP) is not None:
        return problems  # UDP over IPv4 may carry no checksum
    copy = Ether(frame)
    layer = copy.getlayer(l4.__class__)
    del layer.chksum
    recomputed = Ether(bytes(copy)).getlayer(l4.__class__).chksum
    if recomputed != got:
        problems.append(f"{l4.__class__.__name__} checksum {got:#06x}, recomputed {recomputed:#06x}")
    return problems


def tcp_segments_payload(frames: list[bytes]) -> tuple[bytes, list[str]]:
    """Reassemble TCP segments (by sequence number) into the byte stream; problems found on the way
    (a checksum, a gap, an overlap, a segment without TCP)."""
    Ether, Dot1Q, IP, IPv6, TCP, UDP = _scapy()
    parts, problems = [], []
    for i, f in enumerate(frames):
        pkt = Ether(f)
        tcp = pkt.getlayer(TCP)
        if tcp is None:
            problems.append(f"segment {i} carries no TCP header")
            continue
        problems += [f"segment {i}: {p}" for p in checksum_problems(f)]
        parts.append((tcp.seq, bytes(tcp.payload)))
    parts.sort()
    stream, want = b"", TCP_SEQ
    for seq, data in parts:
        if seq != want:
            problems.append(f"segment at seq {seq} where {want} was expected (gap or overlap)")
        stream += data
        want = seq + len(data)
    return stream, problems


def l4_payload(frame: bytes) -> bytes:
    Ether, Dot1Q, IP, IPv6, TCP, UDP = _scapy()
    pkt = Ether(frame)
    l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
    return bytes(l4.payload) if l4 is not None else b""
