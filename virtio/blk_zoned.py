"""Zoned block device layouts and values (VIRTIO 1.4, 5.2.4 and 5.2.6, VIRTIO_BLK_F_ZONED).

Defined once, for the driver side (workloads, suites) and the zoned model alike: the zoned models
of ``zoned.model``, the zone types and states of a zone descriptor, and the layouts of struct
virtio_blk_zone_report (a 64-byte header) and struct virtio_blk_zone_descriptor (64 bytes each).
The request types and status codes are in virtio/blk.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import blk as B
from . import constants as C

# zoned.model (5.2.4)
VIRTIO_BLK_Z_NONE = 0
VIRTIO_BLK_Z_HM = 1
VIRTIO_BLK_Z_HA = 2
MODEL_NAMES = {VIRTIO_BLK_Z_NONE: "VIRTIO_BLK_Z_NONE", VIRTIO_BLK_Z_HM: "VIRTIO_BLK_Z_HM", VIRTIO_BLK_Z_HA: "VIRTIO_BLK_Z_HA"}

# z_type (5.2.6)
VIRTIO_BLK_ZT_CONV = 1
VIRTIO_BLK_ZT_SWR = 2
VIRTIO_BLK_ZT_SWP = 3
TYPE_NAMES = {VIRTIO_BLK_ZT_CONV: "CONV", VIRTIO_BLK_ZT_SWR: "SWR", VIRTIO_BLK_ZT_SWP: "SWP"}

# z_state (5.2.6)
VIRTIO_BLK_ZS_NOT_WP = 0
VIRTIO_BLK_ZS_EMPTY = 1
VIRTIO_BLK_ZS_IOPEN = 2
VIRTIO_BLK_ZS_EOPEN = 3
VIRTIO_BLK_ZS_CLOSED = 4
VIRTIO_BLK_ZS_RDONLY = 13
VIRTIO_BLK_ZS_FULL = 14
VIRTIO_BLK_ZS_OFFLINE = 15
STATE_NAMES = {
    VIRTIO_BLK_ZS_NOT_WP: "NOT_WP",
    VIRTIO_BLK_ZS_EMPTY: "EMPTY",
    VIRTIO_BLK_ZS_IOPEN: "IOPEN",
    VIRTIO_BLK_ZS_EOPEN: "EOPEN",
    VIRTIO_BLK_ZS_CLOSED: "CLOSED",
    VIRTIO_BLK_ZS_RDONLY: "RDONLY",
    VIRTIO_BLK_ZS_FULL: "FULL",
    VIRTIO_BLK_ZS_OFFLINE: "OFFLINE",
}
OPEN_STATES = (VIRTIO_BLK_ZS_IOPEN, VIRTIO_BLK_ZS_EOPEN)  # each holds an open zone resource
ACTIVE_STATES = (VIRTIO_BLK_ZS_IOPEN, VIRTIO_BLK_ZS_EOPEN, VIRTIO_BLK_ZS_CLOSED)  # each holds an active one
WRITABLE_STATES = (VIRTIO_BLK_ZS_EMPTY, *ACTIVE_STATES)
SEQUENTIAL_TYPES = (VIRTIO_BLK_ZT_SWR, VIRTIO_BLK_ZT_SWP)

# struct virtio_blk_zone_report: le64 nr_zones; u8 reserved[56]; then the descriptors
ZONE_REPORT_HDR = struct.Struct("<Q56x")
# struct virtio_blk_zone_descriptor: le64 z_cap, z_start, z_wp; u8 z_type, z_state; u8 reserved[38]
ZONE_DESCRIPTOR = struct.Struct("<QQQBB38x")
# struct virtio_blk_req_za: the device-writable le64 append_sector before the status byte
APPEND_SECTOR = struct.Struct("<Q")

# Requests that carry no data (5.2.6): header and status byte only.
ZONE_MGMT_SEND = {
    "ZONE_OPEN": B.VIRTIO_BLK_T_ZONE_OPEN,
    "ZONE_CLOSE": B.VIRTIO_BLK_T_ZONE_CLOSE,
    "ZONE_FINISH": B.VIRTIO_BLK_T_ZONE_FINISH,
    "ZONE_RESET": B.VIRTIO_BLK_T_ZONE_RESET,
}


@dataclass(frozen=True)
class ZoneDescriptor:
    z_cap: int
    z_start: int
    z_wp: int
    z_type: int
    z_state: int

    def describe(self) -> str:
        t = TYPE_NAMES.get(self.z_type, f"type {self.z_type}")
        s = STATE_NAMES.get(self.z_state, f"state {self.z_state}")
        return f"zone at sector {self.z_start} ({t}, {s}, cap {self.z_cap}, wp {self.z_wp})"


def pack_zone_report(zones: list[ZoneDescriptor], room: int) -> bytes:
    """A zone report of as many whole descriptors as fit in ``room`` bytes (5.2.6: nr_zones
    counts the fully transferred descriptors); b"" when not even the header fits."""
    if room < ZONE_REPORT_HDR.size:
        return b""
    n = min(len(zones), (room - ZONE_REPORT_HDR.size) // ZONE_DESCRIPTOR.size)
    body = b"".join(ZONE_DESCRIPTOR.pack(z.z_cap, z.z_start, z.z_wp, z.z_type, z.z_state) for z in zones[:n])
    return ZONE_REPORT_HDR.pack(n) + body


def parse_zone_report(data: bytes) -> tuple[int, list[ZoneDescriptor]]:
    """(nr_zones as the device wrote it, the descriptors the buffer holds of them). The count is
    untrusted: descriptors beyond the buffer are not read; the caller judges the count."""
    if len(data) < ZONE_REPORT_HDR.size:
        return 0, []
    (nr,) = ZONE_REPORT_HDR.unpack_from(data)
    fit = (len(data) - ZONE_REPORT_HDR.size) // ZONE_DESCRIPTOR.size
    zones = [ZoneDescriptor(*ZONE_DESCRIPTOR.unpack_from(data, ZONE_REPORT_HDR.size + i * ZONE_DESCRIPTOR.size))
             for i in range(min(nr, fit))]
    return nr, zones


def report_buffer_len(nzones: int) -> int:
    """Bytes of a zone report with room for ``nzones`` descriptors, rounded up to whole sectors."""
    n = ZONE_REPORT_HDR.size + nzones * ZONE_DESCRIPTOR.size
    return -(-n // C.SECTOR_SIZE) * C.SECTOR_SIZE


def zone_count(capacity: int, zone_sectors: int) -> int:
    """nr_zones as 5.2.5.2 computes it from capacity and zone_sectors."""
    return (capacity + zone_sectors - 1) // zone_sectors if zone_sectors else 0
