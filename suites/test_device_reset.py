"""VIRTIO 1.4, 2.4: device reset."""

from __future__ import annotations

import time

import pytest

from virtio import constants as C
from virtio.checks import require

pytestmark = pytest.mark.usefixtures("target_spec")

SETTLE = 0.05


def _reach(session, stage):
    d = session.driver
    if stage == "acknowledge":
        d.add_status(C.ACKNOWLEDGE)
    elif stage == "features-ok":
        d.negotiate(d.wanted_features())
    elif stage == "driver-ok":
        session.start()
    elif stage == "in-use":
        session.start().roundtrip()


@pytest.mark.device_duty("status")
@pytest.mark.clause("dev.basic.device-reset.1")
@pytest.mark.parametrize("stage", ["acknowledge", "features-ok", "driver-ok", "in-use"])
def test_status_reads_zero_after_reset(session, stage):
    _reach(session, stage)
    d = session.driver
    d.ops.reset()
    deadline = time.monotonic() + session.timeout
    while (status := d.status()) != 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    require(status == 0, "dev.basic.device-reset.1", f"device status after a reset from stage {stage}", expected=0, observed=C.status_names(status))


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
    while d.status() != 0:
        time.sleep(0.001)
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
    return vq.mem.read(vq.addrs.used, 4 + 8 * vq.num + 2)


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
