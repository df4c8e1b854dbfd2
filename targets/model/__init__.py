"""In-process reference devices (VIRTIO 1.4 chapter 5) and the transport that reaches them."""

from .blk import BlkDevice
from .console import ConsoleDevice
from .net import NetDevice
from .rng import RngDevice

MODELS = {
    "blk": BlkDevice,
    "net": NetDevice,
    "rng": RngDevice,
    "console": ConsoleDevice,
}
