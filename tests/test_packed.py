"""Unit tests of the packed virtqueue (VIRTIO 1.4, 2.8): the layout (virtio/packed.py), the driver
side (virtio/packed_queue.py) against the device side (targets/model/packed_ring.py) through the
model transport, in both device modes; and the validation of everything each side reads."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from targets.config_ops import VqInfo
from targets.model import BlkDevice, RngDevice
from targets.model.packed_ring import DevicePackedQueue
from targets.model.transport import ModelTransport
from virtio import constants as C
from virtio.buffers import ChainError
from virtio.errors import DeviceViolation, HarnessError, InvalidUsedFlags, InvalidUsedId, InvalidUsedLen
from virtio.memory import GuestMemory
from virtio.messages import blk_outhdr
from virtio.packed import (
    MAX_QUEUE_SIZE,
    PVIRTQ_DESC,
    PVIRTQ_EVENT_SUPPRESS,
    PackedRing,
    alloc_packed_ring,
    avail_flags,
    need_event,
    off_wrap,
    used_flags,
)
from virtio.packed_queue import PackedVirtqueue

MODES = ("notify", "threaded")
TIMEOUT = 2.0
DRIVER_STATUS = C.ACKNOWLEDGE | C.DRIVER
PACKED = 1 << C.VIRTIO_F_RING_PACKED


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


@pytest.fixture
def transports():
    opened = []
    yield opened
    for t in opened:
        t.close()


def bring_up(transports, device, names, features=None, size=None):
    """3.1.1 with VIRTIO_F_RING_PACKED: reset, ACKNOWLEDGE|DRIVER, features, FEATURES_OK, vqs, DRIVER_OK."""
    t = ModelTransport(device, f"model:{device.name}")
    transports.append(t)
    t.reset()
    t.set_status(DRIVER_STATUS)
    offered = t.get_extended_features()
    wanted = (1 << C.VIRTIO_F_VERSION_1) | (1 << C.VIRTIO_F_INDIRECT_DESC) | (1 << C.VIRTIO_F_EVENT_IDX) | PACKED
    t.finalize_features((wanted if features is None else features | PACKED) & offered)
    t.set_status(DRIVER_STATUS | C.FEATURES_OK)
    assert t.get_status() & C.FEATURES_OK
    vqs = t.find_vqs([VqInfo(n, size=size) for n in names])
    t.set_status(DRIVER_STATUS | C.FEATURES_OK | C.DRIVER_OK)
    assert all(isinstance(vq, PackedVirtqueue) for vq in vqs)
    assert all(isinstance(q, DevicePackedQueue) for q in device.queues if q is not None)
    return t, vqs


# -- layout ---------------------------------------------------------------------------------------
def test_layout_sizes():
    assert PVIRTQ_DESC.itemsize == 16
    assert [PVIRTQ_DESC.fields[f][1] for f in ("addr", "len", "id", "flags")] == [0, 8, 12, 14]
    assert PVIRTQ_EVENT_SUPPRESS.itemsize == 4
    assert (C.VIRTQ_DESC_F_AVAIL, C.VIRTQ_DESC_F_USED) == (0x80, 0x8000)
    assert avail_flags(1) == 0x80 and avail_flags(0) == 0x8000
    assert used_flags(1) == 0x8080 and used_flags(0) == 0
    assert off_wrap(5, 1) == 0x8005 and off_wrap(0x7FFF, 0) == 0x7FFF


@pytest.mark.parametrize("num", [1, 3, 100, 255, 256, MAX_QUEUE_SIZE])
def test_alloc_alignment_any_size(num):
    mem = GuestMemory(2 << 20)
    try:
        mem.alloc(3, 1)  # knock the allocator off alignment
        addrs = alloc_packed_ring(mem, num)
        assert addrs.desc % 16 == 0 and addrs.driver % 4 == 0 and addrs.device % 4 == 0
        ring = PackedRing(mem, addrs)
        assert len(ring.desc) == num and not ring.desc_flags.any() and int(ring.driver_event[0]) == 0
        ring.desc_flags[num - 1] = 0x8080  # one 16-bit store at bytes 14..15 of the last descriptor
        assert mem.read(addrs.desc + 16 * num - 2, 2) == b"\x80\x80"
    finally:
        mem.close()


@pytest.mark.parametrize("num", [0, MAX_QUEUE_SIZE + 1])
def test_alloc_rejects_bad_sizes(num):
    mem = GuestMemory(1 << 20)
    try:
        with pytest.raises(ValueError):
            alloc_packed_ring(mem, num)
    finally:
        mem.close()


def test_need_event_across_the_ring_end():
    num = 100
    # Event at slot 98 of the previous lap; the driver moved from 95 (previous lap) to 5.
    assert need_event(off_wrap(98, 1), 0, num, 5, 95 - num)
    assert not need_event(off_wrap(90, 1), 0, num, 5, 95 - num)
    assert need_event(off_wrap(2, 0), 0, num, 5, 95 - num)
    assert not need_event(off_wrap(5, 0), 0, num, 5, 95 - num)  # the next one: not yet


# -- driver against model devices ------------------------------------------------------------------------
def test_packed_not_negotiated_gives_split(transports):
    t = ModelTransport(RngDevice(), "model:rng")
    transports.append(t)
    t.reset()
    t.set_status(DRIVER_STATUS)
    t.finalize_features(1 << C.VIRTIO_F_VERSION_1)
    t.set_status(DRIVER_STATUS | C.FEATURES_OK)
    (vq,) = t.find_vqs([VqInfo("requestq")])
    assert vq.layout == "split"


@pytest.mark.parametrize("size", [100, 7, 1])
def test_rng_wrap_counters(mode, transports, size):
    dev = RngDevice(mode=mode)
    t, (vq,) = bring_up(transports, dev, ["requestq"], size=size)
    assert vq.num == size
    total = 0
    for i in range(40):
        n = 1 + i % size
        chains = [vq.add([], [16], (i, j)) for j in range(n)]
        vq.kick()
        got = vq.wait_used(n, TIMEOUT)
        assert [c.token for c in got] == [c.token for c in chains]
        assert all(c.used_len == 16 and vq.read_in(c) != b"\0" * 16 for c in got)
        total += n
        q = dev.queues[0]
        assert vq.last_used_idx == total % size == q.used_idx == q.last_avail_idx == vq.next_avail_idx
        assert vq.used_wrap_counter == 1 ^ (total // size & 1) == q.used_wrap_counter == q.avail_wrap_counter
        assert vq.used_wraps == vq.avail_wraps == total // size
        for c in got:
            vq.release(c)
    assert total // size >= 5


def test_blk_chains_and_indirect(mode, transports):
    dev = BlkDevice(mode=mode)
    t, (vq,) = bring_up(transports, dev, ["requestq"], size=10)
    for rnd in range(12):
        data = os.urandom(3 * C.SECTOR_SIZE)
        kw = {"indirect": rnd % 2 == 1}
        w = vq.add([blk_outhdr(C.VIRTIO_BLK_T_OUT, rnd), data[:100], data[100:]], [1], "w", **kw)
        r = vq.add([blk_outhdr(C.VIRTIO_BLK_T_IN, rnd)], [1000, len(data) - 1000, 1], "r", **kw)
        vq.kick()
        got = vq.wait_used(2, TIMEOUT)
        assert got == [w, r]
        assert vq.read_in(w, 1) == b"\0" and vq.read_in(r) == data + b"\0"
    assert vq.used_wraps >= 5
    with pytest.raises(HarnessError):
        vq.add([b"x"], [1], indirect=True, direct_before_indirect=1)


class ReverseRng(RngDevice):
    """Holds every buffer of a batch, then completes them last first (2.8: out of order)."""

    def handle(self, qindex, queue, chain):
        return None

    def after_process(self, index):
        q = self.queues[index]
        for chain in reversed(list(self.held.get(index, {}).values())):
            n = q.write_writable(chain, bytes([chain.head & 0xFF]) * chain.writable_len)
            self.complete(index, chain, n)


def test_out_of_order_completion(mode, transports):
    dev = ReverseRng(mode=mode)
    t, (vq,) = bring_up(transports, dev, ["requestq"], size=50)
    for rnd in range(20):
        chains = [vq.add([], [4] * (1 + (j + rnd) % 3), j) for j in range(5)]
        vq.kick()
        got = vq.wait_used(5, TIMEOUT)
        assert [c.token for c in got] == [4, 3, 2, 1, 0]
        for c in got:
            assert vq.read_in(c) == bytes([c.head]) * c.writable  # its own data under its own id
        assert not vq.in_flight and vq.num_free == vq.num
        del chains
    assert vq.used_wraps > 2 and sorted(vq._free_ids) == list(range(50))


def test_event_suppression_modes(transports):
    dev = RngDevice()
    t, (vq,) = bring_up(transports, dev, ["requestq"])
    q = dev.queues[0]
    assert int(vq.ring.device_event_flags[0]) == C.RING_EVENT_FLAGS_DESC  # EVENT_IDX negotiated

    def exchange():
        before = vq.interrupts
        vq.add([], [8])
        vq.kick()
        vq.wait_used(1, TIMEOUT)
        return vq.interrupts - before

    assert exchange() == 1  # ENABLE (the zeroed driver area)
    vq.disable_cb()
    assert int(vq.ring.driver_event_flags[0]) == C.RING_EVENT_FLAGS_DISABLE
    assert exchange() == 0
    assert vq.enable_cb()
    assert int(vq.ring.driver_event_flags[0]) == C.RING_EVENT_FLAGS_DESC
    assert int(vq.ring.driver_event_desc[0]) == off_wrap(vq.last_used_idx, vq.used_wrap_counter)
    assert exchange() == 1
    off, wrap = vq.position_after(2)
    vq.set_driver_event(C.RING_EVENT_FLAGS_DESC, off, wrap)
    assert [exchange() for _ in range(4)] == [0, 0, 1, 0]
    # The device's own event structure: the driver kicks only when it moved past the offset.
    q.ring.device_event_flags[0] = C.RING_EVENT_FLAGS_DISABLE
    vq.add([], [8])
    assert not vq.kick_prepare()
    q.ring.device_event_flags[0] = C.RING_EVENT_FLAGS_DESC
    q.ring.device_event_desc[0] = off_wrap((vq.next_avail_idx + 1) % vq.num, vq.avail_wrap_counter)
    vq.add([], [8])
    assert not vq.kick_prepare()  # the named slot is the one after the buffer just added
    vq.add([], [8])
    assert vq.kick_prepare()
    vq.notify()
    vq.wait_used(3, TIMEOUT)


def test_notification_position_matches_driver(transports):
    dev = RngDevice()
    t, (vq,) = bring_up(transports, dev, ["requestq"], size=5)
    q = dev.queues[0]
    for i in range(12):
        vq.add([], [8] * (1 + i % 2))
        vq.publish()
        assert q.notification_position() == vq.next_notification()
        vq.kick()
        vq.wait_used(1, TIMEOUT)


def test_in_order_batch(transports):
    """With IN_ORDER the device may answer a batch with one used descriptor (2.8.8)."""
    mem = GuestMemory(1 << 20)
    try:
        features = PACKED | (1 << C.VIRTIO_F_IN_ORDER)
        vq = PackedVirtqueue(mem, 0, 8, lambda vq: None, features=features)
        q = DevicePackedQueue(mem, 0, vq.addrs, features)
        chains = [vq.add([b"abc"], [], k) for k in range(3)] + [vq.add([], [2, 2], 3)]
        vq.publish()
        popped = [q.pop() for _ in range(4)]
        q.push(popped[2].head, 0)  # the first three in one
        got = [vq.get_buf() for _ in range(3)]
        assert got == chains[:3] and vq.get_buf() is None
        q.push(popped[3].head, 4)
        assert vq.get_buf() is chains[3] and chains[3].used_len == 4
        assert vq.last_used_idx == 5 and vq.num_free == 8
    finally:
        mem.close()


# -- validation of what the device wrote --------------------------------------------------------------
@pytest.fixture
def bare():
    """A driver-side queue of 8 with no device: the test writes the device's part itself."""
    mem = GuestMemory(1 << 20)
    vq = PackedVirtqueue(mem, 0, 8, lambda vq: None, features=PACKED, name="bare")
    yield vq
    mem.close()


def _use(vq, slot, bid, length, flags=None):
    vq.ring.desc_id[slot] = bid
    vq.ring.desc_len[slot] = length
    vq.ring.desc_flags[slot] = used_flags(vq.used_wrap_counter) | C.VIRTQ_DESC_F_WRITE if flags is None else flags


def test_used_id_not_in_flight(bare):
    c = bare.add([], [8])
    bare.publish()
    _use(bare, 0, c.head + 5, 8)
    with pytest.raises(InvalidUsedId) as e:
        bare.get_buf()
    assert e.value.clause == "def.packed.used-buffer-id"
    with pytest.raises(InvalidUsedId):  # the queue is broken now
        bare.wait_used(1, 0.1)


def test_used_len_too_big(bare):
    c = bare.add([b"hdr"], [8, 8])
    bare.publish()
    _use(bare, 0, c.head, 17)
    with pytest.raises(InvalidUsedLen):
        bare.get_buf()


def test_reserved_len_without_write_flag(bare):
    c = bare.add([b"hdr"], [])
    bare.publish()
    _use(bare, 0, c.head, 1000, flags=used_flags(1))  # len is reserved without WRITE (2.8.4)
    assert bare.get_buf() is c and c.used_len == 0


def test_used_where_nothing_was_made_available(bare):
    _use(bare, 0, 0, 0)
    with pytest.raises(InvalidUsedFlags) as e:
        bare.get_buf()
    assert e.value.clause == "def.packed.used-position"


def test_used_on_unpublished_head(bare):
    c = bare.add([], [8])  # written, head flags not yet stored
    _use(bare, 0, c.head, 8)
    with pytest.raises(InvalidUsedFlags):
        bare.get_buf()


def test_wrong_flag_pair(bare):
    bare.add([], [8])
    bare.publish()
    bare.ring.desc_flags[0] = C.VIRTQ_DESC_F_USED  # AVAIL=0, USED=1 in the first lap
    with pytest.raises(InvalidUsedFlags) as e:
        bare.get_buf()
    assert e.value.clause == "def.packed.used-flags"


def test_garbage_in_ring_never_crashes_driver(bare):
    rnd = random.Random(1234)
    raw = bare.ring.desc.view(np.uint8).reshape(-1)
    outcomes = set()
    chains = []
    for _i in range(3000):
        for c in chains:
            bare.release(c)
        bare.reset_state()
        chains = [
            bare.add([b"x" * rnd.randrange(1, 9)], [rnd.randrange(1, 9)] * rnd.randrange(0, 2)) for _ in range(rnd.randrange(0, 4))
        ]
        if rnd.random() < 0.7:
            bare.publish()
        raw[:] = np.frombuffer(rnd.randbytes(raw.size), dtype=np.uint8)
        if rnd.random() < 0.5:  # often a plausible used pattern at the slot the driver reads
            bare.ring.desc_flags[0] = rnd.choice([0x8080, 0x8082, 0x0080, 0x8000, 0])
            bare.ring.desc_id[0] = rnd.randrange(0, 12)
        try:
            for _ in range(4):
                if bare.get_buf() is None:
                    break
            outcomes.add("ok")
        except DeviceViolation as e:
            outcomes.add(type(e).__name__)
    assert {"ok", "InvalidUsedFlags", "InvalidUsedId"} <= outcomes


# -- the device side with malformed input ---------------------------------------------------------------
@pytest.fixture
def pair():
    mem = GuestMemory(1 << 20)
    features = PACKED | (1 << C.VIRTIO_F_INDIRECT_DESC)
    vq = PackedVirtqueue(mem, 0, 8, lambda vq: None, features=features)
    q = DevicePackedQueue(mem, 0, vq.addrs, features)
    yield vq, q
    mem.close()


def _avail(vq, slot, addr, length, bid, flags):
    vq.ring.desc_addr[slot] = addr
    vq.ring.desc_len[slot] = length
    vq.ring.desc_id[slot] = bid
    vq.ring.desc_flags[slot] = flags | avail_flags(1)


def test_device_rejects_malformed_lists(pair):
    vq, q = pair
    mem = vq.mem
    buf = mem.alloc(64)
    cases = {
        "outside guest memory": [(mem.base + mem.size - 4, 8, 0, 0)],
        "readable after writable": [(buf, 8, 0, C.VIRTQ_DESC_F_NEXT | C.VIRTQ_DESC_F_WRITE), (buf, 8, 0, 0)],
        "indirect table length": [(buf, 20, 0, C.VIRTQ_DESC_F_INDIRECT)],
        "indirect inside a list": [(buf, 8, 0, C.VIRTQ_DESC_F_NEXT), (buf, 16, 0, C.VIRTQ_DESC_F_INDIRECT)],
        "loop": [(buf, 8, 0, C.VIRTQ_DESC_F_NEXT)] * 8,
    }
    for _what, descs in cases.items():
        vq.reset_state()
        q.__init__(mem, 0, vq.addrs, PACKED | (1 << C.VIRTIO_F_INDIRECT_DESC))
        for slot, d in enumerate(descs):
            _avail(vq, slot, *d)
        with pytest.raises(ChainError):
            q.pop()
    # a list whose later descriptor is not available yet
    vq.reset_state()
    q.__init__(mem, 0, vq.addrs, PACKED)
    _avail(vq, 0, buf, 8, 0, C.VIRTQ_DESC_F_NEXT)
    with pytest.raises(ChainError):
        q.pop()
    # an id already in flight
    vq.reset_state()
    q.__init__(mem, 0, vq.addrs, PACKED)
    _avail(vq, 0, buf, 8, 3, 0)
    _avail(vq, 1, buf, 8, 3, 0)
    assert q.pop().head == 3
    with pytest.raises(ChainError):
        q.pop()


def test_simple_run_stops_before_an_id_in_flight(pair):
    """pop_simple takes a run only up to an id repeated in it, or still in flight from a run not
    pushed yet; pop() then rejects that id, as one list at a time (2.8.6)."""
    vq, q = pair
    buf = vq.mem.alloc(64)

    def ring(*ids):  # one-descriptor writable buffers with these ids, from slot 0
        vq.reset_state()
        q.__init__(vq.mem, 0, vq.addrs, PACKED)
        for slot, bid in enumerate(ids):
            _avail(vq, slot, buf, 8, bid, C.VIRTQ_DESC_F_WRITE)

    for ids in ((1, 2, 1), (5, 6, 5, 7)):
        ring(*ids)
        assert q.pop_simple()[0].tolist() == list(ids[:2])
        assert q.pop_simple() is False
        with pytest.raises(ChainError):
            q.pop()
    ring(4)
    assert q.pop_simple()[0].tolist() == [4]
    for slot, bid in ((1, 9), (2, 4)):  # the run of 4 is in flight, though not pushed
        _avail(vq, slot, buf, 8, bid, C.VIRTQ_DESC_F_WRITE)
    assert q.pop_simple()[0].tolist() == [9]
    assert q.pop_simple() is False and list(q.pending) == [4, 9]
    with pytest.raises(ChainError):
        q.pop()


def test_garbage_in_ring_never_crashes_device(pair):
    vq, q = pair
    rnd = random.Random(99)
    raw = vq.ring.desc.view(np.uint8).reshape(-1)
    base = vq.mem.base
    for _ in range(3000):
        q.__init__(vq.mem, 0, vq.addrs, PACKED | (1 << C.VIRTIO_F_INDIRECT_DESC))
        raw[:] = np.frombuffer(rnd.randbytes(raw.size), dtype=np.uint8)
        for slot in range(8):
            if rnd.random() < 0.8:  # mostly available, with addresses that are sometimes in memory
                f = rnd.choice([0, C.VIRTQ_DESC_F_NEXT, C.VIRTQ_DESC_F_WRITE, C.VIRTQ_DESC_F_INDIRECT, 0x7F])
                _avail(vq, slot, base + rnd.randrange(0, 2 << 20), rnd.randrange(0, 96), rnd.randrange(0, 16), f)
        try:
            while q.pop() is not None:
                pass
        except ChainError:
            pass


def test_queue_reset_and_resize(transports):
    """2.6.1 on a packed ring: reset one queue, reclaim its buffers, re-enable it with another size."""
    from virtio.driver import VirtioDriver

    dev = RngDevice()
    t, (vq,) = bring_up(transports, dev, ["requestq"], features=(1 << C.VIRTIO_F_RING_RESET) | (1 << C.VIRTIO_F_EVENT_IDX), size=10)
    d = VirtioDriver(t)
    d.vqs = [vq]
    for _ in range(7):
        vq.add([], [8])
        vq.kick()
        vq.wait_used(1, TIMEOUT)
    d.reset_vq(vq, num=33)
    assert vq.num == 33 and vq.last_used_idx == 0 and vq.used_wrap_counter == 1
    for _ in range(40):
        vq.add([], [8])
        vq.kick()
        vq.wait_used(1, TIMEOUT)
    assert vq.used_wraps == 1 and dev.queues[0].num == 33


# -- batch API (add_batch / get_used_batch / wait_used_batch) ---------------------------------------
from virtio.buffers import Sg, SgArray  # noqa: E402


def _sga(vq, count, size=8):
    base = vq.mem.alloc(size * count, 8)
    vq.mem.fill(base, size * count, 0xA5)
    return SgArray(base + size * np.arange(count, dtype=np.uint64), size)


@pytest.mark.parametrize("size", [256, 100, 7])
def test_batch_round_trip_and_wrap(mode, transports, size):
    """Batches over many laps of a queue of any size: the model's fast path (pop_simple /
    push_batch) and the driver's, wrap counters kept in step on both sides."""
    dev = RngDevice(mode=mode)
    t, (vq,) = bring_up(transports, dev, ["requestq"], size=size)
    total = 0
    for i in range(60):
        n = 1 + (i * 5) % size
        sga = _sga(vq, n)
        ids = vq.add_batch((), (sga,), n)
        assert len(set(ids.tolist())) == n and vq.num_free == size - n
        vq.kick()
        got, lens = vq.wait_used_batch(n, TIMEOUT)
        assert sorted(got.tolist()) == sorted(ids.tolist()) and lens.tolist() == [8] * n
        data = vq.mem.read(int(sga.addr[0]), 8 * n)
        assert all(data[k : k + 8] != b"\xa5" * 8 for k in range(0, 8 * n, 8))
        vq.mem.free(int(sga.addr[0]))
        total += n
        q = dev.queues[0]
        assert vq.last_used_idx == total % size == q.used_idx == vq.next_avail_idx
        assert vq.used_wrap_counter == 1 ^ (total // size & 1) == q.used_wrap_counter
    assert vq.num_free == size and vq.num_in_flight == 0 and not vq.in_flight
    assert sorted(vq._free_ids) == list(range(size)) and total // size >= 2
    assert dev.bytes_supplied == 8 * total


def test_model_fast_path_serves_packed_runs(transports):
    dev = RngDevice()
    t, (vq,) = bring_up(transports, dev, ["requestq"], size=64)
    q = dev.queues[0]
    calls = []
    orig = q.push_batch
    q.push_batch = lambda ids, lens: (calls.append(len(ids)), orig(ids, lens))
    vq.add_batch((), (_sga(vq, 40),), 40)
    vq.kick()
    vq.wait_used_batch(40, TIMEOUT)
    assert calls == [40]


def test_batch_and_per_buffer_interleave(mode, transports):
    dev = RngDevice(mode=mode)
    t, (vq,) = bring_up(transports, dev, ["requestq"], size=32)
    for rnd in range(6):
        chains = [vq.add([], [16], token=(rnd, i)) for i in range(3)]
        ids = vq.add_batch((), (_sga(vq, 10),), 10)
        more = vq.add([], [4], token="last")
        vq.kick()
        got: list = []
        bids, lens = vq.wait_used_batch(14, TIMEOUT, chains=got)
        assert sorted(bids.tolist()) == sorted(ids.tolist() + [c.head for c in chains + [more]])
        assert {c.token for c in got} == {(rnd, 0), (rnd, 1), (rnd, 2), "last"}
        assert all(c.used_len == c.writable for c in got)
        # The other way round: add_batch buffers through get_buf, with their elements read back.
        ids = vq.add_batch((), (_sga(vq, 5, 24),), 5)
        vq.kick()
        back = vq.wait_used(5, TIMEOUT)
        assert [b.head for b in back] == ids.tolist()
        assert all(b.batch and b.used_len == 24 and [s.len for s in b.in_sgs] == [24] for b in back)
        assert all(vq.read_in(b) != b"\xa5" * 24 for b in back)
        assert vq.num_free == vq.num


def test_multi_descriptor_batch(mode, transports):
    dev = BlkDevice(mode=mode)
    t, (vq,) = bring_up(transports, dev, ["requestq"], size=30)
    for rnd in range(12):
        n = 7
        hdr = vq.mem.alloc(16, 8)
        vq.mem.write(hdr, blk_outhdr(C.VIRTIO_BLK_T_IN, rnd))
        data, status = _sga(vq, n, 512), _sga(vq, n, 1)
        ids = vq.add_batch((Sg(hdr, 16),), (data, status), n)
        assert vq.num_free == 30 - 3 * n
        vq.kick()
        got, lens = vq.wait_used_batch(n, TIMEOUT)
        assert sorted(got.tolist()) == sorted(ids.tolist()) and set(lens.tolist()) == {513}
        assert vq.mem.read(int(status.addr[0]), 1) == bytes([C.VIRTIO_BLK_S_OK])
        assert vq.num_free == 30 and not vq.in_flight
    assert vq.used_wraps >= 5


def _bare_batch(vq, n, size=8):
    ids = vq.add_batch((), (_sga(vq, n, size),), n)
    vq.publish()
    return ids.tolist()


@pytest.mark.parametrize(
    "used, error, where",
    [
        ([(0, 8), (None, 8)], InvalidUsedId, "ring slot 1"),  # None: an id not in flight
        ([(0, 8), (0xFFFF, 8)], InvalidUsedId, "ring slot 1"),  # beyond the queue
        ([(1, 8), (1, 8)], InvalidUsedId, "ring slot 1"),  # named twice
        ([(0, 8), (1, 8), (2, 9)], InvalidUsedLen, "ring slot 2"),  # len beyond the buffer
    ],
)
def test_batch_validation(bare, used, error, where):
    """get_used_batch reports the first bad used descriptor in ring order, as get_buf would."""
    ids = _bare_batch(bare, 4)
    stray = next(b for b in range(8) if b not in ids)
    for k, (i, n) in enumerate(used):
        _use(bare, k, stray if i is None else ids[i] if i < 4 else i, n)
    with pytest.raises(error) as e:
        bare.wait_used_batch(4, 0.1)
    assert where in str(e.value.observed)
    with pytest.raises(error):  # the queue is broken now
        bare.get_used_batch()


def test_batch_stops_at_wrong_flags(bare):
    ids = _bare_batch(bare, 3)
    _use(bare, 0, ids[0], 8)
    bare.ring.desc_flags[1] = C.VIRTQ_DESC_F_USED  # neither available nor used in lap 1
    got, _ = bare.get_used_batch()
    assert got.tolist() == [ids[0]]
    with pytest.raises(InvalidUsedFlags):
        bare.get_used_batch()


def test_batch_used_on_unpublished_head(bare):
    ids = _bare_batch(bare, 2)
    more = bare.add_batch((), (_sga(bare, 2),), 2).tolist()  # not published
    for k, b in enumerate(ids + more[:1]):
        _use(bare, k, b, 8)
    got, _ = bare.get_used_batch()
    assert got.tolist() == ids  # the run stops before the unpublished head...
    with pytest.raises(InvalidUsedFlags):  # ...which the next call reports
        bare.get_used_batch()


def test_publish_merges_both_apis_in_ring_order(bare):
    a = bare.add([], [8])
    ids = bare.add_batch((), (_sga(bare, 2),), 2).tolist()
    b = bare.add([], [8])
    order = []
    flags = bare.ring.desc_flags

    class Spy:
        def __setitem__(self, k, v):
            order.extend(np.atleast_1d(k).tolist())
            flags[k] = v

    bare.ring.desc_flags = Spy()
    bare.publish()
    bare.ring.desc_flags = flags
    assert order == [0, 1, 2, 3] and all(int(f) & C.VIRTQ_DESC_F_AVAIL for f in flags[:4])
    assert [a.head, *ids, b.head] == [int(x) for x in bare.ring.desc_id[:4]]


def test_fast_path_off_for_queues_that_change_pop(transports):
    """A DevicePackedQueue subclass that changes pop/walk/push (a mutant) keeps the per-list path:
    pop_simple says "not simple" before it looks at the ring, so pop() alone decides."""

    class Popped(DevicePackedQueue):
        def pop(self):
            return super().pop()

    class Dev(RngDevice):
        packed_queue_class = Popped

    dev = Dev()
    t, (vq,) = bring_up(transports, dev, ["requestq"], size=16)
    assert dev.queues[0].pop_simple() is False
    vq.add_batch((), (_sga(vq, 4),), 4)
    vq.kick()
    assert len(vq.wait_used_batch(4, TIMEOUT)[0]) == 4


# -- the blk model's out-of-order completion (GET_ID after the requests behind it) ------------------
def _get_id_then_read(vq):
    slow = vq.add([blk_outhdr(C.VIRTIO_BLK_T_GET_ID, 0)], [C.VIRTIO_BLK_ID_BYTES, 1], "get-id")
    fast = vq.add([blk_outhdr(C.VIRTIO_BLK_T_IN, 0)], [C.SECTOR_SIZE, 1], "read")
    vq.kick()
    return slow, fast


def test_blk_get_id_completes_after_requests_behind_it(transports):
    import time

    from targets.model import blk as blk_model

    dev = BlkDevice()
    t, (vq,) = bring_up(transports, dev, ["requestq"])
    slow, fast = _get_id_then_read(vq)
    assert vq.get_buf() is fast and vq.get_buf() is None  # GET_ID held past this pass
    vq.add([blk_outhdr(C.VIRTIO_BLK_T_IN, 1)], [C.SECTOR_SIZE, 1], "next")
    vq.kick()
    assert [c.token for c in vq.wait_used(2, TIMEOUT)] == ["next", "get-id"]
    assert vq.read_in(slow).startswith(b"vconf-model-blk")
    # Nothing more arrives: the held GET_ID still completes, within DEFER_LIMIT.
    slow, fast = _get_id_then_read(vq)
    t0 = time.monotonic()
    assert vq.wait_used(1, TIMEOUT)[0] is fast
    assert vq.wait_used(1, blk_model.DEFER_LIMIT + TIMEOUT)[0] is slow
    assert time.monotonic() - t0 < blk_model.DEFER_LIMIT + 1.0
    # A GET_ID alone completes in its own pass; with IN_ORDER nothing is deferred.
    alone = vq.add([blk_outhdr(C.VIRTIO_BLK_T_GET_ID, 0)], [C.VIRTIO_BLK_ID_BYTES, 1], "alone")
    vq.kick()
    assert vq.get_buf() is alone


def test_blk_no_deferral_with_in_order(transports):
    dev = BlkDevice()
    t, (vq,) = bring_up(transports, dev, ["requestq"], features=(1 << C.VIRTIO_F_VERSION_1) | (1 << C.VIRTIO_F_IN_ORDER))
    slow, fast = _get_id_then_read(vq)
    assert [c.token for c in vq.wait_used(2, TIMEOUT)] == ["get-id", "read"]


def test_blk_deferred_get_id_dropped_by_reset(transports):
    dev = BlkDevice()
    t, (vq,) = bring_up(transports, dev, ["requestq"])
    _get_id_then_read(vq)
    assert len(dev._deferred) == 1
    timer = dev._deferred[0][4]
    t.reset()
    assert not dev._deferred and timer.finished.is_set()  # cancelled
