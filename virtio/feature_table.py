"""Which feature bits the spec defines, per device type, and which require which (VIRTIO 1.4, 6 and
5.x.3 "Feature bits" / "Feature bit requirements"). Used to judge 2.2.2's duties on what a device
may offer; a bit absent from these tables is one the spec does not describe.
"""

from __future__ import annotations

from . import constants as C

# 6: device-independent bits; ADMIN_VQ (41) is PCI-only, SR_IOV (37) likewise (6.2).
TRANSPORT_BITS = {24, 27, 28, 29, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 43}
PCI_ONLY_BITS = {C.VIRTIO_F_SR_IOV, C.VIRTIO_F_ADMIN_VQ}

# 5.x.3 device-specific bits, legacy-only ones included (a transitional device may offer them).
DEVICE_BITS = {
    C.VIRTIO_ID_NET: set(range(24)) - {4}
    | {41, 42, 50, 51, 52, 53, 54, 55, 56, 57, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70},
    C.VIRTIO_ID_BLOCK: {0, 1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17},
    C.VIRTIO_ID_CONSOLE: {0, 1, 2},
    C.VIRTIO_ID_RNG: set(),
    C.VIRTIO_ID_FS: {C.VIRTIO_FS_F_NOTIFICATION},
}

# (feature, [alternatives, each a set of bits that must all be offered]) -- 5.1.3.1 for net.
N = C
REQUIRES = {
    C.VIRTIO_ID_NET: {
        N.VIRTIO_NET_F_GUEST_TSO4: [{N.VIRTIO_NET_F_GUEST_CSUM}],
        N.VIRTIO_NET_F_GUEST_TSO6: [{N.VIRTIO_NET_F_GUEST_CSUM}],
        N.VIRTIO_NET_F_GUEST_ECN: [{N.VIRTIO_NET_F_GUEST_TSO4}, {N.VIRTIO_NET_F_GUEST_TSO6}],
        N.VIRTIO_NET_F_GUEST_UFO: [{N.VIRTIO_NET_F_GUEST_CSUM}],
        54: [{N.VIRTIO_NET_F_GUEST_CSUM}],  # GUEST_USO4
        55: [{N.VIRTIO_NET_F_GUEST_CSUM}],  # GUEST_USO6
        N.VIRTIO_NET_F_HOST_TSO4: [{N.VIRTIO_NET_F_CSUM}],
        N.VIRTIO_NET_F_HOST_TSO6: [{N.VIRTIO_NET_F_CSUM}],
        N.VIRTIO_NET_F_HOST_ECN: [{N.VIRTIO_NET_F_HOST_TSO4}, {N.VIRTIO_NET_F_HOST_TSO6}],
        N.VIRTIO_NET_F_HOST_UFO: [{N.VIRTIO_NET_F_CSUM}],
        56: [{N.VIRTIO_NET_F_CSUM}],  # HOST_USO
        N.VIRTIO_NET_F_CTRL_RX: [{N.VIRTIO_NET_F_CTRL_VQ}],
        N.VIRTIO_NET_F_CTRL_VLAN: [{N.VIRTIO_NET_F_CTRL_VQ}],
        N.VIRTIO_NET_F_GUEST_ANNOUNCE: [{N.VIRTIO_NET_F_CTRL_VQ}],
        N.VIRTIO_NET_F_MQ: [{N.VIRTIO_NET_F_CTRL_VQ}],
        N.VIRTIO_NET_F_CTRL_MAC_ADDR: [{N.VIRTIO_NET_F_CTRL_VQ}],
        53: [{N.VIRTIO_NET_F_CTRL_VQ}],  # NOTF_COAL
        61: [{N.VIRTIO_NET_F_HOST_TSO4}, {N.VIRTIO_NET_F_HOST_TSO6}],  # RSC_EXT
        60: [{N.VIRTIO_NET_F_CTRL_VQ}],  # RSS
        52: [{N.VIRTIO_NET_F_CTRL_VQ}],  # VQ_NOTF_COAL
        51: [{N.VIRTIO_NET_F_CTRL_VQ, 60}, {N.VIRTIO_NET_F_CTRL_VQ, 57}],  # HASH_TUNNEL
        64: [{N.VIRTIO_NET_F_CTRL_VQ, 60}],  # RSS_CONTEXT
        65: [{N.VIRTIO_NET_F_GUEST_TSO4, N.VIRTIO_NET_F_GUEST_TSO6, 54, 55}],  # GUEST_UDP_TUNNEL_GSO
        66: [{65}],  # GUEST_UDP_TUNNEL_GSO_CSUM
        67: [{N.VIRTIO_NET_F_HOST_TSO4, N.VIRTIO_NET_F_HOST_TSO6, 56}],  # HOST_UDP_TUNNEL_GSO
        68: [{67}],  # HOST_UDP_TUNNEL_GSO_CSUM
    },
}


def undefined_bits(offered: int, device_id: int, pci: bool) -> list[int]:
    """Offered bits the spec does not define for this device type and transport."""
    known = TRANSPORT_BITS | DEVICE_BITS.get(device_id, set())
    if not pci:
        known = known - PCI_ONLY_BITS
    out, bit = [], 0
    while offered >> bit:
        if offered >> bit & 1 and bit not in known:
            out.append(bit)
        bit += 1
    return out


def unmet_requirements(offered: int, device_id: int) -> list[tuple[int, list[set[int]]]]:
    """(feature, alternatives) for every offered feature none of whose prerequisite sets is offered."""
    out = []
    for feat, alternatives in REQUIRES.get(device_id, {}).items():
        if offered >> feat & 1 and not any(all(offered >> b & 1 for b in alt) for alt in alternatives):
            out.append((feat, alternatives))
    return out
