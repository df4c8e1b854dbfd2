"""What a device must not write, seen by the driver side when buffers come back: the canaries
GuestMemory puts around every allocation (def.split/packed.writable-bounds) and the copies or
digests of device-readable elements and indirect tables (2.7.5.1 / 2.8.15), on both layouts and
both APIs (add / get_buf, add_batch / get_used_batch, recycled buffers).

The device is the rng model in notify mode: it answers inside the kick, so the test can play a
misbehaving device by writing guest memory before the driver takes the used buffers back."""

from __future__ import annotations

import numpy as np
import pytest

from targets.registry import open_target, parse_target
from virtio import constants as C
from virtio.buffers import Sg, SgArray
from virtio.driver import VirtioDriver, VqInfo
from virtio.errors import WroteOutsideBuffer, WroteReadableBuffer
from virtio.memory import CANARY, GUARD, GuestMemory
from virtio.virtqueue import CLAUSE_READONLY, CLAUSE_TABLE, CLAUSE_WRITABLE_BOUNDS

TIMEOUT = 5.0


def _open(layout: str):
    ops = open_target(parse_target("model:rng"))
    d = VirtioDriver(ops)
    f = d.wanted_features() | 1 << C.VIRTIO_F_INDIRECT_DESC
    f = f | 1 << C.VIRTIO_F_RING_PACKED if layout == "packed" else f & ~(1 << C.VIRTIO_F_RING_PACKED)
    assert d.negotiate(f)
    vq = d.find_vqs([VqInfo(n) for n in d.default_vq_names()])[0]
    d.driver_ok()
    assert vq.layout == layout
    return ops, vq


@pytest.fixture(params=["split", "packed"])
def rng(request):
    ops, vq = _open(request.param)
    yield vq
    ops.close()


@pytest.fixture
def split_rng():
    ops, vq = _open("split")
    yield vq
    ops.close()


def test_allocations_carry_canaries():
    mem = GuestMemory(1 << 20)
    a = mem.alloc(10, 8)
    b = mem.alloc(10, 8)
    assert mem.read(a - GUARD, GUARD) == CANARY and mem.read(a + 10, GUARD) == CANARY
    assert b >= a + 10 + 2 * GUARD and mem.allocated == 20
    mem.free(a)
    mem.free(b)
    assert mem.allocated == 0
    big = mem.alloc(mem.size - 4096 - 2 * GUARD, 16)  # everything comes back on free
    assert big == mem.base + 4096 + GUARD


def test_correct_device_passes_every_check(rng):
    vq = rng
    for _ in range(3):
        c = vq.add([b"readable"], [64])
        t = vq.add([b"hdr"], [32], indirect=True)
        vq.kick()
        got = vq.wait_used(2, TIMEOUT)
        assert {x.head for x in got} == {c.head, t.head}
        for x in got:
            vq.release(x)
    pool = vq.mem.alloc(8 * 16, 8)
    sga = SgArray(pool + 8 * np.arange(16, dtype=np.uint64), 8)
    for _ in range(3):
        vq.add_batch((), (sga,), 16)
        vq.kick()
        vq.wait_used_batch(16, TIMEOUT)


@pytest.mark.parametrize("where", ["after", "before"])
def test_write_outside_a_buffer(rng, where):
    vq = rng
    c = vq.add([], [64])
    s = c.in_sgs[0]
    vq.kick()  # the model fills the buffer; now "the device" writes one byte next to it
    vq.mem.write(s.addr + s.len if where == "after" else s.addr - 1, b"\x00")
    with pytest.raises(WroteOutsideBuffer) as e:
        vq.wait_used(1, TIMEOUT)
    assert e.value.clause == CLAUSE_WRITABLE_BOUNDS[vq.layout]
    assert f"{s.addr:#x}" in str(e.value) and f"buffer {c.head}" in str(e.value) and "1 byte(s) changed" in str(e.value)
    assert vq.broken is e.value


def test_write_into_readable_element(rng):
    vq = rng
    c = vq.add([b"do not touch"], [16])
    vq.kick()
    vq.mem.write(c.out_sgs[0].addr + 3, b"X")
    with pytest.raises(WroteReadableBuffer) as e:
        vq.wait_used(1, TIMEOUT)
    assert e.value.clause == CLAUSE_READONLY[vq.layout]
    assert "offsets 3..3" in str(e.value) and "6e -> 58" in str(e.value)


def test_write_into_indirect_table(rng):
    vq = rng
    c = vq.add([b"hdr"], [16], indirect=True)
    vq.kick()
    vq.mem.write(c.indirect + 8, b"\xff")  # the first entry's len
    with pytest.raises(WroteReadableBuffer) as e:
        vq.wait_used(1, TIMEOUT)
    assert "indirect table" in str(e.value)
    assert e.value.clause == CLAUSE_TABLE[vq.layout]


def test_batch_write_past_a_pool(rng):
    """add_batch buffers cut from one allocation: a write past the last is seen (one inside the
    pool lands in the next buffer, which no canary can tell from a legal write)."""
    vq = rng
    pool = vq.mem.alloc(8 * 16, 8)
    sga = SgArray(pool + 8 * np.arange(16, dtype=np.uint64), 8)
    vq.add_batch((), (sga,), 16)
    vq.kick()
    vq.wait_used_batch(16, TIMEOUT)
    vq.add_batch((), (sga,), 16)
    vq.kick()
    vq.mem.write(pool + 8 * 16 + 5, b"\x00")
    with pytest.raises(WroteOutsideBuffer) as e:
        vq.wait_used_batch(16, TIMEOUT)
    assert f"{pool + 8 * 15:#x}" in str(e.value)  # names the last buffer's element


def test_batch_readable_digest(rng):
    vq = rng
    hdrs = vq.mem.alloc(16 * 8, 8)
    vq.mem.write(hdrs, bytes(range(128)))
    bufs = vq.mem.alloc(16 * 8, 8)
    out = (SgArray(hdrs + 16 * np.arange(8, dtype=np.uint64), 16),)
    in_ = (SgArray(bufs + 16 * np.arange(8, dtype=np.uint64), 16),)
    vq.add_batch(out, in_, 8)
    vq.kick()
    vq.wait_used_batch(8, TIMEOUT)  # a correct device: no violation
    heads = vq.add_batch(out, in_, 8)
    vq.kick()
    vq.mem.write(hdrs + 16 * 5 + 2, b"\xee")
    with pytest.raises(WroteReadableBuffer) as e:
        vq.wait_used_batch(8, TIMEOUT)
    assert e.value.clause == CLAUSE_READONLY[vq.layout]
    assert f"{hdrs + 16 * 5:#x}" in str(e.value) and str(int(heads[5])) in str(e.value)


def test_recycled_readable_rewritten_by_driver(split_rng):
    """Recycled buffers (a split-queue API): the driver may rewrite a readable element before
    readd_batch; the device may not while they are available."""
    vq = split_rng
    hdr = vq.mem.alloc(16, 8)
    buf = vq.mem.alloc(8 * 4, 8)
    out = (SgArray(np.full(4, hdr, dtype=np.uint64), 16),)
    in_ = (SgArray(buf + 8 * np.arange(4, dtype=np.uint64), 8),)
    vq.add_batch(out, in_, 4)
    vq.kick()
    ids, _ = vq.get_used_batch(recycle=True)
    assert len(ids) == 4
    vq.mem.write(hdr, b"new request hdr!")
    vq.readd_batch(ids)
    vq.kick()
    ids, _ = vq.get_used_batch(recycle=True)
    assert len(ids) == 4
    vq.readd_batch(ids)
    vq.kick()
    vq.mem.write(hdr, b"device scribbled")
    with pytest.raises(WroteReadableBuffer):
        vq.get_used_batch(recycle=True)


def test_freed_memory_is_no_canary(rng):
    """A canary of freed memory stops being one: reused for data, it is written freely."""
    vq = rng
    pool = vq.mem.alloc(8 * 4, 8)
    sga = SgArray(pool + 8 * np.arange(4, dtype=np.uint64), 8)
    vq.add_batch((), (sga,), 4)
    vq.kick()
    vq.wait_used_batch(4, TIMEOUT)
    vq.mem.free(pool)
    big = vq.mem.alloc(8 * 64, 8)  # first fit: covers the old pool and its canaries
    assert big <= pool + 8 * 4 < big + 8 * 64  # the old pool's canary after it is data now
    vq.mem.fill(big, 8 * 64, 0x11)
    sga = SgArray(big + 8 * np.arange(64, dtype=np.uint64), 8)
    vq.add_batch((), (sga,), 64)
    vq.kick()
    vq.wait_used_batch(64, TIMEOUT)
    c = vq.add([], [Sg(big, 8)])
    vq.kick()
    assert vq.wait_used(1, TIMEOUT) == [c]
