"""The Toeplitz hash and hash inputs of virtio/net_rss.py against Microsoft's RSS verification
values (the "Verifying the RSS Hash Calculation" suite: key, addresses, ports, expected hashes),
so the model and the RSS suite, which share the code, share a correct one."""

from __future__ import annotations

import ipaddress

import pytest

from virtio import net_rss as R
from virtio.net_frames import FrameTags, ip_frame

KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")
# (source, source port, destination, destination port, hash of addresses, hash with ports)
VECTORS = [
    ("66.9.149.187", 2794, "161.142.100.80", 1766, 0x323E8FC2, 0x51CCC178),
    ("199.92.111.2", 14230, "65.69.140.83", 4739, 0xD718262A, 0xC626B0EA),
    ("3ffe:2501:200:1fff::7", 2794, "3ffe:2501:200:3::1", 1766, 0x2CC18CD5, 0x40207D3D),
]


@pytest.mark.parametrize("src,sport,dst,dport,ip_hash,l4_hash", VECTORS)
def test_toeplitz_matches_the_verification_suite(src, sport, dst, dport, ip_hash, l4_hash):
    addrs = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    assert R.toeplitz(KEY, addrs) == ip_hash
    assert R.toeplitz(KEY, addrs + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")) == l4_hash


def test_hash_input_follows_the_enabled_types():
    tcp4 = ip_frame(FrameTags(), b"\x02" * 6, 1, "ipv4-tcp", 40, sport=1234)
    assert R.hash_input(tcp4, R.HASH_TYPE_TCPv4)[-4:] == (1234).to_bytes(2, "big") + (9).to_bytes(2, "big")
    assert len(R.hash_input(tcp4, R.HASH_TYPE_IPv4)) == 8  # addresses only
    assert R.hash_input(tcp4, R.HASH_TYPE_UDPv4) is None  # a TCP frame and only UDP enabled
    udp6 = ip_frame(FrameTags(), b"\x02" * 6, 2, "ipv6-udp", 40)
    assert len(R.hash_input(udp6, R.HASH_TYPE_UDPv6)) == 36
    assert R.hash_input(udp6, R.HASH_TYPE_IPv4 | R.HASH_TYPE_TCPv4) is None
    assert R.hash_input(FrameTags().frame(b"\x02" * 6, 3, 64), R.HASH_TYPES_KNOWN) is None  # no IP


def test_rss_config_round_trips():
    data = R.rss_config(R.HASH_TYPE_TCPv4, [0, 2, 2, 0], 2, 2, KEY)
    assert R.parse_rss_config(data) == (R.HASH_TYPE_TCPv4, [0, 2, 2, 0], 2, 2, KEY)
    assert R.parse_rss_config(data[:-1]) is None
