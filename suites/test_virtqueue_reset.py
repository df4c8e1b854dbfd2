"""VIRTIO 1.4, 2.6.1: resetting one virtqueue (VIRTIO_F_RING_RESET) and re-enabling it, on both ring
layouts (2.7 split, 2.8 packed)."""

from __future__ import annotations

import time

import pytest

from virtio import constants as C
from virtio.checks import blame, control, require

pytestmark = pytest.mark.usefixtures("target_spec", "ring_layout")

SETTLE = 0.05
RESET = "dev.basic.virtqueues.virtqueue-reset.virtqueue-reset"
REENABLE = "dev.basic.virtqueues.virtqueue-reset.virtqueue-re-enable.1"
PROCESS = "def.basic.buffers-are-used"


def _start(session):
    return session.start(want=(C.VIRTIO_F_RING_RESET,))


@pytest.mark.clause(f"{RESET}.1")
def test_reset_queue_is_left_alone(session):
    """After the driver resets a queue the device neither uses it nor notifies for it, even when
    buffers are (still) available and the driver notifies."""
    work = _start(session)
    work.roundtrip()
    vq = work.vq
    ex = work.submit()
    vq.publish()
    session.driver.ops.disable_vq_and_reset(vq)
    device_area = vq.device_area()
    irq = vq.interrupts
    vq.notify()
    time.sleep(SETTLE)
    require(
        vq.device_area() == device_area and vq.interrupts == irq,
        f"{RESET}.1",
        "device used or notified a queue after it was reset",
        expected="device area unchanged, no notification",
        observed=f"{vq.used_state()}, device area {'unchanged' if vq.device_area() == device_area else 'written'}, "
        f"notifications {irq} -> {vq.interrupts}",
        queue=vq.name,
    )
    del ex


@pytest.mark.clause(f"{RESET}.2", "def.basic.buffers-are-used")
def test_reset_queue_starts_from_index_zero(session):
    """A queue re-enabled after reset starts with fresh available and used state (indexes 0)."""
    work = _start(session)
    with control(PROCESS, "exchanges before the queue reset", variant=(f"{RESET}.2",)):
        for _ in range(7):  # move the indexes away from 0
            work.roundtrip()
    session.driver.reset_vq(work.vq)
    blame(f"{RESET}.2", "after a queue reset the device did not restart from index 0", lambda: [work.roundtrip() for _ in range(3)])


@pytest.mark.clause(f"{RESET}.2")
def test_reset_drops_buffers_in_flight(session):
    """Buffers outstanding at the reset are the driver's again: the device must not complete them."""
    work = _start(session)
    vq = work.vq
    out, in_ = work.light_buffers()  # needs no other queue, so only this queue holds state
    vq.add(out, in_)
    vq.publish()  # available, never notified
    reclaimed = session.driver.reset_vq(vq)
    require(len(reclaimed) >= 1, f"{RESET}.2", "harness: no buffer was in flight", observed=len(reclaimed))
    vq.notify()
    time.sleep(SETTLE)
    require(
        not vq.more_used(),
        f"{RESET}.2",
        "device completed a buffer made available before the queue reset",
        expected="nothing used on the re-enabled queue",
        observed=vq.used_state(),
        queue=vq.name,
    )


@pytest.mark.clause(REENABLE, "def.basic.buffers-are-used")
@pytest.mark.parametrize("factor", ["quarter", "half"])
def test_reenable_with_another_size(session, factor):
    """The device follows the new queue size set while the queue was reset (2.6.1.2.1)."""
    work = _start(session)
    vq = work.vq
    work.roundtrip()
    new = vq.num // (4 if factor == "quarter" else 2)
    if new < 2:
        pytest.skip(f"queue size {vq.num} leaves nothing smaller to try")
    session.driver.reset_vq(vq)
    # The control: reset and re-enable at the same size. A failure there is the reset's (2.6.1.1.1:
    # the queue restarts from its initial state), not the size change's.
    with control(f"{RESET}.2", "exchanges after a queue reset at the same size", variant=(REENABLE,)):
        for _ in range(3):
            work.roundtrip()
    session.driver.reset_vq(vq, num=new)

    def go_around():
        for _ in range(new + 3):  # more exchanges than ring entries: the device must wrap at `new`
            work.roundtrip()

    blame(REENABLE, f"after re-enabling {vq.name} with size {new}", go_around)


@pytest.mark.clause(f"{RESET}.1", "def.basic.buffers-are-used")
def test_other_queues_keep_running(session):
    """Resetting one queue leaves the others working (net, console: receive queue reset, transmit goes on)."""
    work = _start(session)
    queues = [vq for vq in work.vqs if vq is not None]
    if len(queues) < 2:
        pytest.skip("the device has a single virtqueue")
    other = next(vq for vq in queues if vq is not work.vq)
    session.driver.ops.disable_vq_and_reset(other)
    # The main queue goes on alone: light buffers need no other queue.
    out, in_ = work.light_buffers()
    for _ in range(3):
        work.vq.add(out, in_)
        work.vq.kick()
        work.vq.wait_used(1, session.timeout, awaited="a buffer on a queue that was not reset")
    # Re-enable it; what the device does with output it held meanwhile is device-type business,
    # and re-enabling itself is judged by the tests above.
    while other.detach_unused_buf() is not None:  # bounded: one lap per buffer left on the queue, at most its size
        pass
    other.reset_state()
    session.driver.ops.enable_vq_after_reset(other)
