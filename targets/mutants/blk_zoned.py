"""Mutants of the zoned block device duties (VIRTIO 1.4, 5.2.5.2 and 5.2.6.2, VIRTIO_BLK_F_ZONED),
one broken duty each, on the host-managed zoned model (targets/model/blk_zoned.py)."""

from __future__ import annotations

from targets.model import blk_zoned as M
from targets.model.blk import BlkDevice
from targets.model.blk_zoned import BlkZonedDevice
from virtio import blk as B
from virtio import blk_zoned as Z
from virtio import constants as C


def _poke(raw: bytes, layout, **values) -> bytes:
    out = bytearray(raw)
    for name, value in values.items():
        f = layout[name.replace("__", ".")]
        out[f.offset : f.offset + f.size] = f.encode(value)
    return bytes(out)


class BlkZonedAcceptsWithoutZoned(BlkZonedDevice):
    """Host-managed, yet sets FEATURES_OK when the driver does not accept VIRTIO_BLK_F_ZONED.

    dev.blk.device-initialization.7 (5.2.5.2): an HM device MUST fail FEATURES_OK without ZONED;
    a driver unaware of zones would write its sequential zones at random.
    """

    name = "blk-zoned-accepts-without-zoned"
    clause = "dev.blk.device-initialization.7"

    def accept_features(self, driver_features: int) -> bool:
        return BlkDevice.accept_features(self, driver_features)  # BUG: ZONED not required


class BlkZonedModelHostAware(BlkZonedDevice):
    """Reports zoned.model VIRTIO_BLK_Z_HA while its zones are sequential-write-required.

    dev.blk.device-initialization.8 (5.2.5.2): zoned.model MUST name how the device operates; an
    HA device has SWP zones, which take random writes, and these zones refuse them. (As an HA
    device should, it goes on without ZONED accepted.)
    """

    name = "blk-zoned-model-host-aware"
    clause = "dev.blk.device-initialization.8"

    def initial_config(self) -> bytes:
        return _poke(super().initial_config(), self.layout, zoned__model=Z.VIRTIO_BLK_Z_HA)  # BUG

    def accept_features(self, driver_features: int) -> bool:
        return BlkDevice.accept_features(self, driver_features)  # 5.2.5.2: HA proceeds without ZONED


class BlkZonedWrongZoneSectors(BlkZonedDevice):
    """Declares zone_sectors 64 while its zones are 128 sectors long.

    dev.blk.device-initialization.9 (5.2.5.2): zone_sectors MUST be the size of every zone but
    the last; a driver would compute twice as many zones at the wrong starts.
    """

    name = "blk-zoned-wrong-zone-sectors"
    clause = "dev.blk.device-initialization.9"

    def initial_config(self) -> bytes:
        return _poke(super().initial_config(), self.layout, zoned__zone_sectors=M.ZONE_SECTORS // 2)  # BUG


class BlkZonedOpenLimitUnderstated(BlkZonedDevice):
    """Declares max_open_zones 1 while it keeps 2 zones open.

    dev.blk.device-initialization.10 (5.2.5.2): max_open_zones MUST be the maximum number of open
    zones; a driver cannot plan its open zones on a wrong figure.
    """

    name = "blk-zoned-open-limit-understated"
    clause = "dev.blk.device-initialization.10"

    def initial_config(self) -> bytes:
        return _poke(super().initial_config(), self.layout, zoned__max_open_zones=M.MAX_OPEN_ZONES - 1)  # BUG


class BlkZonedActiveLimitUnderstated(BlkZonedDevice):
    """Declares max_active_zones 2 while 3 zones can be active.

    dev.blk.device-initialization.11 (5.2.5.2): max_active_zones MUST be the maximum number of
    active zones.
    """

    name = "blk-zoned-active-limit-understated"
    clause = "dev.blk.device-initialization.11"

    def initial_config(self) -> bytes:
        return _poke(super().initial_config(), self.layout, zoned__max_active_zones=M.MAX_ACTIVE_ZONES - 1)  # BUG


class BlkZonedAppendLimitOverstated(BlkZonedDevice):
    """Declares max_append_sectors 64 but fails appends of more than 32 sectors.

    dev.blk.device-initialization.12 (5.2.5.2): max_append_sectors MUST be the largest append
    that can succeed.
    """

    name = "blk-zoned-append-limit-overstated"
    clause = "dev.blk.device-initialization.12"

    def _append_too_large(self, nsectors):
        return nsectors > M.MAX_APPEND_SECTORS // 2  # BUG: below the declared limit


class BlkZonedCoarseGranularity(BlkZonedDevice):
    """Declares write_granularity 512 but fails writes to sequential zones not ending on 4 KiB.

    dev.blk.device-initialization.13 (5.2.5.2): write_granularity MUST be the alignment writes to
    sequential zones need; writes the driver aligns as told fail.
    """

    name = "blk-zoned-coarse-granularity"
    clause = "dev.blk.device-initialization.13"

    def _check_write(self, sector, n, append):
        z = self.zone_of(sector)
        before = z.state if z is not None else None
        status, zone = super()._check_write(sector, n, append)
        if status == C.VIRTIO_BLK_S_OK and not append and zone.type == Z.VIRTIO_BLK_ZT_SWR and (sector + n) * C.SECTOR_SIZE % 4096:
            zone.state = before  # the refused write opens nothing
            return B.VIRTIO_BLK_S_ZONE_UNALIGNED_WP, zone  # BUG: a coarser constraint than declared
        return status, zone


class BlkZonedUnused2Set(BlkZonedDevice):
    """Leaves 0xff in the zoned padding bytes unused2.

    dev.blk.device-initialization.14 (5.2.5.2): unused2 MUST be initialized to 0.
    """

    name = "blk-zoned-unused2-set"
    clause = "dev.blk.device-initialization.14"

    def initial_config(self) -> bytes:
        raw = bytearray(super().initial_config())
        f = self.layout["zoned.unused2"]
        raw[f.offset : f.offset + f.size] = b"\xff" * f.size  # BUG
        return bytes(raw)


class BlkZonedFinishesConventional(BlkZonedDevice):
    """Completes a zone finish of a conventional zone with VIRTIO_BLK_S_OK.

    dev.blk.device-operation.16 (5.2.6.2): open, close, finish or reset of a conventional zone
    MUST get VIRTIO_BLK_S_ZONE_INVALID_CMD.
    """

    name = "blk-zoned-finishes-conventional"
    clause = "dev.blk.device-operation.16"

    def _do_zone_finish(self, sector, payload, data_len):
        z = self.zone_of(sector)
        if z is not None and z.type == Z.VIRTIO_BLK_ZT_CONV:
            return C.VIRTIO_BLK_S_OK, b""  # BUG
        return super()._do_zone_finish(sector, payload, data_len)


class BlkZonedAppendsToConventional(BlkZonedDevice):
    """Takes a zone append to a conventional zone as a write at its start.

    dev.blk.device-operation.17 (5.2.6.2): an append to a zone that is not SWR MUST get
    VIRTIO_BLK_S_ZONE_INVALID_CMD; a conventional zone has no write pointer to append at.
    """

    name = "blk-zoned-appends-to-conventional"
    clause = "dev.blk.device-operation.17"

    def _do_zone_append(self, sector, payload, data_len):
        z = self.zone_of(sector)
        if z is not None and z.type == Z.VIRTIO_BLK_ZT_CONV and self._zoned():
            status, _ = super()._do_out(sector, payload, data_len)  # BUG
            return status, Z.APPEND_SECTOR.pack(sector)
        return super()._do_zone_append(sector, payload, data_len)


class BlkZonedAppendAnywhere(BlkZonedDevice):
    """Takes a zone append whose sector lies inside a zone as an append to that zone.

    dev.blk.device-operation.24 (5.2.6.2): an append whose sector is not a zone's lowest MUST get
    VIRTIO_BLK_S_ZONE_INVALID_CMD.
    """

    name = "blk-zoned-append-anywhere"
    clause = "dev.blk.device-operation.24"

    def _do_zone_append(self, sector, payload, data_len):
        z = self.zone_of(sector)
        return super()._do_zone_append(z.start if z is not None else sector, payload, data_len)  # BUG


class BlkZonedAppendSectorIsZoneStart(BlkZonedDevice):
    """Reports the zone's start in append_sector instead of where the data went.

    dev.blk.device-operation.26 (5.2.6.2): append_sector MUST be the first sector written.
    """

    name = "blk-zoned-append-sector-is-zone-start"
    clause = "dev.blk.device-operation.26"

    def _do_zone_append(self, sector, payload, data_len):
        status, data = super()._do_zone_append(sector, payload, data_len)
        if status == C.VIRTIO_BLK_S_OK:
            data = Z.APPEND_SECTOR.pack(sector)  # BUG
        return status, data


class BlkZonedRandomWrites(BlkZonedDevice):
    """Accepts a write beyond the write pointer of an SWR zone, moving the pointer there.

    dev.blk.device-operation.29 (5.2.6.2): a write not at the write pointer MUST get
    VIRTIO_BLK_S_ZONE_UNALIGNED_WP; SWR zones are written sequentially.
    """

    name = "blk-zoned-random-writes"
    clause = "dev.blk.device-operation.29"

    def _check_write(self, sector, n, append):
        z = self.zone_of(sector)
        if not append and z is not None and z.type == Z.VIRTIO_BLK_ZT_SWR and z.state in Z.WRITABLE_STATES and sector > z.wp:
            z.wp = sector  # BUG
        return super()._check_write(sector, n, append)


class BlkZonedWritesReadOnlyZone(BlkZonedDevice):
    """Writes into a read-only zone.

    dev.blk.device-operation.31 (5.2.6.2): writes to a read-only zone MUST get
    VIRTIO_BLK_S_ZONE_INVALID_CMD.
    """

    name = "blk-zoned-writes-read-only-zone"
    clause = "dev.blk.device-operation.31"

    def _do_out(self, sector, payload, data_len):
        z = self.zone_of(sector)
        if z is not None and z.state == Z.VIRTIO_BLK_ZS_RDONLY:
            return BlkDevice._do_out(self, sector, payload, data_len)  # BUG
        return super()._do_out(sector, payload, data_len)


class BlkZonedReadsOffline(BlkZonedDevice):
    """Reads an offline zone as zeros.

    dev.blk.device-operation.32 (5.2.6.2): every request to an offline zone MUST get
    VIRTIO_BLK_S_ZONE_INVALID_CMD; its data is gone.
    """

    name = "blk-zoned-reads-offline"
    clause = "dev.blk.device-operation.32"

    def _do_in(self, sector, payload, data_len):
        z = self.zone_of(sector)
        if z is not None and z.state == Z.VIRTIO_BLK_ZS_OFFLINE:
            return BlkDevice._do_in(self, sector, payload, data_len)  # BUG
        return super()._do_in(sector, payload, data_len)


class BlkZonedOpenResourceMisreported(BlkZonedDevice):
    """Answers an explicit open short of zone resources with ZONE_INVALID_CMD.

    dev.blk.device-operation.19 (5.2.6.2): such an open MUST get ZONE_OPEN_RESOURCE or
    ZONE_ACTIVE_RESOURCE; a driver cannot tell a full device from a bad request.
    """

    name = "blk-zoned-open-resource-misreported"
    clause = "dev.blk.device-operation.19"

    def _do_zone_open(self, sector, payload, data_len):
        status, data = super()._do_zone_open(sector, payload, data_len)
        if status in (B.VIRTIO_BLK_S_ZONE_OPEN_RESOURCE, B.VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE):
            status = B.VIRTIO_BLK_S_ZONE_INVALID_CMD  # BUG
        return status, data


class BlkZonedImplicitOpenUnlimited(BlkZonedDevice):
    """Opens zones implicitly for writes and appends whatever the zone resources.

    dev.blk.device-operation.23 (5.2.6.2): an implicit open short of resources MUST fail the
    request with ZONE_OPEN_RESOURCE or ZONE_ACTIVE_RESOURCE.
    """

    name = "blk-zoned-implicit-open-unlimited"
    clause = "dev.blk.device-operation.23"

    def _check_write(self, sector, n, append):
        self._implicit = True
        try:
            return super()._check_write(sector, n, append)
        finally:
            self._implicit = False

    def _need_resources(self, z, to_state):
        if getattr(self, "_implicit", False):
            return C.VIRTIO_BLK_S_OK  # BUG: the limits do not hold for implicit opens
        return super()._need_resources(z, to_state)


class BlkZonedWritesPastCapacity(BlkZonedDevice):
    """Takes writes at the write pointer up to the end of the zone, past its z_cap.

    dev.blk.device-operation.25 (5.2.6.2): a write past the zone's remaining writable capacity
    MUST get ZONE_INVALID_CMD.
    """

    name = "blk-zoned-writes-past-capacity"
    clause = "dev.blk.device-operation.25"

    def _check_write(self, sector, n, append):
        z = self.zone_of(sector)
        if append or z is None:
            return super()._check_write(sector, n, append)
        cap, z.cap = z.cap, z.size  # BUG: the whole zone is taken as writable
        try:
            return super()._check_write(sector, n, append)
        finally:
            z.cap = cap


class BlkZonedReadsAcrossZones(BlkZonedDevice):
    """Serves reads that run from an SWR zone into the next zone.

    dev.blk.device-operation.28 (5.2.6.2): a read of an SWR zone with sectors in more than one
    zone MUST get ZONE_INVALID_CMD.
    """

    name = "blk-zoned-reads-across-zones"
    clause = "dev.blk.device-operation.28"

    def _do_in(self, sector, payload, data_len):
        span = self._span(sector, data_len // C.SECTOR_SIZE) or []
        if any(z.state == Z.VIRTIO_BLK_ZS_OFFLINE for z in span):
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, b""
        return BlkDevice._do_in(self, sector, payload, data_len)  # BUG: no zone boundary check


class BlkZonedResetKeepsData(BlkZonedDevice):
    """Resets a zone's write pointer but keeps its data readable.

    dev.blk.device-operation.33 (5.2.6.2): sectors past the write pointer MUST be unwritten data;
    here the data written before the reset reads back there.
    """

    name = "blk-zoned-reset-keeps-data"
    clause = "dev.blk.device-operation.33"

    def _reset(self, z):
        z.wp, z.state = z.start, Z.VIRTIO_BLK_ZS_EMPTY  # BUG: the old data stays


class BlkZonedUnwrittenLeftUnfilled(BlkZonedDevice):
    """Completes reads of unwritten data with VIRTIO_BLK_S_OK without writing the data bytes.

    dev.blk.device-operation.34 (5.2.6.2): a read of unwritten data MUST either fill it with a
    device pattern or fail; the driver would take its own stale buffer for data.
    """

    name = "blk-zoned-unwritten-left-unfilled"
    clause = "dev.blk.device-operation.34"

    def _do_in(self, sector, payload, data_len):
        z = self.zone_of(sector)
        status, data = super()._do_in(sector, payload, data_len)
        self._unfilled = (status == C.VIRTIO_BLK_S_OK and z is not None and z.type == Z.VIRTIO_BLK_ZT_SWR
                          and z.state in Z.WRITABLE_STATES and sector >= z.wp)
        return status, data

    def _finish(self, queue, chain, status, data):
        if getattr(self, "_unfilled", False):
            self._unfilled = False
            queue.write_writable(chain, bytes([status]), offset=chain.writable_len - 1)  # BUG: data not written
            return chain.writable_len
        return super()._finish(queue, chain, status, data)


class BlkZonedOpensFullZone(BlkZonedDevice):
    """Completes an explicit open of a full zone with VIRTIO_BLK_S_OK (the zone stays full).

    dev.blk.device-operation.18 (5.2.6.2): an open whose transition cannot be made MUST get
    ZONE_INVALID_CMD; a full zone leaves FULL only by a reset.
    """

    name = "blk-zoned-opens-full-zone"
    clause = "dev.blk.device-operation.18"

    def _do_zone_open(self, sector, payload, data_len):
        z = self.zone_of(sector)
        if z is not None and z.start == sector and z.state == Z.VIRTIO_BLK_ZS_FULL:
            return C.VIRTIO_BLK_S_OK, b""  # BUG
        return super()._do_zone_open(sector, payload, data_len)


class BlkZonedClosesFullZone(BlkZonedDevice):
    """Completes a close of a full zone with VIRTIO_BLK_S_OK (the zone stays full).

    dev.blk.device-operation.20 (5.2.6.2): a close whose transition cannot be made MUST get
    ZONE_INVALID_CMD.
    """

    name = "blk-zoned-closes-full-zone"
    clause = "dev.blk.device-operation.20"

    def _do_zone_close(self, sector, payload, data_len):
        z = self.zone_of(sector)
        if z is not None and z.start == sector and z.state == Z.VIRTIO_BLK_ZS_FULL:
            return C.VIRTIO_BLK_S_OK, b""  # BUG
        return super()._do_zone_close(sector, payload, data_len)


class BlkZonedFinishesReadOnlyZone(BlkZonedDevice):
    """Finishes a read-only zone: it becomes full.

    dev.blk.device-operation.21 (5.2.6.2): a finish whose transition cannot be made MUST leave
    the state and get ZONE_INVALID_CMD; a read-only zone turns writable after a reset.
    """

    name = "blk-zoned-finishes-read-only-zone"
    clause = "dev.blk.device-operation.21"

    def _do_zone_finish(self, sector, payload, data_len):
        z = self.zone_of(sector)
        if z is not None and z.start == sector and z.state == Z.VIRTIO_BLK_ZS_RDONLY:
            z.state = Z.VIRTIO_BLK_ZS_FULL  # BUG
            return C.VIRTIO_BLK_S_OK, b""
        return super()._do_zone_finish(sector, payload, data_len)


class BlkZonedResetsReadOnlyZone(BlkZonedDevice):
    """Resets a read-only zone: it becomes empty and writable.

    dev.blk.device-operation.22 (5.2.6.2): a reset whose transition cannot be made MUST leave the
    state and get ZONE_INVALID_CMD.
    """

    name = "blk-zoned-resets-read-only-zone"
    clause = "dev.blk.device-operation.22"

    def _do_zone_reset(self, sector, payload, data_len):
        z = self.zone_of(sector)
        if z is not None and z.start == sector and z.state == Z.VIRTIO_BLK_ZS_RDONLY:
            self._reset(z)  # BUG
            return C.VIRTIO_BLK_S_OK, b""
        return super()._do_zone_reset(sector, payload, data_len)


class BlkZonedAppendLimitIgnored(BlkZonedDevice):
    """Takes zone appends of any size, past max_append_sectors.

    dev.blk.device-operation.27 (5.2.6.2): an append larger than a non-zero max_append_sectors
    MUST get ZONE_INVALID_CMD.
    """

    name = "blk-zoned-append-limit-ignored"
    clause = "dev.blk.device-operation.27"

    def _append_too_large(self, nsectors):
        return False  # BUG: the declared limit is not enforced


BLK_ZONED_MUTANTS = [
    BlkZonedAcceptsWithoutZoned,
    BlkZonedModelHostAware,
    BlkZonedWrongZoneSectors,
    BlkZonedOpenLimitUnderstated,
    BlkZonedActiveLimitUnderstated,
    BlkZonedAppendLimitOverstated,
    BlkZonedCoarseGranularity,
    BlkZonedUnused2Set,
    BlkZonedFinishesConventional,
    BlkZonedAppendsToConventional,
    BlkZonedAppendAnywhere,
    BlkZonedAppendSectorIsZoneStart,
    BlkZonedRandomWrites,
    BlkZonedWritesReadOnlyZone,
    BlkZonedReadsOffline,
    BlkZonedOpenResourceMisreported,
    BlkZonedImplicitOpenUnlimited,
    BlkZonedWritesPastCapacity,
    BlkZonedReadsAcrossZones,
    BlkZonedResetKeepsData,
    BlkZonedUnwrittenLeftUnfilled,
    BlkZonedOpensFullZone,
    BlkZonedClosesFullZone,
    BlkZonedFinishesReadOnlyZone,
    BlkZonedResetsReadOnlyZone,
    BlkZonedAppendLimitIgnored,
]
