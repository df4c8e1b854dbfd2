"""Devices that change their configuration twice while the driver is inside one generation read
loop. 2.5.1: the device changes config_generation with every change, and a driver that sees it
move MUST read again; the device is correct. Each change comes with a configuration change
notification once DRIVER_OK is set (2.5, 4.1.4.3)."""

from __future__ import annotations

from targets.model.blk import BlkDevice
from targets.model.console import ConsoleDevice

from . import Unusual


class ChangesTwice:
    """Mixin over a model with change_config(): after each reset, the first two config reads that
    follow a read of the generation each change the configuration just after being answered."""

    CHANGES = 2

    def on_reset(self) -> None:
        super().on_reset()
        self._changes_left = self.CHANGES
        self._generation_read = False

    def get_config_generation(self) -> int:
        self._generation_read = True
        return super().get_config_generation()

    def config_read(self, offset: int, length: int) -> bytes:
        data = super().config_read(offset, length)
        if self._generation_read and self._changes_left:
            self._changes_left -= 1
            self.change_config()
        return data


class ConsoleChangesTwice(ChangesTwice, ConsoleDevice):
    name = "console-config-changes-twice"  # a terminal resized twice


class BlkChangesTwice(ChangesTwice, BlkDevice):
    name = "blk-config-changes-twice"  # a disk grown twice


def console_changes_twice(mode: str = "notify"):
    return ConsoleChangesTwice(mode=mode)


def blk_changes_twice(mode: str = "notify"):
    return BlkChangesTwice(mode=mode)


_M = "python:tests.unusual.config_changes"
DEVICES = [
    Unusual("console-config-changes-twice", f"{_M}:console_changes_twice", "resizes twice during the driver's first generation read loop (2.5.1)"),
    Unusual("blk-config-changes-twice", f"{_M}:blk_changes_twice", "grows its capacity twice during the driver's first generation read loop (2.5.1, 5.2.4)"),
]
