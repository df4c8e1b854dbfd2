"""struct virtio_net_hdr in every form (VIRTIO 1.4, 5.1.6 "Device Operation").

The header leads every buffer on a receive and a transmit queue. Its size depends on the features
negotiated: 10 bytes for a legacy device without VIRTIO_NET_F_MRG_RXBUF (no ``num_buffers``),
12 bytes with VIRTIO_F_VERSION_1 or MRG_RXBUF, 20 bytes when VIRTIO_NET_F_HASH_REPORT adds
``hash_value``, ``hash_report`` and ``padding_reserved``. The fields are bytes in driver-owned
buffers, not shared ring fields, so ``struct`` packs them (virtio/messages.py keeps the 12-byte
form that the workloads use).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import constants as C
from .messages import NET_HDR, NetHdr

# flags (5.1.6)
NEEDS_CSUM = C.VIRTIO_NET_HDR_F_NEEDS_CSUM
DATA_VALID = C.VIRTIO_NET_HDR_F_DATA_VALID
RSC_INFO = 4
UDP_TUNNEL_CSUM = 8
SECURITY = 16
SECURITY_ERR = 32
SECURITY_SA_SOFT_EXPIRY_WARN = 64
KNOWN_FLAGS = 0x7F
UNKNOWN_FLAG = 0x80  # no flag of 1.4 uses bit 7: a device ignores it (5.1.9.2.2)

# gso_type (5.1.6)
GSO_NONE = C.VIRTIO_NET_HDR_GSO_NONE
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_UDP_TUNNEL_IPV4 = 0x20
GSO_UDP_TUNNEL_IPV6 = 0x40
GSO_ECN = 0x80
GSO_UDP_TUNNEL = GSO_UDP_TUNNEL_IPV4 | GSO_UDP_TUNNEL_IPV6
GSO_NAMES = {GSO_NONE: "NONE", GSO_TCPV4: "TCPV4", GSO_UDP: "UDP", GSO_TCPV6: "TCPV6", GSO_UDP_L4: "UDP_L4"}

LEGACY_HDR_SIZE = 10  # without VERSION_1 and MRG_RXBUF: num_buffers absent
HDR_SIZE = NET_HDR.size  # 12
# hash_value le32, hash_report le16, padding_reserved le16 follow with HASH_REPORT (5.1.6)
HASH_EXT = struct.Struct("<IHH")
HASH_HDR_SIZE = HDR_SIZE + HASH_EXT.size  # 20

# 5.1.6.1: which GUEST_* feature lets the device hand over each gso type
GUEST_GSO_FEATURE = {
    GSO_TCPV4: (C.VIRTIO_NET_F_GUEST_TSO4,),
    GSO_TCPV6: (C.VIRTIO_NET_F_GUEST_TSO6,),
    GSO_UDP: (C.VIRTIO_NET_F_GUEST_UFO,),
    GSO_UDP_L4: (C.VIRTIO_NET_F_GUEST_USO4, C.VIRTIO_NET_F_GUEST_USO6),
}
GUEST_GSO_FEATURES = (C.VIRTIO_NET_F_GUEST_TSO4, C.VIRTIO_NET_F_GUEST_TSO6, C.VIRTIO_NET_F_GUEST_UFO,
                      C.VIRTIO_NET_F_GUEST_USO4, C.VIRTIO_NET_F_GUEST_USO6)


def hdr_size(features: int) -> int:
    """Size of struct virtio_net_hdr for the negotiated ``features`` (5.1.6)."""
    if features >> C.VIRTIO_NET_F_HASH_REPORT & 1:
        return HASH_HDR_SIZE
    if features >> C.VIRTIO_F_VERSION_1 & 1 or features >> C.VIRTIO_NET_F_MRG_RXBUF & 1:
        return HDR_SIZE
    return LEGACY_HDR_SIZE


@dataclass
class NetHdrFull(NetHdr):
    """The header with the HASH_REPORT fields; ``size`` says which form is packed."""

    hash_value: int = 0
    hash_report: int = 0
    padding_reserved: int = 0

    def pack_as(self, size: int) -> bytes:
        raw = self.pack()
        if size == LEGACY_HDR_SIZE:
            return raw[:LEGACY_HDR_SIZE]
        if size == HASH_HDR_SIZE:
            return raw + HASH_EXT.pack(self.hash_value, self.hash_report, self.padding_reserved)
        return raw

    @classmethod
    def unpack_as(cls, raw: bytes, size: int) -> NetHdrFull:
        """Decode a header of ``size`` bytes; ``num_buffers`` reads 0 in the legacy 10-byte form."""
        head = bytes(raw[:LEGACY_HDR_SIZE]) + (bytes(raw[LEGACY_HDR_SIZE:HDR_SIZE]) if size >= HDR_SIZE else b"\0\0")
        h = cls(*NET_HDR.unpack_from(head))
        if size == HASH_HDR_SIZE:
            h.hash_value, h.hash_report, h.padding_reserved = HASH_EXT.unpack_from(raw, HDR_SIZE)
        return h


def describe(h: NetHdr) -> str:
    gso = GSO_NAMES.get(h.gso_type & ~GSO_ECN, hex(h.gso_type))
    return (f"flags {h.flags:#x}, gso_type {gso}{'|ECN' if h.gso_type & GSO_ECN else ''}, hdr_len {h.hdr_len}, "
            f"gso_size {h.gso_size}, csum_start {h.csum_start}, csum_offset {h.csum_offset}, num_buffers {h.num_buffers}")
