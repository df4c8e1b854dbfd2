"""virtio-blk zoned block device duties (VIRTIO 1.4, 5.2.5.2 and 5.2.6.2, VIRTIO_BLK_F_ZONED).

Every test skips where the device does not offer VIRTIO_BLK_F_ZONED or reports the
VIRTIO_BLK_Z_NONE model (a drive-managed device is a regular one). Zones are found with
VIRTIO_BLK_T_ZONE_REPORT, never assumed; each test begins with VIRTIO_BLK_T_ZONE_RESET_ALL, so
no zone is open or closed from an earlier test, and honours the limits the device declares:
writes are whole multiples of both the logical block and write_granularity, at the write
pointer, within z_cap. A preparatory request that fails skips the test (it is not the duty the
test judges). Requests go out one at a time, each waited for (bounded).
"""

from __future__ import annotations

import math
import os

import pytest

from fixtures.devices import need
from virtio import blk as B
from virtio import blk_zoned as Z
from virtio import constants as C
from virtio.checks import require
from virtio.messages import blk_outhdr
from virtio.workloads import blk_zone_report

pytestmark = pytest.mark.device_types("blk")

CLAUSE_HM_NEEDS_ZONED = "dev.blk.device-initialization.7"
CLAUSE_MODEL = "dev.blk.device-initialization.8"
CLAUSE_ZONE_SECTORS = "dev.blk.device-initialization.9"
CLAUSE_MAX_OPEN = "dev.blk.device-initialization.10"
CLAUSE_MAX_ACTIVE = "dev.blk.device-initialization.11"
CLAUSE_MAX_APPEND = "dev.blk.device-initialization.12"
CLAUSE_GRANULARITY = "dev.blk.device-initialization.13"
CLAUSE_UNUSED2 = "dev.blk.device-initialization.14"
CLAUSE_CONV_MGMT = "dev.blk.device-operation.16"
CLAUSE_APPEND_NOT_SWR = "dev.blk.device-operation.17"
CLAUSE_OPEN_IMPOSSIBLE = "dev.blk.device-operation.18"
CLAUSE_OPEN_RESOURCE = "dev.blk.device-operation.19"
CLAUSE_CLOSE_IMPOSSIBLE = "dev.blk.device-operation.20"
CLAUSE_FINISH_IMPOSSIBLE = "dev.blk.device-operation.21"
CLAUSE_RESET_IMPOSSIBLE = "dev.blk.device-operation.22"
CLAUSE_IMPLICIT_RESOURCE = "dev.blk.device-operation.23"
CLAUSE_APPEND_NOT_START = "dev.blk.device-operation.24"
CLAUSE_PAST_CAPACITY = "dev.blk.device-operation.25"
CLAUSE_APPEND_SECTOR = "dev.blk.device-operation.26"
CLAUSE_APPEND_TOO_LARGE = "dev.blk.device-operation.27"
CLAUSE_CROSS_ZONE = "dev.blk.device-operation.28"
CLAUSE_UNALIGNED_WP = "dev.blk.device-operation.29"
CLAUSE_RDONLY = "dev.blk.device-operation.31"
CLAUSE_OFFLINE = "dev.blk.device-operation.32"
CLAUSE_UNWRITTEN = "dev.blk.device-operation.33"
CLAUSE_UNWRITTEN_READ = "dev.blk.device-operation.34"

RESOURCE_STATUSES = (B.VIRTIO_BLK_S_ZONE_OPEN_RESOURCE, B.VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE)
RESOURCE_NAMES = "VIRTIO_BLK_S_ZONE_OPEN_RESOURCE or VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE"


def _name(status: int) -> str:
    return B.status_name(status)


class ZonedDisk:
    """A negotiated zoned blk device (ZONED accepted), its declared zoned characteristics, and the
    requests the tests send, one at a time."""

    def __init__(self, session):
        need(session.driver, C.VIRTIO_BLK_F_ZONED)
        self.session = session
        self.work = session.start(want=(C.VIRTIO_BLK_F_ZONED,))
        d = self.driver = session.driver
        self.vq = self.work.vq
        self.model = d.config_field("zoned.model")
        if self.model == Z.VIRTIO_BLK_Z_NONE:
            pytest.skip("zoned.model is VIRTIO_BLK_Z_NONE: a drive-managed device is handled as a regular one")
        self.capacity = d.config_field("capacity")
        self.zone_sectors = d.config_field("zoned.zone_sectors")
        self.max_open = d.config_field("zoned.max_open_zones")
        self.max_active = d.config_field("zoned.max_active_zones")
        self.max_append = d.config_field("zoned.max_append_sectors")
        self.granularity = d.config_field("zoned.write_granularity")
        neg = d.negotiated
        self.size_max = d.config_field("size_max") if neg >> C.VIRTIO_BLK_F_SIZE_MAX & 1 else None
        self.seg_max = d.config_field("seg_max") if neg >> C.VIRTIO_BLK_F_SEG_MAX & 1 else None
        # One write unit: whole logical blocks and whole write_granularity (5.2.6.1), in sectors.
        unit_bytes = math.lcm(self.work.block * C.SECTOR_SIZE, self.granularity or C.SECTOR_SIZE)
        self.unit = unit_bytes // C.SECTOR_SIZE if unit_bytes % C.SECTOR_SIZE == 0 else 0
        if self.zone_sectors == 0:
            pytest.skip("zoned.zone_sectors is 0: no zone geometry to work with (the config tests judge it)")

    # -- requests ---------------------------------------------------------------------------------
    def request(self, out: list[bytes], in_lens: list[int], what: str, fill: bytes | None = None) -> tuple[int, bytes]:
        c = self.vq.add(out, in_lens, what)
        if fill is not None:  # what the driver's buffer holds before the device writes it
            pos = 0
            for s in c.in_sgs:
                self.vq.mem.write(s.addr, fill[pos : pos + s.len].ljust(s.len, b"\0"))
                pos += s.len
        self.vq.kick()
        self.vq.wait_chain(c, self.session.timeout, awaited=what)
        got = self.vq.read_in(c, c.writable)
        self.vq.release(c)
        return got[-1], got[:-1]

    def _data(self, data: bytes) -> list[bytes]:
        """``data`` in elements of at most size_max bytes (5.2.4), or skip if seg_max forbids it."""
        step = self.size_max or len(data) or 1
        parts = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
        if self.seg_max is not None and len(parts) > self.seg_max:
            pytest.skip(f"{len(data)} bytes need {len(parts)} segments; seg_max is {self.seg_max}")
        return parts

    def write(self, sector: int, data: bytes) -> int:
        n = len(data) // C.SECTOR_SIZE
        return self.request([blk_outhdr(C.VIRTIO_BLK_T_OUT, sector), *self._data(data)], [1],
                            f"write of sectors {sector}..{sector + n - 1}")[0]

    def read(self, sector: int, nsectors: int, fill: bytes | None = None) -> tuple[int, bytes]:
        return self.request([blk_outhdr(C.VIRTIO_BLK_T_IN, sector)], [nsectors * C.SECTOR_SIZE, 1],
                            f"read of sectors {sector}..{sector + nsectors - 1}", fill=fill)

    def append(self, sector: int, data: bytes) -> tuple[int, int | None]:
        status, got = self.request([blk_outhdr(B.VIRTIO_BLK_T_ZONE_APPEND, sector), *self._data(data)],
                                   [Z.APPEND_SECTOR.size, 1], f"zone append of {len(data) // C.SECTOR_SIZE} sectors to sector {sector}")
        return status, (Z.APPEND_SECTOR.unpack(got)[0] if len(got) == Z.APPEND_SECTOR.size else None)

    def mgmt(self, name: str, sector: int) -> int:
        req = Z.ZONE_MGMT_SEND[name] if name in Z.ZONE_MGMT_SEND else B.ZONE_REQUEST_TYPES[name]
        return self.request([blk_outhdr(req, sector)], [1], f"VIRTIO_BLK_T_{name} of sector {sector}")[0]

    def report(self, sector: int = 0, nzones: int | None = None) -> list[Z.ZoneDescriptor]:
        """The zones from the one holding ``sector``: ``nzones`` of them, or (None) all, asking
        again from the next zone where a report holds fewer than the buffer had room for."""
        zones: list[Z.ZoneDescriptor] = []
        while True:
            status, data = blk_zone_report(self.driver, self.vq, self.session.timeout, sector, nzones)
            good(status, f"the zone report from sector {sector}")
            got = [z for z in Z.parse_zone_report(data)[1] if not zones or z.z_start > zones[-1].z_start]
            zones += got
            if nzones is not None or not got or len(zones) >= Z.zone_count(self.capacity, self.zone_sectors):
                return zones
            sector = zones[-1].z_start + self.zone_sectors
            if sector >= self.capacity:
                return zones

    def zone(self, start: int) -> Z.ZoneDescriptor:
        zs = self.report(start, 1)
        if not zs or zs[0].z_start != start:
            pytest.skip(f"the zone report from sector {start} does not describe the zone starting there")
        return zs[0]

    # -- planning ---------------------------------------------------------------------------------
    def fresh(self) -> list[Z.ZoneDescriptor]:
        """RESET_ALL (sector 0, 5.2.6.1), then every zone."""
        good(self.mgmt("ZONE_RESET_ALL", 0), "VIRTIO_BLK_T_ZONE_RESET_ALL")
        return self.report()

    def zone_end(self, zones: list[Z.ZoneDescriptor], z: Z.ZoneDescriptor) -> int:
        later = [o.z_start for o in zones if o.z_start > z.z_start]
        return min(later) if later else self.capacity

    def pick(self, zones, count: int, *, types=(Z.VIRTIO_BLK_ZT_SWR,), state=Z.VIRTIO_BLK_ZS_EMPTY, room: int = 1, what: str = "zone"):
        """``count`` zones of ``types`` in ``state`` with z_cap of at least ``room`` write units."""
        if self.unit == 0:
            pytest.skip(f"write_granularity {self.granularity} and the block size give no whole-sector write unit")
        found = [z for z in zones if z.z_type in types and z.z_state == state and z.z_cap >= room * self.unit]
        if len(found) < count:
            names = "/".join(Z.TYPE_NAMES.get(t, str(t)) for t in types)
            pytest.skip(f"the zone report holds {len(found)} {names} zone(s) in state {Z.STATE_NAMES.get(state, state)} "
                        f"with room for {room} write unit(s); the check needs {count} ({what})")
        return found[:count]

    def pattern(self, nsectors: int) -> bytes:
        return os.urandom(nsectors * C.SECTOR_SIZE)

    def limit(self) -> tuple[int, str]:
        """The smaller declared non-zero zone resource limit and its field name; skip if none."""
        limits = [(v, n) for v, n in ((self.max_open, "max_open_zones"), (self.max_active, "max_active_zones")) if v]
        if not limits:
            pytest.skip("max_open_zones and max_active_zones are both 0: the device declares no zone resource limit")
        return min(limits)


def good(status: int, what: str) -> None:
    if status != C.VIRTIO_BLK_S_OK:
        pytest.skip(f"{what} completed with {_name(status)}; the check needs it to succeed")


@pytest.fixture
def zd(session):
    return ZonedDisk(session)


# -- initialization (5.2.5.2) ----------------------------------------------------------------------
@pytest.mark.clause(CLAUSE_HM_NEEDS_ZONED)
def test_host_managed_refuses_features_ok_without_zoned(session):
    """5.2.5.2: with VIRTIO_BLK_F_ZONED not accepted, an HM device fails to set FEATURES_OK."""
    d = session.driver
    need(d, C.VIRTIO_BLK_F_ZONED)
    session.start(want=(C.VIRTIO_BLK_F_ZONED,))
    model = d.config_field("zoned.model")
    if model != Z.VIRTIO_BLK_Z_HM:
        pytest.skip(f"zoned.model is {Z.MODEL_NAMES.get(model, model)}: the duty is a host-managed device's")
    features = d.wanted_features(refuse=1 << C.VIRTIO_BLK_F_ZONED)
    d.negotiate(features, check=False)
    status = d.status()
    d.reset()
    require(not status & C.FEATURES_OK, CLAUSE_HM_NEEDS_ZONED, "device status after FEATURES_OK without VIRTIO_BLK_F_ZONED",
            expected="FEATURES_OK clear (an HM device cannot run without ZONED)", observed=C.status_names(status))


@pytest.mark.clause(CLAUSE_MODEL)
def test_model_matches_zone_types(zd):
    """5.2.5.2: zoned.model names how the device manages zones: HM devices have SWR zones, HA
    devices SWP zones (5.2.4); either may have conventional zones."""
    require(zd.model in Z.MODEL_NAMES, CLAUSE_MODEL, "zoned.model", expected=f"one of {sorted(Z.MODEL_NAMES)}", observed=zd.model)
    zones = zd.report()
    wrong = Z.VIRTIO_BLK_ZT_SWP if zd.model == Z.VIRTIO_BLK_Z_HM else Z.VIRTIO_BLK_ZT_SWR
    bad = [z for z in zones if z.z_type == wrong]
    require(not bad, CLAUSE_MODEL, f"zoned.model {Z.MODEL_NAMES[zd.model]} with {Z.TYPE_NAMES[wrong]} zones",
            expected=f"no {Z.TYPE_NAMES[wrong]} zone for {Z.MODEL_NAMES[zd.model]}",
            observed=f"{len(bad)} zone(s), first: {bad[0].describe()}" if bad else "", queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_ZONE_SECTORS)
def test_zone_sectors_is_every_zone_size(zd):
    """5.2.5.2: every zone is zone_sectors long but the last, which may be shorter; so there are
    (capacity + zone_sectors - 1) / zone_sectors zones, zone i starting at i * zone_sectors."""
    zones = zd.report()
    nr = Z.zone_count(zd.capacity, zd.zone_sectors)
    starts = [z.z_start for z in zones]
    expected = [i * zd.zone_sectors for i in range(nr)]
    first_bad = next((i for i, (a, b) in enumerate(zip(starts, expected, strict=False)) if a != b), None)
    require(first_bad is None and len(starts) == nr, CLAUSE_ZONE_SECTORS,
            f"zone starts with zone_sectors {zd.zone_sectors} and capacity {zd.capacity}",
            expected=f"{nr} zones at multiples of {zd.zone_sectors}",
            observed=(f"{len(starts)} zones" if first_bad is None else f"zone {first_bad} at sector {starts[first_bad]}, not {expected[first_bad]}"),
            queue=zd.vq.name)


def _open_n(zd, zones, what: str) -> None:
    for z in zones:
        good(zd.mgmt("ZONE_OPEN", z.z_start), f"the explicit open of the zone at sector {z.z_start} ({what})")


def _closed_n(zd, zones, what: str) -> None:
    """Each zone written one unit at its write pointer, then closed: CLOSED, active, not open."""
    for z in zones:
        good(zd.write(z.z_start, zd.pattern(zd.unit)), f"the write at the start of the zone at sector {z.z_start} ({what})")
        good(zd.mgmt("ZONE_CLOSE", z.z_start), f"the close of the zone at sector {z.z_start} ({what})")


@pytest.mark.clause(CLAUSE_MAX_OPEN)
def test_max_open_zones_is_the_open_limit(zd):
    """5.2.5.2: max_open_zones zones can be open at once, and no more (0: no limit)."""
    if not zd.max_open:
        pytest.skip("max_open_zones is 0 (no limit): there is no limit to reach")
    if zd.max_active and zd.max_active < zd.max_open:
        pytest.skip(f"max_active_zones {zd.max_active} < max_open_zones {zd.max_open}: the active limit comes first")
    zones = zd.pick(zd.fresh(), zd.max_open + 1, what="max_open_zones + 1 empty sequential zones")
    for z in zones[:-1]:
        status = zd.mgmt("ZONE_OPEN", z.z_start)
        require(status == C.VIRTIO_BLK_S_OK, CLAUSE_MAX_OPEN, f"explicit open of the zone at sector {z.z_start}, within max_open_zones {zd.max_open}",
                expected="VIRTIO_BLK_S_OK", observed=_name(status), queue=zd.vq.name)
    status = zd.mgmt("ZONE_OPEN", zones[-1].z_start)
    zd.fresh()
    require(status != C.VIRTIO_BLK_S_OK, CLAUSE_MAX_OPEN, f"explicit open of zone {zd.max_open + 1} with max_open_zones {zd.max_open}",
            expected="a failure (the declared limit is reached)", observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_MAX_ACTIVE)
def test_max_active_zones_is_the_active_limit(zd):
    """5.2.5.2: max_active_zones zones can be active (open or closed) at once, and no more."""
    if not zd.max_active:
        pytest.skip("max_active_zones is 0 (no limit): there is no limit to reach")
    zones = zd.pick(zd.fresh(), zd.max_active + 1, room=2, what="max_active_zones + 1 empty sequential zones")
    _closed_n(zd, zones[:-1], f"{zd.max_active} closed zones")
    status = zd.mgmt("ZONE_OPEN", zones[-1].z_start)
    zd.fresh()
    require(status != C.VIRTIO_BLK_S_OK, CLAUSE_MAX_ACTIVE, f"explicit open with {zd.max_active} closed zones and max_active_zones {zd.max_active}",
            expected="a failure (the declared limit is reached)", observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_MAX_APPEND)
def test_max_append_sectors_is_the_append_limit(zd):
    """5.2.5.2: max_append_sectors is at most seg_max * size_max, and an append of that size
    succeeds (0: the device does not support append)."""
    if zd.size_max is not None and zd.seg_max is not None:
        bound = zd.seg_max * zd.size_max // C.SECTOR_SIZE
        require(zd.max_append <= bound, CLAUSE_MAX_APPEND, "max_append_sectors against seg_max * size_max",
                expected=f"<= {bound} sectors ({zd.seg_max} x {zd.size_max} bytes)", observed=zd.max_append)
    if not zd.max_append:
        pytest.skip("max_append_sectors is 0: the device does not support VIRTIO_BLK_T_ZONE_APPEND")
    if not zd.unit or zd.max_append < zd.unit:
        pytest.skip(f"max_append_sectors {zd.max_append} is less than one write unit ({zd.unit} sectors)")
    n = zd.max_append // zd.unit * zd.unit
    (z,) = zd.pick(zd.fresh(), 1, room=n // zd.unit, what=f"an empty SWR zone with room for {n} sectors")
    status, _ = zd.append(z.z_start, zd.pattern(n))
    zd.fresh()
    require(status == C.VIRTIO_BLK_S_OK, CLAUSE_MAX_APPEND, f"zone append of {n} sectors (max_append_sectors {zd.max_append}) to an empty zone",
            expected="VIRTIO_BLK_S_OK", observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_GRANULARITY)
def test_write_granularity_is_enough(zd):
    """5.2.5.2: write_granularity is the alignment writes to sequential zones need: one write of
    that size (and whole blocks) at the write pointer of an empty zone succeeds."""
    require(zd.granularity > 0, CLAUSE_GRANULARITY, "write_granularity", expected="a non-zero byte count", observed=zd.granularity)
    (z,) = zd.pick(zd.fresh(), 1, types=Z.SEQUENTIAL_TYPES, room=2, what="an empty sequential zone")
    status = zd.write(z.z_start, zd.pattern(zd.unit))
    if status == C.VIRTIO_BLK_S_OK:
        status = zd.write(z.z_start + zd.unit, zd.pattern(zd.unit))
    zd.fresh()
    require(status == C.VIRTIO_BLK_S_OK, CLAUSE_GRANULARITY,
            f"writes of {zd.unit} sectors (write_granularity {zd.granularity} bytes) at the write pointer",
            expected="VIRTIO_BLK_S_OK", observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_UNUSED2)
def test_unused2_reads_zero(session):
    """5.2.5.2: the padding bytes zoned.unused2 are initialized to 0."""
    d = session.driver
    need(d, C.VIRTIO_BLK_F_ZONED)
    session.start(want=(C.VIRTIO_BLK_F_ZONED,))
    if d.config_field("zoned.model") == Z.VIRTIO_BLK_Z_NONE:
        pytest.skip("zoned.model is VIRTIO_BLK_Z_NONE: the duty is an HM or HA device's")
    f = d.layout["zoned.unused2"]
    raw = bytes(d.ops.get(f.offset, f.size))
    require(raw == bytes(f.size), CLAUSE_UNUSED2, f"config padding zoned.unused2 (offset {f.offset}, {f.size} bytes)",
            expected=bytes(f.size).hex(" "), observed=raw.hex(" "))


# -- operation (5.2.6.2) ---------------------------------------------------------------------------
@pytest.mark.clause(CLAUSE_CONV_MGMT)
@pytest.mark.parametrize("name", sorted(Z.ZONE_MGMT_SEND))
def test_zone_management_of_conventional_zone_is_invalid(zd, name):
    """5.2.6.2: open, close, finish or reset of a conventional zone gets ZONE_INVALID_CMD."""
    (z,) = zd.pick(zd.fresh(), 1, types=(Z.VIRTIO_BLK_ZT_CONV,), state=Z.VIRTIO_BLK_ZS_NOT_WP, room=0, what="a conventional zone")
    status = zd.mgmt(name, z.z_start)
    require(status == B.VIRTIO_BLK_S_ZONE_INVALID_CMD, CLAUSE_CONV_MGMT, f"VIRTIO_BLK_T_{name} of the conventional zone at sector {z.z_start}",
            expected="VIRTIO_BLK_S_ZONE_INVALID_CMD", observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_APPEND_NOT_SWR)
def test_append_to_non_swr_zone_is_invalid(zd):
    """5.2.6.2: a zone append to a zone that is not SWR (conventional or SWP) gets ZONE_INVALID_CMD."""
    zones = zd.fresh()
    targets = [z for z in zones if z.z_type in (Z.VIRTIO_BLK_ZT_CONV, Z.VIRTIO_BLK_ZT_SWP) and z.z_state not in
               (Z.VIRTIO_BLK_ZS_OFFLINE, Z.VIRTIO_BLK_ZS_RDONLY, Z.VIRTIO_BLK_ZS_FULL)]
    if not targets or not zd.unit:
        pytest.skip("the zone report holds no writable conventional or SWP zone")
    _appending(zd)  # with max_append_sectors 0 any append gets UNSUPP (5.2.6.2): nothing to judge here
    z = targets[0]
    status, _ = zd.append(z.z_start, zd.pattern(zd.unit))
    zd.fresh()
    require(status == B.VIRTIO_BLK_S_ZONE_INVALID_CMD, CLAUSE_APPEND_NOT_SWR, f"zone append to the {Z.TYPE_NAMES[z.z_type]} zone at sector {z.z_start}",
            expected="VIRTIO_BLK_S_ZONE_INVALID_CMD", observed=_name(status), queue=zd.vq.name)


def _appending(zd) -> None:
    if not zd.max_append:
        pytest.skip("max_append_sectors is 0: the device does not support VIRTIO_BLK_T_ZONE_APPEND")
    if not zd.unit or zd.max_append < zd.unit:
        pytest.skip(f"max_append_sectors {zd.max_append} is less than one write unit ({zd.unit} sectors)")


@pytest.mark.clause(CLAUSE_APPEND_NOT_START)
def test_append_not_at_zone_start_is_invalid(zd):
    """5.2.6.2: a zone append whose sector is not the lowest of a zone gets ZONE_INVALID_CMD."""
    _appending(zd)
    (z,) = zd.pick(zd.fresh(), 1, room=3, what="an empty SWR zone")
    status, _ = zd.append(z.z_start + zd.unit, zd.pattern(zd.unit))
    zd.fresh()
    require(status == B.VIRTIO_BLK_S_ZONE_INVALID_CMD, CLAUSE_APPEND_NOT_START,
            f"zone append with sector {z.z_start + zd.unit}, inside the zone starting at {z.z_start}",
            expected="VIRTIO_BLK_S_ZONE_INVALID_CMD", observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_APPEND_SECTOR)
def test_append_reports_first_written_sector(zd):
    """5.2.6.2: a successful zone append sets append_sector to the first sector it wrote -- the
    write pointer it found -- and the data is there."""
    _appending(zd)
    (z,) = zd.pick(zd.fresh(), 1, room=2, what="an empty SWR zone with room for two write units")
    good(zd.write(z.z_start, zd.pattern(zd.unit)), "the write at the start of the zone")
    wp = zd.zone(z.z_start).z_wp
    data = zd.pattern(zd.unit)
    status, at = zd.append(z.z_start, data)
    good(status, "the zone append")
    require(at == wp, CLAUSE_APPEND_SECTOR, f"append_sector of an append to the zone at {z.z_start} with its write pointer at {wp}",
            expected=wp, observed=at, queue=zd.vq.name)
    status, got = zd.read(at, zd.unit)
    zd.fresh()
    good(status, f"the read back of sector {at}")
    require(got == data, CLAUSE_APPEND_SECTOR, f"data at append_sector {at}", expected="the appended data",
            observed="other bytes", queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_UNALIGNED_WP)
def test_write_off_the_write_pointer_is_unaligned(zd):
    """5.2.6.2: a write to an SWR zone not starting at its write pointer gets ZONE_UNALIGNED_WP."""
    (z,) = zd.pick(zd.fresh(), 1, room=3, what="an empty SWR zone")
    status = zd.write(z.z_start + zd.unit, zd.pattern(zd.unit))
    zd.fresh()
    require(status == B.VIRTIO_BLK_S_ZONE_UNALIGNED_WP, CLAUSE_UNALIGNED_WP,
            f"write at sector {z.z_start + zd.unit}; the empty zone's write pointer is {z.z_start}",
            expected="VIRTIO_BLK_S_ZONE_UNALIGNED_WP", observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_RDONLY)
@pytest.mark.parametrize("kind", ["write", "append"])
def test_write_to_read_only_zone_is_invalid(zd, kind):
    """5.2.6.2: a write or zone append to a read-only zone gets ZONE_INVALID_CMD."""
    (z,) = zd.pick(zd.fresh(), 1, types=Z.SEQUENTIAL_TYPES, state=Z.VIRTIO_BLK_ZS_RDONLY, room=0, what="a read-only zone")
    if kind == "append":
        _appending(zd)
        status, _ = zd.append(z.z_start, zd.pattern(zd.unit))
    else:
        status = zd.write(z.z_start, zd.pattern(zd.unit))
    require(status == B.VIRTIO_BLK_S_ZONE_INVALID_CMD, CLAUSE_RDONLY, f"{kind} to the read-only zone at sector {z.z_start}",
            expected="VIRTIO_BLK_S_ZONE_INVALID_CMD", observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_OFFLINE)
@pytest.mark.parametrize("kind", ["read", "write", "append", *sorted(Z.ZONE_MGMT_SEND)])
def test_request_to_offline_zone_is_invalid(zd, kind):
    """5.2.6.2: every request to an offline zone gets ZONE_INVALID_CMD."""
    (z,) = zd.pick(zd.fresh(), 1, types=Z.SEQUENTIAL_TYPES, state=Z.VIRTIO_BLK_ZS_OFFLINE, room=0, what="an offline zone")
    if kind == "read":
        status, _ = zd.read(z.z_start, zd.unit)
    elif kind == "write":
        status = zd.write(z.z_start, zd.pattern(zd.unit))
    elif kind == "append":
        _appending(zd)
        status, _ = zd.append(z.z_start, zd.pattern(zd.unit))
    else:
        status = zd.mgmt(kind, z.z_start)
    require(status == B.VIRTIO_BLK_S_ZONE_INVALID_CMD, CLAUSE_OFFLINE, f"{kind} of the offline zone at sector {z.z_start}",
            expected="VIRTIO_BLK_S_ZONE_INVALID_CMD", observed=_name(status), queue=zd.vq.name)


def _exhaust(zd, what: str):
    """RESET_ALL, then explicitly open as many empty SWR zones as the smaller declared limit: no
    implicit close can free an explicitly open zone (5.2.6), so one more zone cannot be opened.
    Returns (a zone still empty, the limit, its field name)."""
    limit, field = zd.limit()
    zones = zd.pick(zd.fresh(), limit + 1, room=2, what=f"{field} + 1 empty SWR zones")
    _open_n(zd, zones[:-1], what)
    return zones[-1], limit, field


@pytest.mark.clause(CLAUSE_OPEN_RESOURCE)
def test_open_short_of_resources(zd):
    """5.2.6.2: a zone open past the zone resources leaves the zone as it was and gets
    ZONE_OPEN_RESOURCE or ZONE_ACTIVE_RESOURCE."""
    z, limit, field = _exhaust(zd, "filling the zone resources")
    status = zd.mgmt("ZONE_OPEN", z.z_start)
    after = zd.zone(z.z_start)
    zd.fresh()
    if status == C.VIRTIO_BLK_S_OK:
        pytest.skip(f"the device opened zone {limit + 1} with {field} {limit}: the declared limit is the config tests' to judge")
    require(status in RESOURCE_STATUSES, CLAUSE_OPEN_RESOURCE, f"explicit open with {limit} zones open ({field} {limit})",
            expected=RESOURCE_NAMES, observed=_name(status), queue=zd.vq.name)
    require(after.z_state == z.z_state and after.z_wp == z.z_wp, CLAUSE_OPEN_RESOURCE, "the zone after an open refused for resources",
            expected=z.describe(), observed=after.describe(), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_IMPLICIT_RESOURCE)
@pytest.mark.parametrize("kind", ["write", "append"])
def test_implicit_open_short_of_resources(zd, kind):
    """5.2.6.2: a write or zone append to an empty SWR zone whose implicit open would exceed the
    zone resources gets ZONE_OPEN_RESOURCE or ZONE_ACTIVE_RESOURCE. With the limit's zones open
    explicitly, none can be closed implicitly to make room (5.2.6), so success exceeds the limit."""
    if kind == "append":
        _appending(zd)
    z, limit, field = _exhaust(zd, "filling the zone resources")
    # The control: an explicit open of the zone is refused too, so the declared limit holds (a
    # device whose limit is larger than declared is the config tests' to judge).
    if zd.mgmt("ZONE_OPEN", z.z_start) == C.VIRTIO_BLK_S_OK:
        zd.fresh()
        pytest.skip(f"the device opened zone {limit + 1} explicitly with {field} {limit}: the declared limit is the config tests' to judge")
    if kind == "append":
        status, _ = zd.append(z.z_start, zd.pattern(zd.unit))
    else:
        status = zd.write(z.z_start, zd.pattern(zd.unit))
    zd.fresh()
    require(status in RESOURCE_STATUSES, CLAUSE_IMPLICIT_RESOURCE,
            f"{kind} to an empty zone with {limit} zones explicitly open ({field} {limit})",
            expected=RESOURCE_NAMES, observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_PAST_CAPACITY)
@pytest.mark.parametrize("kind", ["write", "append"])
def test_write_past_zone_capacity_is_invalid(zd, kind):
    """5.2.6.2: a write or zone append past the zone's remaining writable capacity gets
    ZONE_INVALID_CMD. The write starts at the write pointer of an empty zone whose z_cap is
    less than its size and ends past z_cap, inside the zone; the append goes to a zone made full
    by a write and a finish."""
    zones = zd.fresh()
    if kind == "append":
        _appending(zd)
        (z,) = zd.pick(zones, 1, room=2, what="an empty SWR zone")
        good(zd.write(z.z_start, zd.pattern(zd.unit)), "the write at the start of the zone")
        good(zd.mgmt("ZONE_FINISH", z.z_start), "the zone finish")
        status, _ = zd.append(z.z_start, zd.pattern(zd.unit))
        what = f"zone append to the full zone at sector {z.z_start}"
    else:
        if not zd.unit:
            pytest.skip("no whole-sector write unit")
        fits = [z for z in zones if z.z_type == Z.VIRTIO_BLK_ZT_SWR and z.z_state == Z.VIRTIO_BLK_ZS_EMPTY
                and -(-(z.z_cap + 1) // zd.unit) * zd.unit <= zd.zone_end(zones, z) - z.z_start]
        if not fits:
            pytest.skip("no empty SWR zone has room past its z_cap for a write that stays inside the zone")
        z = fits[0]
        n = -(-(z.z_cap + 1) // zd.unit) * zd.unit
        status = zd.write(z.z_start, zd.pattern(n))
        what = f"write of {n} sectors at the write pointer of the zone at {z.z_start} (z_cap {z.z_cap})"
    zd.fresh()
    require(status == B.VIRTIO_BLK_S_ZONE_INVALID_CMD, CLAUSE_PAST_CAPACITY, what,
            expected="VIRTIO_BLK_S_ZONE_INVALID_CMD", observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_CROSS_ZONE)
def test_read_across_swr_zone_boundary_is_invalid(zd):
    """5.2.6.2: a read starting in an SWR zone and ending in the next zone gets ZONE_INVALID_CMD.
    The range holds unwritten data, which a device may fail a read of (5.2.6.2): another failure
    status skips; success fails."""
    zones = zd.fresh()
    if not zd.unit:
        pytest.skip("no whole-sector write unit")
    bad = (Z.VIRTIO_BLK_ZS_OFFLINE,)
    pairs = [(a, b) for a, b in zip(zones, zones[1:], strict=False)
             if a.z_type == Z.VIRTIO_BLK_ZT_SWR and a.z_state not in bad and b.z_state not in bad
             and b.z_start - a.z_start >= zd.unit]
    if not pairs:
        pytest.skip("the zone report holds no SWR zone followed by another zone, neither offline")
    a, b = pairs[0]
    sector = b.z_start - zd.unit
    status, _ = zd.read(sector, 2 * zd.unit)
    if status not in (C.VIRTIO_BLK_S_OK, B.VIRTIO_BLK_S_ZONE_INVALID_CMD):
        pytest.skip(f"the read failed with {_name(status)}; a read of unwritten data may fail (5.2.6.2)")
    require(status == B.VIRTIO_BLK_S_ZONE_INVALID_CMD, CLAUSE_CROSS_ZONE,
            f"read of sectors {sector}..{sector + 2 * zd.unit - 1}, from the SWR zone at {a.z_start} into the zone at {b.z_start}",
            expected="VIRTIO_BLK_S_ZONE_INVALID_CMD", observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_UNWRITTEN)
@pytest.mark.parametrize("after", ["reset", "finish"])
def test_sectors_past_write_pointer_are_unwritten(zd, after):
    """5.2.6.2: sectors past a zone's write pointer are unwritten data -- after a zone reset the
    data written before it does not read back there, nor after a finish that left them unwritten."""
    (z,) = zd.pick(zd.fresh(), 1, room=2, what="an empty SWR zone with room for two write units")
    u = zd.unit
    old = zd.pattern(2 * u)
    good(zd.write(z.z_start, old), "the first write of two units")
    good(zd.mgmt("ZONE_RESET", z.z_start), "the zone reset")
    good(zd.write(z.z_start, zd.pattern(u)), "the write of one unit after the reset")
    if after == "finish":
        good(zd.mgmt("ZONE_FINISH", z.z_start), "the zone finish")
    status, got = zd.read(z.z_start, 2 * u, fill=bytes(2 * u * C.SECTOR_SIZE))
    zd.fresh()
    if status != C.VIRTIO_BLK_S_OK:
        pytest.skip(f"the read covering unwritten data failed ({_name(status)}), as 5.2.6.2 allows: what it holds cannot be seen")
    tail = got[u * C.SECTOR_SIZE :]
    require(tail != old[u * C.SECTOR_SIZE :], CLAUSE_UNWRITTEN,
            f"sectors {z.z_start + u}..{z.z_start + 2 * u - 1}, past the write pointer after a reset ({after})",
            expected="unwritten data (a device pattern), not what was written before the reset",
            observed="the data written before the reset", queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_UNWRITTEN_READ)
def test_read_of_unwritten_data_is_filled_or_fails(zd):
    """5.2.6.2: a read of unwritten data either fills it with a device pattern or fails; a read
    that succeeds writes those bytes (the driver's own bytes must not come back as the data)."""
    (z,) = zd.pick(zd.fresh(), 1, room=1, what="an empty SWR zone")
    n = zd.unit * C.SECTOR_SIZE
    mine = os.urandom(n)
    status, got = zd.read(z.z_start, zd.unit, fill=mine)
    if status != C.VIRTIO_BLK_S_OK:
        return  # failing the request is one of the two ways 5.2.6.2 allows
    require(got != mine, CLAUSE_UNWRITTEN_READ, f"read of the empty zone at sector {z.z_start} completed OK",
            expected="the unwritten data filled with a device pattern", observed="the driver's buffer left as it was",
            queue=zd.vq.name)


def _full_zone(zd) -> Z.ZoneDescriptor:
    """An SWR zone made full: one write unit at its write pointer (IOPEN), then a finish."""
    (z,) = zd.pick(zd.fresh(), 1, room=2, what="an empty SWR zone")
    good(zd.write(z.z_start, zd.pattern(zd.unit)), "the write at the start of the zone")
    good(zd.mgmt("ZONE_FINISH", z.z_start), "the finish of the implicitly open zone")
    after = zd.zone(z.z_start)
    if after.z_state != Z.VIRTIO_BLK_ZS_FULL:
        pytest.skip(f"after a finish the report says {after.describe()}, not full")
    return after


@pytest.mark.clause(CLAUSE_OPEN_IMPOSSIBLE)
def test_open_of_full_zone_is_invalid(zd):
    """5.2.6.2: a zone open whose transition cannot be made -- a full zone leaves FULL only by a
    reset (5.2.6) -- gets ZONE_INVALID_CMD."""
    z = _full_zone(zd)
    status = zd.mgmt("ZONE_OPEN", z.z_start)
    zd.fresh()
    require(status == B.VIRTIO_BLK_S_ZONE_INVALID_CMD, CLAUSE_OPEN_IMPOSSIBLE, f"explicit open of the full zone at sector {z.z_start}",
            expected="VIRTIO_BLK_S_ZONE_INVALID_CMD", observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_CLOSE_IMPOSSIBLE)
def test_close_of_full_zone_is_invalid(zd):
    """5.2.6.2: a zone close whose transition cannot be made -- a full zone -- gets ZONE_INVALID_CMD."""
    z = _full_zone(zd)
    status = zd.mgmt("ZONE_CLOSE", z.z_start)
    zd.fresh()
    require(status == B.VIRTIO_BLK_S_ZONE_INVALID_CMD, CLAUSE_CLOSE_IMPOSSIBLE, f"close of the full zone at sector {z.z_start}",
            expected="VIRTIO_BLK_S_ZONE_INVALID_CMD", observed=_name(status), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_FINISH_IMPOSSIBLE)
def test_finish_of_read_only_zone_is_invalid(zd):
    """5.2.6.2: a zone finish whose transition cannot be made -- a read-only zone goes to no state
    but offline (5.2.6) -- leaves the zone's state and gets ZONE_INVALID_CMD."""
    (z,) = zd.pick(zd.fresh(), 1, types=Z.SEQUENTIAL_TYPES, state=Z.VIRTIO_BLK_ZS_RDONLY, room=0, what="a read-only zone")
    status = zd.mgmt("ZONE_FINISH", z.z_start)
    after = zd.zone(z.z_start)
    require(status == B.VIRTIO_BLK_S_ZONE_INVALID_CMD, CLAUSE_FINISH_IMPOSSIBLE, f"finish of the read-only zone at sector {z.z_start}",
            expected="VIRTIO_BLK_S_ZONE_INVALID_CMD", observed=_name(status), queue=zd.vq.name)
    require(after.z_state == z.z_state, CLAUSE_FINISH_IMPOSSIBLE, "the read-only zone after a refused finish",
            expected=z.describe(), observed=after.describe(), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_RESET_IMPOSSIBLE)
def test_reset_of_read_only_zone_is_invalid(zd):
    """5.2.6.2: a zone reset whose transition cannot be made -- a read-only zone -- leaves the
    zone's state and gets ZONE_INVALID_CMD."""
    (z,) = zd.pick(zd.fresh(), 1, types=Z.SEQUENTIAL_TYPES, state=Z.VIRTIO_BLK_ZS_RDONLY, room=0, what="a read-only zone")
    status = zd.mgmt("ZONE_RESET", z.z_start)
    after = zd.zone(z.z_start)
    require(status == B.VIRTIO_BLK_S_ZONE_INVALID_CMD, CLAUSE_RESET_IMPOSSIBLE, f"reset of the read-only zone at sector {z.z_start}",
            expected="VIRTIO_BLK_S_ZONE_INVALID_CMD", observed=_name(status), queue=zd.vq.name)
    require(after.z_state == z.z_state, CLAUSE_RESET_IMPOSSIBLE, "the read-only zone after a refused reset",
            expected=z.describe(), observed=after.describe(), queue=zd.vq.name)


@pytest.mark.clause(CLAUSE_APPEND_TOO_LARGE)
def test_append_larger_than_max_append_sectors(zd):
    """5.2.6.2: a zone append larger than max_append_sectors gets VIRTIO_BLK_S_UNSUPP where that
    is 0, else ZONE_INVALID_CMD. The append goes to an empty SWR zone with room for it."""
    if not zd.unit:
        pytest.skip("no whole-sector write unit")
    n = (zd.max_append // zd.unit + 1) * zd.unit  # the smallest whole-unit size past the limit
    (z,) = zd.pick(zd.fresh(), 1, room=n // zd.unit, what=f"an empty SWR zone with room for {n} sectors")
    status, _ = zd.append(z.z_start, zd.pattern(n))
    zd.fresh()
    expected = C.VIRTIO_BLK_S_UNSUPP if zd.max_append == 0 else B.VIRTIO_BLK_S_ZONE_INVALID_CMD
    require(status == expected, CLAUSE_APPEND_TOO_LARGE, f"zone append of {n} sectors with max_append_sectors {zd.max_append}",
            expected=_name(expected), observed=_name(status), queue=zd.vq.name)
