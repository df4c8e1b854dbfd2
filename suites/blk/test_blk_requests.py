"""virtio-blk device duties of 5.2.5.2 (initialization) and 5.2.6.2 (operation), VIRTIO 1.4.

Every request honours what the device declares: whole logical blocks (blk_size), sectors inside
capacity, at most max_write_zeroes_seg / max_discard_seg segments of at most
max_write_zeroes_sectors / max_discard_sectors each. Requests go out one at a time and each is
waited for (bounded) before the next, so completion order never matters.
"""

from __future__ import annotations

import pytest

from fixtures.devices import need
from virtio import blk as B
from virtio import constants as C
from virtio.checks import require
from virtio.messages import blk_discard_segment, blk_outhdr

pytestmark = pytest.mark.device_types("blk")

CLAUSE_FLUSH_WITH_WCE = "dev.blk.device-initialization.1"
CLAUSE_WRITEBACK_ZERO = "dev.blk.device-initialization.2"
CLAUSE_RO_WRITE = "dev.blk.device-operation.2"
CLAUSE_UNKNOWN_FLAG = "dev.blk.device-operation.3"
CLAUSE_DISCARD_UNMAP = "dev.blk.device-operation.4"
CLAUSE_WZ_READS_ZERO = "dev.blk.device-operation.7"
CLAUSE_ZONED_UNSUPP = "dev.blk.device-operation.15"


def _request(session, vq, out: list[bytes], in_lens: list[int], what: str) -> tuple[int, bytes]:
    """One request, waited for: (status byte, device-written bytes before it)."""
    c = vq.add(out, in_lens, what)
    vq.kick()
    vq.wait_used(1, session.timeout, awaited=what)
    got = vq.read_in(c, c.writable)
    return got[-1], got[:-1]


def _read(session, work, sector: int, nsectors: int) -> tuple[int, bytes]:
    return _request(session, work.vq, [blk_outhdr(C.VIRTIO_BLK_T_IN, sector)], [nsectors * C.SECTOR_SIZE, 1],
                    f"read of sectors {sector}..{sector + nsectors - 1}")


def _write(session, work, sector: int, data: bytes) -> int:
    n = len(data) // C.SECTOR_SIZE
    return _request(session, work.vq, [blk_outhdr(C.VIRTIO_BLK_T_OUT, sector), data], [1],
                    f"write of sectors {sector}..{sector + n - 1}")[0]


def _pattern(sector: int, nsectors: int, salt: int) -> bytes:
    """Bytes that differ per sector and per test, and are never all zero."""
    return b"".join(bytes([(sector + i + salt) & 0xFF | 1]) * C.SECTOR_SIZE for i in range(nsectors))


def _good(session, status: int, what: str) -> None:
    """A request the device declared it accepts came back failed: not this test's duty to judge."""
    if status != C.VIRTIO_BLK_S_OK:
        pytest.skip(f"{what} completed with {B.status_name(status)}; the check needs it to succeed")


@pytest.mark.clause(CLAUSE_FLUSH_WITH_WCE)
def test_config_wce_comes_with_flush(session):
    """5.2.5.2: a device offering VIRTIO_BLK_F_CONFIG_WCE offers VIRTIO_BLK_F_FLUSH too."""
    need(session.driver, C.VIRTIO_BLK_F_CONFIG_WCE)
    offered = session.driver.device_features()
    require(offered >> C.VIRTIO_BLK_F_FLUSH & 1, CLAUSE_FLUSH_WITH_WCE, "VIRTIO_BLK_F_CONFIG_WCE offered without VIRTIO_BLK_F_FLUSH",
            expected="VIRTIO_BLK_F_FLUSH offered", observed=f"device features {offered:#x}")


@pytest.mark.clause(CLAUSE_WRITEBACK_ZERO)
def test_writeback_zero_without_flush(session):
    """5.2.5.2: CONFIG_WCE negotiated and FLUSH not -> writeback reads 0 once negotiated."""
    need(session.driver, C.VIRTIO_BLK_F_CONFIG_WCE)
    session.start(want=(C.VIRTIO_BLK_F_CONFIG_WCE,), refuse=(C.VIRTIO_BLK_F_FLUSH,))
    wb = session.driver.config_field("writeback")
    require(wb == 0, CLAUSE_WRITEBACK_ZERO, "writeback after negotiating CONFIG_WCE without FLUSH",
            expected=0, observed=wb)


@pytest.mark.clause(CLAUSE_RO_WRITE)
def test_read_only_write_fails_and_changes_nothing(session):
    """5.2.6.2: with VIRTIO_BLK_F_RO offered a write gets IOERR and the sectors keep their data."""
    need(session.driver, C.VIRTIO_BLK_F_RO)
    work = session.start()
    n, at = work.block, work.sector_base  # the workload's region: a zoned device's conventional zones
    status, before = _read(session, work, at, n)
    _good(session, status, "the read before the write")
    data = bytes(b ^ 0xFF for b in before)  # differs from what is there in every byte
    status = _write(session, work, at, data)
    require(status == C.VIRTIO_BLK_S_IOERR, CLAUSE_RO_WRITE, "write to a device that offers VIRTIO_BLK_F_RO",
            expected="VIRTIO_BLK_S_IOERR", observed=B.status_name(status), queue=work.vq.name)
    status, after = _read(session, work, at, n)
    _good(session, status, "the read after the write")
    require(after == before, CLAUSE_RO_WRITE, "a failed write to a read-only device changed the medium",
            expected="sectors unchanged", observed="sectors differ", queue=work.vq.name)


def _writable_device(session, feature: int):
    need(session.driver, feature)
    if session.driver.device_features() >> C.VIRTIO_BLK_F_RO & 1:
        pytest.skip("device offers VIRTIO_BLK_F_RO: writes are refused")
    return session.start(want=(feature,))


def _wz_plan(session, work, limit_field: str, seg_field: str, want_segments: int = 2) -> list[tuple[int, int]]:
    """Segments (sector, nsectors) of one block each, spaced a block apart, within the declared limits."""
    d = session.driver
    blk = work.block
    max_sectors, max_seg = d.config_field(limit_field), d.config_field(seg_field)
    if max_sectors < blk or max_seg < 1:
        pytest.skip(f"{limit_field}={max_sectors} / {seg_field}={max_seg} allow no whole-block segment")
    region = work.region_end - work.sector_base  # a zoned device's conventional zones, else the disk
    nseg = min(want_segments, max_seg, max(1, region // (2 * blk)))
    return [(work.sector_base + i * 2 * blk, blk) for i in range(nseg)]


@pytest.mark.clause(CLAUSE_WZ_READS_ZERO)
@pytest.mark.parametrize("unmap", [False, True], ids=["keep", "unmap"])
def test_write_zeroes_reads_back_zeroes(session, unmap):
    """5.2.6.2: after WRITE_ZEROES (unmap set or clear) its ranges read as zeroes."""
    work = _writable_device(session, C.VIRTIO_BLK_F_WRITE_ZEROES)
    segs = _wz_plan(session, work, "max_write_zeroes_sectors", "max_write_zeroes_seg")
    for sector, n in segs:
        _good(session, _write(session, work, sector, _pattern(sector, n, 7)), f"the write of sector {sector}")
    flags = B.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP if unmap else 0
    body = b"".join(blk_discard_segment(s, n, flags) for s, n in segs)
    status, _ = _request(session, work.vq, [blk_outhdr(C.VIRTIO_BLK_T_WRITE_ZEROES, 0), body], [1],
                         f"write zeroes over {len(segs)} segment(s)")
    _good(session, status, "the write zeroes request")
    for sector, n in segs:
        status, got = _read(session, work, sector, n)
        _good(session, status, f"the read back of sector {sector}")
        require(got == bytes(len(got)), CLAUSE_WZ_READS_ZERO, f"sectors {sector}..{sector + n - 1} after write zeroes",
                expected="all zero bytes", observed=f"{sum(1 for b in got if b)} non-zero bytes", queue=work.vq.name)


@pytest.mark.clause(CLAUSE_UNKNOWN_FLAG)
@pytest.mark.parametrize("kind", ["discard", "write_zeroes"])
def test_unknown_segment_flag_is_unsupp(session, kind):
    """5.2.6.2: a discard or write-zeroes segment with an undefined flag bit gets UNSUPP."""
    feature, req, limit, segs = {
        "discard": (C.VIRTIO_BLK_F_DISCARD, C.VIRTIO_BLK_T_DISCARD, "max_discard_sectors", "max_discard_seg"),
        "write_zeroes": (C.VIRTIO_BLK_F_WRITE_ZEROES, C.VIRTIO_BLK_T_WRITE_ZEROES, "max_write_zeroes_sectors", "max_write_zeroes_seg"),
    }[kind]
    work = _writable_device(session, feature)
    (sector, n), = _wz_plan(session, work, limit, segs, want_segments=1)
    status, _ = _request(session, work.vq, [blk_outhdr(req, 0), blk_discard_segment(sector, n, B.UNKNOWN_SEGMENT_FLAG)], [1],
                         f"{kind} with flag bit 1 set")
    require(status == C.VIRTIO_BLK_S_UNSUPP, CLAUSE_UNKNOWN_FLAG, f"{kind} segment carrying an undefined flag bit",
            expected="VIRTIO_BLK_S_UNSUPP", observed=B.status_name(status), queue=work.vq.name)


@pytest.mark.clause(CLAUSE_DISCARD_UNMAP)
def test_discard_with_unmap_is_unsupp(session):
    """5.2.6.2: a discard segment with the unmap flag gets UNSUPP (unmap belongs to write zeroes)."""
    work = _writable_device(session, C.VIRTIO_BLK_F_DISCARD)
    (sector, n), = _wz_plan(session, work, "max_discard_sectors", "max_discard_seg", want_segments=1)
    seg = blk_discard_segment(sector, n, B.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)
    status, _ = _request(session, work.vq, [blk_outhdr(C.VIRTIO_BLK_T_DISCARD, 0), seg], [1], "discard with unmap set")
    require(status == C.VIRTIO_BLK_S_UNSUPP, CLAUSE_DISCARD_UNMAP, "discard segment with the unmap flag",
            expected="VIRTIO_BLK_S_UNSUPP", observed=B.status_name(status), queue=work.vq.name)


@pytest.mark.clause(CLAUSE_ZONED_UNSUPP)
@pytest.mark.parametrize("name", sorted(B.ZONE_REQUEST_TYPES))
def test_zone_request_without_zoned_is_unsupp(session, name):
    """5.2.6.2: without VIRTIO_BLK_F_ZONED negotiated every zoned request type gets UNSUPP."""
    work = session.start(refuse=(C.VIRTIO_BLK_F_ZONED,))
    req = B.ZONE_REQUEST_TYPES[name]
    out = [blk_outhdr(req, 0)]
    if req == B.VIRTIO_BLK_T_ZONE_APPEND:
        out.append(bytes(work.block * C.SECTOR_SIZE))
        in_lens = [8, 1]  # append_sector, status (struct virtio_blk_req_za)
    elif req == B.VIRTIO_BLK_T_ZONE_REPORT:
        in_lens = [C.SECTOR_SIZE * work.block, 1]
    else:
        in_lens = [1]
    status, _ = _request(session, work.vq, out, in_lens, f"VIRTIO_BLK_T_{name} without VIRTIO_BLK_F_ZONED")
    require(status == C.VIRTIO_BLK_S_UNSUPP, CLAUSE_ZONED_UNSUPP, f"VIRTIO_BLK_T_{name} with VIRTIO_BLK_F_ZONED not negotiated",
            expected="VIRTIO_BLK_S_UNSUPP", observed=B.status_name(status), queue=work.vq.name)
