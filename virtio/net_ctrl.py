"""The virtio-net control virtqueue's messages (VIRTIO 1.4, 5.1.9.5).

struct virtio_net_ctrl is one buffer: ``u8 class; u8 command`` and the command-specific-data,
device-readable; then ``u8 ack`` (and any command-specific-result), device-writable. These are
bytes in driver-owned buffers, not shared ring fields, so ``struct`` is fine here. The ack codes
and the RX / MAC classes already named in virtio/constants.py are used from there.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from virtio import constants as C

# struct virtio_net_ctrl header: u8 class; u8 command  (5.1.9.5)
NET_CTRL_HDR = struct.Struct("<BB")
ACK_SIZE = 1  # u8 ack, the first device-writable byte (5.1.9.5)

# 5.1.9.5.1: VIRTIO_NET_CTRL_RX (0), PROMISC and ALLMULTI in virtio/constants.py; with CTRL_RX_EXTRA:
VIRTIO_NET_CTRL_RX_ALLUNI = 2
VIRTIO_NET_CTRL_RX_NOMULTI = 3
VIRTIO_NET_CTRL_RX_NOUNI = 4
VIRTIO_NET_CTRL_RX_NOBCAST = 5
# 5.1.9.5.3 VLAN filtering: le16 vid
VIRTIO_NET_CTRL_VLAN = 2
VIRTIO_NET_CTRL_VLAN_ADD = 0
VIRTIO_NET_CTRL_VLAN_DEL = 1
VLAN_VID = struct.Struct("<H")
VLAN_VID_MAX = 4095  # 12-bit VLAN identifier
# 5.1.9.5.4 gratuitous packet sending: no data
VIRTIO_NET_CTRL_ANNOUNCE = 3
VIRTIO_NET_CTRL_ANNOUNCE_ACK = 0
# 5.1.9.5.6 automatic receive steering: struct virtio_net_ctrl_mq { le16 virtqueue_pairs; }
VIRTIO_NET_CTRL_MQ = 4
VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0
VIRTIO_NET_CTRL_MQ_RSS_CONFIG = 1
VIRTIO_NET_CTRL_MQ_HASH_CONFIG = 2
VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN = 1
VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000
NET_CTRL_MQ = struct.Struct("<H")
# 5.1.9.5.9 offloads state: le64 offloads (guest feature bit numbers)
VIRTIO_NET_CTRL_GUEST_OFFLOADS = 5
VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET = 0
GUEST_OFFLOADS = struct.Struct("<Q")
# The offloads GUEST_OFFLOADS_SET may name (5.1.9.5.9: the guest receive offload feature bits).
GUEST_OFFLOAD_BITS = (
    C.VIRTIO_NET_F_GUEST_CSUM, C.VIRTIO_NET_F_GUEST_TSO4, C.VIRTIO_NET_F_GUEST_TSO6,
    C.VIRTIO_NET_F_GUEST_ECN, C.VIRTIO_NET_F_GUEST_UFO,
)
# 5.1.9.5.10 notifications coalescing: struct virtio_net_ctrl_coal { le32 max_packets; le32 max_usecs; }
# for TX_SET / RX_SET; struct virtio_net_ctrl_coal_vq { le16 vq_index; le16 reserved; coal } for VQ_SET;
# VQ_GET reads vq_index and reserved and writes coal as its command-specific-result, after the ack.
VIRTIO_NET_CTRL_NOTF_COAL = 6
VIRTIO_NET_CTRL_NOTF_COAL_TX_SET = 0
VIRTIO_NET_CTRL_NOTF_COAL_RX_SET = 1
VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET = 2
VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET = 3
NET_CTRL_COAL = struct.Struct("<II")  # max_packets, max_usecs
NET_CTRL_COAL_VQ = struct.Struct("<HHII")  # vq_index, reserved, max_packets, max_usecs
NET_CTRL_COAL_VQ_INDEX = struct.Struct("<HH")  # vq_index, reserved: VQ_GET's data
# 5.1.9.4.4: named so a trace can say which class it saw
VIRTIO_NET_CTRL_HASH_TUNNEL = 7
# 5.1.9.5.11 device statistics. QUERY: no data, result struct virtio_net_stats_capabilities
# { le64 supported_stats_types[1]; }. GET: data struct virtio_net_ctrl_queue_stats, entries of
# { le16 vq_index; le16 reserved[3]; le64 types_bitmap[1]; }; result one reply per (queue, type),
# each struct virtio_net_stats_reply_hdr { u8 type; u8 reserved; le16 vq_index; le16 reserved1;
# le16 size; } and its le64 counters, size counting the header too.
VIRTIO_NET_CTRL_STATS = 8
VIRTIO_NET_CTRL_STATS_QUERY = 0
VIRTIO_NET_CTRL_STATS_GET = 1
NET_STATS_CAPABILITIES = struct.Struct("<Q")
NET_STATS_REQUEST = struct.Struct("<HHHHQ")  # vq_index, reserved[3], types_bitmap
NET_STATS_REPLY_HDR = struct.Struct("<BBHHH")  # type, reserved, vq_index, reserved1, size
STATS_COUNTER = struct.Struct("<Q")


@dataclass(frozen=True)
class StatsType:
    """One statistic type of 5.1.9.5.11: its reply type (the bit number of VIRTIO_NET_STATS_TYPE_*),
    the queues it is for, the features one of which must be negotiated, its le64 counters."""

    bit: int
    name: str
    queue: str  # "rx", "tx" or "ctrl"
    features: tuple[int, ...]
    counters: tuple[str, ...]

    @property
    def reply_size(self) -> int:
        return NET_STATS_REPLY_HDR.size + STATS_COUNTER.size * len(self.counters)


STATS_TYPES = {t.bit: t for t in (
    StatsType(0, "RX_BASIC", "rx", (), ("rx_notifications", "rx_packets", "rx_bytes", "rx_interrupts", "rx_drops",
                                        "rx_drop_overruns")),
    StatsType(1, "RX_CSUM", "rx", (C.VIRTIO_NET_F_GUEST_CSUM,), ("rx_csum_valid", "rx_needs_csum", "rx_csum_none",
                                                                 "rx_csum_bad")),
    StatsType(2, "RX_GSO", "rx", (C.VIRTIO_NET_F_GUEST_TSO4, C.VIRTIO_NET_F_GUEST_TSO6),
              ("rx_gso_packets", "rx_gso_bytes", "rx_gso_packets_coalesced", "rx_gso_bytes_coalesced")),
    StatsType(3, "RX_SPEED", "rx", (), ("rx_packets_allowance_exceeded", "rx_bytes_allowance_exceeded")),
    StatsType(16, "TX_BASIC", "tx", (), ("tx_notifications", "tx_packets", "tx_bytes", "tx_interrupts", "tx_drops",
                                         "tx_drop_malformed")),
    StatsType(17, "TX_CSUM", "tx", (C.VIRTIO_NET_F_CSUM,), ("tx_csum_none", "tx_needs_csum")),
    StatsType(18, "TX_GSO", "tx", (C.VIRTIO_NET_F_HOST_TSO4, C.VIRTIO_NET_F_HOST_TSO6, C.VIRTIO_NET_F_HOST_USO),
              ("tx_gso_packets", "tx_gso_bytes", "tx_gso_segments", "tx_gso_segments_bytes", "tx_gso_packets_noseg",
               "tx_gso_bytes_noseg")),
    StatsType(19, "TX_SPEED", "tx", (), ("tx_packets_allowance_exceeded", "tx_bytes_allowance_exceeded")),
    StatsType(32, "CVQ", "ctrl", (), ("command_num", "ok_num")),
)}
STATS_TYPES_KNOWN = sum(1 << b for b in STATS_TYPES)


def stats_request(entries: list[tuple[int, int]]) -> bytes:
    """VIRTIO_NET_CTRL_STATS_GET's data: (vq_index, types_bitmap) entries."""
    return b"".join(NET_STATS_REQUEST.pack(index, 0, 0, 0, types) for index, types in entries)


def stats_types_named(types: int) -> str:
    return "|".join(STATS_TYPES[b].name if b in STATS_TYPES else f"bit {b}" for b in range(64) if types >> b & 1) or "none"

ACK_NAMES = {C.VIRTIO_NET_OK: "VIRTIO_NET_OK", C.VIRTIO_NET_ERR: "VIRTIO_NET_ERR"}


def ctrl_command(cls: int, command: int, data: bytes = b"") -> bytes:
    """The device-readable part of struct virtio_net_ctrl: class, command, command-specific-data."""
    return NET_CTRL_HDR.pack(cls, command) + bytes(data)


def mac_table(unicast: list[bytes], multicast: list[bytes]) -> bytes:
    """VIRTIO_NET_CTRL_MAC_TABLE_SET's data: two struct virtio_net_ctrl_mac { le32 entries;
    u8 macs[entries][6]; }, unicast first (5.1.9.5.2)."""
    out = b""
    for table in (unicast, multicast):
        out += struct.pack("<I", len(table)) + b"".join(bytes(m) for m in table)
    return out


def parse_mac_table(data: bytes) -> tuple[list[bytes], list[bytes]] | None:
    """The two tables of MAC_TABLE_SET, or None when ``data`` is not exactly two well-formed tables."""
    tables, pos = [], 0
    for _ in range(2):
        if len(data) - pos < 4:
            return None
        (entries,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if entries > (len(data) - pos) // 6:
            return None
        tables.append([bytes(data[pos + 6 * i : pos + 6 * i + 6]) for i in range(entries)])
        pos += 6 * entries
    return (tables[0], tables[1]) if pos == len(data) else None


def ack_name(ack: int) -> str:
    return ACK_NAMES.get(ack, f"unknown ack {ack}")
