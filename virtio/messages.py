"""Device message formats carried in buffers (VIRTIO 1.4, 5.1.6 net, 5.2.6 blk).

These are bytes in driver-owned buffers, not shared ring fields, so ``struct`` is fine here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# struct virtio_blk_req header: le32 type; le32 reserved; le64 sector  (5.2.6)
BLK_OUTHDR = struct.Struct("<IIQ")
# struct virtio_blk_discard_write_zeroes: le64 sector; le32 num_sectors; le32 flags  (5.2.6)
BLK_DISCARD_WZ = struct.Struct("<QII")
BLK_STATUS_SIZE = 1
# struct virtio_blk_lifetime: le16 pre_eol_info; le16 device_lifetime_est_typ_a; le16 ..._typ_b  (5.2.6)
BLK_LIFETIME = struct.Struct("<HHH")

# struct virtio_net_hdr with VIRTIO_F_VERSION_1: num_buffers always present -> 12 bytes (5.1.6.1)
NET_HDR = struct.Struct("<BBHHHHH")
NET_HDR_SIZE = NET_HDR.size


@dataclass
class NetHdr:
    flags: int = 0
    gso_type: int = 0
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0
    num_buffers: int = 0

    def pack(self) -> bytes:
        return NET_HDR.pack(
            self.flags, self.gso_type, self.hdr_len, self.gso_size, self.csum_start, self.csum_offset, self.num_buffers
        )

    @classmethod
    def unpack(cls, raw: bytes) -> NetHdr:
        return cls(*NET_HDR.unpack_from(raw))


def blk_outhdr(req_type: int, sector: int = 0) -> bytes:
    return BLK_OUTHDR.pack(req_type, 0, sector)


def blk_discard_segment(sector: int, num_sectors: int, flags: int = 0) -> bytes:
    return BLK_DISCARD_WZ.pack(sector, num_sectors, flags)
