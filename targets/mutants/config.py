"""Mutants of the device configuration space (VIRTIO 1.4, 2.5): generation counter, byte order,
reads before FEATURES_OK, the configuration change notification (2.3); and shared memory
regions (2.10), the other device-described resource."""

from __future__ import annotations

from targets.model.blk import SHM_STATS_ID, BlkDevice
from targets.model.console import ConsoleDevice
from virtio import constants as C


class BlkGenerationStuck(BlkDevice):
    """Never moves the config generation counter, although capacity changes on a resize.

    def.config.generation (2.5, 4.1.4.3.1): the generation MUST change whenever two reads of the
    configuration could see different contents.
    """

    name = "blk-generation-stuck"
    clause = "def.config.generation"

    def bump_generation(self) -> None:
        pass  # BUG: the counter stays at its initial value


class BlkCapacityBigEndian(BlkDevice):
    """Stores capacity big-endian, so the driver, decoding it little-endian, reads a huge disk.

    def.config.little-endian (2.5, 5.2.4): multi-byte configuration fields are little-endian.
    """

    name = "blk-capacity-big-endian"
    clause = "def.config.little-endian"

    def initial_config(self) -> bytes:
        raw = bytearray(super().initial_config())
        f = self.layout["capacity"]
        raw[f.offset : f.offset + f.size] = self.capacity.to_bytes(f.size, "big")  # BUG
        return bytes(raw)


class ConsoleConfigZeroBeforeFeaturesOk(ConsoleDevice):
    """Reads as all zeros until FEATURES_OK (the config is "filled in at negotiation").

    dev.basic.device-configuration-space.1 (2.5.2): the device MUST allow the driver to read
    every configuration field before FEATURES_OK, including feature-gated ones that exist for the
    offered features.
    """

    name = "console-config-zero-before-features-ok"
    clause = "dev.basic.device-configuration-space.1"

    def config_read(self, offset: int, length: int) -> bytes:
        if not self.status & C.FEATURES_OK:
            return bytes(length)  # BUG: not yet populated
        return super().config_read(offset, length)


class ConsoleNoConfigChangeNotification(ConsoleDevice):
    """Changes cols/rows on a resize (and moves the generation) but sends no notification.

    def.config.change-notification (2.3, 2.5): a configuration change while DRIVER_OK is set is
    followed by a configuration change notification.
    """

    name = "console-no-config-change-notification"
    clause = "def.config.change-notification"

    def config_changed(self) -> None:
        pass  # BUG: no self.bus.interrupt_config()


class BlkOverlappingShmRegions(BlkDevice):
    """Reports a second shared memory region that overlaps the statistics page (region 0).

    def.shm.regions (2.10): each region the device reports has a stable, non-empty range, and
    distinct regions do not overlap.
    """

    name = "blk-overlapping-shm-regions"
    clause = "def.shm.regions"

    def shm_regions(self) -> dict[int, tuple[int, int]]:
        regions = dict(super().shm_regions())
        addr, length = regions[SHM_STATS_ID]
        regions[1] = (addr + length // 2, length)  # BUG: starts inside region 0
        return regions
