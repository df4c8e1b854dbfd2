"""Device-specific configuration space layouts (VIRTIO 1.4, 5.1.4 net, 5.2.4 blk, 5.3.4 console,
5.11.4 fs).

One table per device type, used by the model devices to build their config bytes and by the suites
to read fields. Multi-byte fields are little-endian (2.5).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import constants as C


@dataclass(frozen=True)
class ConfigField:
    name: str
    offset: int
    size: int  # bytes; 1, 2, 4, 8, or 6 for a MAC address (a byte array)
    feature: int | tuple[int, ...] | None = None  # the field exists only if this bit (one of these) is offered
    writable: bool = False  # the driver may write it (e.g. blk writeback with CONFIG_WCE)
    write_only: bool = False  # a write is an action, not a setting that reads back (console emerg_wr)
    array: bool = False  # a byte array, not an integer
    text: bool = False  # a byte array holding NUL-padded UTF-8 text (a report shows it as text, escaped)
    padding: bool = False  # reserved bytes between fields (blk unused0): in the config space only below a present field

    @property
    def end(self) -> int:
        return self.offset + self.size

    def exists(self, offered_features: int) -> bool:
        """Whether a device offering these features has the field (5.x.4: "only exists if ...")."""
        if self.padding:
            return False
        if self.feature is None:
            return True
        bits = self.feature if isinstance(self.feature, tuple) else (self.feature,)
        return any(offered_features >> b & 1 for b in bits)

    def decode(self, raw: bytes):
        return bytes(raw) if self.array else int.from_bytes(raw, "little")

    def encode(self, value) -> bytes:
        return bytes(value) if self.array else int(value).to_bytes(self.size, "little")


class ConfigLayout:
    def __init__(self, device_id: int, fields: list[ConfigField]):
        self.device_id = device_id
        self.fields = {f.name: f for f in fields}
        self.size = max((f.end for f in fields), default=0)

    def __getitem__(self, name: str) -> ConfigField:
        return self.fields[name]

    def present(self, offered_features: int) -> list[ConfigField]:
        """Fields that exist given the features the device offers (2.5.2: readable before FEATURES_OK)."""
        return [f for f in self.fields.values() if f.exists(offered_features)]

    def size_for(self, offered_features: int) -> int:
        """The config space a device offering these features has: up to the end of its last present
        field (as QEMU's virtio_get_config_size sizes it; a back-end may answer nothing beyond)."""
        return max((f.end for f in self.present(offered_features)), default=0)

    def padding_present(self, offered_features: int) -> list[ConfigField]:
        """Padding bytes inside that config space: those a later present field lies beyond."""
        end = self.size_for(offered_features)
        return [f for f in self.fields.values() if f.padding and f.end <= end]

    def pack(self, values: dict) -> bytearray:
        out = bytearray(self.size)
        for name, value in values.items():
            f = self.fields[name]
            out[f.offset : f.offset + f.size] = f.encode(value)
        return out

    def unpack(self, raw: bytes, offered_features: int | None = None) -> dict:
        fields = self.fields.values() if offered_features is None else self.present(offered_features)
        return {f.name: f.decode(raw[f.offset : f.offset + f.size]) for f in fields if f.offset + f.size <= len(raw)}


F = ConfigField

BLK_CONFIG = ConfigLayout(
    C.VIRTIO_ID_BLOCK,
    [
        F("capacity", 0, 8),
        F("size_max", 8, 4, C.VIRTIO_BLK_F_SIZE_MAX),
        F("seg_max", 12, 4, C.VIRTIO_BLK_F_SEG_MAX),
        F("geometry.cylinders", 16, 2, C.VIRTIO_BLK_F_GEOMETRY),
        F("geometry.heads", 18, 1, C.VIRTIO_BLK_F_GEOMETRY),
        F("geometry.sectors", 19, 1, C.VIRTIO_BLK_F_GEOMETRY),
        F("blk_size", 20, 4, C.VIRTIO_BLK_F_BLK_SIZE),
        F("topology.physical_block_exp", 24, 1, C.VIRTIO_BLK_F_TOPOLOGY),
        F("topology.alignment_offset", 25, 1, C.VIRTIO_BLK_F_TOPOLOGY),
        F("topology.min_io_size", 26, 2, C.VIRTIO_BLK_F_TOPOLOGY),
        F("topology.opt_io_size", 28, 4, C.VIRTIO_BLK_F_TOPOLOGY),
        F("writeback", 32, 1, C.VIRTIO_BLK_F_CONFIG_WCE, writable=True),
        F("unused0", 33, 1, padding=True),
        F("num_queues", 34, 2, C.VIRTIO_BLK_F_MQ),
        F("max_discard_sectors", 36, 4, C.VIRTIO_BLK_F_DISCARD),
        F("max_discard_seg", 40, 4, C.VIRTIO_BLK_F_DISCARD),
        F("discard_sector_alignment", 44, 4, C.VIRTIO_BLK_F_DISCARD),
        F("max_write_zeroes_sectors", 48, 4, C.VIRTIO_BLK_F_WRITE_ZEROES),
        F("max_write_zeroes_seg", 52, 4, C.VIRTIO_BLK_F_WRITE_ZEROES),
        F("write_zeroes_may_unmap", 56, 1, C.VIRTIO_BLK_F_WRITE_ZEROES),
        F("unused1", 57, 3, padding=True, array=True),
        F("max_secure_erase_sectors", 60, 4, C.VIRTIO_BLK_F_SECURE_ERASE),
        F("max_secure_erase_seg", 64, 4, C.VIRTIO_BLK_F_SECURE_ERASE),
        F("secure_erase_sector_alignment", 68, 4, C.VIRTIO_BLK_F_SECURE_ERASE),
        F("zoned.zone_sectors", 72, 4, C.VIRTIO_BLK_F_ZONED),
        F("zoned.max_open_zones", 76, 4, C.VIRTIO_BLK_F_ZONED),
        F("zoned.max_active_zones", 80, 4, C.VIRTIO_BLK_F_ZONED),
        F("zoned.max_append_sectors", 84, 4, C.VIRTIO_BLK_F_ZONED),
        F("zoned.write_granularity", 88, 4, C.VIRTIO_BLK_F_ZONED),
        F("zoned.model", 92, 1, C.VIRTIO_BLK_F_ZONED),
        F("zoned.unused2", 93, 3, padding=True, array=True),
    ],
)

NET_CONFIG = ConfigLayout(
    C.VIRTIO_ID_NET,
    [
        F("mac", 0, 6, None, array=True),  # always present; meaningful only with VIRTIO_NET_F_MAC
        F("status", 6, 2, C.VIRTIO_NET_F_STATUS),
        F("max_virtqueue_pairs", 8, 2, (C.VIRTIO_NET_F_MQ, C.VIRTIO_NET_F_RSS)),
        F("mtu", 10, 2, C.VIRTIO_NET_F_MTU),
        F("speed", 12, 4, C.VIRTIO_NET_F_SPEED_DUPLEX),
        F("duplex", 16, 1, C.VIRTIO_NET_F_SPEED_DUPLEX),
        F("rss_max_key_size", 17, 1, (C.VIRTIO_NET_F_RSS, C.VIRTIO_NET_F_HASH_REPORT)),
        F("rss_max_indirection_table_length", 18, 2, C.VIRTIO_NET_F_RSS),
        F("supported_hash_types", 20, 4, (C.VIRTIO_NET_F_RSS, C.VIRTIO_NET_F_HASH_REPORT)),
        F("supported_tunnel_types", 24, 4, C.VIRTIO_NET_F_HASH_TUNNEL),
    ],
)

CONSOLE_CONFIG = ConfigLayout(
    C.VIRTIO_ID_CONSOLE,
    [
        F("cols", 0, 2, C.VIRTIO_CONSOLE_F_SIZE),
        F("rows", 2, 2, C.VIRTIO_CONSOLE_F_SIZE),
        F("max_nr_ports", 4, 4, C.VIRTIO_CONSOLE_F_MULTIPORT),
        F("emerg_wr", 8, 4, C.VIRTIO_CONSOLE_F_EMERG_WRITE, writable=True, write_only=True),
    ],
)

RNG_CONFIG = ConfigLayout(C.VIRTIO_ID_RNG, [])

FS_TAG_SIZE = 36  # 5.11.4: char tag[36], UTF-8, NUL-padded, not NUL-terminated when full
FS_CONFIG = ConfigLayout(
    C.VIRTIO_ID_FS,
    [
        F("tag", 0, FS_TAG_SIZE, None, array=True, text=True),
        F("num_request_queues", 36, 4),
        F("notify_buf_size", 40, 4, C.VIRTIO_FS_F_NOTIFICATION),
    ],
)

CONFIG_LAYOUTS = {
    C.VIRTIO_ID_BLOCK: BLK_CONFIG,
    C.VIRTIO_ID_NET: NET_CONFIG,
    C.VIRTIO_ID_CONSOLE: CONSOLE_CONFIG,
    C.VIRTIO_ID_RNG: RNG_CONFIG,
    C.VIRTIO_ID_FS: FS_CONFIG,
}
