"""VIRTIO 1.4, 3.1: the device initialization sequence, step by step, as the device sees it."""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio.checks import require
from virtio.driver import VqInfo
from virtio.workloads import workload_for

pytestmark = pytest.mark.usefixtures("target_spec")


@pytest.mark.device_duty("status")
@pytest.mark.clause("def.status.readback", "dev.basic.feature-bits.2", "def.basic.buffers-are-used")
def test_initialization_sequence(session):
    """3.1.1 steps 1-8 in order, checking what the device shows after each, then one exchange."""
    d = session.driver
    # 1. reset (the fixture did) -> status 0
    require(d.status() == 0, "def.status.readback", "status before initialization", expected=0, observed=C.status_names(d.status()))
    # 2. ACKNOWLEDGE, 3. DRIVER
    require(d.add_status(C.ACKNOWLEDGE) == C.ACKNOWLEDGE, "def.status.readback", "status after ACKNOWLEDGE", observed=C.status_names(d.status()))
    require(d.add_status(C.DRIVER) == C.ACKNOWLEDGE | C.DRIVER, "def.status.readback", "status after DRIVER", observed=C.status_names(d.status()))
    # 4. read feature bits, write the subset we understand
    features = d.wanted_features()
    d.ops.finalize_features(features)
    # 5. FEATURES_OK, 6. re-read it
    status = d.add_status(C.FEATURES_OK)
    require(status & C.FEATURES_OK, "dev.basic.feature-bits.2", "FEATURES_OK not set for a valid subset of the offered features", expected="FEATURES_OK", observed=C.status_names(status), level="SHOULD")
    d.negotiated = features
    # 7. device-specific setup: virtqueues, config reads
    if d.layout is not None and d.layout.fields:
        d.config_snapshot()
    vqs = d.find_vqs([VqInfo(n) for n in d.default_vq_names()])
    # 8. DRIVER_OK
    status = d.driver_ok()
    expected = C.ACKNOWLEDGE | C.DRIVER | C.FEATURES_OK | C.DRIVER_OK
    require(status == expected, "def.status.readback", "status after DRIVER_OK", expected=C.status_names(expected), observed=C.status_names(status))
    workload_for(d, vqs, session.timeout).roundtrip()


@pytest.mark.device_duty("status")
@pytest.mark.clause("def.status.readback")
def test_failed_status_reads_back(driver):
    """A driver that gives up sets FAILED (2.1); the bit reads back until reset."""
    driver.add_status(C.ACKNOWLEDGE)
    status = driver.add_status(C.FAILED)
    require(status & C.FAILED, "def.status.readback", "FAILED does not read back", expected="FAILED set", observed=C.status_names(status))


@pytest.mark.clause("def.basic.buffers-are-used")
def test_queue_size_below_maximum(session):
    """The driver may choose a queue size below the maximum the device allows (2.7)."""
    d = session.driver
    probe = d.ops.vq_num_max(0)
    if probe < 4:
        pytest.skip(f"queue 0 maximum size is {probe}: nothing smaller to try")
    small = 1 << ((probe // 4).bit_length() - 1)  # split queue sizes are powers of 2 (2.7)
    d.negotiate(d.wanted_features())
    names = d.default_vq_names()
    vqs = d.find_vqs([VqInfo(n, size=small if d.ops.vq_num_max(i) >= small else None) for i, n in enumerate(names)])
    d.driver_ok()
    work = workload_for(d, vqs, session.timeout)
    for _ in range(small):  # go around the smaller ring more than once
        work.roundtrip()
