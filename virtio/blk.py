"""virtio-blk request vocabulary beyond the basic header (VIRTIO 1.4, 5.2.6).

The header and discard/write-zeroes segment layouts live in virtio/messages.py (BLK_OUTHDR,
BLK_DISCARD_WZ); this module names the zoned request types and status codes (5.2.6 "Zoned
block device operation") and the flag bits of a segment, so the driver side and the model agree.
"""

from __future__ import annotations

from . import constants as C

# Zoned request types (5.2.6): rejected with VIRTIO_BLK_S_UNSUPP unless VIRTIO_BLK_F_ZONED (5.2.6.2).
VIRTIO_BLK_T_ZONE_APPEND = 15
VIRTIO_BLK_T_ZONE_REPORT = 16
VIRTIO_BLK_T_ZONE_OPEN = 18
VIRTIO_BLK_T_ZONE_CLOSE = 20
VIRTIO_BLK_T_ZONE_FINISH = 22
VIRTIO_BLK_T_ZONE_RESET = 24
VIRTIO_BLK_T_ZONE_RESET_ALL = 26
ZONE_REQUEST_TYPES = {
    "ZONE_APPEND": VIRTIO_BLK_T_ZONE_APPEND,
    "ZONE_REPORT": VIRTIO_BLK_T_ZONE_REPORT,
    "ZONE_OPEN": VIRTIO_BLK_T_ZONE_OPEN,
    "ZONE_CLOSE": VIRTIO_BLK_T_ZONE_CLOSE,
    "ZONE_FINISH": VIRTIO_BLK_T_ZONE_FINISH,
    "ZONE_RESET": VIRTIO_BLK_T_ZONE_RESET,
    "ZONE_RESET_ALL": VIRTIO_BLK_T_ZONE_RESET_ALL,
}

# Zoned status codes (5.2.6)
VIRTIO_BLK_S_ZONE_INVALID_CMD = 3
VIRTIO_BLK_S_ZONE_UNALIGNED_WP = 4
VIRTIO_BLK_S_ZONE_OPEN_RESOURCE = 5
VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE = 6

# struct virtio_blk_discard_write_zeroes flags: bit 0 is unmap; every other bit is unknown (5.2.6.2)
VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = C.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
UNKNOWN_SEGMENT_FLAG = 1 << 1

# struct virtio_blk_lifetime values (5.2.6): pre_eol_info 0-3, estimates 0-11; all others reserved
PRE_EOL_INFO_NAMES = {0: "VIRTIO_BLK_PRE_EOL_INFO_UNDEFINED", 1: "VIRTIO_BLK_PRE_EOL_INFO_NORMAL",
                      2: "VIRTIO_BLK_PRE_EOL_INFO_WARNING", 3: "VIRTIO_BLK_PRE_EOL_INFO_URGENT"}
LIFETIME_EST_MAX = 11  # 1 = up to 10% of the lifetime used ... 11 = the estimated lifetime exceeded; 0 undefined

STATUS_NAMES = {
    C.VIRTIO_BLK_S_OK: "VIRTIO_BLK_S_OK",
    C.VIRTIO_BLK_S_IOERR: "VIRTIO_BLK_S_IOERR",
    C.VIRTIO_BLK_S_UNSUPP: "VIRTIO_BLK_S_UNSUPP",
    VIRTIO_BLK_S_ZONE_INVALID_CMD: "VIRTIO_BLK_S_ZONE_INVALID_CMD",
    VIRTIO_BLK_S_ZONE_UNALIGNED_WP: "VIRTIO_BLK_S_ZONE_UNALIGNED_WP",
    VIRTIO_BLK_S_ZONE_OPEN_RESOURCE: "VIRTIO_BLK_S_ZONE_OPEN_RESOURCE",
    VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE: "VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE",
}


def status_name(status: int) -> str:
    """A status byte by name; an undefined value (untrusted, from the device) as its number."""
    return STATUS_NAMES.get(status, f"undefined status {status}")
