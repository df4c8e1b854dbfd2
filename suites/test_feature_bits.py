"""VIRTIO 1.4, 2.2 (feature bits) and 6 (reserved feature bits)."""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio.checks import require
from virtio.feature_table import undefined_bits, unmet_requirements

pytestmark = pytest.mark.usefixtures("target_spec")


def _unoffered_bit(offered: int, candidates) -> int | None:
    return next((b for b in candidates if not offered >> b & 1), None)


UNOFFERED_KINDS = {
    # where to look for a bit the device did not offer
    "device-specific": range(24),
    "device-independent": (C.VIRTIO_F_RING_RESET, C.VIRTIO_F_NOTIFICATION_DATA, C.VIRTIO_F_IN_ORDER, C.VIRTIO_F_RING_PACKED, 31, 25),
    "extended-above-63": (127, 100, 90, 80),
}


@pytest.mark.device_duty("status")
@pytest.mark.clause("dev.basic.feature-bits.2")
@pytest.mark.parametrize("kind", list(UNOFFERED_KINDS))
def test_features_ok_refused_for_unoffered_bit(driver, kind):
    """A driver that accepts a bit the device did not offer must not get FEATURES_OK (2.2.2)."""
    offered = driver.device_features()
    bit = _unoffered_bit(offered, UNOFFERED_KINDS[kind])
    if bit is None:
        pytest.skip(f"device offers every {kind} candidate bit")
    bad = driver.wanted_features() | (1 << bit)
    ok = driver.negotiate(bad, check=False)
    require(
        not ok,
        "dev.basic.feature-bits.2",
        f"device set FEATURES_OK although the driver accepted unoffered {C.feature_name(bit, driver.device_id)}",
        expected="FEATURES_OK not set on re-read",
        observed=f"status {C.status_names(driver.status())}",
    )


@pytest.mark.clause("dev.basic.feature-bits.2")
@pytest.mark.parametrize("subset", ["all-implemented", "version-1-only", "without-ring-features"])
def test_valid_subsets_accepted(driver, subset):
    """Valid subsets of the offered features get FEATURES_OK (2.2.2, the SHOULD half)."""
    offered = driver.device_features()
    v1 = 1 << C.VIRTIO_F_VERSION_1
    features = {
        "all-implemented": driver.wanted_features(),
        "version-1-only": offered & v1,
        "without-ring-features": driver.wanted_features(refuse=(1 << C.VIRTIO_F_EVENT_IDX) | (1 << C.VIRTIO_F_INDIRECT_DESC)),
    }[subset]
    driver.negotiate(features)  # raises, at SHOULD level, if FEATURES_OK does not stick


@pytest.mark.clause("dev.basic.feature-bits.1")
def test_no_feature_offered_without_its_prerequisite(driver):
    offered = driver.device_features()
    unmet = unmet_requirements(offered, driver.device_id)
    require(
        not unmet,
        "dev.basic.feature-bits.1",
        "device offers a feature without the feature it requires",
        expected="prerequisites offered",
        observed="; ".join(
            f"{C.feature_name(f, driver.device_id)} needs "
            + " or ".join("+".join(C.feature_name(b, driver.device_id) for b in sorted(alt)) for alt in alts)
            for f, alts in unmet
        ),
    )


@pytest.mark.clause("dev.basic.feature-bits.3")
def test_no_undefined_feature_bits_offered(driver):
    """Bits this spec does not define for the device type (or transport) are not offered (2.2.2)."""
    offered = driver.device_features()
    pci = driver.ops.has("pci-device")  # SR_IOV and ADMIN_VQ are defined for PCI devices only (6)
    # SR_IOV off PCI is dev.reserved-features.9's to judge (test_sr_iov_only_on_pci): blame it once.
    bad = [b for b in undefined_bits(offered, driver.device_id, pci) if b != C.VIRTIO_F_SR_IOV]
    require(
        not bad,
        "dev.basic.feature-bits.3",
        "device offers feature bits the specification does not define for it",
        expected=f"only bits defined for {C.DEVICE_TYPES.get(driver.device_id, driver.device_id)} on {driver.ops.transport}",
        observed=", ".join(f"bit {b}" for b in bad),
    )


@pytest.mark.clause("dev.basic.feature-bits.4")
def test_same_features_renegotiated_after_reset(driver):
    features = driver.wanted_features()
    driver.negotiate(features)
    driver.reset()
    ok = driver.negotiate(features, check=False)
    require(ok, "dev.basic.feature-bits.4", "device refused, after a reset, the feature set it accepted before", expected="FEATURES_OK", observed=C.status_names(driver.status()))


@pytest.mark.clause("dev.reserved-features.1")
def test_version_1_offered(driver):
    offered = driver.device_features()
    require(offered >> C.VIRTIO_F_VERSION_1 & 1, "dev.reserved-features.1", "device does not offer VIRTIO_F_VERSION_1", observed=hex(offered))


@pytest.mark.clause("dev.reserved-features.9")
def test_sr_iov_only_on_pci(driver):
    if driver.ops.has("pci-device"):
        pytest.skip("PCI device: whether SR_IOV belongs depends on its SR-IOV capability (checked by the PCI suite)")
    offered = driver.device_features()
    require(not offered >> C.VIRTIO_F_SR_IOV & 1, "dev.reserved-features.9", f"VIRTIO_F_SR_IOV offered on a {driver.ops.transport} device", observed=hex(offered))


@pytest.mark.clause("def.features.stable")
def test_feature_bits_stable_and_consistent(driver):
    """64-bit and extended reads agree; the set does not change across reads, negotiation and reset."""
    ext = driver.ops.get_extended_features()
    low = driver.ops.get_features()
    require(low == ext & ((1 << 64) - 1), "def.features.stable", "get_features differs from the low 64 bits of the extended features", expected=hex(ext & ((1 << 64) - 1)), observed=hex(low))
    require(ext >> C.FEATURE_BITS == 0, "def.features.stable", "features wider than 128 bits", observed=hex(ext))
    for step in ("re-read", "after FEATURES_OK", "after reset"):
        if step == "after FEATURES_OK":
            driver.negotiate(driver.wanted_features())
        elif step == "after reset":
            driver.reset()
        again = driver.ops.get_extended_features()
        require(again == ext, "def.features.stable", f"offered features changed ({step})", expected=hex(ext), observed=hex(again))
