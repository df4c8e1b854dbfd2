"""Receive-side scaling (VIRTIO 1.4, 5.1.9.4.3 hash calculation, 5.1.9.5.7 RSS): the hash types,
the Toeplitz hash over the fields each type names, and struct virtio_net_rss_config. Used by the
net model to steer and by the RSS suite to predict where a frame must land.

Only frames without IPv6 extension headers are hashed here (the suites send no others): for them
the *_EX types take the same fields as the plain ones (5.1.9.4.3.3: the source and destination
address stand in where the extension headers are absent).
"""

from __future__ import annotations

import struct

from .net_frames import l3_offset, l4_offset

HASH_TYPE_IPv4 = 1 << 0
HASH_TYPE_TCPv4 = 1 << 1
HASH_TYPE_UDPv4 = 1 << 2
HASH_TYPE_IPv6 = 1 << 3
HASH_TYPE_TCPv6 = 1 << 4
HASH_TYPE_UDPv6 = 1 << 5
HASH_TYPE_IP_EX = 1 << 6
HASH_TYPE_TCP_EX = 1 << 7
HASH_TYPE_UDP_EX = 1 << 8
HASH_TYPES_KNOWN = (1 << 9) - 1
IP_PROTO_TCP, IP_PROTO_UDP = 6, 17
ETHERTYPE_IPV4, ETHERTYPE_IPV6 = b"\x08\x00", b"\x86\xdd"

# struct virtio_net_rss_config: le32 hash_types; le16 indirection_table_mask; le16 unclassified_queue;
# le16 indirection_table[mask + 1]; le16 max_tx_vq; u8 hash_key_length; u8 hash_key_data[]
RSS_HEAD = struct.Struct("<IHH")
RSS_TAIL = struct.Struct("<HB")
RQ_ID = struct.Struct("<H")  # struct rss_rq_id: bits 1-16 of the virtqueue index, top bit reserved


def toeplitz(key: bytes, data: bytes) -> int:
    """The Toeplitz hash of ``data`` under ``key`` (32 bits), as RSS defines it."""
    k = int.from_bytes(key, "big")
    klen = 8 * len(key)
    out = 0
    for i in range(8 * len(data)):
        if data[i // 8] >> (7 - i % 8) & 1 and i + 32 <= klen:
            out ^= (k >> (klen - 32 - i)) & 0xFFFFFFFF
    return out


def hash_input(frame: bytes, hash_types: int) -> bytes | None:
    """The fields 5.1.9.4.3 hashes for ``frame`` under the enabled ``hash_types`` (addresses, then
    ports, in network order), or None where the device calculates no hash."""
    l3 = l3_offset(frame)
    ethertype = frame[l3 - 2:l3]
    if ethertype == ETHERTYPE_IPV4 and len(frame) >= l3 + 20:
        addrs, proto = frame[l3 + 12:l3 + 20], frame[l3 + 9]
        frag = int.from_bytes(frame[l3 + 6:l3 + 8], "big") & 0x3FFF  # a fragment has no L4 header to read
        tcp, udp, ip = HASH_TYPE_TCPv4, HASH_TYPE_UDPv4, HASH_TYPE_IPv4
    elif ethertype == ETHERTYPE_IPV6 and len(frame) >= l3 + 40:
        addrs, proto, frag = frame[l3 + 8:l3 + 40], frame[l3 + 6], 0
        tcp, udp, ip = HASH_TYPE_TCPv6 | HASH_TYPE_TCP_EX, HASH_TYPE_UDPv6 | HASH_TYPE_UDP_EX, HASH_TYPE_IPv6 | HASH_TYPE_IP_EX
    else:
        return None
    l4 = l4_offset(frame)
    ports = frame[l4:l4 + 4] if not frag and len(frame) >= l4 + 4 else None
    if hash_types & tcp and proto == IP_PROTO_TCP and ports is not None:
        return addrs + ports
    if hash_types & udp and proto == IP_PROTO_UDP and ports is not None:
        return addrs + ports
    if hash_types & ip:
        return addrs
    return None


def rss_config(hash_types: int, table: list[int], unclassified: int, max_tx_vq: int, key: bytes) -> bytes:
    """VIRTIO_NET_CTRL_MQ_RSS_CONFIG's data; ``table`` and ``unclassified`` are virtqueue indexes of
    receive queues (even numbers), sent as their bits 1-16; len(table) is a power of two."""
    return (RSS_HEAD.pack(hash_types, len(table) - 1, unclassified >> 1)
            + b"".join(RQ_ID.pack(vq >> 1) for vq in table) + RSS_TAIL.pack(max_tx_vq, len(key)) + bytes(key))


def parse_rss_config(data: bytes):
    """(hash_types, table of receive virtqueue indexes, unclassified virtqueue index, max_tx_vq, key),
    or None when ``data`` is not exactly one struct virtio_net_rss_config with its reserved bits 0."""
    if len(data) < RSS_HEAD.size:
        return None
    hash_types, mask, unclassified = RSS_HEAD.unpack_from(data)
    entries = mask + 1
    at = RSS_HEAD.size + RQ_ID.size * entries
    if len(data) < at + RSS_TAIL.size:
        return None
    ids = [RQ_ID.unpack_from(data, RSS_HEAD.size + RQ_ID.size * i)[0] for i in range(entries)]
    max_tx_vq, key_len = RSS_TAIL.unpack_from(data, at)
    key = data[at + RSS_TAIL.size:]
    if len(key) != key_len or any(i >> 15 for i in [*ids, unclassified]):
        return None
    return hash_types, [i << 1 for i in ids], unclassified << 1, max_tx_vq, bytes(key)
