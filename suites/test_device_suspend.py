"""VIRTIO 1.4, 3.4: device suspend (VIRTIO_F_SUSPEND).

The driver sets SUSPEND in device status; the device shows SUSPEND 1 and DRIVER_OK 0 once it is
suspended (or sets DEVICE_NEEDS_RESET if it cannot). While suspended it touches no virtqueue and no
configuration field and sends no notification; a configuration change meanwhile is notified when
the driver resumes it by setting DRIVER_OK again. Every test skips where the device does not offer
VIRTIO_F_SUSPEND, and keeps to the driver's side of 3.4.1: after setting SUSPEND it makes no buffer
available, sends no notification and writes no configuration field (except in the test of the
SHOULD that a device ignores such writes).
"""

from __future__ import annotations

import time

import pytest

from fixtures.devices import need
from virtio import constants as C
from virtio.checks import blame, control, poll, require

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_duty("status")]

S = "dev.init.device-suspend."
IGNORED_BEFORE_INIT = S + "1"
CONFIG_WRITES_IGNORED = S + "2"
QUIET_WHILE_SUSPENDED = S + "3"
NO_CONFIG_NOTIFY_WHILE_SUSPENDED = S + "4"
CONFIG_NOTIFY_ON_RESUME = S + "5"
SUSPENDS = S + "6"
RESUMES = S + "7"
SETTLE = 0.1  # how long a suspended device is watched for activity


def _start(session):
    """A device with VIRTIO_F_SUSPEND negotiated and one exchange done (the control: a failure
    there is no suspend's)."""
    need(session.driver, C.VIRTIO_F_SUSPEND)
    with control("def.basic.buffers-are-used", "initialization with VIRTIO_F_SUSPEND and one exchange", variant=(SUSPENDS,)):
        work = session.start(want=(C.VIRTIO_F_SUSPEND,))
        work.roundtrip()
    return work


def _set_and_await(session, bit: int, shown: int, clause: str, what: str) -> None:
    """Set ``bit`` in device status and wait (bounded) until of SUSPEND and DRIVER_OK only ``shown``
    reads 1 -- or DEVICE_NEEDS_RESET, which 3.4.1 allows a device that cannot; then what follows
    cannot be judged and the test skips."""
    d = session.driver
    d.add_status(bit)
    done = poll(lambda: (s := d.status()) & C.DEVICE_NEEDS_RESET or (s & (C.SUSPEND | C.DRIVER_OK)) == shown, session.timeout)
    status = d.status()
    name = "SUSPEND" if shown == C.SUSPEND else "DRIVER_OK"
    require(done, clause, f"device status within {session.timeout:g} s of the driver setting {what}",
            expected=f"{name} set and the other of SUSPEND/DRIVER_OK clear, or DEVICE_NEEDS_RESET", observed=f"{status:#04x}")
    if status & C.DEVICE_NEEDS_RESET:
        pytest.skip(f"the device set DEVICE_NEEDS_RESET on {what} (3.4.1 allows it when it cannot): what follows cannot be judged")


def _suspend(session) -> None:
    _set_and_await(session, C.SUSPEND, C.SUSPEND, SUSPENDS, "SUSPEND")


def _resume(session) -> None:
    _set_and_await(session, C.DRIVER_OK, C.DRIVER_OK, RESUMES, "DRIVER_OK on the suspended device")


def _device_areas(work) -> dict[str, tuple[bytes, int]]:
    work.driver.ops.synchronize_cbs()  # notifications sent before the suspend are counted by now
    return {vq.name: (bytes(vq.device_area()), vq.interrupts) for vq in work.vqs if vq is not None}


@pytest.mark.clause(SUSPENDS, RESUMES)
def test_suspend_and_resume(session):
    """SUSPEND set: the device suspends; DRIVER_OK set again: it resumes and works as before."""
    work = _start(session)
    _suspend(session)
    _resume(session)
    blame(RESUMES, "exchanges after the device resumed", lambda: [work.roundtrip() for _ in range(3)])


@pytest.mark.clause(QUIET_WHILE_SUSPENDED, RESUMES)
def test_no_virtqueue_activity_while_suspended(session):
    """Buffers made available (not notified) just before SUSPEND: once the device shows itself
    suspended, no device area changes and no notification comes until it is resumed; then the
    buffers are used (a device may have used them before suspending, as a polling one does)."""
    work = _start(session)
    ex = work.submit()
    vqs = [vq for vq in work.vqs if vq is not None]
    for vq in vqs:
        vq.publish()
    _suspend(session)
    before = _device_areas(work)
    time.sleep(SETTLE)
    after = _device_areas(work)
    for name, (area, irqs) in before.items():
        now_area, now_irqs = after[name]
        require(now_area == area and now_irqs == irqs, QUIET_WHILE_SUSPENDED, f"{name} while the device is suspended",
                expected="device area unchanged, no notification",
                observed=f"device area {'changed' if now_area != area else 'unchanged'}, notifications {irqs} -> {now_irqs}", queue=name)
    _resume(session)
    work.kick()
    blame(RESUMES, "the buffers made available before the suspend, after the resume", lambda: work.finish(ex))


@pytest.mark.clause(QUIET_WHILE_SUSPENDED, NO_CONFIG_NOTIFY_WHILE_SUSPENDED, CONFIG_NOTIFY_ON_RESUME)
def test_config_change_waits_for_resume(session):
    """A configuration change made while suspended changes no field and sends no notification
    then; once resumed, a field that changed comes with a configuration change notification."""
    _start(session)
    d = session.driver
    if d.layout is None or not d.layout.present(d.device_features()):
        pytest.skip("the device type has no configuration space fields")
    _await_notified_change(session, "the control: a configuration change notification for a change made while running",
                           "def.config.change-notification")
    _suspend(session)
    before_config, before_notes = d.config_snapshot(), d.config_notifications
    d.ops.trigger_config_change()  # a target that cannot make one skips here (UnsupportedOp)
    time.sleep(SETTLE)
    require(d.config_notifications == before_notes, NO_CONFIG_NOTIFY_WHILE_SUSPENDED, "configuration change notifications while suspended",
            expected=before_notes, observed=d.config_notifications)
    during = d.config_snapshot()
    require(during == before_config, QUIET_WHILE_SUSPENDED, "configuration space while suspended",
            expected=before_config, observed=during)
    _resume(session)
    _await_notified_change(session, "a configuration change notification after the resume for the change made while suspended",
                           CONFIG_NOTIFY_ON_RESUME, before=(before_config, before_notes))


def _await_notified_change(session, what: str, clause: str, *, before=None) -> None:
    """Make a configuration change now (or, with ``before``, await the one made earlier) and, if a
    field changed (a device may drop a change: then nothing is notified), require a configuration
    change notification within the timeout."""
    d = session.driver
    if before is None:
        before = d.config_snapshot(), d.config_notifications
        d.ops.trigger_config_change()
    config, notes = before
    if not poll(lambda: d.config_snapshot() != config, SETTLE):
        return
    got = poll(lambda: d.config_notifications > notes, session.timeout)
    require(got, clause, f"{what}, within {session.timeout:g} s", expected=f"> {notes} notifications", observed=d.config_notifications)


@pytest.mark.clause(IGNORED_BEFORE_INIT)
@pytest.mark.parametrize("stage", ["acknowledge", "features-ok"])
def test_suspend_ignored_before_driver_ok(session, stage):
    """SUSPEND written before initialization completed (3.1.1): the device ignores it -- the bit
    does not stick -- and initialization then completes as usual."""
    d = session.driver
    need(d, C.VIRTIO_F_SUSPEND)
    if stage == "acknowledge":
        d.reset()
        d.add_status(C.ACKNOWLEDGE)
    else:
        d.negotiate(d.wanted_features() | 1 << C.VIRTIO_F_SUSPEND)
    status = d.add_status(C.SUSPEND)
    require(not status & C.SUSPEND, IGNORED_BEFORE_INIT, f"device status after SUSPEND was written at {stage}",
            expected="SUSPEND clear (ignored before DRIVER_OK)", observed=f"{status:#04x}")
    d.reset()
    blame(IGNORED_BEFORE_INIT, "initialization after SUSPEND was written early",
          lambda: session.start(want=(C.VIRTIO_F_SUSPEND,)).roundtrip())


@pytest.mark.clause(CONFIG_WRITES_IGNORED)
def test_config_writes_ignored_while_suspended(session):
    """SHOULD: a write to a writable configuration field while suspended is ignored: the field
    reads as before once the device resumes."""
    _start(session)
    d = session.driver
    fields = [f for f in (d.layout.present(d.negotiated or 0) if d.layout else []) if f.writable and not f.write_only]
    if not fields:
        pytest.skip("the device has no writable configuration field it reads back")
    f = fields[0]
    old = d.config_field(f.name)
    _suspend(session)
    d.ops.set(f.offset, f.encode(old ^ 1))
    _resume(session)
    now = d.config_field(f.name)
    require(now == old, CONFIG_WRITES_IGNORED, f"config field {f.name} written while suspended, read after the resume",
            expected=old, observed=now)
