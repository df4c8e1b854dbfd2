"""VIRTIO_F_IN_ORDER batches as 2.7.9 (split) and 2.8.8 (packed) have them: one used entry for a
batch, naming the batch's last buffer with its len, where the batch's first buffer was made
available; split: used idx moved by the batch's size; packed: the driver skips the batch's
descriptors. Driver side (both layouts, per-buffer and batch API, every batch size up to the queue
size, across the 16-bit index wrap and many wrap counter flips), what the driver refuses, the
models' batching, and the unusual in-order devices of tests/unusual/in_order.py under the suites.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from targets.model.device import InOrderBatcher
from targets.model.packed_ring import DevicePackedQueue
from targets.model.split_ring import DeviceSplitQueue
from targets.registry import open_target, parse_target
from virtio import constants as C
from virtio.buffers import Sg
from virtio.driver import VirtioDriver, VqInfo
from virtio.errors import InvalidUsedId, InvalidUsedIdx, InvalidUsedLen
from virtio.memory import GuestMemory
from virtio.messages import blk_outhdr
from virtio.packed_queue import PackedVirtqueue
from virtio.split_queue import SplitVirtqueue

IN_ORDER = "dev.reserved-features.5"
F_IN_ORDER = 1 << C.VIRTIO_F_IN_ORDER
PACKED = 1 << C.VIRTIO_F_RING_PACKED
LAYOUTS = ("split", "packed")


@pytest.fixture
def mem():
    m = GuestMemory(1 << 20)
    yield m
    m.close()


def ring_pair(mem, layout: str, num: int):
    """A driver-side queue and the model's device side of the same ring, IN_ORDER negotiated."""
    if layout == "split":
        vq = SplitVirtqueue(mem, 0, num, lambda q: None, features=F_IN_ORDER)
        return vq, DeviceSplitQueue(mem, 0, vq.addrs, F_IN_ORDER)
    vq = PackedVirtqueue(mem, 0, num, lambda q: None, features=F_IN_ORDER | PACKED)
    return vq, DevicePackedQueue(mem, 0, vq.addrs, F_IN_ORDER | PACKED)


def partition(k: int, style: str, rnd: random.Random) -> list[int]:
    """Batch sizes that add up to k: all at once, one per buffer, or random."""
    if style == "all":
        return [k]
    if style == "one":
        return [1] * k
    sizes: list[int] = []
    while sum(sizes) < k:
        sizes.append(rnd.randint(1, k - sum(sizes)))
    return sizes


def answer(dq, k: int, sizes: list[int], rnd: random.Random):
    """The device takes k buffers and answers them in batches of ``sizes``, each last buffer with
    a len of its choosing (every buffer before it used completely). Returns (heads, expected lens,
    reported flags) in the order made available."""
    chains = [dq.pop() for _ in range(k)]
    assert None not in chains
    heads = np.array([c.head for c in chains], dtype=np.intp)
    ends = np.cumsum(sizes) - 1
    lens = np.array([rnd.randint(0, chains[e].writable_len) for e in ends], dtype=np.uint32)
    dq.push_in_order_run(heads, ends, lens)
    expect = [c.writable_len for c in chains]
    reported = [False] * k
    for e, n in zip(ends.tolist(), lens.tolist()):
        expect[e], reported[e] = n, True
    return heads.tolist(), expect, reported


def in_step(vq, dq) -> None:
    """Both sides agree on the next used position."""
    if vq.layout == "split":
        assert vq.last_used_idx == dq.used_idx == int(vq.ring.used_idx[0])
    else:
        assert (vq.last_used_idx, vq.used_wrap_counter) == (dq.used_idx, dq.used_wrap_counter)
    assert vq.num_free == vq.num and vq.num_in_flight == 0


def rounds(num: int):
    """Batch sizes 1..num, each answered all at once, one per buffer and in random batches."""
    for k in range(1, num + 1):
        for style in ("all", "one", "random"):
            yield k, style


@pytest.mark.parametrize("layout", LAYOUTS)
def test_per_buffer_api_every_batch_size(mem, layout):
    """get_buf / wait_used: every buffer comes back once, in order, the batch's last with the len
    the device gave, the others with their writable length and len_reported False; both sides
    stay in step, across the 16-bit used idx wrap (split) and many wrap counter flips (packed)."""
    num, rnd = 16, random.Random(279)
    vq, dq = ring_pair(mem, layout, num)
    total, cycles = 0, (161 if layout == "split" else 8)  # 161 * 408 buffers: past 65535
    for _ in range(cycles):
        for k, style in rounds(num):
            chains = [vq.add([], [8 + i % 3], token=total + i) for i in range(k)]
            vq.publish()
            heads, expect, reported = answer(dq, k, partition(k, style, rnd), rnd)
            got = vq.wait_used(k, 1.0)
            assert vq.get_buf() is None
            assert got == chains and [c.head for c in got] == heads
            assert [c.used_len for c in got] == expect
            assert [c.len_reported for c in got] == reported
            for c in got:
                vq.release(c)
            in_step(vq, dq)
            total += k
    if layout == "split":
        assert total > 0x10000
    else:
        assert vq.used_wraps > 100


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batch_api_every_batch_size(mem, layout):
    """add_batch / get_used_batch (max_count varied) / wait_used_batch: the same accounting."""
    num, rnd = 16, random.Random(2_8_8)
    vq, dq = ring_pair(mem, layout, num)
    buf = mem.alloc(8, 8)
    total, cycles = 0, (161 if layout == "split" else 8)
    for _ in range(cycles):
        for k, style in rounds(num):
            ids = vq.add_batch((), (Sg(buf, 8),), k)
            vq.publish()
            heads, expect, _ = answer(dq, k, partition(k, style, rnd), rnd)
            assert ids.tolist() == heads
            got_ids, got_lens = [], []
            while len(got_ids) < k:
                if rnd.random() < 0.5:
                    i, n = vq.get_used_batch(rnd.choice([None, 1, 2, 5, k]))
                else:
                    i, n = vq.wait_used_batch(k - len(got_ids), 1.0)
                got_ids += i.tolist()
                got_lens += n.tolist()
            assert got_ids == heads and got_lens == expect
            assert len(vq.get_used_batch()[0]) == 0
            in_step(vq, dq)
            total += k
    if layout == "split":
        assert total > 0x10000


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batches_of_multi_descriptor_buffers(mem, layout):
    """Buffers of 1 to 3 descriptors in one batch: split frees every chain, packed skips every
    descriptor of the batch (2.8.8: "skips forward in the ring according to the size of the batch")."""
    vq, dq = ring_pair(mem, layout, 16)
    rnd = random.Random(3)
    for r in range(200):
        shapes = [([], [8]), ([b"abc"], [4]), ([b"ab"], [2, 6])]
        chains, used = [], 0
        while True:
            out, in_ = shapes[rnd.randrange(3)]
            if used + len(out) + len(in_) > 16:
                break
            chains.append(vq.add(out, in_, token=len(chains)))
            used += len(out) + len(in_)
        vq.publish()
        k = len(chains)
        heads, expect, reported = answer(dq, k, partition(k, ("all", "random")[r % 2], rnd), rnd)
        got = vq.wait_used(k, 1.0)
        assert got == chains and [c.used_len for c in got] == expect and [c.len_reported for c in got] == reported
        for c in got:
            vq.release(c)
        in_step(vq, dq)


# -- what the driver refuses (values read from the device are untrusted) -------------------------
def split_bare(mem, n: int = 4):
    """A split queue of 8 with ``n`` 8-byte writable buffers available; the test writes the used ring."""
    vq = SplitVirtqueue(mem, 0, 8, lambda q: None, features=F_IN_ORDER, name="bare")
    chains = [vq.add([], [8], token=i) for i in range(n)]
    vq.publish()
    return vq, chains


def take(vq, api: str):
    return vq.get_buf() if api == "get_buf" else vq.get_used_batch()


APIS = ("get_buf", "get_used_batch")


@pytest.mark.parametrize("api", APIS)
def test_used_idx_short_of_the_batch_is_in_order_violation(mem, api):
    """An elem naming the 3rd oldest buffer is a batch of 3; used idx moved by 1 does not fit it."""
    vq, chains = split_bare(mem)
    vq.ring.used_ring[0] = (chains[2].head, 8)
    vq.ring.used_idx[0] = 1
    with pytest.raises(InvalidUsedIdx) as e:
        take(vq, api)
    assert e.value.clause == IN_ORDER and "batch of 3" in e.value.expected and "used idx 1" in e.value.observed
    with pytest.raises(InvalidUsedIdx):  # the queue stays broken
        vq.get_buf()


@pytest.mark.parametrize("api", APIS)
def test_elem_naming_a_buffer_an_earlier_batch_implied(mem, api):
    """Batch of 2 at slot 0, then at slot 2 an elem naming the first buffer again."""
    vq, chains = split_bare(mem)
    vq.ring.used_ring[0] = (chains[1].head, 8)
    vq.ring.used_ring[2] = (chains[0].head, 8)
    vq.ring.used_idx[0] = 3
    with pytest.raises(InvalidUsedId) as e:
        take(vq, api) if api == "get_used_batch" else vq.wait_used(3, 0.1)
    # One read of both elems calls it implied; get_buf, a batch at a time, finds it no longer in flight.
    why = "implied" if api == "get_used_batch" else "not the head of a buffer in flight"
    assert e.value.clause == "def.split.used-elem-id" and why in e.value.message and "id 0 at used ring slot 2" in e.value.observed


@pytest.mark.parametrize("api", APIS)
def test_elem_naming_no_buffer_in_flight(mem, api):
    vq, chains = split_bare(mem)
    vq.ring.used_ring[0] = (7, 8)
    vq.ring.used_idx[0] = 1
    with pytest.raises(InvalidUsedId) as e:
        take(vq, api)
    assert e.value.clause == "def.split.used-elem-id" and "id 7" in e.value.observed


@pytest.mark.parametrize("api", APIS)
def test_len_beyond_the_last_buffer(mem, api):
    """The elem's len is the last buffer's: 9 bytes do not fit its 8."""
    vq, chains = split_bare(mem)
    vq.ring.used_ring[0] = (chains[1].head, 9)
    vq.ring.used_idx[0] = 2
    with pytest.raises(InvalidUsedLen) as e:
        take(vq, api)
    assert e.value.expected == "len <= 8" and f"id {chains[1].head}" in e.value.observed


@pytest.mark.parametrize("api", APIS)
def test_skipped_slots_are_not_read(mem, api):
    """Garbage in the slots a batch skips is never taken for used elems (2.7.9: not written)."""
    vq, chains = split_bare(mem)
    vq.ring.used_ring[:] = (0xBAD, 0xFFFF_FFFF)
    vq.ring.used_ring[0] = (chains[3].head, 5)
    vq.ring.used_idx[0] = 4
    if api == "get_buf":
        got = vq.wait_used(4, 0.1)
        assert got == chains and [c.used_len for c in got] == [8, 8, 8, 5]
    else:
        ids, lens = vq.get_used_batch()
        assert ids.tolist() == [c.head for c in chains] and lens.tolist() == [8, 8, 8, 5]
    assert vq.num_in_flight == 0 and vq.last_used_idx == 4


def test_packed_batch_naming_an_unpublished_buffer(mem):
    """A used descriptor whose in-order batch would include a buffer not yet made available."""
    vq = PackedVirtqueue(mem, 0, 8, lambda q: None, features=F_IN_ORDER | PACKED, name="bare")
    a = [vq.add([], [8], token=i) for i in range(2)]
    vq.publish()
    late = vq.add([], [8], token=2)  # written, its flags not yet stored
    ring = vq.ring
    ring.desc_id[0], ring.desc_len[0] = late.head, 8
    ring.desc_flags[0] = C.VIRTQ_DESC_F_AVAIL | C.VIRTQ_DESC_F_USED | C.VIRTQ_DESC_F_WRITE
    with pytest.raises(InvalidUsedId) as e:
        vq.get_buf()
    assert e.value.clause == IN_ORDER and f"id {late.head}, the 3rd oldest" in e.value.observed
    del a


# -- the models ---------------------------------------------------------------------------------
def bring_up(spec: str, layout: str):
    ops = open_target(parse_target(spec))
    d = VirtioDriver(ops)
    f = d.wanted_features() | F_IN_ORDER
    f = f | PACKED if layout == "packed" else f & ~PACKED
    assert d.negotiate(f)
    vqs = d.find_vqs([VqInfo(n) for n in d.default_vq_names()])
    d.driver_ok()
    return ops, vqs


@pytest.mark.parametrize("mode", ("notify", "threaded"))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_rng_model_answers_a_pass_with_one_entry(layout, mode):
    """The reference model batches as 2.7.9 / 2.8.8 allow; with in_order_batch_max = 1 it writes
    one entry per buffer."""
    for one_each in (False, True):
        ops, vqs = bring_up(f"model:rng,mode={mode}", layout)
        try:
            ops.device.in_order_batch_max = int(one_each)
            vq = vqs[0]
            for r in range(40):
                chains = [vq.add([], [16], token=i) for i in range(1 + r % vq.num)]
                vq.kick()
                got = vq.wait_used(len(chains), 5.0)
                assert got == chains and all(c.used_len == 16 for c in got)
                if mode == "notify":
                    # The model took all of them in the kick: one entry, or one per buffer.
                    assert [c.len_reported for c in got] == ([True] * len(got) if one_each else [False] * (len(got) - 1) + [True])
                    if layout == "split":
                        s = (vq.last_used_idx - len(chains)) % vq.num
                        assert int(vq.ring.used_ring[s, 0]) == chains[-1 if not one_each else 0].head
                for c in got:
                    vq.release(c)
        finally:
            ops.close()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_blk_model_in_order_batches(layout):
    """blk under IN_ORDER: writes and read backs in batches, data and status intact."""
    ops, vqs = bring_up("model:blk", layout)
    try:
        vq = vqs[0]
        for r in range(30):
            n = 1 + r % 8
            data = [bytes([r, i]) * 256 for i in range(n)]
            writes = [vq.add([blk_outhdr(C.VIRTIO_BLK_T_OUT, 2 * i), data[i]], [1], token=i) for i in range(n)]
            vq.kick()
            assert vq.wait_used(n, 5.0) == writes
            reads = [vq.add([blk_outhdr(C.VIRTIO_BLK_T_IN, 2 * i)], [512, 1], token=i) for i in range(n)]
            vq.kick()
            got = vq.wait_used(n, 5.0)
            assert got == reads
            for i, c in enumerate(got):
                back = vq.read_in(c, c.writable)
                assert back[:512] == data[i] and back[512] == C.VIRTIO_BLK_S_OK
            for c in writes + reads:
                vq.release(c)
    finally:
        ops.close()


class _Recorder:
    def __init__(self):
        self.runs = []

    def push_in_order_run(self, heads, ends, lens):
        self.runs.append((heads.tolist(), ends.tolist(), lens.tolist()))


def test_batcher_ends_a_batch_at_a_partly_used_buffer_and_at_its_limit():
    """Only a batch's last buffer may be used less than completely (2.7.9: the skipped ones are
    "assumed to have been used ... completely"); the size limit is asked anew for each batch."""
    q = _Recorder()
    sizes = iter([3, 2, 0, 0])
    b = InOrderBatcher(q, lambda: next(sizes))
    for h, n, w in [(0, 8, 8), (1, 4, 8), (2, 8, 8), (3, 8, 8), (4, 8, 8), (5, 8, 8), (6, 8, 8)]:
        b.add(h, n, w)
    b.flush()
    assert q.runs == [([0, 1], [1], [4]), ([2, 3], [1], [8]), ([4, 5, 6], [2], [8])]
    q2 = _Recorder()
    b = InOrderBatcher(q2, lambda: 0)
    b.add(9, 8, 8)
    b.add_run(np.array([10, 11, 12, 13]), np.array([8, 2, 8, 8], dtype=np.uint32), np.array([8, 8, 8, 8]))
    assert q2.runs == [([9, 10, 11], [2], [2])]  # 12 and 13, used completely, may go on
    b.add_run(np.array([14, 15]), np.array([8, 3], dtype=np.uint32), np.array([8, 8]))
    b.flush()
    assert q2.runs[1:] == [([12, 13, 14, 15], [3], [3])]


# -- the unusual in-order devices under the suites ----------------------------------------------
def _unusual():
    from tests.unusual.in_order import DEVICES

    return [pytest.param(d, id=d.name) for d in DEVICES]


@pytest.mark.selftest_slow
@pytest.mark.parametrize("device", _unusual())
def test_unusual_in_order_device_is_conformant(device, tmp_path):
    from tests.test_mutants import harness_errors, run_suites

    report = run_suites(device.target, tmp_path)
    assert not harness_errors(report), "harness errors:\n  " + "\n  ".join(harness_errors(report))
    failed = [f"{r['nodeid']}: {r['message']}" for r in report["results"] if r["kind"] == "violation"]
    assert not failed, f"{device.name} ({device.allows}) failed:\n  " + "\n  ".join(failed)
    assert report["verdict"] == "CONFORMANT", report["verdict"]
