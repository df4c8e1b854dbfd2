"""VIRTIO 1.4, 2.1: the device status field."""

from __future__ import annotations

import time

import pytest

from virtio import constants as C
from virtio.checks import require

pytestmark = pytest.mark.usefixtures("target_spec")

SETTLE = 0.05  # how long a device that is about to misbehave gets to show it


@pytest.mark.device_duty("status")
@pytest.mark.clause("def.status.readback")
def test_status_reads_back_each_step(driver):
    """Each bit the driver adds during initialization (3.1.1) reads back, and nothing else appears."""
    require(driver.status() == 0, "def.status.readback", "status after reset", expected=0, observed=driver.status())
    expected = 0
    for bit in (C.ACKNOWLEDGE, C.DRIVER):
        expected |= bit
        got = driver.add_status(bit)
        require(got == expected, "def.status.readback", f"status after setting {C.STATUS_NAMES[bit]}", expected=C.status_names(expected), observed=C.status_names(got))
    driver.ops.finalize_features(driver.wanted_features())
    expected |= C.FEATURES_OK
    got = driver.add_status(C.FEATURES_OK)
    require(got == expected, "def.status.readback", "status after FEATURES_OK for offered features", expected=C.status_names(expected), observed=C.status_names(got))
    driver.negotiated = driver.wanted_features()
    driver.find_vqs([])
    expected |= C.DRIVER_OK
    got = driver.add_status(C.DRIVER_OK)
    require(got == expected, "def.status.readback", "status after DRIVER_OK", expected=C.status_names(expected), observed=C.status_names(got))


@pytest.mark.device_duty("driver-ok")
@pytest.mark.clause("dev.basic.device-status-field.1")
def test_no_buffers_used_before_driver_ok(session, request):
    """Buffers made available (and even notified) before DRIVER_OK stay untouched until DRIVER_OK."""
    driver = session.driver
    from virtio.driver import VqInfo
    from virtio.workloads import workload_for

    driver.negotiate(driver.wanted_features())
    vqs = driver.find_vqs([VqInfo(n) for n in driver.default_vq_names()])
    work = workload_for(driver, vqs, session.timeout)
    ex = work.submit()
    for vq in vqs:
        vq.publish()

    def untouched(stage):
        time.sleep(SETTLE)
        for vq in vqs:
            used = int(vq.ring.used_idx[0])
            require(
                used == 0 and vq.interrupts == 0,
                "dev.basic.device-status-field.1",
                f"device acted on {vq.name} before DRIVER_OK ({stage})",
                expected="used idx 0, no used buffer notification",
                observed=f"used idx {used}, {vq.interrupts} notification(s)",
                queue=vq.name,
            )

    untouched("buffers published, no notification")
    # The driver is not supposed to notify before DRIVER_OK (3.1.1); a device must still not
    # consume anything if one arrives.
    for vq in vqs:
        vq.notify()
    untouched("after an early available buffer notification")
    driver.driver_ok()
    for vq in vqs:
        vq.kick_prepare()
        vq.notify()
    work.finish(ex)
