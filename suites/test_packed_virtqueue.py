"""VIRTIO 1.4, 2.8: packed virtqueues -- descriptor lists and indirect tables, buffer ids, used
descriptors and both ring wrap counters, the descriptor ring's ownership rules, driver event
suppression in its three modes, and queue sizes that are not powers of two.

Every test negotiates VIRTIO_F_RING_PACKED on top of the harness's default features (which never
include it, so the split-ring suite keeps testing split rings) and skips, naming the feature, when
the device does not offer it. The workloads (virtio/workloads.py) run unchanged on packed queues.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from virtio import constants as C
from virtio.buffers import Sg
from virtio.checks import blame, control, require, wait_until
from virtio.errors import DeviceViolation, HarnessError, RingTooSmall
from virtio.messages import blk_outhdr
from virtio.workloads import POISON, BlkWorkload, Shape

pytestmark = pytest.mark.usefixtures("target_spec")

SETTLE = 0.03  # time a device gets to do something it should not do
PACKED = C.VIRTIO_F_RING_PACKED
INDIRECT = C.VIRTIO_F_INDIRECT_DESC
EVENT_IDX = C.VIRTIO_F_EVENT_IDX

FRAMING = "dev.basic.message-framing.1"
RING_ORDER = "dev.basic.packed-virtqueues.1"
COMPLETION_ORDER = "dev.basic.packed-virtqueues.2"
READONLY = "dev.basic.packed-virtqueues.the-virtqueue-descriptor-table.1"
AVAIL_CHANGE = "dev.basic.packed-virtqueues.the-virtqueue-descriptor-table.2"
USED_UNTOUCHED = "dev.basic.packed-virtqueues.the-virtqueue-descriptor-table.3"
LIST_ORDER = "dev.basic.packed-virtqueues.scatter-gather-support.1"
USED_FLAGS = "def.packed.used-flags"
USED_ID = "def.packed.used-buffer-id"
USED_POSITION = "def.packed.used-position"
USED_LEN = "def.packed.used-len"
WRITABLE_BOUNDS = "def.packed.writable-bounds"
INDIRECT_TABLE = "def.packed.indirect-table"
EVENT_ENABLE = "def.packed.driver-event-enable"
EVENT_DISABLE = "def.packed.driver-event-disable"
EVENT_DESC = "def.packed.driver-event-desc"
EVENT_DESC_ONLY = "def.packed.driver-event-desc-only"
DEVICE_EVENT_FLAGS = "def.packed.device-event-flags"
PROCESS = "def.basic.buffers-are-used"


# -- helpers ---------------------------------------------------------------------------------------
def start(session, *, want=(), refuse=(), size=None, at_most=None):
    """A device with packed virtqueues of ``size`` descriptors each (default the device maximum;
    a size above it skips, RingTooSmall), or of ``at_most`` descriptors where the device allows
    that many, else of its maximum (for tests that need no particular size, only a bounded one)."""
    sizes = None
    if size is not None:
        sizes = dict.fromkeys(session.driver.default_vq_names() + ["controlq"], size)
    elif at_most is not None:
        ops = session.driver.ops
        names = ["receiveq1", "transmitq1", "controlq"] if session.driver.device_id == C.VIRTIO_ID_NET else session.driver.default_vq_names()
        sizes = {n: min(at_most, ops.vq_num_max(i)) for i, n in enumerate(names)}
    work = session.start(want=(PACKED, *want), refuse=refuse, sizes=sizes)
    for vq in work.vqs:
        if vq is not None and getattr(vq, "layout", None) != "packed":
            raise HarnessError(f"{vq.name}: VIRTIO_F_RING_PACKED negotiated but the transport built a {vq.layout} queue")
    return work


def used_count(vq) -> int:
    """Ring positions the driver has consumed since the start (laps * size + position)."""
    return vq.used_wraps * vq.num + vq.last_used_idx


def pieces(sgs, parts: int) -> list:
    """Cut each scatter-gather element into up to ``parts`` consecutive pieces (one list then)."""
    out = []
    for s in sgs:
        k = max(1, min(parts, s.len))
        step, rem = divmod(s.len, k)
        addr = s.addr
        for i in range(k):
            n = step + (1 if i < rem else 0)
            out.append(Sg(addr, n))
            addr += n
    return out


def _blk_element_order(work) -> str | None:
    """For blk: are the elements of a list used in the order they were made available (2.8.18)?
    Writes four distinct sectors from four elements and reads them back with one, then the
    other way round; a permutation of the sectors names the direction that was out of order."""
    if work.read_only:
        return None
    vq = work.vq
    base = work.sector_base  # the workload's region: a zoned device's conventional zones
    blocks = [bytes([0x10 + i]) * C.SECTOR_SIZE for i in range(4)]
    whole = b"".join(blocks)

    def run(out, in_, what) -> bytes:
        c = vq.add(out, in_, what)
        vq.kick()
        work.wait(vq, c, what)
        data = vq.read_in(c, c.writable)
        vq.release(c)
        return data

    def permuted(data: bytes) -> bool:
        got = [data[i * C.SECTOR_SIZE : (i + 1) * C.SECTOR_SIZE] for i in range(4)]
        return data != whole and sorted(got) == sorted(blocks)

    run([blk_outhdr(C.VIRTIO_BLK_T_OUT, base)] + blocks, [1], "order probe: a write from four elements")
    back = run([blk_outhdr(C.VIRTIO_BLK_T_IN, base)], [len(whole), 1], "order probe: a read into one element")
    if permuted(back[:-1]):
        return "four device-readable elements were consumed out of order (the sectors read back permuted)"
    run([blk_outhdr(C.VIRTIO_BLK_T_OUT, base), whole], [1], "order probe: a write from one element")
    back = run([blk_outhdr(C.VIRTIO_BLK_T_IN, base)], [C.SECTOR_SIZE] * 4 + [1], "order probe: a read into four elements")
    if permuted(back[:-1]):
        return "four device-writable elements were filled out of order (the sectors came back permuted)"
    return None


def direct_roundtrip(work, shape: Shape, size: int = 2048):
    """A roundtrip of direct descriptor lists. A blk data mismatch over several elements is
    checked for an element-order fault, which is charged to 2.8.18 instead of to framing."""
    try:
        return work.roundtrip(shape, size=size)
    except DeviceViolation as e:
        if e.clause == FRAMING and shape.segments > 1 and isinstance(work, BlkWorkload):
            why = _blk_element_order(work)
            if why:
                raise DeviceViolation(
                    LIST_ORDER, why, expected="elements used in the order made available", observed=e.message, queue=e.queue
                ) from e
        raise


def cycled_segments(vq, i: int) -> int:
    """1, 2, 3, 1, ... descriptors per side, for lists that straddle the ring's end in many ways;
    always 1 on a ring of fewer than 16 descriptors, which a longer request may not fit."""
    return 1 + i % 3 if vq.num >= 16 else 1


def reach_second_lap(session, work) -> None:
    """Push cheap buffers through ``work.vq`` until the driver's avail wrap counter has flipped
    and every buffer is back: the next descriptor then lies in the ring's second lap."""
    vq = work.vq
    out, in_ = work.light_buffers()
    per = len(out) + len(in_)
    while vq.avail_wraps == 0:
        n = max(1, min(vq.num - vq.next_avail_idx, vq.num // 2) // per)
        for _ in range(n):
            vq.add(out, in_, "fill")
        vq.kick()
        vq.wait_used(n, session.timeout, awaited=f"{n} cheap buffers (filling the first lap)")


# -- descriptor lists (2.8.5, 2.8.6, 2.8.18) --------------------------------------------------------
@pytest.mark.clause(FRAMING, LIST_ORDER, USED_ID, USED_LEN, PROCESS)
@pytest.mark.parametrize("segments", [1, 2, 3, 8])
def test_descriptor_list_layouts(session, segments):
    """The same request as a list of 1..8 descriptors per side gives the same result."""
    work = start(session, refuse=(INDIRECT,))
    direct_roundtrip(work, Shape(segments=segments))


@pytest.mark.device_types("blk")
@pytest.mark.clause(LIST_ORDER)
def test_list_elements_used_in_order(session):
    """Sectors written from four elements and read into four come back in their order (2.8.18)."""
    work = start(session, refuse=(INDIRECT,))
    why = _blk_element_order(work)
    require(why is None, LIST_ORDER, why or "", expected="elements used in the order made available", queue=work.vq.name)


@pytest.mark.clause(USED_ID)
def test_buffer_id_from_last_descriptor(session):
    """2.8.6: the buffer id is in the last descriptor of a list. The driver writes it there only,
    and an id no buffer has in the other descriptors; the device must return the right one."""
    work = start(session, refuse=(INDIRECT,))
    with control(PROCESS, "a list of 2 descriptors per side, the id in every descriptor (as Linux does)", variant=(USED_ID,)):
        direct_roundtrip(work, Shape(segments=2))
    for vq in work.vqs:
        if vq is not None:
            vq.id_in_every_desc = False
    for segments in (2, 3):
        blame(
            USED_ID,
            f"a list of {segments} descriptors per side failed once only its last descriptor carried the buffer id",
            lambda segments=segments: direct_roundtrip(work, Shape(segments=segments)),
            ring_violations_too=True,
        )


@pytest.mark.clause(USED_ID, PROCESS)
def test_buffer_ids_independent_of_slots(session):
    """Several buffers in flight at once, waited for in reverse order: each comes back under its
    own buffer id (ids are tokens the driver reuses in a different order from the ring slots)."""
    work = start(session)
    with control(PROCESS, "a single exchange", variant=(USED_ID,)):
        work.roundtrip()
    vq = work.vq
    mismatched = 0
    for rnd in range(3):
        exchanges = [work.submit(Shape(), size=1024) for _ in range(6)]
        mismatched += sum(c.head != c.ids[0] for ex in exchanges for c in ex.chains)
        work.kick()

        def finish_all(exchanges=exchanges):
            for ex in reversed(exchanges):
                work.finish(ex)

        blame(USED_ID, f"round {rnd}: buffers in flight together came back wrong (a single one worked)", finish_all,
              ring_violations_too=True)
        require(not vq.in_flight, USED_ID, "buffers in flight after their exchanges", observed=sorted(vq.in_flight), queue=vq.name)
    if not mismatched:
        raise HarnessError("the driver never gave a buffer an id different from its ring slot")


@pytest.mark.clause(USED_POSITION)
def test_used_descriptors_follow_each_other(session):
    """Lists of 1 to 4 descriptors in one batch: each used descriptor lies right after the whole
    list of the one before it, carrying the id of the buffer completed there (2.8.2). (The
    order of completion itself, 2.8.12's second statement, cannot be seen from the driver when
    the device completes buffers in the order it takes them.)"""
    work = start(session, refuse=(INDIRECT,))
    vq = work.vq
    vq.disable_cb()
    out, in_ = work.light_buffers()
    lengths = (1, 3, 2, 4, 1, 2)
    begin = used_count(vq)
    chains = []
    for k in lengths:
        # Cut the bigger side into pieces so that the list has about k descriptors.
        if sum(s.len for s in in_) >= sum(s.len for s in out):
            chains.append(vq.add(out, pieces(in_, k), f"list of {k}"))
        else:
            chains.append(vq.add(pieces(out, k), in_, f"list of {k}"))
    vq.kick()
    got = vq.wait_used(len(chains), session.timeout, awaited="a batch of lists of different lengths")
    same = sorted(id(c) for c in got) == sorted(id(c) for c in chains)
    require(same, USED_ID, "the batch came back with other buffers than it sent", queue=vq.name)
    pos = begin
    BOTH = C.VIRTQ_DESC_F_AVAIL | C.VIRTQ_DESC_F_USED
    for c in got:
        slot = pos % vq.num
        flags = int(vq.ring.desc_flags[slot])
        require(
            int(vq.ring.desc_id[slot]) == c.head and flags & BOTH in (0, BOTH),
            USED_POSITION,
            "used descriptors are not written one after another",
            expected=f"used descriptor of buffer {c.head} at slot {slot}",
            observed=f"id {int(vq.ring.desc_id[slot])}, flags {flags:#06x}",
            queue=vq.name,
        )
        pos += c.ndesc
    end = begin + sum(c.ndesc for c in chains)
    require(used_count(vq) == end, USED_POSITION, "used descriptors did not cover the batch", expected=end, observed=used_count(vq), queue=vq.name)


@pytest.mark.clause(USED_POSITION)
def test_no_used_descriptor_without_buffer(session):
    """Once every buffer is back, the next slot holds no used descriptor: the device marks used only
    what the driver made available (2.8.2)."""
    work = start(session)
    for _ in range(3):
        work.roundtrip()
        time.sleep(SETTLE)
        for vq in work.vqs:
            if vq is not None and not vq.in_flight:
                extra = vq.get_buf()  # validates: a used descriptor here raises
                require(extra is None, USED_POSITION, "a buffer came back that was not in flight", observed=extra, queue=vq.name)


# -- wrap counters and queue sizes (2.8.1, 2.8.10.1) -----------------------------------------------
@pytest.mark.heavy
@pytest.mark.clause(USED_FLAGS, USED_POSITION, USED_ID, PROCESS)
def test_ring_wraparound(session):
    """Many laps of a 100-descriptor ring (the device maximum if smaller) with lists of 1..3
    descriptors straddling its end: every used descriptor must carry the used wrap counter of its
    lap, and both wrap counters flip once per lap; then real requests across two more laps."""
    work = start(session, refuse=(INDIRECT,), at_most=100)
    vq = work.vq
    vq.disable_cb()  # poll: notifications are not what this test is about
    out, in_ = work.light_buffers()
    big = in_ if sum(s.len for s in in_) >= sum(s.len for s in out) else out
    total, k = 0, 0
    laps = 8
    while total < laps * vq.num + vq.num // 3:
        batch, descs = [], 0
        while descs < max(1, vq.num // 3):
            k = k % min(3, vq.num) + 1  # a list is never longer than the ring
            lst = (out, pieces(in_, k)) if big is in_ else (pieces(out, k), in_)
            c = vq.add(*lst, "wrap")
            batch.append(c)
            descs += c.ndesc
        vq.kick()
        vq.wait_used(len(batch), session.timeout, awaited=f"{len(batch)} used buffers after {total} descriptors (wrap run)")
        total += descs
        require(
            (vq.used_wraps, vq.last_used_idx, vq.used_wrap_counter) == (total // vq.num, total % vq.num, 1 ^ (total // vq.num & 1)),
            USED_POSITION,
            "used descriptors do not account for every descriptor made available",
            expected=f"position {total % vq.num}, lap {total // vq.num}",
            observed=f"position {vq.last_used_idx}, used wrap counter {vq.used_wrap_counter}, {vq.used_wraps} laps",
            queue=vq.name,
        )
    if vq.avail_wraps != vq.used_wraps or vq.avail_wrap_counter != vq.used_wrap_counter:
        raise HarnessError(
            f"driver wrap counters disagree: avail {vq.avail_wraps}/{vq.avail_wrap_counter}, used {vq.used_wraps}/{vq.used_wrap_counter}"
        )
    # Real requests (data checked) on a fresh device: the cheap buffers may have left state behind
    # (a console echoes them).
    work = start(session, refuse=(INDIRECT,), at_most=100)
    vq = work.vq
    i = 0
    while vq.used_wraps < 2:
        i += 1
        direct_roundtrip(work, Shape(segments=cycled_segments(vq, i)), size=1024)


@pytest.mark.clause(USED_FLAGS, USED_POSITION, PROCESS)
@pytest.mark.parametrize("size", ["100", "255", "max"])
def test_queue_sizes(session, size):
    """Queue sizes need not be powers of two (2.8.10.1): two laps of real requests on rings of
    100 and 255 descriptors and of the device's maximum size."""
    num = None if size == "max" else int(size)
    if num is not None and num > session.driver.ops.vq_num_max(0):
        pytest.skip(f"device queue maximum {session.driver.ops.vq_num_max(0)} is below {num}")
    work = start(session, size=num)
    vq = work.vq
    if num is not None and vq.num != num:
        raise HarnessError(f"asked for a queue of {num}, got {vq.num}")
    i = 0
    while vq.used_wraps < 2:
        i += 1
        direct_roundtrip(work, Shape(segments=cycled_segments(vq, i)), size=1024)


# -- the descriptor ring's ownership rules (2.8.15) -------------------------------------------------
@pytest.mark.clause(READONLY)
def test_device_readable_buffers_not_written(session):
    """Every device-readable element is compared before and after use (the workloads do it)."""
    work = start(session, refuse=(INDIRECT,))
    for segments in (1, 4):
        direct_roundtrip(work, Shape(segments=segments), size=1024)


@pytest.mark.clause(WRITABLE_BOUNDS)
@pytest.mark.parametrize("size", [1, 7, 512, 4096])
def test_device_writes_inside_buffers(session, size):
    """Every element the harness makes available lies between canary bytes (virtio/memory.py),
    checked by the driver side when its buffer comes back: a device writing before or past an
    element it was given is caught there (2.8.4), in this test and in every other."""
    work = start(session, refuse=(INDIRECT,))
    for segments in (1, 2):
        direct_roundtrip(work, Shape(segments=segments), size=size)


def _not_used_until_available(session, work, bogus_flags: int, what: str) -> None:
    """Write a whole descriptor at the next slot with ``bogus_flags`` (AVAIL unchanged), notify,
    and check the device leaves it; then make it available for real and check it is used."""
    vq = work.vq
    out, in_ = work.light_buffers()
    chain = vq.add(out, in_, "held back")
    slot = chain.ids[0]
    vq.ring.desc_flags[slot] = bogus_flags
    before = vq.ring.desc[slot].copy()
    vq.notify()
    time.sleep(SETTLE)
    now = vq.ring.desc[slot].copy()
    require(
        now == before,
        AVAIL_CHANGE,
        f"device used a descriptor whose AVAIL bit had not changed ({what})",
        expected=f"slot {slot} untouched: id {int(before['id'])}, flags {int(before['flags']):#06x}",
        observed=f"id {int(now['id'])}, len {int(now['len'])}, flags {int(now['flags']):#06x}",
        queue=vq.name,
    )
    vq.kick_prepare()  # stores the real flags
    vq.notify()
    got = vq.wait_used(1, session.timeout, awaited="the descriptor once made available")[0]
    if got is not chain:
        raise HarnessError("another buffer came back first")


@pytest.mark.clause(AVAIL_CHANGE)
def test_descriptor_used_only_once_available(session):
    """A descriptor whose AVAIL bit did not change is not the device's (2.8.15): in the first lap
    one marked AVAIL=0 USED=1 (the second lap's pattern), in the second lap one marked AVAIL=1
    USED=0 (the first lap's pattern)."""
    work = start(session, refuse=(INDIRECT,), at_most=64)
    _not_used_until_available(session, work, C.VIRTQ_DESC_F_USED, "first lap, flags AVAIL=0 USED=1 on a zeroed ring")
    reach_second_lap(session, work)
    _not_used_until_available(session, work, C.VIRTQ_DESC_F_AVAIL, "second lap, flags AVAIL=1 USED=0 as in the first lap")


@pytest.mark.clause(USED_UNTOUCHED)
def test_used_descriptors_left_alone(session):
    """Descriptors the device marked used stay as they are while the driver has not reused them."""
    work = start(session, refuse=(INDIRECT,))
    vq = work.vq
    for _ in range(3):
        direct_roundtrip(work, Shape(segments=2))
    end = vq.last_used_idx
    if vq.used_wraps:
        raise RingTooSmall(vq.name, "a ring that six roundtrips do not wrap", f"a queue of {vq.num}, wrapped by three")
    snapshot = vq.ring.desc[:end].copy()
    for _ in range(3):
        direct_roundtrip(work, Shape(segments=2))
    time.sleep(SETTLE)
    if vq.next_avail_idx < end and vq.avail_wraps:
        raise HarnessError("the driver reused the checked slots")
    changed = np.nonzero(vq.ring.desc[:end] != snapshot)[0]
    require(
        changed.size == 0,
        USED_UNTOUCHED,
        "device changed descriptors after marking them used",
        expected=f"slots 0..{end - 1} unchanged",
        observed="; ".join(f"slot {i}: {snapshot[i].tolist()} -> {vq.ring.desc[i].tolist()}" for i in changed[:3]),
        queue=vq.name,
    )


@pytest.mark.clause(RING_ORDER)
def test_descriptors_taken_in_ring_order(session):
    """2.8.12: the device starts on descriptors in ring order. With the next descriptor not yet
    available but the one after it available, the device must wait; both go once the first is."""
    work = start(session, refuse=(INDIRECT,), at_most=64)
    reach_second_lap(session, work)
    vq = work.vq
    out, in_ = work.light_buffers()
    first = vq.add(out, in_, "first")
    second = vq.add(out, in_, "second")
    before = vq.ring.desc.copy()
    vq.expose_pending(1)  # the second only
    exposed = vq.ring.desc.copy()
    vq.notify()
    time.sleep(SETTLE)
    now = vq.ring.desc.copy()
    changed = np.nonzero(now != exposed)[0]
    require(
        changed.size == 0,
        RING_ORDER,
        "device used a descriptor past the next one in ring order",
        expected=f"nothing used while slot {first.ids[0]} is not available (slot {second.ids[0]} is)",
        observed="; ".join(f"slot {i}: flags {int(before['flags'][i]):#06x} -> {int(now['flags'][i]):#06x}" for i in changed[:3]),
        queue=vq.name,
    )
    vq.kick_prepare()
    vq.notify()
    got = vq.wait_used(2, session.timeout, awaited="both buffers once the first is available too")
    require({id(c) for c in got} == {id(first), id(second)}, USED_ID, "other buffers came back", queue=vq.name)


def _blk_status(vq, chain) -> int:
    return vq.mem.read(chain.in_sgs[-1].addr + chain.in_sgs[-1].len - 1, 1)[0]


@pytest.mark.device_types("blk")
@pytest.mark.clause(COMPLETION_ORDER)
def test_used_descriptors_in_completion_order(session):
    """2.8.12: the device writes used descriptors in the order it completes buffers, which need
    not be the order they were made available. GET_ID, then a read behind it, in one notification:
    once the read is complete (its status byte written) while GET_ID is not, the next used
    descriptor must be the read's. A device that completes both in order leaves nothing to judge."""
    work = start(session, refuse=(C.VIRTIO_F_IN_ORDER,))
    vq = work.vq
    slow = vq.add([blk_outhdr(C.VIRTIO_BLK_T_GET_ID, 0)], [C.VIRTIO_BLK_ID_BYTES, 1], "get-id")
    fast = vq.add([blk_outhdr(C.VIRTIO_BLK_T_IN, work.sector_base)], [C.SECTOR_SIZE, 1], "read")
    for c in (slow, fast):
        vq.mem.fill(c.in_sgs[-1].addr, c.in_sgs[-1].len, POISON)
    vq.kick()
    wait_until(lambda: _blk_status(vq, slow) != POISON or _blk_status(vq, fast) != POISON or vq.more_used(), session.timeout,
               "GET_ID or the read to complete (a status byte written or a used descriptor)", PROCESS,
               queue=vq.name, observed=vq.used_state, interval=0.0005)
    time.sleep(SETTLE)  # what the device completed, it has had time to return
    got = []
    while (c := vq.get_buf()) is not None:
        got.append(c)
    slow_done, fast_done = _blk_status(vq, slow) != POISON, _blk_status(vq, fast) != POISON
    if not slow_done:
        names = [c.token for c in got]
        require(
            names == (["read"] if fast_done else []),
            COMPLETION_ORDER,
            "used descriptors are not in the order the device completed the buffers",
            expected="the read's used descriptor first (the read is complete, GET_ID is not)" if fast_done else "nothing used",
            observed=f"used descriptors for {names or 'nothing'}; read status {'written' if fast_done else 'not written'}, "
            f"GET_ID status not written; {vq.used_state()}",
            queue=vq.name,
        )
    # Whatever the device still holds comes back once more work arrives.
    more = vq.add([blk_outhdr(C.VIRTIO_BLK_T_IN, 1)], [C.SECTOR_SIZE, 1], "release")
    vq.kick()
    got += vq.wait_used(3 - len(got), session.timeout, awaited="GET_ID and the read, after another request")
    require({id(c) for c in got} == {id(slow), id(fast), id(more)}, USED_ID, "other buffers came back", queue=vq.name)
    if slow_done:
        pytest.skip("the device completed GET_ID no later than the read behind it: no out-of-order completion to judge")


# -- indirect tables (2.8.7) -------------------------------------------------------------------------
INDIRECT_LAYOUTS = {
    "one-table": Shape(segments=1, indirect=True),
    "table-of-several": Shape(segments=4, indirect=True),
}


@pytest.mark.clause(INDIRECT_TABLE, PROCESS)
@pytest.mark.parametrize("layout", list(INDIRECT_LAYOUTS))
def test_indirect_descriptors(session, layout):
    work = start(session, want=(INDIRECT,))
    shape = INDIRECT_LAYOUTS[layout]
    with control(PROCESS, "the same buffer, direct", variant=(INDIRECT_TABLE,)):
        direct_roundtrip(work, Shape(segments=shape.segments))
    blame(INDIRECT_TABLE, f"a buffer that works direct failed as {layout}", lambda: work.roundtrip(shape, size=2048),
          ring_violations_too=True)


@pytest.mark.clause(INDIRECT_TABLE)
def test_write_flag_on_indirect_descriptor_ignored(session):
    work = start(session, want=(INDIRECT,))
    with control(PROCESS, "the same buffer, direct", variant=(INDIRECT_TABLE,)):
        direct_roundtrip(work, Shape(segments=2), size=1024)
    blame(INDIRECT_TABLE, "an indirect buffer failed", lambda: work.roundtrip(Shape(segments=2, indirect=True), size=1024),
          ring_violations_too=True)
    blame(
        INDIRECT_TABLE,
        "an indirect buffer failed only once VIRTQ_DESC_F_WRITE was set on its indirect descriptor",
        lambda: work.roundtrip(Shape(segments=2, indirect=True, indirect_desc_write_flag=True), size=1024),
        ring_violations_too=True,
    )


# -- driver event suppression (2.8.10) ---------------------------------------------------------------
def _exchange_counting(work):
    vq = work.vq
    before = vq.interrupts
    work.roundtrip()
    return vq, before


@pytest.mark.clause(EVENT_ENABLE)
def test_notifies_when_enabled(session):
    work = start(session, refuse=(EVENT_IDX,))
    for i in range(3):
        vq, before = _exchange_counting(work)
        require(
            vq.wait_interrupt(before, session.timeout),
            EVENT_ENABLE,
            "no used buffer notification while the driver event suppression flags are ENABLE",
            expected="a notification",
            observed=f"none within {session.timeout}s (exchange {i})",
            queue=vq.name,
        )


@pytest.mark.clause(EVENT_DISABLE)
@pytest.mark.parametrize("event_idx", [False, True], ids=["no-event-idx", "event-idx"])
def test_no_notification_when_disabled(session, event_idx):
    work = start(session, want=(EVENT_IDX,)) if event_idx else start(session, refuse=(EVENT_IDX,))
    work.vq.disable_cb()
    for i in range(3):
        vq, before = _exchange_counting(work)
        time.sleep(SETTLE)
        require(
            vq.interrupts == before,
            EVENT_DISABLE,
            "used buffer notification sent although the driver event suppression flags are DISABLE",
            expected="no notification",
            observed=f"{vq.interrupts - before} notification(s) (exchange {i})",
            queue=vq.name,
        )


def _desc_event_steps(session, work, at_ring_end: bool = False):
    """Ask (flags DESC) for a notification exactly when the first used descriptor of the third next
    exchange is written; returns the notification count seen after each of four exchanges. With
    ``at_ring_end`` that exchange is one whose descriptors reach the end of the ring."""
    vq = work.vq
    vq.disable_cb()
    per = _exchange_descriptors(work)
    if at_ring_end:
        _place_before_ring_end(work, per)
    offset, wrap = vq.position_after(2 * per)
    vq.set_driver_event(C.RING_EVENT_FLAGS_DESC, offset, wrap)
    counts = []
    first = vq.interrupts
    for step in range(4):
        before = vq.interrupts
        work.roundtrip()
        if step == 2:
            vq.wait_interrupt(before, session.timeout)
        else:
            time.sleep(SETTLE)
        counts.append(vq.interrupts - first)
    return vq, counts, (offset, wrap)


@pytest.mark.clause(EVENT_DESC)
def test_desc_event_notifies_at_descriptor(session):
    work = start(session, want=(EVENT_IDX,))
    vq, counts, (offset, wrap) = _desc_event_steps(session, work)
    require(
        counts[2] > counts[1],
        EVENT_DESC,
        "no notification when the descriptor named by the driver event suppression structure was used",
        expected=f"a notification at the third exchange (descriptor {offset}, wrap {wrap})",
        observed=f"cumulative notifications per exchange {counts}",
        queue=vq.name,
    )


@pytest.mark.clause(EVENT_DESC_ONLY)
def test_desc_event_quiet_elsewhere(session):
    work = start(session, want=(EVENT_IDX,))
    vq, counts, (offset, wrap) = _desc_event_steps(session, work)
    require(
        counts[0] == 0 and counts[1] == 0 and counts[3] == counts[2],
        EVENT_DESC_ONLY,
        "notifications sent for descriptors other than the one the driver named",
        expected=f"notifications only at the third exchange (descriptor {offset}, wrap {wrap})",
        observed=f"cumulative notifications per exchange {counts}",
        queue=vq.name,
    )


# -- device event suppression (2.8.14) ---------------------------------------------------------------
@pytest.mark.clause(DEVICE_EVENT_FLAGS)
@pytest.mark.parametrize("event_idx", [False, True], ids=["no-event-idx", "event-idx"])
def test_device_event_flags_values(session, event_idx):
    work = start(session, want=(EVENT_IDX,)) if event_idx else start(session, refuse=(EVENT_IDX,))
    allowed = {C.RING_EVENT_FLAGS_ENABLE, C.RING_EVENT_FLAGS_DISABLE} | ({C.RING_EVENT_FLAGS_DESC} if event_idx else set())
    for _ in range(4):
        work.roundtrip()
        for vq in work.vqs:
            if vq is None:
                continue
            flags = int(vq.ring.device_event_flags[0])
            require(
                flags in allowed, DEVICE_EVENT_FLAGS, "device event suppression flags outside the allowed values",
                expected=sorted(allowed), observed=flags, queue=vq.name,
            )


# -- driver event suppression across the ring wrap (2.8.10) ------------------------------------------
# Packed ring positions run 0..size-1 and the wrap counters flip at the end of the ring; an event
# offset is compared with the used range modulo the ring, its wrap bit saying which lap (Linux
# vring_packed_need_event). A device comparing plain positions agrees except where the used range
# reaches the end of the ring. These tests first push light requests (batch API, as many at a
# time as the queue holds) until the exchange two ahead ends at or crosses the end of the ring.
def _exchange_descriptors(work) -> int:
    """Ring positions one exchange takes on ``work.vq`` (measured with one exchange)."""
    begin = used_count(work.vq)
    work.roundtrip()
    return used_count(work.vq) - begin


def _place_before_ring_end(work, per: int) -> None:
    """Move the next used position so that the third exchange (of ``per`` descriptors) from there
    reaches the end of the ring; skips when light requests cannot put it there."""
    vq = work.vq
    if why := work.light_unfit():
        pytest.skip(f"cannot move the ring position: {why}")
    out, in_ = work.light_buffers()
    d = len(out) + len(in_)
    pos = vq.last_used_idx
    k = next((k for k in range(vq.num) if vq.num - per <= (pos + k * d + 2 * per) % vq.num), None)
    if k is None or 2 * per > vq.num:
        pytest.skip(f"light requests of {d} descriptors cannot put an exchange of {per} at the end of a ring of {vq.num}")
    work.push_light(k, f"on the way to ring position {(pos + k * d) % vq.num}")
    if not vq.num - per <= (vq.last_used_idx + 2 * per) % vq.num:
        raise HarnessError(f"{vq.name}: light requests left the next used position at {vq.last_used_idx}, "
                           f"not {(pos + k * d) % vq.num}")


@pytest.mark.clause(EVENT_ENABLE, PROCESS)
def test_notifies_when_enabled_across_ring_wrap(session):
    """Flags ENABLE: a notification for every exchange, those whose used descriptors reach the end
    of the ring and flip the wrap counter too."""
    work = start(session, refuse=(EVENT_IDX,))
    vq = work.vq
    vq.disable_cb()
    _place_before_ring_end(work, _exchange_descriptors(work))
    vq.enable_cb()
    for i in range(4):
        at = (vq.last_used_idx, vq.used_wrap_counter)
        vq, before = _exchange_counting(work)
        require(
            vq.wait_interrupt(before, session.timeout),
            EVENT_ENABLE,
            "no used buffer notification while the driver event suppression flags are ENABLE, at the ring's end",
            expected="a notification",
            observed=f"none within {session.timeout}s (exchange {i}, from ring position {at[0]}, used wrap counter {at[1]})",
            queue=vq.name,
        )


@pytest.mark.clause(EVENT_DESC, PROCESS)
def test_desc_event_notifies_at_descriptor_across_ring_wrap(session):
    work = start(session, want=(EVENT_IDX,))
    _, base, _ = _desc_event_steps(session, work)  # control, wherever the ring is
    if not base[2] > base[1]:
        pytest.skip("no notification at the named descriptor away from the ring's end (see def.packed.driver-event-desc)")
    vq, counts, (offset, wrap) = _desc_event_steps(session, work, at_ring_end=True)
    require(
        counts[2] > counts[1],
        EVENT_DESC,
        "no notification when the descriptor named by the driver event suppression structure was used, at the ring's end",
        expected=f"a notification at the third exchange (descriptor {offset}, wrap {wrap}; "
        "its exchange reaches the end of the ring)",
        observed=f"cumulative notifications per exchange {counts}; away from the ring's end {base}",
        queue=vq.name,
    )


@pytest.mark.clause(EVENT_DESC_ONLY)
def test_desc_event_quiet_elsewhere_across_ring_wrap(session):
    work = start(session, want=(EVENT_IDX,))
    _, base, _ = _desc_event_steps(session, work)  # control
    if not (base[0] == 0 and base[1] == 0 and base[3] == base[2]):
        pytest.skip("notifications for other descriptors even away from the ring's end (see def.packed.driver-event-desc-only)")
    vq, counts, (offset, wrap) = _desc_event_steps(session, work, at_ring_end=True)
    require(
        counts[0] == 0 and counts[1] == 0 and counts[3] == counts[2],
        EVENT_DESC_ONLY,
        "notifications sent for descriptors other than the one the driver named, at the ring's end",
        expected=f"notifications only at the third exchange (descriptor {offset}, wrap {wrap})",
        observed=f"cumulative notifications per exchange {counts}",
        queue=vq.name,
    )
