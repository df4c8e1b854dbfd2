"""VIRTIO 1.4, 2.4: device reset."""

from __future__ import annotations

import time

import pytest

from virtio import constants as C
from virtio.checks import blame, control, poll, require

pytestmark = pytest.mark.usefixtures("target_spec")

SETTLE = 0.05


# Status states a reset is written from (2.1): every stage of initialization, live queues with
# buffers in flight, and the two error states, set by the driver (FAILED) and by the device.
STATES = ["acknowledge", "driver", "features-ok", "driver-ok", "in-flight", "failed", "needs-reset"]


def _in_flight(work) -> None:
    """A few exchanges (so the queues' positions are past 0), then buffers made available and not
    kicked: a device polling its rings may take them, one waiting for a notification has not yet."""
    for _ in range(3):
        work.roundtrip()
    work.submit()
    for vq in work.vqs:
        if vq is not None:
            vq.publish()


def _provoke_needs_reset(session) -> None:
    """Make the device enter DEVICE_NEEDS_RESET, or skip: 2.1.2 gives the device a SHOULD, for
    "an error state that a reset is needed", and names no error that must lead there. The one a
    driver can cause on any device type: a descriptor chain whose ``next`` lies outside the
    descriptor table (2.7.5.3.1), on a split ring where the driver writes that field itself."""
    work = session.start(refuse=(C.VIRTIO_F_RING_PACKED,))
    work.roundtrip()
    ex = work.submit()
    vq = work.vq
    chain = next((c for c in ex.chains if c in vq.in_flight.values()), ex.chains[0])
    last = chain.ids[-1]
    vq.ring.desc["next"][last] = vq.num
    vq.ring.desc["flags"][last] |= C.VIRTQ_DESC_F_NEXT
    work.kick()
    if not poll(lambda: session.driver.status() & C.DEVICE_NEEDS_RESET, min(session.timeout, 2.0)):
        pytest.skip("the device did not set DEVICE_NEEDS_RESET after a descriptor named a next outside the table "
                    "(2.1.2: a SHOULD; no error is named that must lead there): reset from it cannot be checked")


def _reach(session, state):
    d = session.driver
    if state == "acknowledge":
        d.add_status(C.ACKNOWLEDGE)
    elif state == "driver":
        d.add_status(C.ACKNOWLEDGE)
        d.add_status(C.DRIVER)
    elif state == "features-ok":
        d.negotiate(d.wanted_features())
    elif state == "driver-ok":
        session.start()
    elif state == "in-flight":
        _in_flight(session.start())
    elif state == "failed":
        session.start().roundtrip()
        d.add_status(C.FAILED)  # 2.1: the driver gave up on the device
    elif state == "needs-reset":
        _provoke_needs_reset(session)


# The used idx duty of each layout: a device that used more buffers than were made available broke it.
USED_IDX = {"split": "def.split.used-idx", "packed": "def.packed.used-position"}


def _fresh_start(session, clause: str | None = None) -> None:
    """Initialize again and check the device is as new: the features negotiate again, the queues
    start afresh (nothing used before a buffer is made available; each exchange then gives back
    exactly its own buffers), whatever was in flight before the reset stays gone. A notification
    alone is no used buffer: nothing forbids a spurious one on a live queue (and over vhost-user a
    call signalled for the old rings may reach the new ones). ``clause``: the duty a stray used
    buffer breaks (after a reset, the reset's); by default the ring's own used idx duty."""
    work = session.start()
    vqs = [vq for vq in work.vqs if vq is not None]
    time.sleep(SETTLE)
    for vq in vqs:
        require(not vq.more_used(), clause or USED_IDX[vq.layout], "a queue set up after the reset held used buffers before any buffer was made available",
                expected="no used buffer", observed=vq.used_state(), queue=vq.name)
    for _ in range(3):
        work.roundtrip()
    time.sleep(SETTLE)
    for vq in vqs:
        require(not vq.more_used(), clause or USED_IDX[vq.layout], "the device used more buffers than were made available",
                expected="no used buffer beyond the exchanges", observed=vq.used_state(), queue=vq.name)


def _control(session) -> None:
    """The control of a test that judges what follows a reset: the same initialization and
    exchanges on the device before any reset of this test. A failure here is no reset's: it keeps
    the clause its check named (a used-ring violation, a write where the device must not write),
    or a timeout is charged to the buffers-are-used duty."""
    with control("def.basic.buffers-are-used", "initialization and three exchanges before any reset"):
        _fresh_start(session)
    session.driver.reset()


@pytest.mark.device_duty("status")
@pytest.mark.clause("dev.basic.device-reset.1", "def.reset.initial-state")
@pytest.mark.parametrize("state", STATES)
def test_reset_from_every_status_state(session, state):
    """2.4.1: reset from any status; status reads 0, then the device initializes as new (2.4)."""
    _control(session)
    _reach(session, state)
    d = session.driver
    d.ops.reset()
    d.wait_reset(f"device status to read 0 after a reset from {state}")  # a DeviceTimeout on dev.basic.device-reset.1
    # After the control passed, whatever the same exchanges now break is the reset's.
    blame("def.reset.initial-state", f"initializing again after a reset from {state}",
          lambda: _fresh_start(session, "def.reset.initial-state"), ring_violations_too=True)


@pytest.mark.clause("def.reset.initial-state")
def test_queues_restart_after_reset_with_buffers_in_flight(session, ring_layout):
    """2.4, 2.7/2.8: after a reset with buffers in flight the queues start again from index 0 (and,
    packed, wrap counters 1): a device that carried its old position into the new rings would read
    entries that are not there and write used elems where the driver does not look."""
    _control(session)
    _in_flight(session.start())
    d = session.driver
    d.ops.reset()
    d.wait_reset()
    blame("def.reset.initial-state", f"the first exchanges on new {ring_layout} rings after a reset with buffers in flight",
          lambda: _fresh_start(session, "def.reset.initial-state"), ring_violations_too=True)


@pytest.mark.clause("dev.basic.device-reset.2")
def test_no_queue_activity_after_reset(session):
    """After reset the device must not touch the rings it used before, even when notified."""
    work = session.start()
    work.roundtrip()
    ex = work.submit()
    vqs = [vq for vq in work.vqs if vq is not None]
    for vq in vqs:
        vq.publish()
    d = session.driver
    d.ops.reset()
    d.wait_reset()
    before = {vq.name: (bytes(d_mem(vq)), vq.interrupts) for vq in vqs}
    for vq in vqs:
        vq.notify()  # a stale notification to a queue the device no longer owns
    time.sleep(SETTLE)
    for vq in vqs:
        used_before, irq_before = before[vq.name]
        require(
            bytes(d_mem(vq)) == used_before and vq.interrupts == irq_before,
            "dev.basic.device-reset.2",
            f"device used or notified {vq.name} after reset",
            expected="device area unchanged, no notification",
            observed=f"used idx {int(vq.ring.used_idx[0])}, notifications {irq_before} -> {vq.interrupts}",
            queue=vq.name,
        )
    del ex
    d.vqs = vqs  # let the fixture's reset free them


def d_mem(vq):
    """The device area (used ring) of a queue, as bytes."""
    return vq.device_area()


@pytest.mark.clause("dev.basic.device-reset.2")
def test_no_config_notification_after_reset(session):
    session.start()
    d = session.driver
    d.reset()
    before = d.config_notifications
    d.ops.trigger_config_change()
    time.sleep(SETTLE)
    require(
        d.config_notifications == before,
        "dev.basic.device-reset.2",
        "device sent a configuration change notification after reset, before re-initialization",
        expected=f"{before} notifications",
        observed=d.config_notifications,
    )


@pytest.mark.clause("def.reset.initial-state", "def.basic.buffers-are-used")
def test_queues_start_afresh_after_reset(session):
    """After reset the device starts from avail index 0 again, with the newly negotiated features."""
    work = session.start(refuse=(C.VIRTIO_F_EVENT_IDX,))
    for _ in range(3):  # control: a fresh device negotiated without EVENT_IDX notifies each buffer
        before = work.vq.interrupts
        work.roundtrip()
        if not work.vq.wait_interrupt(before, session.timeout):
            pytest.skip("no used buffer notification per buffer even on a fresh device (see ...suppression.3)")
    session.driver.reset()
    work = session.start()
    for _ in range(5):
        work.roundtrip()
    session.driver.reset()
    work = session.start(refuse=(C.VIRTIO_F_EVENT_IDX,))
    vq = work.vq
    for i in range(3):
        before = vq.interrupts
        work.roundtrip()
        # Without EVENT_IDX and with interrupts enabled, each used buffer is notified (2.7.7.2): a
        # device still applying the old negotiation (event idx) would stay silent here.
        require(
            vq.wait_interrupt(before, session.timeout),
            "def.reset.initial-state",
            "no used buffer notification after re-negotiating without VIRTIO_F_EVENT_IDX",
            expected="a notification per used buffer",
            observed=f"{vq.interrupts - before} notifications after exchange {i}",
            queue=vq.name,
        )
