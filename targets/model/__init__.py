"""In-process reference devices (VIRTIO 1.4 chapter 5) and the transport that reaches them."""

from .blk import BlkDevice
from .blk_zoned import BlkZonedDevice
from .console import ConsoleDevice
from .fs import FsDevice
from .net import NetDevice
from .rng import RngDevice

MODELS = {
    "blk": BlkDevice,
    "blk-zoned": BlkZonedDevice,
    "net": NetDevice,
    "rng": RngDevice,
    "console": ConsoleDevice,
    "fs": FsDevice,
}
