"""Numbers the VIRTIO specification assigns: status bits, feature bits, device IDs, ring flags.

VIRTIO 1.4: 2.1 (device status), 2.2 and 6 (feature bits), 5 (device IDs and device-specific bits),
2.7 (split virtqueue flags).
"""

from __future__ import annotations

# -- 2.1 Device Status Field -------------------------------------------------------------------
ACKNOWLEDGE = 1
DRIVER = 2
DRIVER_OK = 4
FEATURES_OK = 8
SUSPEND = 16
DEVICE_NEEDS_RESET = 64
FAILED = 128

STATUS_NAMES = {
    ACKNOWLEDGE: "ACKNOWLEDGE",
    DRIVER: "DRIVER",
    DRIVER_OK: "DRIVER_OK",
    FEATURES_OK: "FEATURES_OK",
    SUSPEND: "SUSPEND",
    DEVICE_NEEDS_RESET: "DEVICE_NEEDS_RESET",
    FAILED: "FAILED",
}


def status_names(status: int) -> str:
    """'ACKNOWLEDGE|DRIVER' style rendering of a status byte, for messages."""
    names = [n for bit, n in STATUS_NAMES.items() if status & bit]
    rest = status & ~sum(STATUS_NAMES)
    if rest:
        names.append(hex(rest))
    return "|".join(names) or "0"


# -- 6 Reserved Feature Bits (device-independent, bits 24..41 and 43) ---------------------------
VIRTIO_F_NOTIFY_ON_EMPTY = 24
VIRTIO_F_ANY_LAYOUT = 27
VIRTIO_F_INDIRECT_DESC = 28
VIRTIO_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_ACCESS_PLATFORM = 33
VIRTIO_F_RING_PACKED = 34
VIRTIO_F_IN_ORDER = 35
VIRTIO_F_ORDER_PLATFORM = 36
VIRTIO_F_SR_IOV = 37
VIRTIO_F_NOTIFICATION_DATA = 38
VIRTIO_F_NOTIF_CONFIG_DATA = 39
VIRTIO_F_RING_RESET = 40
VIRTIO_F_ADMIN_VQ = 41
VIRTIO_F_SUSPEND = 43

# Bits 24..41 and 43 are the reserved (device-independent) range the spec describes; 30 is used by
# vhost-user (VHOST_USER_F_PROTOCOL_FEATURES) and 26 by vhost (VHOST_F_LOG_ALL) outside the spec.
TRANSPORT_FEATURES = {
    VIRTIO_F_NOTIFY_ON_EMPTY: "VIRTIO_F_NOTIFY_ON_EMPTY",
    VIRTIO_F_ANY_LAYOUT: "VIRTIO_F_ANY_LAYOUT",
    VIRTIO_F_INDIRECT_DESC: "VIRTIO_F_INDIRECT_DESC",
    VIRTIO_F_EVENT_IDX: "VIRTIO_F_EVENT_IDX",
    VIRTIO_F_VERSION_1: "VIRTIO_F_VERSION_1",
    VIRTIO_F_ACCESS_PLATFORM: "VIRTIO_F_ACCESS_PLATFORM",
    VIRTIO_F_RING_PACKED: "VIRTIO_F_RING_PACKED",
    VIRTIO_F_IN_ORDER: "VIRTIO_F_IN_ORDER",
    VIRTIO_F_ORDER_PLATFORM: "VIRTIO_F_ORDER_PLATFORM",
    VIRTIO_F_SR_IOV: "VIRTIO_F_SR_IOV",
    VIRTIO_F_NOTIFICATION_DATA: "VIRTIO_F_NOTIFICATION_DATA",
    VIRTIO_F_NOTIF_CONFIG_DATA: "VIRTIO_F_NOTIF_CONFIG_DATA",
    VIRTIO_F_RING_RESET: "VIRTIO_F_RING_RESET",
    VIRTIO_F_ADMIN_VQ: "VIRTIO_F_ADMIN_VQ",
    VIRTIO_F_SUSPEND: "VIRTIO_F_SUSPEND",
}
# Legacy-only bits a VERSION_1 device may still offer (2.2.3, 6): not "unknown".
LEGACY_FEATURES = {VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_F_ANY_LAYOUT}
# Features whose driver side this harness implements; the rest it never accepts.
DEVICE_INDEPENDENT_RANGE = range(24, 42)

# -- 5 Device IDs ----------------------------------------------------------------------------
VIRTIO_ID_NET = 1
VIRTIO_ID_BLOCK = 2
VIRTIO_ID_CONSOLE = 3
VIRTIO_ID_RNG = 4

DEVICE_TYPES = {
    VIRTIO_ID_NET: "net",
    VIRTIO_ID_BLOCK: "blk",
    VIRTIO_ID_CONSOLE: "console",
    VIRTIO_ID_RNG: "rng",
}

# -- 5.1.3 Network device feature bits -------------------------------------------------------
VIRTIO_NET_F_CSUM = 0
VIRTIO_NET_F_GUEST_CSUM = 1
VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2
VIRTIO_NET_F_MTU = 3
VIRTIO_NET_F_MAC = 5
VIRTIO_NET_F_GUEST_TSO4 = 7
VIRTIO_NET_F_GUEST_TSO6 = 8
VIRTIO_NET_F_GUEST_ECN = 9
VIRTIO_NET_F_GUEST_UFO = 10
VIRTIO_NET_F_HOST_TSO4 = 11
VIRTIO_NET_F_HOST_TSO6 = 12
VIRTIO_NET_F_HOST_ECN = 13
VIRTIO_NET_F_HOST_UFO = 14
VIRTIO_NET_F_MRG_RXBUF = 15
VIRTIO_NET_F_STATUS = 16
VIRTIO_NET_F_CTRL_VQ = 17
VIRTIO_NET_F_CTRL_RX = 18
VIRTIO_NET_F_CTRL_VLAN = 19
VIRTIO_NET_F_CTRL_RX_EXTRA = 20
VIRTIO_NET_F_GUEST_ANNOUNCE = 21
VIRTIO_NET_F_MQ = 22
VIRTIO_NET_F_CTRL_MAC_ADDR = 23

NET_FEATURES = {
    VIRTIO_NET_F_CSUM: "VIRTIO_NET_F_CSUM",
    VIRTIO_NET_F_GUEST_CSUM: "VIRTIO_NET_F_GUEST_CSUM",
    VIRTIO_NET_F_CTRL_GUEST_OFFLOADS: "VIRTIO_NET_F_CTRL_GUEST_OFFLOADS",
    VIRTIO_NET_F_MTU: "VIRTIO_NET_F_MTU",
    VIRTIO_NET_F_MAC: "VIRTIO_NET_F_MAC",
    VIRTIO_NET_F_GUEST_TSO4: "VIRTIO_NET_F_GUEST_TSO4",
    VIRTIO_NET_F_GUEST_TSO6: "VIRTIO_NET_F_GUEST_TSO6",
    VIRTIO_NET_F_GUEST_ECN: "VIRTIO_NET_F_GUEST_ECN",
    VIRTIO_NET_F_GUEST_UFO: "VIRTIO_NET_F_GUEST_UFO",
    VIRTIO_NET_F_HOST_TSO4: "VIRTIO_NET_F_HOST_TSO4",
    VIRTIO_NET_F_HOST_TSO6: "VIRTIO_NET_F_HOST_TSO6",
    VIRTIO_NET_F_HOST_ECN: "VIRTIO_NET_F_HOST_ECN",
    VIRTIO_NET_F_HOST_UFO: "VIRTIO_NET_F_HOST_UFO",
    VIRTIO_NET_F_MRG_RXBUF: "VIRTIO_NET_F_MRG_RXBUF",
    VIRTIO_NET_F_STATUS: "VIRTIO_NET_F_STATUS",
    VIRTIO_NET_F_CTRL_VQ: "VIRTIO_NET_F_CTRL_VQ",
    VIRTIO_NET_F_CTRL_RX: "VIRTIO_NET_F_CTRL_RX",
    VIRTIO_NET_F_CTRL_VLAN: "VIRTIO_NET_F_CTRL_VLAN",
    VIRTIO_NET_F_CTRL_RX_EXTRA: "VIRTIO_NET_F_CTRL_RX_EXTRA",
    VIRTIO_NET_F_GUEST_ANNOUNCE: "VIRTIO_NET_F_GUEST_ANNOUNCE",
    VIRTIO_NET_F_MQ: "VIRTIO_NET_F_MQ",
    VIRTIO_NET_F_CTRL_MAC_ADDR: "VIRTIO_NET_F_CTRL_MAC_ADDR",
}

VIRTIO_NET_S_LINK_UP = 1
VIRTIO_NET_S_ANNOUNCE = 2
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0

# 5.1.9.5 control virtqueue
VIRTIO_NET_OK = 0
VIRTIO_NET_ERR = 1
VIRTIO_NET_CTRL_RX = 0
VIRTIO_NET_CTRL_RX_PROMISC = 0
VIRTIO_NET_CTRL_RX_ALLMULTI = 1
VIRTIO_NET_CTRL_MAC = 1
VIRTIO_NET_CTRL_MAC_TABLE_SET = 0
VIRTIO_NET_CTRL_MAC_ADDR_SET = 1

# -- 5.2.3 Block device feature bits ---------------------------------------------------------
VIRTIO_BLK_F_SIZE_MAX = 1
VIRTIO_BLK_F_SEG_MAX = 2
VIRTIO_BLK_F_GEOMETRY = 4
VIRTIO_BLK_F_RO = 5
VIRTIO_BLK_F_BLK_SIZE = 6
VIRTIO_BLK_F_FLUSH = 9
VIRTIO_BLK_F_TOPOLOGY = 10
VIRTIO_BLK_F_CONFIG_WCE = 11
VIRTIO_BLK_F_MQ = 12
VIRTIO_BLK_F_DISCARD = 13
VIRTIO_BLK_F_WRITE_ZEROES = 14
VIRTIO_BLK_F_LIFETIME = 15
VIRTIO_BLK_F_SECURE_ERASE = 16
VIRTIO_BLK_F_ZONED = 17

BLK_FEATURES = {
    VIRTIO_BLK_F_SIZE_MAX: "VIRTIO_BLK_F_SIZE_MAX",
    VIRTIO_BLK_F_SEG_MAX: "VIRTIO_BLK_F_SEG_MAX",
    VIRTIO_BLK_F_GEOMETRY: "VIRTIO_BLK_F_GEOMETRY",
    VIRTIO_BLK_F_RO: "VIRTIO_BLK_F_RO",
    VIRTIO_BLK_F_BLK_SIZE: "VIRTIO_BLK_F_BLK_SIZE",
    VIRTIO_BLK_F_FLUSH: "VIRTIO_BLK_F_FLUSH",
    VIRTIO_BLK_F_TOPOLOGY: "VIRTIO_BLK_F_TOPOLOGY",
    VIRTIO_BLK_F_CONFIG_WCE: "VIRTIO_BLK_F_CONFIG_WCE",
    VIRTIO_BLK_F_MQ: "VIRTIO_BLK_F_MQ",
    VIRTIO_BLK_F_DISCARD: "VIRTIO_BLK_F_DISCARD",
    VIRTIO_BLK_F_WRITE_ZEROES: "VIRTIO_BLK_F_WRITE_ZEROES",
    VIRTIO_BLK_F_LIFETIME: "VIRTIO_BLK_F_LIFETIME",
    VIRTIO_BLK_F_SECURE_ERASE: "VIRTIO_BLK_F_SECURE_ERASE",
    VIRTIO_BLK_F_ZONED: "VIRTIO_BLK_F_ZONED",
}

# 5.2.6 request types and status
VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_T_GET_LIFETIME = 10
VIRTIO_BLK_T_DISCARD = 11
VIRTIO_BLK_T_WRITE_ZEROES = 13
VIRTIO_BLK_T_SECURE_ERASE = 14
VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2
VIRTIO_BLK_ID_BYTES = 20
VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1
SECTOR_SIZE = 512  # 5.2.6: sector numbers are always in 512-byte units

# -- 5.3.3 Console device feature bits -------------------------------------------------------
VIRTIO_CONSOLE_F_SIZE = 0
VIRTIO_CONSOLE_F_MULTIPORT = 1
VIRTIO_CONSOLE_F_EMERG_WRITE = 2

CONSOLE_FEATURES = {
    VIRTIO_CONSOLE_F_SIZE: "VIRTIO_CONSOLE_F_SIZE",
    VIRTIO_CONSOLE_F_MULTIPORT: "VIRTIO_CONSOLE_F_MULTIPORT",
    VIRTIO_CONSOLE_F_EMERG_WRITE: "VIRTIO_CONSOLE_F_EMERG_WRITE",
}

DEVICE_FEATURES = {
    VIRTIO_ID_NET: NET_FEATURES,
    VIRTIO_ID_BLOCK: BLK_FEATURES,
    VIRTIO_ID_CONSOLE: CONSOLE_FEATURES,
    VIRTIO_ID_RNG: {},
}

# -- 2.7.5 / 2.7.6 / 2.7.8 split virtqueue flags ---------------------------------------------
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
VIRTQ_USED_F_NO_NOTIFY = 1

# -- 2.8 packed virtqueue flags (VIRTQ_DESC_F_NEXT/WRITE/INDIRECT above apply too) ------------
VIRTQ_DESC_F_AVAIL = 1 << 7
VIRTQ_DESC_F_USED = 1 << 15
# 2.8.10 pvirtq_event_suppress: flags (desc_event_flags, 2 bits) and desc (off 15 bits | wrap bit 15)
RING_EVENT_FLAGS_ENABLE = 0x0
RING_EVENT_FLAGS_DISABLE = 0x1
RING_EVENT_FLAGS_DESC = 0x2  # only valid with VIRTIO_F_EVENT_IDX; 0x3 is reserved
RING_EVENT_WRAP_SHIFT = 15

FEATURE_BITS = 128  # get_extended_features: features are up to 128 bits wide


def feature_name(bit: int, device_id: int | None = None) -> str:
    """Spec name of a feature bit, or 'bit N' when neither table knows it."""
    if bit in TRANSPORT_FEATURES:
        return TRANSPORT_FEATURES[bit]
    if device_id is not None and bit < 24 and bit in DEVICE_FEATURES.get(device_id, {}):
        return DEVICE_FEATURES[device_id][bit]
    if 50 <= bit < 128 and device_id == VIRTIO_ID_NET:
        return f"VIRTIO_NET_F bit {bit}"
    return f"bit {bit}"


def feature_names(features: int, device_id: int | None = None) -> list[str]:
    """Names of every set bit of a feature word (any width), lowest bit first."""
    out = []
    bit = 0
    while features >> bit:
        if features >> bit & 1:
            out.append(feature_name(bit, device_id))
        bit += 1
    return out


def bit(n: int) -> int:
    return 1 << n


def bits(*ns: int) -> int:
    """The mask with each of the bit numbers ``ns`` set."""
    return sum({1 << n for n in ns})
