"""VIRTIO 1.4, 2.7: split virtqueues -- descriptor chains, indirect tables, the used ring,
notification suppression both ways, event index, and 16-bit index wrap-around."""

from __future__ import annotations

import time

import numpy as np
import pytest

from virtio import constants as C
from virtio.checks import blame, control, require
from virtio.workloads import POISON, RngWorkload, Shape

pytestmark = pytest.mark.usefixtures("target_spec")

SETTLE = 0.03  # time a device gets to send a notification it should not send


# -- descriptor chains (2.7.4, 2.7.5) -------------------------------------------------------------
@pytest.mark.clause("dev.basic.message-framing.1", "def.basic.buffers-are-used", "def.split.used-elem-id")
@pytest.mark.parametrize("segments", [1, 2, 3, 8])
def test_descriptor_chain_layouts(session, segments):
    """The same request split over 1..8 descriptors per side gives the same result (2.7.4.1)."""
    work = session.start(refuse=(C.VIRTIO_F_INDIRECT_DESC,))
    work.roundtrip(Shape(segments=segments), size=2048)


@pytest.mark.clause("dev.basic.virtqueues.the-virtqueue-descriptor-table.1")
def test_device_readable_buffers_not_written(session):
    """Every device-readable element is compared before and after use (2.7.5.1)."""
    work = session.start()
    for segments in (1, 4):
        ex = work.submit(Shape(segments=segments), size=1024)
        work.kick()
        work.finish(ex)  # finish() re-reads every readable element and raises if one changed


@pytest.mark.clause("def.split.writable-bounds")
@pytest.mark.parametrize("size", [1, 7, 512, 4096])
def test_device_writes_inside_buffers(session, size):
    """Every element the harness makes available lies between canary bytes (virtio/memory.py),
    checked by the driver side when its buffer comes back: a device writing before or past an
    element it was given is caught there (2.7.5), in this test and in every other."""
    work = session.start(refuse=(C.VIRTIO_F_INDIRECT_DESC,))
    for segments in (1, 2):
        work.roundtrip(Shape(segments=segments), size=size)


@pytest.mark.clause("dev.basic.virtqueues.the-virtqueue-descriptor-table.2")
def test_descriptor_table_not_written(session):
    work = session.start(refuse=(C.VIRTIO_F_INDIRECT_DESC,))
    tables = {vq.name: vq.ring.desc for vq in work.vqs if vq is not None}
    ex = work.submit(Shape(segments=3), size=1024)
    snapshot = {n: t.copy() for n, t in tables.items()}
    early = list(ex.chains)
    work.kick()
    work.finish(ex)
    # A chain the workload made available during finish() (blk's read back, after its write) was
    # written by the driver after the snapshot: its entries are checked against what the driver
    # wrote for it -- the driver never rewrites a table entry between add and the next add.
    late = [c for c in ex.chains if all(c is not e for e in early)]
    for c in late:
        table = work.vq.ring.desc
        sgs = [(s, 0) for s in c.out_sgs] + [(s, C.VIRTQ_DESC_F_WRITE) for s in c.in_sgs]
        for i, (d, (sg, write)) in enumerate(zip(c.ids, sgs)):
            last = i == len(sgs) - 1
            want = (sg.addr, sg.len, write | (0 if last else C.VIRTQ_DESC_F_NEXT), None if last else c.ids[i + 1])
            row = table[d]
            got = (int(row["addr"]), int(row["len"]), int(row["flags"]), None if last else int(row["next"]))
            require(
                got == want,
                "dev.basic.virtqueues.the-virtqueue-descriptor-table.2",
                "device modified descriptor table entries",
                expected=f"entry {d} as the driver wrote it: addr/len/flags/next {want}",
                observed=f"{got}",
                queue=work.vq.name,
            )
    for name, table in tables.items():
        rewritten = {d for c in late for d in c.ids} if name == work.vq.name else set()
        changed = [d for d in np.nonzero(table != snapshot[name])[0].tolist() if d not in rewritten]
        require(
            not changed,
            "dev.basic.virtqueues.the-virtqueue-descriptor-table.2",
            "device modified descriptor table entries",
            expected="descriptor table unchanged",
            observed=f"entries {changed[:8]} changed",
            queue=name,
        )


@pytest.mark.clause("dev.basic.virtqueues.the-virtqueue-used-ring.2")
@pytest.mark.parametrize("size", [1, 64, 4096])
def test_used_len_bytes_really_written(session, size):
    """used len never exceeds what the device wrote: no untouched 8-byte word lies below it (2.7.8.2).

    The exact used len of blk, net and console is checked by their workloads; entropy has no
    expected value, so its buffers are poisoned and read back.
    """
    work = session.start()
    if not isinstance(work, RngWorkload):
        work.roundtrip(Shape(segments=2), size=max(size, 64))
        return
    ex = work.submit(Shape(segments=1), size=size)
    work.kick()
    chain = work.vq.wait_used(1, session.timeout, awaited="entropy buffer")[0]
    data = work.vq.read_in(chain, chain.used_len)
    words = len(data) // 8
    untouched = [i for i in range(words) if data[8 * i : 8 * i + 8] == bytes([POISON]) * 8]
    require(
        not untouched,
        "dev.basic.virtqueues.the-virtqueue-used-ring.2",
        "used len covers bytes the device never wrote",
        expected=f"all of the first {chain.used_len} bytes written",
        observed=f"8-byte words {untouched[:4]} still hold the fill pattern",
        queue=work.vq.name,
    )
    del ex


# -- indirect descriptors (2.7.5.3) --------------------------------------------------------------
INDIRECT_1 = "dev.basic.virtqueues.the-virtqueue-descriptor-table.indirect-descriptors.1"
INDIRECT_2 = "dev.basic.virtqueues.the-virtqueue-descriptor-table.indirect-descriptors.2"
INDIRECT_LAYOUTS = {
    "one-table": Shape(segments=1, indirect=True),
    "table-of-several": Shape(segments=4, indirect=True),
    "direct-then-indirect": Shape(segments=3, indirect=True, direct_before_indirect=1),
}


@pytest.mark.clause("dev.basic.virtqueues.the-virtqueue-descriptor-table.indirect-descriptors.2", "def.basic.buffers-are-used")
@pytest.mark.parametrize("layout", list(INDIRECT_LAYOUTS))
def test_indirect_descriptors(session, layout):
    work = session.start(want=(C.VIRTIO_F_INDIRECT_DESC,))
    shape = INDIRECT_LAYOUTS[layout]
    with control("def.basic.buffers-are-used", "the same buffer, direct descriptors only", variant=(INDIRECT_2,)):
        work.roundtrip(Shape(segments=shape.segments), size=2048)
    blame(INDIRECT_2, f"a buffer that works with direct descriptors failed when laid out as {layout}",
          lambda: work.roundtrip(shape, size=2048), ring_violations_too=True)


@pytest.mark.clause("dev.basic.virtqueues.the-virtqueue-descriptor-table.indirect-descriptors.1")
def test_write_flag_on_indirect_descriptor_ignored(session):
    work = session.start(want=(C.VIRTIO_F_INDIRECT_DESC,))
    with control(INDIRECT_2, "the same indirect buffer, VIRTQ_DESC_F_WRITE clear", variant=(INDIRECT_1,)):
        work.roundtrip(Shape(segments=2, indirect=True), size=1024)
    blame(INDIRECT_1, "an indirect buffer failed only once VIRTQ_DESC_F_WRITE was set on its indirect descriptor",
          lambda: work.roundtrip(Shape(segments=2, indirect=True, indirect_desc_write_flag=True), size=1024),
          ring_violations_too=True)


# -- used buffer notification suppression (2.7.7) ------------------------------------------------
def _settle(vq, session) -> None:
    """Let notifications not caused by any used buffer arrive before counting: libvhost-user
    signals every call fd it is given at once ("in case of I/O hang after reconnecting"), and the
    harness may count that only after the test started (a spurious notification, which 2.7.7
    does not forbid). Waits until none came for SETTLE, at most the device timeout."""
    deadline = time.monotonic() + session.timeout
    seen = vq.interrupts
    while time.monotonic() < deadline:
        time.sleep(SETTLE)
        if vq.interrupts == seen:
            return
        seen = vq.interrupts


def _exchange_counting(work, session):
    vq = work.vq
    _settle(vq, session)
    before = vq.interrupts
    work.roundtrip()
    return vq, before


@pytest.mark.clause("dev.basic.virtqueues.used-buffer-notification-suppression.3")
def test_notifies_when_flags_zero(session):
    work = session.start(refuse=(C.VIRTIO_F_EVENT_IDX,))
    for i in range(3):
        vq, before = _exchange_counting(work, session)
        require(
            vq.wait_interrupt(before, session.timeout),
            "dev.basic.virtqueues.used-buffer-notification-suppression.3",
            "no used buffer notification while avail flags is 0",
            expected="a notification",
            observed=f"none within {session.timeout}s (exchange {i})",
            queue=vq.name,
        )


@pytest.mark.clause("dev.basic.virtqueues.used-buffer-notification-suppression.2")
def test_no_notification_when_flags_one(session):
    work = session.start(refuse=(C.VIRTIO_F_EVENT_IDX,))
    work.vq.disable_cb()
    vq, before = _exchange_counting(work, session)
    time.sleep(SETTLE)
    require(
        vq.interrupts == before,
        "dev.basic.virtqueues.used-buffer-notification-suppression.2",
        "used buffer notification sent although avail flags is VIRTQ_AVAIL_F_NO_INTERRUPT",
        expected="no notification",
        observed=f"{vq.interrupts - before} notification(s)",
        queue=vq.name,
    )


def _require_notifying(work, session, exchanges):
    """Control for tests that build on ...suppression.3: skip unless each exchange is notified."""
    for _ in range(exchanges):
        vq, before = _exchange_counting(work, session)
        if not vq.wait_interrupt(before, session.timeout):
            pytest.skip("no used buffer notification with avail flags 0 (see ...suppression.3): cannot judge this clause")


@pytest.mark.clause("dev.basic.virtqueues.used-buffer-notification-suppression.1")
def test_used_event_ignored_without_event_idx(session):
    work = session.start(refuse=(C.VIRTIO_F_EVENT_IDX,))
    vq = work.vq
    _require_notifying(work, session, 2)
    vq.set_used_event(vq.last_used_idx + 0x4000)  # far away: a device honouring it stays silent
    for i in range(2):
        vq, before = _exchange_counting(work, session)
        require(
            vq.wait_interrupt(before, session.timeout),
            "dev.basic.virtqueues.used-buffer-notification-suppression.1",
            "device followed used_event although VIRTIO_F_EVENT_IDX was not negotiated",
            expected="a notification per used buffer (flags 0)",
            observed=f"none within {session.timeout}s (exchange {i})",
            queue=vq.name,
        )


def _event_idx_steps(work, session, *, flags: int):
    """Ask for a notification exactly when the third next used elem is written; returns the
    notification count seen after each of four single exchanges."""
    vq = work.vq
    vq.disable_cb()  # with EVENT_IDX this only stops the driver rewriting used_event itself
    vq.ring.avail_flags[0] = flags
    per = work.elems_per_exchange
    # used_event: notify when the used elem at this idx is written -- the first of exchange 3.
    target = (vq.last_used_idx + 2 * per) & 0xFFFF
    vq.set_used_event(target)
    counts = []
    _settle(vq, session)
    start = vq.interrupts
    for step in range(4):
        before = vq.interrupts
        work.roundtrip()
        if step == 2:
            vq.wait_interrupt(before, session.timeout)
        else:
            time.sleep(SETTLE)
        counts.append(vq.interrupts - start)
    return vq, counts


@pytest.mark.clause("dev.basic.virtqueues.used-buffer-notification-suppression.5")
def test_event_idx_notifies_at_used_event(session):
    work = session.start(want=(C.VIRTIO_F_EVENT_IDX,))
    vq, counts = _event_idx_steps(work, session, flags=0)
    require(
        counts[2] > counts[1],
        "dev.basic.virtqueues.used-buffer-notification-suppression.5",
        "no notification when the used elem at index used_event was written",
        expected="a notification at the third exchange",
        observed=f"cumulative notifications per exchange {counts}",
        queue=vq.name,
    )


@pytest.mark.clause("dev.basic.virtqueues.used-buffer-notification-suppression.6")
def test_event_idx_quiet_elsewhere(session):
    work = session.start(want=(C.VIRTIO_F_EVENT_IDX,))
    vq, counts = _event_idx_steps(work, session, flags=0)
    # The notification at used_event is what the others are told apart from: a device that sends
    # none there (or one early instead) breaks ...suppression.5 first, whatever else it sends.
    require(
        counts[2] > counts[1],
        "dev.basic.virtqueues.used-buffer-notification-suppression.5",
        "no notification when the used elem at index used_event was written",
        expected="a notification at the third exchange",
        observed=f"cumulative notifications per exchange {counts}",
        queue=vq.name,
        implicated=("dev.basic.virtqueues.used-buffer-notification-suppression.6",),
    )
    quiet = counts[0] == 0 and counts[1] == 0 and counts[3] == counts[2]
    observed = f"cumulative notifications per exchange {counts}"
    if not quiet:
        # Tell the report which kind of stray notification it was: a device that notifies the first
        # used buffer after its ring started (it has no last-notified index to compare used_event
        # with; libvhost-user's signalled_used_valid) is quiet on the same steps run a second time.
        _, again = _event_idx_steps(work, session, flags=0)
        observed += f"; the same steps run again on the running ring: {again}"
    require(
        quiet,
        "dev.basic.virtqueues.used-buffer-notification-suppression.6",
        "notifications sent for used elems other than the one at used_event",
        expected="notifications only at the third exchange",
        observed=observed,
        queue=vq.name,
    )


@pytest.mark.clause("dev.basic.virtqueues.used-buffer-notification-suppression.4")
def test_event_idx_ignores_no_interrupt_flag(session):
    work = session.start(want=(C.VIRTIO_F_EVENT_IDX,))
    _, base = _event_idx_steps(work, session, flags=0)
    if not base[2] > base[1]:
        pytest.skip("no notification at used_event even with avail flags 0 (see ...suppression.5): bit 0 cannot be judged")
    vq, counts = _event_idx_steps(work, session, flags=C.VIRTQ_AVAIL_F_NO_INTERRUPT)
    require(
        counts[2] > counts[1],
        "dev.basic.virtqueues.used-buffer-notification-suppression.4",
        "with VIRTIO_F_EVENT_IDX the device let avail flags bit 0 suppress the used_event notification",
        expected="a notification at the third exchange",
        observed=f"cumulative notifications per exchange {counts}",
        queue=vq.name,
    )


# -- available buffer notification suppression (2.7.10) ------------------------------------------
@pytest.mark.clause(
    "dev.basic.virtqueues.available-buffer-notification-suppression.1",
    "dev.basic.virtqueues.available-buffer-notification-suppression.3",
)
@pytest.mark.parametrize("event_idx", [False, True], ids=["no-event-idx", "event-idx"])
def test_used_flags_values(session, event_idx):
    work = session.start(want=(C.VIRTIO_F_EVENT_IDX,)) if event_idx else session.start(refuse=(C.VIRTIO_F_EVENT_IDX,))
    allowed = {0} if event_idx else {0, 1}
    clause = f"dev.basic.virtqueues.available-buffer-notification-suppression.{3 if event_idx else 1}"
    for _ in range(4):
        work.roundtrip()
        for vq in work.vqs:
            if vq is None:
                continue
            flags = int(vq.ring.used_flags[0])
            require(flags in allowed, clause, "used ring flags outside the allowed values", expected=sorted(allowed), observed=flags, queue=vq.name)


@pytest.mark.clause("dev.basic.virtqueues.available-buffer-notification-suppression.5", "def.basic.buffers-are-used")
def test_spurious_notifications_handled(session):
    work = session.start()
    work.roundtrip()
    used_before = {vq.name: int(vq.ring.used_idx[0]) for vq in work.vqs if vq is not None}
    for _ in range(5):
        for vq in work.vqs:
            if vq is not None:
                vq.notify()  # nothing new was made available
    time.sleep(SETTLE)
    for vq in work.vqs:
        if vq is not None:
            require(
                int(vq.ring.used_idx[0]) == used_before[vq.name] and vq.broken is None,
                "dev.basic.virtqueues.available-buffer-notification-suppression.5",
                "device used buffers in response to notifications with nothing new available",
                expected=f"used idx {used_before[vq.name]}",
                observed=int(vq.ring.used_idx[0]),
                queue=vq.name,
            )
    require(not session.driver.status() & C.DEVICE_NEEDS_RESET, "dev.basic.virtqueues.available-buffer-notification-suppression.5", "spurious notifications put the device in DEVICE_NEEDS_RESET", observed=C.status_names(session.driver.status()))
    work.roundtrip()


# -- queue size (2.7: a power of 2, at most 32768; the driver may choose less than the maximum) -----
@pytest.mark.clause("def.basic.buffers-are-used", "def.split.used-elem-id", "def.split.used-idx")
@pytest.mark.parametrize("divisor", [2, 8, "4-entries"])
def test_queue_size_below_maximum(session, divisor):
    """A split queue of fewer entries than the device's maximum (the driver's choice, a power of 2
    as 2.7 requires): the device must index its rings by that size, so buffers keep coming back
    over several laps of the smaller ring."""
    top = session.driver.ops.vq_num_max(0)
    largest = 1 << (top.bit_length() - 1)  # the device's maximum, or the power of 2 below it
    num = 4 if divisor == "4-entries" else largest // divisor
    if not 1 <= num < top:
        pytest.skip(f"device queue maximum {top} leaves no smaller power of 2 for this case")
    work = session.start(refuse=(C.VIRTIO_F_INDIRECT_DESC,), sizes=dict.fromkeys(session.driver.default_vq_names(), num))
    vq = work.vq
    require(vq.num == num, "def.basic.buffers-are-used", "harness: the queue was not given the size asked for",
            expected=num, observed=vq.num, queue=vq.name)
    out, in_ = work.light_buffers()
    per = max(1, min(3, num // (len(out) + len(in_))))  # buffers in flight at once
    done = 0
    while done < 3 * num + 1:  # three laps and a bit: the device must wrap at ``num``
        for _ in range(per):
            vq.add(out, in_)
        vq.kick()
        vq.wait_used(per, session.timeout, awaited=f"{per} buffer(s) after {done}, on a queue of {num} (device maximum {top})")
        done += per


# -- 16-bit indexes wrap (2.7.6, 2.7.8) ------------------------------------------------------------
@pytest.mark.heavy
@pytest.mark.clause("def.split.used-idx", "def.split.used-elem-id", "def.basic.buffers-are-used")
def test_index_wraparound(session):
    """Push more than 65536 buffers through one queue: avail and used idx wrap past 65535, and
    every used elem is validated on the way (id in flight, len within the buffer, idx step 1)."""
    work = session.start(refuse=(C.VIRTIO_F_INDIRECT_DESC,))
    vq = work.vq
    vq.disable_cb()  # poll: notifications are not what this test is about
    out, in_ = work.light_buffers()
    start = vq.last_used_idx
    done = 0
    batch = max(1, vq.num // (2 * (len(out) + len(in_))))
    while done <= 65536 + vq.num:
        for _ in range(batch):
            vq.add(out, in_)
        vq.kick()
        vq.wait_used(batch, session.timeout, awaited=f"{batch} used buffers after {done} (wrap-around run)")
        done += batch
    require(
        vq.last_used_idx == (start + done) & 0xFFFF and int(vq.ring.used_idx[0]) == vq.last_used_idx,
        "def.split.used-idx",
        "used idx after wrap-around does not count the used elems",
        expected=(start + done) & 0xFFFF,
        observed=f"used idx {int(vq.ring.used_idx[0])}, last_used_idx {vq.last_used_idx}",
        queue=vq.name,
    )


# -- notification suppression across the 16-bit index wrap (2.7.7.2, 2.7.10) -----------------------
# The event index comparisons are modulo 2^16 (vring_need_event); a device doing them in plain
# integers agrees near 0 and goes wrong only where used idx wraps. These tests first bring the
# ring's indexes to just below 65535 by pushing buffers (the batch API, as many at a time as the
# device's queue size allows, every used elem validated on the way; each kick decided from the
# device's avail_event or used flags, so a device whose available buffer notification
# suppression strands buffers across the wrap times out here), then judge the notifications.
# IN_ORDER is refused: one used elem per buffer keeps "the entry at index used_event" defined.
def _advance_used_idx(work, session, to: int) -> None:
    """Make light requests available and take them back until used idx (and avail idx) is ``to``."""
    vq = work.vq
    if why := work.light_unfit():
        pytest.skip(f"cannot bring the indexes to the wrap: {why}")
    vq.disable_cb()  # poll: notifications on the way are not judged
    work.push_light((to - vq.last_used_idx) & 0xFFFF, f"on the way to used idx {to}")


@pytest.mark.heavy
@pytest.mark.clause(
    "dev.basic.virtqueues.used-buffer-notification-suppression.3",
    "dev.basic.virtqueues.used-buffer-notification-suppression.1",
    "def.basic.buffers-are-used",
)
def test_notifies_when_flags_zero_across_wrap(session):
    """Without EVENT_IDX, avail flags 0: a notification after each used ring write, also for the
    writes of entries 65535 and 0."""
    work = session.start(refuse=(C.VIRTIO_F_EVENT_IDX, C.VIRTIO_F_IN_ORDER))
    _require_notifying(work, session, 1)  # control, away from the wrap
    per = work.elems_per_exchange
    _advance_used_idx(work, session, (0x10000 - per - 1) & 0xFFFF)
    vq = work.vq
    vq.enable_cb()
    for i in range(3):
        at, used_event = vq.last_used_idx, int(vq.ring.used_event[0])
        vq, before = _exchange_counting(work, session)
        if vq.wait_interrupt(before, session.timeout):
            continue
        # A silent device may be following used_event (the driver writes it as Linux does, EVENT_IDX
        # or not): if naming the next entry there brings the notification, that is the duty broken.
        vq.set_used_event(vq.last_used_idx)
        _, again = _exchange_counting(work, session)
        require(
            not vq.wait_interrupt(again, session.timeout),
            "dev.basic.virtqueues.used-buffer-notification-suppression.1",
            "device followed used_event although VIRTIO_F_EVENT_IDX was not negotiated",
            expected="a notification per used buffer (flags 0), whatever used_event holds",
            observed=f"none with used_event {used_event} (exchange {i}, entries from {at}); "
            "one once used_event named the entry written",
            queue=vq.name,
        )
        require(
            False,
            "dev.basic.virtqueues.used-buffer-notification-suppression.3",
            "no used buffer notification while avail flags is 0, as used idx wrapped",
            expected="a notification",
            observed=f"none within {session.timeout}s (exchange {i}, used elems from index {at})",
            queue=vq.name,
        )


@pytest.mark.heavy
@pytest.mark.clause("dev.basic.virtqueues.used-buffer-notification-suppression.5", "def.basic.buffers-are-used")
def test_event_idx_notifies_at_used_event_across_wrap(session):
    """With EVENT_IDX, used_event 65535: the notification is due when entry 65535 is written,
    the write after which used idx wraps to 0 (a plain ``old <= used_event < new`` misses it)."""
    work = session.start(want=(C.VIRTIO_F_EVENT_IDX,), refuse=(C.VIRTIO_F_IN_ORDER,))
    _, base = _event_idx_steps(work, session, flags=0)  # control, away from the wrap
    if not base[2] > base[1]:
        pytest.skip("no notification at used_event away from the wrap (see ...suppression.5): the wrap cannot be judged")
    per = work.elems_per_exchange
    _advance_used_idx(work, session, (0xFFFF - 2 * per) & 0xFFFF)
    vq, counts = _event_idx_steps(work, session, flags=0)
    require(
        counts[2] > counts[1],
        "dev.basic.virtqueues.used-buffer-notification-suppression.5",
        "no notification when the used elem at index used_event (65535) was written and used idx wrapped",
        expected="a notification at the third exchange (as away from the wrap)",
        observed=f"cumulative notifications per exchange {counts}; away from the wrap {base}",
        queue=vq.name,
    )


@pytest.mark.heavy
@pytest.mark.clause("dev.basic.virtqueues.used-buffer-notification-suppression.6")
def test_event_idx_quiet_elsewhere_across_wrap(session):
    """With EVENT_IDX, used_event 0 just past the wrap: no notification for entries 65534 and
    65535 (nor for 0 + 1 after it), only for entry 0."""
    work = session.start(want=(C.VIRTIO_F_EVENT_IDX,), refuse=(C.VIRTIO_F_IN_ORDER,))
    _, base = _event_idx_steps(work, session, flags=0)  # control, away from the wrap
    if not (base[0] == 0 and base[1] == 0 and base[3] == base[2]):
        pytest.skip("notifications away from used_event even away from the wrap (see ...suppression.6)")
    per = work.elems_per_exchange
    _advance_used_idx(work, session, (0x10000 - 2 * per) & 0xFFFF)
    vq, counts = _event_idx_steps(work, session, flags=0)
    require(
        counts[0] == 0 and counts[1] == 0 and counts[3] == counts[2],
        "dev.basic.virtqueues.used-buffer-notification-suppression.6",
        "notifications sent for used elems other than the one at used_event (0), as used idx wrapped",
        expected="notifications only at the third exchange",
        observed=f"cumulative notifications per exchange {counts}",
        queue=vq.name,
    )
