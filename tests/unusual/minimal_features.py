"""Devices that offer the fewest features their type allows: VIRTIO_F_VERSION_1 only (6.1: a
device MUST offer it), no INDIRECT_DESC, EVENT_IDX, RING_PACKED, IN_ORDER, RING_RESET or
NOTIFICATION_DATA, and no device-type feature (net: no MAC, STATUS, CTRL_VQ or MRG_RXBUF, so
receiveq1 and transmitq1 only, 5.1.2; console: no SIZE; blk: no SIZE_MAX, SEG_MAX, FLUSH, ...)."""

from __future__ import annotations

from targets.model.blk import BlkDevice
from targets.model.console import ConsoleDevice
from targets.model.net import NetDevice
from targets.model.rng import RngDevice
from virtio import constants as C

from . import Unusual

ONLY_VERSION_1 = 1 << C.VIRTIO_F_VERSION_1


def _minimal(model, **extra):
    attrs = {"base_features": ONLY_VERSION_1, "name": f"{model.name}-minimal-features", **extra}
    return type(f"{model.__name__}Minimal", (model,), attrs)


RngMinimal = _minimal(RngDevice)
ConsoleMinimal = _minimal(ConsoleDevice, features=0)
NetMinimal = _minimal(NetDevice, features=0, num_queues=2, queue_names=("receiveq1", "transmitq1"))


class BlkMinimal(BlkDevice):
    name = "blk-minimal-features"
    base_features = ONLY_VERSION_1

    def __init__(self, mode: str = "notify"):
        super().__init__(mode=mode)
        self.features = 0  # BlkDevice.__init__ computes its offer; none of it here


def rng_minimal(mode: str = "notify"):
    return RngMinimal(mode=mode)


def blk_minimal(mode: str = "notify"):
    return BlkMinimal(mode=mode)


def net_minimal(mode: str = "notify"):
    return NetMinimal(mode=mode)


def console_minimal(mode: str = "notify"):
    return ConsoleMinimal(mode=mode)


_M = "python:tests.unusual.minimal_features"
DEVICES = [
    Unusual("rng-minimal-features", f"{_M}:rng_minimal", "offers VERSION_1 only (6.1)"),
    Unusual("blk-minimal-features", f"{_M}:blk_minimal", "offers VERSION_1 only: no SEG_MAX, SIZE_MAX, BLK_SIZE, FLUSH, DISCARD, ... (5.2.3)"),
    Unusual("net-minimal-features", f"{_M}:net_minimal", "offers VERSION_1 only: no MAC, STATUS, CTRL_VQ, MRG_RXBUF, so two queues (5.1.2, 5.1.3)"),
    Unusual("console-minimal-features", f"{_M}:console_minimal", "offers VERSION_1 only: no SIZE (5.3.3)"),
]
