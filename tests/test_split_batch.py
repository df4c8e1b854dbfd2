"""The split queue's batch API (add_batch / get_used_batch / wait_used_batch) against the models:
round trips in both modes, interleaving with the per-buffer API on one queue, multi-descriptor
shapes, IN_ORDER (one used elem for many buffers), 16-bit index wrap, and the model's batch path
staying out of the way of devices that override ``handle``."""

from __future__ import annotations

import numpy as np
import pytest

from targets.registry import open_target, parse_target
from virtio import constants as C
from virtio.buffers import Sg, SgArray
from virtio.driver import VirtioDriver, VqInfo
from virtio.errors import HarnessError
from virtio.messages import NetHdr
from virtio.workloads import POISON

TIMEOUT = 5.0


@pytest.fixture(params=["notify", "threaded"])
def mode(request):
    return request.param


def bring_up(spec, want=(), drop=(), size=None):
    ops = open_target(parse_target(spec))
    d = VirtioDriver(ops)
    f = d.wanted_features()
    for b in want:
        f |= 1 << b
    for b in (*drop, C.VIRTIO_F_RING_PACKED):  # these tests are about the split layout
        f &= ~(1 << b)
    d.negotiate(f)
    vqs = d.find_vqs([VqInfo(n, size=size) for n in d.default_vq_names()])
    d.driver_ok()
    return ops, d, vqs


def buffers(vq, count, size=8, poison=True):
    """``count`` separate writable buffers of ``size`` bytes, as an SgArray."""
    base = vq.mem.alloc(size * count, 8)
    if poison:
        vq.mem.fill(base, size * count, POISON)
    return SgArray(base + size * np.arange(count, dtype=np.uint64), size)


def test_batch_round_trip(mode):
    ops, d, vqs = bring_up(f"model:rng,mode={mode}")
    try:
        vq = vqs[0]
        sga = buffers(vq, 64)
        heads = vq.add_batch((), (sga,), 64)
        assert len(set(heads.tolist())) == 64 and vq.num_free == vq.num - 64
        vq.kick()
        ids, lens = vq.wait_used_batch(64, TIMEOUT)
        assert sorted(ids.tolist()) == sorted(heads.tolist())
        assert lens.tolist() == [8] * 64
        data = vq.mem.read(int(sga.addr[0]), 8 * 64)
        words = [data[i : i + 8] for i in range(0, len(data), 8)]
        assert bytes([POISON]) * 8 not in words  # the device wrote every byte it reported
        assert vq.num_free == vq.num and vq.num_in_flight == 0 and not vq.in_flight
        assert ops.device.bytes_supplied == 8 * 64
    finally:
        ops.close()


def test_batch_and_per_buffer_interleave(mode):
    """Buffers from add() and add_batch() on one queue; each completed through the other API."""
    ops, d, vqs = bring_up(f"model:rng,mode={mode}")
    try:
        vq = vqs[0]
        chains = [vq.add([], [16], token=i) for i in range(5)]
        heads = vq.add_batch((), (buffers(vq, 10),), 10)
        more = [vq.add([], [Sg(vq.mem.alloc(4, 8), 4)], token="sg")]
        vq.kick()
        got: list = []
        ids, lens = vq.wait_used_batch(16, TIMEOUT, chains=got)
        assert len(ids) == 16 and vq.num_in_flight == 0
        assert {c.token for c in got} == {0, 1, 2, 3, 4, "sg"}
        assert all(c.used_len == c.writable for c in got)
        by_id = dict(zip(ids.tolist(), lens.tolist()))
        assert all(by_id[h] == 8 for h in heads.tolist())
        assert all(by_id[c.head] == c.used_len for c in chains + more)
        # The other way round: batch-added buffers come back through get_buf / wait_used.
        heads = vq.add_batch((), (buffers(vq, 7, 32),), 7)
        c = vq.add([], [24], token="mixed")
        vq.kick()
        back = vq.wait_used(8, TIMEOUT)
        assert {b.head for b in back} == set(heads.tolist()) | {c.head}
        for b in back:
            assert b.used_len == (24 if b is c else 32)
            if b is not c:
                assert b.batch and b.token is None and [s.len for s in b.in_sgs] == [32]
                assert b.writable == 32 and vq.read_in(b) != bytes([POISON]) * 32
        assert vq.num_free == vq.num
    finally:
        ops.close()


def test_multi_descriptor_batch(mode):
    """Three descriptors per buffer: the model walks them per chain; the driver frees all of them."""
    ops, d, vqs = bring_up(f"model:rng,mode={mode}")
    try:
        vq = vqs[0]
        for _rounds in range(40):  # enough to reuse every descriptor id several times
            n = 21
            a, b = buffers(vq, n, 8), buffers(vq, n, 24)
            heads = vq.add_batch((), (a, b, Sg(vq.mem.alloc(4, 8), 4)), n)
            assert vq.num_free == vq.num - 3 * n
            vq.kick()
            ids, lens = vq.wait_used_batch(n, TIMEOUT)
            assert sorted(ids.tolist()) == sorted(heads.tolist()) and set(lens.tolist()) == {36}
            assert vq.num_free == vq.num
        assert sorted(vq._free[: vq.num].tolist()) == list(range(vq.num))
    finally:
        ops.close()


def test_blk_batch_with_readable_and_writable_parts():
    """Header (readable) + status (writable): the per-chain model path, batch driver API."""
    from virtio.messages import blk_outhdr

    ops, d, vqs = bring_up("model:blk")
    try:
        vq = vqs[0]
        hdr = blk_outhdr(C.VIRTIO_BLK_T_FLUSH, 0)
        h = vq.mem.alloc(len(hdr), 8)
        vq.mem.write(h, hdr)
        status = buffers(vq, 50, 1)
        vq.add_batch((Sg(h, len(hdr)),), (status,), 50)
        vq.kick()
        ids, lens = vq.wait_used_batch(50, TIMEOUT)
        assert set(lens.tolist()) == {1}
        assert set(vq.mem.read(int(status.addr[0]), 50)) == {C.VIRTIO_BLK_S_OK}
        assert vq.num_free == vq.num
    finally:
        ops.close()


def test_readable_only_and_mixed_sizes_on_rng(mode):
    """Per-buffer lens and a readable-only buffer in one batch: the model's general scatter path."""
    ops, d, vqs = bring_up(f"model:rng,mode={mode}")
    try:
        vq = vqs[0]
        sizes = np.array([1, 7, 8, 64, 3, 200], dtype=np.uint64)
        base = vq.mem.alloc(int(sizes.sum()), 8)
        vq.mem.fill(base, int(sizes.sum()), POISON)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.uint64)
        vq.add_batch((), (SgArray(base + starts, sizes),), len(sizes))
        ro = vq.add([b"readable"], [], token="ro")
        vq.kick()
        got: list = []
        ids, lens = vq.wait_used_batch(len(sizes) + 1, TIMEOUT, chains=got)
        assert got == [ro] and ro.used_len == 0
        assert sorted(lens.tolist()) == sorted([0] + sizes.tolist())
        data = vq.mem.read(base, int(sizes.sum()))
        # Each buffer was written: checked on the 7- and 200-byte ones (a 1-byte one holds the
        # poison value by chance once in 256 runs; 7 random bytes all equal to it, once in 2**56).
        assert data[1:8] != bytes([POISON]) * 7 and data[-200:] != bytes([POISON]) * 200
    finally:
        ops.close()


def test_in_order_one_elem_per_buffer(mode):
    ops, d, vqs = bring_up(f"model:rng,mode={mode}", want=(C.VIRTIO_F_IN_ORDER,))
    try:
        vq = vqs[0]
        assert vq.in_order
        for i in range(30):
            heads = vq.add_batch((), (buffers(vq, 50),), 50)
            c = vq.add([], [8], token=i)
            vq.kick()
            got: list = []
            ids, lens = vq.wait_used_batch(51, TIMEOUT, chains=got)
            assert ids.tolist() == heads.tolist() + [c.head]  # table order, as made available
            assert got == [c]
        assert vq.num_free == vq.num
    finally:
        ops.close()


def test_in_order_batched_used_elems(mode):
    """net answers a whole batch of transmit buffers with one used elem (2.7.9): the batch API
    returns every buffer, with len 0, and honours max_count by keeping the rest for later."""
    ops, d, vqs = bring_up(f"model:net,mode={mode}", want=(C.VIRTIO_F_IN_ORDER,))
    try:
        tx = vqs[1]
        frame = NetHdr().pack() + bytes.fromhex("020000000001") + bytes(54)
        a = tx.mem.alloc(len(frame), 8)
        tx.mem.write(a, frame)
        heads = tx.add_batch((Sg(a, len(frame)),), (), 20)
        chains = [tx.add([frame], [], i) for i in range(3)]
        tx.kick()
        got: list = []
        ids, lens = tx.wait_used_batch(5, TIMEOUT, chains=got)
        assert ids.tolist() == heads[:5].tolist() and lens.tolist() == [0] * 5
        ids2, _ = tx.wait_used_batch(15, TIMEOUT, chains=got)
        assert ids2.tolist() == heads[5:].tolist()
        rest = tx.wait_used(3, TIMEOUT)  # per-buffer API picks up where the batch left off
        assert rest == chains and all(c.used_len == 0 for c in rest) and got == []
        assert tx.num_free == tx.num and tx.num_in_flight == 0
        if mode == "notify":
            # One used elem for all 23 (2.7.9): the last buffer's id at slot 0, used idx moved by 23.
            assert int(tx.ring.used_idx[0]) == 23 and int(tx.ring.used_ring[0, 0]) == chains[-1].head
    finally:
        ops.close()


@pytest.mark.heavy
@pytest.mark.parametrize("in_order", [False, True], ids=["any-order", "in-order"])
def test_index_wrap_past_65535(mode, in_order):
    """Over 65536 buffers through a 256-entry queue with batch sizes that are not powers of two,
    mixed with per-buffer adds: avail/used idx wrap at 2^16 and ring slots wrap at num."""
    want = (C.VIRTIO_F_NOTIFICATION_DATA,) + ((C.VIRTIO_F_IN_ORDER,) if in_order else ())
    drop = () if in_order else (C.VIRTIO_F_IN_ORDER,)
    ops, d, vqs = bring_up(f"model:rng,mode={mode}", want=want, drop=drop)
    try:
        vq = vqs[0]
        sga = buffers(vq, 256, poison=False)
        done, rounds = 0, 0
        while done < 70_000:
            n = (37, 250, 1, 128, 99)[rounds % 5]
            sub = SgArray(sga.addr[:n], 8)
            vq.add_batch((), (sub,), n)
            per = vq.add([], [4], token=rounds) if n < 250 else None
            vq.kick()
            got: list = []
            if rounds % 3 == 2:
                back = vq.wait_used(n + (per is not None), TIMEOUT)
                assert sum(1 for c in back if not c.batch) == (per is not None)
            else:
                ids, lens = vq.wait_used_batch(n + (per is not None), TIMEOUT, chains=got)
                assert len(ids) == n + (per is not None)
            done += n + (per is not None)
            rounds += 1
        assert vq.last_used_idx == done & 0xFFFF == int(vq.ring.used_idx[0])
        assert vq.avail_idx_shadow == done & 0xFFFF and vq.num_free == vq.num
        assert vq.notification_data and vq.kicks > 0 and ops.device.notification_data_errors == []
    finally:
        ops.close()


def test_reset_reclaims_batch_buffers(mode):
    ops, d, vqs = bring_up(f"model:rng,mode={mode}", want=(C.VIRTIO_F_RING_RESET,))
    try:
        vq = vqs[0]
        heads = vq.add_batch((), (buffers(vq, 5, 16),), 5)  # never kicked: still the driver's after reset
        c = vq.add([], [8], token="one")
        reclaimed = d.reset_vq(vq, num=64)
        assert len(reclaimed) == 6 and c in reclaimed
        assert {r.head for r in reclaimed if r.batch} == set(heads.tolist())
        assert vq.num == 64 and vq.num_free == 64 and vq.num_in_flight == 0
        vq.add_batch((), (buffers(vq, 64),), 64)
        vq.kick()
        assert len(vq.wait_used_batch(64, TIMEOUT)[0]) == 64
    finally:
        ops.close()


def test_batch_refuses_more_than_free():
    ops, d, vqs = bring_up("model:rng")
    try:
        vq = vqs[0]
        from virtio.errors import HarnessError

        with pytest.raises(HarnessError):
            vq.add_batch((), (buffers(vq, 257),), 257)
        with pytest.raises(HarnessError):
            vq.add_batch((), (SgArray(np.zeros(3, dtype=np.uint64), 8),), 4)  # wrong shape
        assert vq.num_free == vq.num and vq.avail_idx_shadow == 0
    finally:
        ops.close()


def test_model_batch_path_only_for_devices_that_keep_handle():
    """A subclass overriding only handle() (as mutants do) must not be bypassed by handle_batch."""
    from targets.model.rng import RngDevice

    class HalfFill(RngDevice):
        def handle(self, qindex, queue, chain):
            return super().handle(qindex, queue, chain) // 2

    class Batched(RngDevice):
        pass

    assert HalfFill()._batch_handler(_FakeSplitQueue()) is None
    assert Batched()._batch_handler(_FakeSplitQueue()) is not None
    assert RngDevice()._batch_handler(object()) is None  # not a split queue (e.g. packed)


class _FakeSplitQueue:
    def pop_simple(self):
        return None


def test_split_queue_size_must_be_a_power_of_two():
    """2.7: the split driver side takes only powers of 2 up to 32768 (at creation and on resize),
    with an error naming the rule; the packed layout takes any size (2.8)."""
    from virtio.errors import HarnessError
    from virtio.memory import GuestMemory
    from virtio.packed_queue import PackedVirtqueue
    from virtio.split_queue import SplitVirtqueue, check_split_queue_size

    for num in (1, 2, 4, 256, 32768):
        check_split_queue_size(num)
    for num in (0, 3, 100, 255, 32767, 65536):
        with pytest.raises(HarnessError, match=r"not a power of 2 .*\(2\.7\)"):
            check_split_queue_size(num)
    mem = GuestMemory(4 << 20)
    try:
        with pytest.raises(HarnessError):
            SplitVirtqueue(mem, 0, 100, lambda vq: None)
        vq = SplitVirtqueue(mem, 0, 8, lambda vq: None)
        with pytest.raises(HarnessError):
            vq.resize(12)
        assert vq.num == 8
        vq.resize(16)
        assert vq.num == 16
        assert PackedVirtqueue(mem, 1, 100, lambda vq: None, features=1 << C.VIRTIO_F_RING_PACKED).num == 100
    finally:
        mem.close()


@pytest.mark.parametrize("size, shift", [(8, 0), (16, 0), (8, 3), (5, 0), (24, 1)])
def test_rng_batch_write_paths(size, shift):
    """The model's batch write: 8-byte stores when every buffer is 8-aligned and a multiple of 8
    long, the byte scatter otherwise; either way every byte of every buffer, and nothing beyond."""
    ops, d, vqs = bring_up("model:rng")
    try:
        vq = vqs[0]
        n = 40
        stride = size + 8
        base = vq.mem.alloc(stride * n + 16, 8) + shift
        vq.mem.fill(base - shift, stride * n + 16, POISON)
        vq.add_batch((), (SgArray(base + stride * np.arange(n, dtype=np.uint64), size),), n)
        vq.kick()
        ids, lens = vq.wait_used_batch(n, TIMEOUT)
        assert lens.tolist() == [size] * n
        raw = vq.mem.read(base, stride * n)
        for k in range(n):
            gap = raw[k * stride + size : (k + 1) * stride]
            assert gap == bytes([POISON]) * 8  # untouched between buffers
        assert ops.device.bytes_supplied == size * n
    finally:
        ops.close()


def test_u64_view_only_for_8_aligned_memory():
    """The model's 8-byte store path needs guest memory that starts 8-aligned; a vhost-user region
    mapped at another offset (or of a length not a multiple of 8) gets the byte path instead."""
    from virtio.memory import u64_view

    raw = np.zeros(4099, dtype=np.uint8)
    assert raw.ctypes.data % 8 == 0
    words = u64_view(raw)
    assert words.shape == (512,)
    words[3] = 0x0102030405060708
    assert raw[24:32].tolist() == [8, 7, 6, 5, 4, 3, 2, 1]
    assert u64_view(raw[1:]) is None


def test_recycled_request_pool_round_trips(mode):
    """A preformatted blk request pool: header, 4 KiB data and status written once per slot,
    recycled by get_used_batch(recycle=True) + readd_batch for many rounds; every used elem is
    still validated and every request reads what was written."""
    from virtio.messages import blk_outhdr

    ops, d, vqs = bring_up(f"model:blk,mode={mode}")
    try:
        vq = vqs[0]
        mem = vq.mem
        n = 8
        data = mem.alloc(4096 * n, 4096)
        for k in range(n):  # sector k*8 holds k's pattern
            mem.write(data + 4096 * k, bytes([k + 1]) * 4096)
        hdr = mem.alloc(16 * n, 16)
        for k in range(n):
            mem.write(hdr + 16 * k, blk_outhdr(C.VIRTIO_BLK_T_OUT, 8 * k))
        status = buffers(vq, n, 1)
        slots = np.arange(n, dtype=np.uint64)
        heads = vq.add_batch((SgArray(hdr + 16 * slots, 16), SgArray(data + 4096 * slots, 4096)), (status,), n)
        vq.kick()
        ids, lens = vq.wait_used_batch(n, TIMEOUT)  # the writes, freed as usual
        for k in range(n):  # now a pool of reads of the same sectors
            mem.write(hdr + 16 * k, blk_outhdr(C.VIRTIO_BLK_T_IN, 8 * k))
        heads = vq.add_batch((SgArray(hdr + 16 * slots, 16),), (SgArray(data + 4096 * slots, 4096), status), n)
        slot_of = {h: k for k, h in enumerate(heads.tolist())}
        mem.fill(data, 4096 * n, 0)
        vq.kick()
        for _ in range(50):
            got = []
            while len(got) < n:
                ids, lens = vq.get_used_batch(recycle=True)
                if not len(ids):
                    vq.wait_interrupt(vq.interrupts - 1, 0.01)
                    continue
                assert lens.tolist() == [4097] * len(ids)
                got += ids.tolist()
            assert sorted(got) == sorted(heads.tolist()) and vq.num_in_flight == 0
            for h in got:
                k = slot_of[h]
                assert mem.read(data + 4096 * k, 4096) == bytes([k + 1]) * 4096
            mem.fill(data, 4096 * n, 0)
            vq.readd_batch(np.array(got, dtype=np.intp))
            vq.kick()
        assert vq.num_free == vq.num - 3 * n  # the pool's descriptors stay reserved
        ids, _ = vq.wait_used_batch(n, TIMEOUT)
        vq.free_recycled(np.array([]))  # nothing recycled by a plain get_used_batch
        assert vq.num_free == vq.num
    finally:
        ops.close()


def test_recycled_buffers_are_not_in_flight():
    """A used elem naming a recycled buffer that was not made available again is a violation,
    and readd_batch refuses heads that are not recycled."""
    from virtio.errors import HarnessError, InvalidUsedId

    ops, d, vqs = bring_up("model:rng")
    try:
        vq = vqs[0]
        vq.add_batch((), (buffers(vq, 4),), 4)
        vq.kick()
        got = []
        while len(got) < 4:
            ids, _ = vq.get_used_batch(recycle=True)
            got += ids.tolist()
        with pytest.raises(HarnessError):
            vq.readd_batch(np.array([vq.num - 1], dtype=np.intp))  # never recycled
        with pytest.raises(HarnessError):
            vq.readd_batch(np.array([got[0], got[0]], dtype=np.intp))  # twice
        # A device re-reporting a recycled buffer while another is in flight: id not in flight.
        vq.add_batch((), (buffers(vq, 1),), 1)  # made available, not kicked: stays in flight
        slot = vq.last_used_idx % vq.num
        vq.ring.used_ring[slot] = (got[0], 8)
        vq.ring.used_idx[0] = (vq.last_used_idx + 1) & 0xFFFF
        with pytest.raises(InvalidUsedId):
            vq.get_used_batch(recycle=True)
    finally:
        ops.close()


def test_recycled_pool_frees_its_descriptors():
    ops, d, vqs = bring_up("model:rng")
    try:
        vq = vqs[0]
        vq.add_batch((), (buffers(vq, 16),), 16)
        vq.kick()
        got = []
        while len(got) < 16:
            ids, _ = vq.get_used_batch(recycle=True)
            got += ids.tolist()
        assert vq.num_free == vq.num - 16
        vq.free_recycled(np.array(got, dtype=np.intp))
        assert vq.num_free == vq.num and vq.num_in_flight == 0
        with pytest.raises(HarnessError, match="not recycled"):
            vq.readd_batch(np.array(got[:1], dtype=np.intp))
    finally:
        ops.close()
