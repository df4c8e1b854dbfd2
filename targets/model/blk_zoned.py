"""Reference host-managed zoned block device (VIRTIO 1.4, 5.2, VIRTIO_BLK_F_ZONED).

The disk of BlkDevice divided into zones of ZONE_SECTORS sectors: the first CONV_ZONES are
conventional, the rest sequential-write-required (SWR) with a writable capacity of ZONE_CAP
sectors, one of them read-only and one offline. The zone states, write pointers and resource
counters follow "Zoned block device" of 5.2.6 and the device duties of 5.2.6.2. Zone states are
medium state: they survive a device reset, as the data does. Unwritten data (past a write
pointer) reads as zeros, the device-specific pattern of this model.
"""

from __future__ import annotations

from virtio import blk as B
from virtio import blk_zoned as Z
from virtio import constants as C

from .blk import BlkDevice

ZONE_SECTORS = 128
ZONE_CAP = 120  # writable sectors of a sequential zone: less than its size, as 5.2.6 allows
NR_ZONES = 16
CONV_ZONES = 3
RDONLY_ZONE = 11
OFFLINE_ZONE = 12
MAX_OPEN_ZONES = 2
MAX_ACTIVE_ZONES = 3
MAX_APPEND_SECTORS = 64
WRITE_GRANULARITY = C.SECTOR_SIZE  # bytes; = blk_size


class _Zone:
    __slots__ = ("start", "size", "cap", "type", "state", "wp")

    def __init__(self, start: int, size: int, ztype: int, state: int, cap: int):
        self.start, self.size, self.type, self.state, self.cap = start, size, ztype, state, cap
        self.wp = start

    def descriptor(self) -> Z.ZoneDescriptor:
        # z_wp is undefined for conventional, read-only, full and offline zones: this model says the end.
        wp = self.wp if self.state in Z.WRITABLE_STATES else self.start + self.size
        return Z.ZoneDescriptor(self.cap, self.start, wp, self.type, self.state)


class BlkZonedDevice(BlkDevice):
    """Host-managed zoned blk model: ZONE_REPORT, OPEN, CLOSE, FINISH, RESET, RESET_ALL, APPEND."""

    name = "blk-zoned"

    def __init__(self, capacity_sectors: int = NR_ZONES * ZONE_SECTORS, mode: str = "notify", read_only: bool = False):
        self.zones: list[_Zone] = []
        self._grow_zones(int(capacity_sectors))
        super().__init__(capacity_sectors, mode, read_only)
        # 5.2.3 (driver side): an HM device's driver must not offer DISCARD; this one never offers
        # DISCARD or WRITE_ZEROES (their interplay with write pointers is not modelled).
        self.features &= ~((1 << C.VIRTIO_BLK_F_DISCARD) | (1 << C.VIRTIO_BLK_F_WRITE_ZEROES))
        self.features |= 1 << C.VIRTIO_BLK_F_ZONED
        self._handlers.update({
            B.VIRTIO_BLK_T_ZONE_REPORT: self._do_zone_report,
            B.VIRTIO_BLK_T_ZONE_OPEN: self._do_zone_open,
            B.VIRTIO_BLK_T_ZONE_CLOSE: self._do_zone_close,
            B.VIRTIO_BLK_T_ZONE_FINISH: self._do_zone_finish,
            B.VIRTIO_BLK_T_ZONE_RESET: self._do_zone_reset,
            B.VIRTIO_BLK_T_ZONE_RESET_ALL: self._do_zone_reset_all,
            B.VIRTIO_BLK_T_ZONE_APPEND: self._do_zone_append,
        })

    # -- zones ----------------------------------------------------------------------------------
    def _grow_zones(self, capacity: int) -> None:
        """Zones up to ``capacity``; a last partial zone (after a resize) is sequential, and grows."""
        if self.zones and self.zones[-1].size < ZONE_SECTORS:
            last = self.zones[-1]
            last.size = min(ZONE_SECTORS, capacity - last.start)
            last.cap = min(ZONE_CAP, last.size)
        start = self.zones[-1].start + self.zones[-1].size if self.zones else 0
        while start < capacity:
            i = len(self.zones)
            size = min(ZONE_SECTORS, capacity - start)
            if i < CONV_ZONES:
                z = _Zone(start, size, Z.VIRTIO_BLK_ZT_CONV, Z.VIRTIO_BLK_ZS_NOT_WP, size)
            else:
                state = {RDONLY_ZONE: Z.VIRTIO_BLK_ZS_RDONLY, OFFLINE_ZONE: Z.VIRTIO_BLK_ZS_OFFLINE}.get(i, Z.VIRTIO_BLK_ZS_EMPTY)
                z = _Zone(start, size, Z.VIRTIO_BLK_ZT_SWR, state, min(ZONE_CAP, size))
            self.zones.append(z)
            start += size

    def change_config(self) -> None:
        with self.lock:
            super().change_config()
            self._grow_zones(self.capacity)

    def zone_of(self, sector: int) -> _Zone | None:
        i = sector // ZONE_SECTORS
        return self.zones[i] if 0 <= sector < self.capacity and i < len(self.zones) else None

    def _count(self, states) -> int:
        return sum(1 for z in self.zones if z.state in states)

    def _need_resources(self, z: _Zone, to_state: int) -> int:
        """Make room for ``z`` to enter ``to_state`` (an open state); a resource status, or OK.

        Active first: a transition short of both resources gets ACTIVE_RESOURCE (5.2.6). Short
        of an open resource only, an implicitly open zone is closed to make room (5.2.6 allows it)."""
        needs_active = z.state not in Z.ACTIVE_STATES
        needs_open = z.state not in Z.OPEN_STATES
        if needs_active and MAX_ACTIVE_ZONES and self._count(Z.ACTIVE_STATES) >= MAX_ACTIVE_ZONES:
            return B.VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE
        if needs_open and MAX_OPEN_ZONES and self._count(Z.OPEN_STATES) >= MAX_OPEN_ZONES:
            victim = next((o for o in self.zones if o.state == Z.VIRTIO_BLK_ZS_IOPEN and o is not z), None)
            if victim is None:
                return B.VIRTIO_BLK_S_ZONE_OPEN_RESOURCE
            victim.state = Z.VIRTIO_BLK_ZS_CLOSED
        return C.VIRTIO_BLK_S_OK

    def _zoned(self) -> bool:
        return bool(self.driver_features >> C.VIRTIO_BLK_F_ZONED & 1)

    # -- configuration and negotiation (5.2.4, 5.2.5.2) -------------------------------------------
    def initial_config(self) -> bytes:
        raw = bytearray(super().initial_config())
        for name, value in (("zoned.zone_sectors", ZONE_SECTORS), ("zoned.max_open_zones", MAX_OPEN_ZONES),
                            ("zoned.max_active_zones", MAX_ACTIVE_ZONES), ("zoned.max_append_sectors", MAX_APPEND_SECTORS),
                            ("zoned.write_granularity", WRITE_GRANULARITY), ("zoned.model", Z.VIRTIO_BLK_Z_HM)):
            f = self.layout[name]
            raw[f.offset : f.offset + f.size] = f.encode(value)
        return bytes(raw)

    def accept_features(self, driver_features: int) -> bool:
        """5.2.5.2: a host-managed device fails FEATURES_OK unless VIRTIO_BLK_F_ZONED is accepted."""
        return super().accept_features(driver_features) and bool(driver_features >> C.VIRTIO_BLK_F_ZONED & 1)

    # -- data requests, zone-aware (5.2.6) --------------------------------------------------------
    def _span(self, sector: int, n: int) -> list[_Zone] | None:
        if n <= 0 or not self._in_range(sector, n):
            return None
        return self.zones[sector // ZONE_SECTORS : (sector + n - 1) // ZONE_SECTORS + 1]

    def _do_in(self, sector: int, payload: bytes, data_len: int):
        n = data_len // C.SECTOR_SIZE
        span = self._span(sector, n) if not data_len % C.SECTOR_SIZE else None
        if span:
            if any(z.state == Z.VIRTIO_BLK_ZS_OFFLINE for z in span):
                return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, b""  # offline zones cannot be read
            if len(span) > 1 and any(z.type == Z.VIRTIO_BLK_ZT_SWR for z in span):
                return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, b""  # a read across an SWR zone's boundary
        return super()._do_in(sector, payload, data_len)

    def _check_write(self, sector: int, n: int, append: bool):
        """(status, zone) for a write of ``n`` sectors at ``sector`` (append: at the zone's wp)."""
        span = self._span(sector, n)
        if not span:
            return (C.VIRTIO_BLK_S_IOERR if not append else B.VIRTIO_BLK_S_ZONE_INVALID_CMD), None
        z = span[0]
        if any(s.state == Z.VIRTIO_BLK_ZS_OFFLINE for s in span):
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, z
        if append and (z.type != Z.VIRTIO_BLK_ZT_SWR or sector != z.start):
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, z  # append: the start of an SWR zone only
        if all(s.type == Z.VIRTIO_BLK_ZT_CONV for s in span):
            return C.VIRTIO_BLK_S_OK, z
        if len(span) > 1:
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, z  # crosses a sequential zone's boundary
        if z.state == Z.VIRTIO_BLK_ZS_RDONLY:
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, z
        at = z.wp if append else sector
        if z.state == Z.VIRTIO_BLK_ZS_FULL or at + n > z.start + z.cap:
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, z  # past the zone's remaining writable capacity
        if at != z.wp or (at + n) * C.SECTOR_SIZE % WRITE_GRANULARITY:
            return B.VIRTIO_BLK_S_ZONE_UNALIGNED_WP, z
        if z.state in (Z.VIRTIO_BLK_ZS_EMPTY, Z.VIRTIO_BLK_ZS_CLOSED):
            status = self._need_resources(z, Z.VIRTIO_BLK_ZS_IOPEN)
            if status != C.VIRTIO_BLK_S_OK:
                return status, z
            z.state = Z.VIRTIO_BLK_ZS_IOPEN
        return C.VIRTIO_BLK_S_OK, z

    def _advance(self, z: _Zone, n: int) -> None:
        z.wp += n
        if z.wp >= z.start + z.cap:
            z.state = Z.VIRTIO_BLK_ZS_FULL

    def _do_out(self, sector: int, payload: bytes, data_len: int):
        if self.read_only or len(payload) % C.SECTOR_SIZE or not payload:
            return super()._do_out(sector, payload, data_len)
        n = len(payload) // C.SECTOR_SIZE
        status, z = self._check_write(sector, n, append=False)
        if status != C.VIRTIO_BLK_S_OK:
            return status, b""
        status, data = super()._do_out(sector, payload, data_len)
        if status == C.VIRTIO_BLK_S_OK and z.type != Z.VIRTIO_BLK_ZT_CONV:
            self._advance(z, n)
        return status, data

    def _append_too_large(self, nsectors: int) -> bool:
        return nsectors > MAX_APPEND_SECTORS

    def _do_zone_append(self, sector: int, payload: bytes, data_len: int):
        if not self._zoned():
            return C.VIRTIO_BLK_S_UNSUPP, b""
        if not MAX_APPEND_SECTORS:
            return C.VIRTIO_BLK_S_UNSUPP, b""
        if self.read_only:
            return C.VIRTIO_BLK_S_IOERR, b""
        if data_len < Z.APPEND_SECTOR.size or not payload or len(payload) % C.SECTOR_SIZE:
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, b""
        n = len(payload) // C.SECTOR_SIZE
        if self._append_too_large(n):
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, b""  # 5.2.6.2: past a non-zero max_append_sectors
        status, z = self._check_write(sector, n, append=True)
        if status != C.VIRTIO_BLK_S_OK:
            return status, b""
        at = z.wp
        status, _ = super()._do_out(at, payload, data_len)
        if status != C.VIRTIO_BLK_S_OK:
            return status, b""
        self._advance(z, n)
        return C.VIRTIO_BLK_S_OK, Z.APPEND_SECTOR.pack(at)

    # -- zone management (5.2.6, 5.2.6.2) ----------------------------------------------------------
    def _do_zone_report(self, sector: int, payload: bytes, data_len: int):
        if not self._zoned():
            return C.VIRTIO_BLK_S_UNSUPP, b""
        z = self.zone_of(sector)
        if z is None or data_len < Z.ZONE_REPORT_HDR.size:
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, b""
        first = self.zones.index(z)
        return C.VIRTIO_BLK_S_OK, Z.pack_zone_report([x.descriptor() for x in self.zones[first:]], data_len)

    def _target(self, sector: int):
        """(error status or None, zone) for open/close/finish/reset: the start of a sequential zone."""
        z = self.zone_of(sector)
        if z is None or sector != z.start:
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, z
        if z.type == Z.VIRTIO_BLK_ZT_CONV:
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, z  # 5.2.6.2: not on a conventional zone
        if z.state in (Z.VIRTIO_BLK_ZS_OFFLINE, Z.VIRTIO_BLK_ZS_RDONLY):
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, z  # no transition out of these states
        return None, z

    def _do_zone_open(self, sector: int, payload: bytes, data_len: int):
        if not self._zoned():
            return C.VIRTIO_BLK_S_UNSUPP, b""
        err, z = self._target(sector)
        if err is not None:
            return err, b""
        if z.state == Z.VIRTIO_BLK_ZS_FULL:
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, b""
        if z.state != Z.VIRTIO_BLK_ZS_EOPEN:
            status = self._need_resources(z, Z.VIRTIO_BLK_ZS_EOPEN)
            if status != C.VIRTIO_BLK_S_OK:
                return status, b""
            z.state = Z.VIRTIO_BLK_ZS_EOPEN
        return C.VIRTIO_BLK_S_OK, b""

    def _do_zone_close(self, sector: int, payload: bytes, data_len: int):
        if not self._zoned():
            return C.VIRTIO_BLK_S_UNSUPP, b""
        err, z = self._target(sector)
        if err is not None:
            return err, b""
        if z.state not in Z.ACTIVE_STATES:
            return B.VIRTIO_BLK_S_ZONE_INVALID_CMD, b""  # empty or full: no way to CLOSED
        z.state = Z.VIRTIO_BLK_ZS_EMPTY if z.wp == z.start else Z.VIRTIO_BLK_ZS_CLOSED
        return C.VIRTIO_BLK_S_OK, b""

    def _do_zone_finish(self, sector: int, payload: bytes, data_len: int):
        if not self._zoned():
            return C.VIRTIO_BLK_S_UNSUPP, b""
        err, z = self._target(sector)
        if err is not None:
            return err, b""
        z.state = Z.VIRTIO_BLK_ZS_FULL  # what lies past the write pointer stays unwritten (zeros)
        return C.VIRTIO_BLK_S_OK, b""

    def _reset(self, z: _Zone) -> None:
        off, end = z.start * C.SECTOR_SIZE, (z.start + z.size) * C.SECTOR_SIZE
        self.disk[off:end] = 0  # everything in it is unwritten data again
        self.allocated[z.start : z.start + z.size] = False
        z.wp, z.state = z.start, Z.VIRTIO_BLK_ZS_EMPTY

    def _do_zone_reset(self, sector: int, payload: bytes, data_len: int):
        if not self._zoned():
            return C.VIRTIO_BLK_S_UNSUPP, b""
        err, z = self._target(sector)
        if err is not None:
            return err, b""
        self._reset(z)
        return C.VIRTIO_BLK_S_OK, b""

    def _do_zone_reset_all(self, sector: int, payload: bytes, data_len: int):
        if not self._zoned():
            return C.VIRTIO_BLK_S_UNSUPP, b""
        for z in self.zones:
            if z.type != Z.VIRTIO_BLK_ZT_CONV and z.state in (*Z.ACTIVE_STATES, Z.VIRTIO_BLK_ZS_FULL):
                self._reset(z)
        return C.VIRTIO_BLK_S_OK, b""

