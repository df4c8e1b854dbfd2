"""The virtio-net control virtqueue's messages (VIRTIO 1.4, 5.1.9.5).

struct virtio_net_ctrl is one buffer: ``u8 class; u8 command`` and the command-specific-data,
device-readable; then ``u8 ack`` (and any command-specific-result), device-writable. These are
bytes in driver-owned buffers, not shared ring fields, so ``struct`` is fine here. The ack codes
and the RX / MAC classes already named in virtio/constants.py are used from there.
"""

from __future__ import annotations

import struct

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
# 5.1.9.5.11, 5.1.9.4.4: named so a trace can say which class it saw
VIRTIO_NET_CTRL_HASH_TUNNEL = 7
VIRTIO_NET_CTRL_STATS = 8

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
