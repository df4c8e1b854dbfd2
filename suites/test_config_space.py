"""VIRTIO 1.4, 2.5: device configuration space (and the generation counter each transport gives it)."""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio.checks import poll, require
from virtio.messages import blk_outhdr
from virtio.workloads import zoned_blk

pytestmark = pytest.mark.usefixtures("target_spec")


def _fields(driver):
    if driver.layout is None or not driver.layout.fields:
        pytest.skip(f"{C.DEVICE_TYPES.get(driver.device_id, driver.device_id)} devices have no configuration fields")
    present = driver.layout.present(driver.device_features())
    if not present:
        pytest.skip("the device offers none of the features that make configuration fields exist")
    return present


@pytest.mark.clause("dev.basic.device-configuration-space.1")
def test_fields_readable_before_features_ok(session):
    """Every field that exists for the offered features reads the same before FEATURES_OK and after DRIVER_OK."""
    d = session.driver
    fields = _fields(d)
    d.add_status(C.ACKNOWLEDGE)
    d.add_status(C.DRIVER)
    gen0 = d.ops.generation()
    early = d.config_snapshot()
    session.driver.reset()
    session.start()
    gen1 = d.ops.generation()
    late = d.config_snapshot()
    changed = [f.name for f in fields if early.get(f.name) != late.get(f.name)]
    # Fields may legitimately change (a link coming up); the generation then says so.
    require(
        not changed or gen0 != gen1,
        "dev.basic.device-configuration-space.1",
        "configuration read before FEATURES_OK differs from the device's real configuration",
        expected={n: late[n] for n in changed},
        observed={n: early[n] for n in changed},
    )


@pytest.mark.device_duty("generation")
@pytest.mark.clause("def.config.generation")
def test_generation_moves_when_config_changes(session):
    """A config change between two reads shows up as a changed generation (2.5; 4.1.4.3.1)."""
    d = session.driver
    fields = _fields(d)
    session.start()
    gen0 = d.ops.generation()
    before = {f.name: d.ops.get(f.offset, f.size) for f in fields}
    d.ops.trigger_config_change()
    after = {f.name: d.ops.get(f.offset, f.size) for f in fields}
    gen1 = d.ops.generation()
    changed = [n for n in before if before[n] != after[n]]
    if not changed:
        pytest.skip("the triggered configuration change left every field as it was")
    require(
        gen1 != gen0,
        "def.config.generation",
        f"configuration changed ({', '.join(changed)}) but the generation did not",
        expected=f"generation other than {gen0}",
        observed=gen1,
    )


@pytest.mark.device_duty("generation")
@pytest.mark.clause("def.config.generation")
def test_generation_loop_sees_a_change_mid_read(session):
    """The driver's read loop (2.5.1) retries when the device changes config halfway through a read."""
    d = session.driver
    fields = _fields(d)
    session.start()
    before = d.ops.generation()
    first = {f.name: d.ops.get(f.offset, f.size) for f in fields}
    d.ops.trigger_config_change()
    second = {f.name: d.ops.get(f.offset, f.size) for f in fields}
    after = d.ops.generation()
    if first == second:
        pytest.skip("the triggered configuration change left every field as it was")
    require(after != before, "def.config.generation", "a read loop spanning a config change saw the same generation at both ends", expected=f"not {before}", observed=after)
    settled = d.config_snapshot()
    require(
        all(settled[f.name] == f.decode(second[f.name]) for f in fields),
        "def.config.generation",
        "after the generation settled, fields differ from the changed configuration",
        expected={f.name: f.decode(second[f.name]) for f in fields},
        observed=settled,
    )


@pytest.mark.clause("def.config.change-notification")
def test_config_change_notifies_driver(session):
    d = session.driver
    _fields(d)
    session.start()
    before = d.config_notifications
    d.ops.trigger_config_change()
    poll(lambda: d.config_notifications != before, session.timeout)
    require(d.config_notifications > before, "def.config.change-notification", "no configuration change notification after a configuration change", observed=f"{d.config_notifications - before} notifications in {session.timeout}s")


@pytest.mark.clause("def.config.little-endian")
def test_multibyte_fields_read_consistently_by_byte(driver):
    """A multi-byte field read whole equals its bytes read one by one, assembled little-endian."""
    fields = [f for f in _fields(driver) if f.size > 1 and not f.array]
    if not fields:
        pytest.skip("no multi-byte integer fields")
    for f in fields:
        # Inside the generation loop of 2.5.1: a device may change its config between the reads.
        for _ in range(64):
            before = driver.ops.generation()
            whole = driver.ops.get(f.offset, f.size)
            parts = b"".join(driver.ops.get(f.offset + i, 1) for i in range(f.size))
            if driver.ops.generation() == before:
                break
        require(whole == parts, "def.config.little-endian", f"{f.name} read whole differs from its bytes read singly", expected=parts.hex(), observed=whole.hex())


@pytest.mark.clause("def.config.little-endian")
@pytest.mark.device_types("blk")
def test_blk_capacity_is_little_endian(session):
    """capacity decoded little-endian must describe the disk: its last sector is readable (5.2.4)."""
    work = session.start()
    capacity = session.driver.config_field("capacity")
    require(0 < capacity < 1 << 48, "def.config.little-endian", "capacity is implausible when decoded little-endian", expected="0 < capacity < 2^48 sectors", observed=capacity)
    vq = work.vq
    block = work.block  # the last whole logical block (blk_size), as a driver would read it
    last = max(0, capacity // block - 1) * block
    c = vq.add([blk_outhdr(C.VIRTIO_BLK_T_IN, last)], [block * C.SECTOR_SIZE, 1], "last block")
    vq.kick()
    vq.wait_used(1, session.timeout, awaited=f"read of the last block (sectors {last}..{last + block - 1})")
    status = vq.read_in(c, c.writable)[-1]
    if status != C.VIRTIO_BLK_S_OK and zoned_blk(session.driver, session.driver.negotiated or 0):
        # 5.2.6.2: a zoned device may fail a read of unwritten data, and an offline zone cannot be read.
        pytest.skip(f"reading the last block of a zoned device completed with status {status}, which its zone may explain")
    require(status == C.VIRTIO_BLK_S_OK, "def.config.little-endian", f"reading the last block (sectors {last}..{last + block - 1}) named by capacity failed", expected="VIRTIO_BLK_S_OK", observed=f"status {status}")
