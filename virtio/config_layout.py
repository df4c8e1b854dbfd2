"""Device-specific configuration space layouts (VIRTIO 1.4, 5.1.4 net, 5.2.4 blk, 5.3.4 console).

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
    feature: int | None = None  # the field exists only if this feature bit is offered
    writable: bool = False  # the driver may write it (e.g. blk writeback with CONFIG_WCE)
    array: bool = False  # a byte array, not an integer

    def decode(self, raw: bytes):
        return bytes(raw) if self.array else int.from_bytes(raw, "little")

    def encode(self, value) -> bytes:
        return bytes(value) if self.array else int(value).to_bytes(self.size, "little")


class ConfigLayout:
    def __init__(self, device_id: int, fields: list[ConfigField]):
        self.device_id = device_id
        self.fields = {f.name: f for f in fields}
        self.size = max((f.offset + f.size for f in fields), default=0)

    def __getitem__(self, name: str) -> ConfigField:
        return self.fields[name]

    def present(self, offered_features: int) -> list[ConfigField]:
        """Fields that exist given the features the device offers (2.5.2: readable before FEATURES_OK)."""
        return [f for f in self.fields.values() if f.feature is None or offered_features >> f.feature & 1]

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
        F("num_queues", 34, 2, C.VIRTIO_BLK_F_MQ),
        F("max_discard_sectors", 36, 4, C.VIRTIO_BLK_F_DISCARD),
        F("max_discard_seg", 40, 4, C.VIRTIO_BLK_F_DISCARD),
        F("discard_sector_alignment", 44, 4, C.VIRTIO_BLK_F_DISCARD),
        F("max_write_zeroes_sectors", 48, 4, C.VIRTIO_BLK_F_WRITE_ZEROES),
        F("max_write_zeroes_seg", 52, 4, C.VIRTIO_BLK_F_WRITE_ZEROES),
        F("write_zeroes_may_unmap", 56, 1, C.VIRTIO_BLK_F_WRITE_ZEROES),
    ],
)

NET_CONFIG = ConfigLayout(
    C.VIRTIO_ID_NET,
    [
        F("mac", 0, 6, None, array=True),  # always present; meaningful only with VIRTIO_NET_F_MAC
        F("status", 6, 2, C.VIRTIO_NET_F_STATUS),
        F("max_virtqueue_pairs", 8, 2, C.VIRTIO_NET_F_MQ),
        F("mtu", 10, 2, C.VIRTIO_NET_F_MTU),
    ],
)

CONSOLE_CONFIG = ConfigLayout(
    C.VIRTIO_ID_CONSOLE,
    [
        F("cols", 0, 2, C.VIRTIO_CONSOLE_F_SIZE),
        F("rows", 2, 2, C.VIRTIO_CONSOLE_F_SIZE),
        F("max_nr_ports", 4, 4, C.VIRTIO_CONSOLE_F_MULTIPORT),
        F("emerg_wr", 8, 4, C.VIRTIO_CONSOLE_F_EMERG_WRITE, writable=True),
    ],
)

RNG_CONFIG = ConfigLayout(C.VIRTIO_ID_RNG, [])

CONFIG_LAYOUTS = {
    C.VIRTIO_ID_BLOCK: BLK_CONFIG,
    C.VIRTIO_ID_NET: NET_CONFIG,
    C.VIRTIO_ID_CONSOLE: CONSOLE_CONFIG,
    C.VIRTIO_ID_RNG: RNG_CONFIG,
}
