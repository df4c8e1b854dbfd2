"""Devices whose largest queue is tiny or huge (2.6: Queue Size is a power of 2 up to 32768 for a
split ring, 2.8.10.1: any value up to 32768 for a packed one; the device says its maximum in
queue_num_max, the driver may choose less). Suites must skip, saying so, whatever needs more."""

from __future__ import annotations

from targets.model.blk import BlkDevice
from targets.model.console import ConsoleDevice
from targets.model.net import NetDevice
from targets.model.rng import RngDevice

from . import Unusual


def _sized(model, size: int):
    """``model`` with queue_num_max ``size`` on every queue (blk's seg_max follows, 5.2.4)."""
    return type(f"{model.__name__}Queue{size}", (model,), {"queue_size_max": size, "name": f"{model.name}-queue-size-{size}"})


RngQueue2 = _sized(RngDevice, 2)
RngQueue16 = _sized(RngDevice, 16)
RngQueue32768 = _sized(RngDevice, 32768)
BlkQueue16 = _sized(BlkDevice, 16)
NetQueue16 = _sized(NetDevice, 16)
ConsoleQueue2 = _sized(ConsoleDevice, 2)


def rng_queue_2(mode: str = "notify"):
    return RngQueue2(mode=mode)


def rng_queue_16(mode: str = "notify"):
    return RngQueue16(mode=mode)


def rng_queue_32768(mode: str = "notify"):
    return RngQueue32768(mode=mode)


def blk_queue_16(mode: str = "notify"):
    return BlkQueue16(mode=mode)


def net_queue_16(mode: str = "notify"):
    return NetQueue16(mode=mode)


def console_queue_2(mode: str = "notify"):
    return ConsoleQueue2(mode=mode)


_M = "python:tests.unusual.queue_sizes"
DEVICES = [
    Unusual("rng-queue-size-2", f"{_M}:rng_queue_2", "largest queue 2 (2.6, 2.8.10.1), split and packed"),
    Unusual("rng-queue-size-16", f"{_M}:rng_queue_16", "largest queue 16 (2.6, 2.8.10.1), split and packed"),
    Unusual("rng-queue-size-32768", f"{_M}:rng_queue_32768", "largest queue 32768, the most 2.6 allows, split and packed"),
    Unusual("blk-queue-size-16", f"{_M}:blk_queue_16", "largest queue 16, seg_max 14 (2.6, 5.2.4)"),
    Unusual("net-queue-size-16", f"{_M}:net_queue_16", "largest queue 16 on receiveq1, transmitq1 and controlq (2.6)"),
    Unusual("console-queue-size-2", f"{_M}:console_queue_2", "largest queue 2 on receiveq and transmitq (2.6)"),
]
