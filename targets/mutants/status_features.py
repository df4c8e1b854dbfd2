"""Mutants of the device status field, feature negotiation and device reset (VIRTIO 1.4, 2.1, 2.2,
2.4, 6): each is a clean model with one method (or one class attribute) overridden."""

from __future__ import annotations

from targets.model.console import ConsoleDevice
from targets.model.net import NetDevice
from targets.model.rng import RngDevice
from virtio import constants as C

from .queue_reset import kept_state


class RngAcceptsUnofferedFeatures(RngDevice):
    """Sets FEATURES_OK although the driver accepted a feature bit the device never offered.

    dev.basic.feature-bits.2 (2.2.2): a device MUST refuse FEATURES_OK for a feature set it cannot
    accept, and no device can honour a bit it did not offer.
    """

    name = "rng-accepts-unoffered-features"
    clause = "dev.basic.feature-bits.2"

    def accept_features(self, driver_features: int) -> bool:
        return True  # BUG: no check against offered_features()


class RngResetIgnoredBeforeDriver(RngDevice):
    """Ignores a reset written while only ACKNOWLEDGE is set: status keeps reading ACKNOWLEDGE.

    dev.basic.device-reset.1 (2.4.1): on reset the device MUST set its status back to 0, whatever
    stage initialization had reached (as firmware that only treats reset as "driver unbound" once
    the DRIVER bit was set would not).
    """

    name = "rng-reset-ignored-before-driver"
    clause = "dev.basic.device-reset.1"

    def set_status(self, status: int) -> None:
        if status == 0 and self.status == C.ACKNOWLEDGE:
            return  # BUG: the reset is dropped; status still reads ACKNOWLEDGE
        super().set_status(status)


class RngQueueLiveBeforeDriverOk(RngDevice):
    """Starts a virtqueue as soon as the driver enables it, before DRIVER_OK, and consumes buffers.

    dev.basic.device-status-field.1 (2.1.2): the device MUST NOT consume buffers or send used
    buffer notifications before DRIVER_OK. One bug, two halves: the ring goes live at queue
    enable, and the processing gate no longer asks for DRIVER_OK.
    """

    name = "rng-queue-live-before-driver-ok"
    clause = "dev.basic.device-status-field.1"

    def queue_enable(self, index: int) -> None:
        super().queue_enable(index)
        with self.lock:
            qc = self.queues_cfg[index]
            if self.queues[index] is None and qc.addrs is not None:
                # BUG: builds the device side of the ring now instead of at DRIVER_OK
                self.queues[index] = self.make_queue(index, qc.addrs)

    def running(self) -> bool:
        # BUG: FEATURES_OK is taken as "go"; DRIVER_OK is not waited for
        return bool(self.status & C.FEATURES_OK) and not self.status & (C.DEVICE_NEEDS_RESET | C.FAILED)


class RngNoVersion1(RngDevice):
    """Does not offer VIRTIO_F_VERSION_1 (it looks like a legacy device to the driver).

    dev.reserved-features.1 (6.1): a device MUST offer VIRTIO_F_VERSION_1.
    """

    name = "rng-no-version-1"
    clause = "dev.reserved-features.1"
    base_features = RngDevice.base_features & ~(1 << C.VIRTIO_F_VERSION_1)  # BUG


class RngOffersUndefinedBit(RngDevice):
    """Offers device-specific feature bit 0, which the spec does not define for entropy devices.

    dev.basic.feature-bits.3 (2.2.2): a device MUST NOT offer a feature it could not honour if the
    driver accepted it; an undefined bit has no meaning to honour.
    """

    name = "rng-offers-undefined-bit"
    clause = "dev.basic.feature-bits.3"
    features = 1 << 0  # BUG: entropy devices define no feature bits (5.4.3)


class RngOffersSrIov(RngDevice):
    """Offers VIRTIO_F_SR_IOV although it is not a PCI device (and has no SR-IOV capability).

    dev.reserved-features.9 (6.2): a device that is not PCI with an SR-IOV capability MUST NOT
    offer VIRTIO_F_SR_IOV.
    """

    name = "rng-offers-sr-iov"
    clause = "dev.reserved-features.9"
    features = 1 << C.VIRTIO_F_SR_IOV  # BUG: a PCI-only feature on the model transport


class NetCtrlRxWithoutCtrlVq(NetDevice):
    """Offers VIRTIO_NET_F_CTRL_RX and CTRL_MAC_ADDR but not VIRTIO_NET_F_CTRL_VQ they depend on.

    dev.basic.feature-bits.1 (2.2.2, 5.1.3.1): a device MUST NOT offer a feature which requires
    another feature that it does not offer.
    """

    name = "net-ctrl-rx-without-ctrl-vq"
    clause = "dev.basic.feature-bits.1"
    # BUG: CTRL_VQ dropped (and CTRL_RX_EXTRA, whose absence of CTRL_VQ another mutant breaks)
    features = NetDevice.features & ~(1 << C.VIRTIO_NET_F_CTRL_VQ | 1 << C.VIRTIO_NET_F_CTRL_RX_EXTRA)


class RngRefusesRenegotiation(RngDevice):
    """Refuses FEATURES_OK for a feature set it already accepted once ("already configured").

    dev.basic.feature-bits.4 (2.2.2): a device that accepted a feature set SHOULD NOT fail to
    accept the same set after a device reset. A SHOULD NOT: the report shows it as a warning.
    """

    name = "rng-refuses-renegotiation"
    clause = "dev.basic.feature-bits.4"

    def __init__(self, mode: str = "notify"):
        self.accepted_sets: set[int] = set()  # survives reset, which is the bug's point
        super().__init__(mode=mode)

    def accept_features(self, driver_features: int) -> bool:
        if driver_features in self.accepted_sets:
            return False  # BUG: a set accepted before a reset is refused after it
        ok = super().accept_features(driver_features)
        if ok:
            self.accepted_sets.add(driver_features)
        return ok


class RngFeaturesChangeAfterNegotiation(RngDevice):
    """Once FEATURES_OK is set, stops offering VIRTIO_F_EVENT_IDX (as if it re-probed its back-end).

    def.features.stable (2.2, 4.1.4.3): the offered feature bits are one fixed set; a read after
    FEATURES_OK must show the same bits as before it.
    """

    name = "rng-features-change-after-negotiation"
    clause = "def.features.stable"

    def get_device_features(self) -> int:
        offered = super().get_device_features()
        if self.status & C.FEATURES_OK:
            offered &= ~(1 << C.VIRTIO_F_EVENT_IDX)  # BUG: the offer shrinks after negotiation
        return offered


class RngDriverBitNotKept(RngDevice):
    """Does not latch the DRIVER status bit: after ACKNOWLEDGE|DRIVER the status reads ACKNOWLEDGE.

    def.status.readback (2.1, 3.1.1): device status reads back the bits the driver set.
    """

    name = "rng-driver-bit-not-kept"
    clause = "def.status.readback"

    def set_status(self, status: int) -> None:
        super().set_status(status & ~C.DRIVER)  # BUG: DRIVER is dropped on every write


class RngEventIdxSurvivesReset(RngDevice):
    """Latches VIRTIO_F_EVENT_IDX once negotiated and keeps using it after a reset that dropped it.

    def.reset.initial-state (2.4, 2.2): after a reset the device is as new and applies only the
    features negotiated afterwards. Here, re-negotiated without EVENT_IDX, the device still
    suppresses notifications by used_event (which such a driver never writes).
    """

    name = "rng-event-idx-survives-reset"
    clause = "def.reset.initial-state"

    def __init__(self, mode: str = "notify"):
        self.sticky_features = 0  # never cleared by device_reset(): the bug
        super().__init__(mode=mode)

    def set_driver_features(self, features: int) -> None:
        self.sticky_features |= features & (1 << C.VIRTIO_F_EVENT_IDX)
        super().set_driver_features(features | self.sticky_features)  # BUG: old negotiation leaks in


class ConsoleConfigNotifyAfterReset(ConsoleDevice):
    """Sends a configuration change notification whatever its status, also after a reset.

    dev.basic.device-reset.2 (2.4.1): once reset completes the device MUST NOT send notifications
    until the driver initializes it again (the model sends one only while DRIVER_OK is set).
    """

    name = "console-config-notify-after-reset"
    clause = "dev.basic.device-reset.2"

    def config_changed(self) -> None:
        self.bus.interrupt_config()  # BUG: no check of the device status before notifying


class RngResetIgnoredWhileFailed(RngDevice):
    """Ignores a reset written while the driver has set FAILED: status keeps reading FAILED.

    dev.basic.device-reset.1 (2.4.1): on reset the device MUST set its status back to 0; FAILED is
    the very state after which the driver MUST reset the device before trying again (2.1.1), so a
    device that stays FAILED can never be used again.
    """

    name = "rng-reset-ignored-while-failed"
    clause = "dev.basic.device-reset.1"

    def set_status(self, status: int) -> None:
        if status == 0 and self.status & C.FAILED:
            return  # BUG: "the driver gave up" is taken as final
        super().set_status(status)


class RngKeepsNeedsResetAfterReset(RngDevice):
    """Resets everything but the DEVICE_NEEDS_RESET bit it set: status reads DEVICE_NEEDS_RESET.

    dev.basic.device-reset.1 (2.4.1): on reset the device MUST set its status back to 0 -- the one
    way out of DEVICE_NEEDS_RESET (2.1.2) is the reset it asks for.
    """

    name = "rng-keeps-needs-reset-after-reset"
    clause = "dev.basic.device-reset.1"

    def set_status(self, status: int) -> None:
        kept = self.status & C.DEVICE_NEEDS_RESET if status == 0 else 0
        super().set_status(status)
        self.status |= kept  # BUG: the error outlives the reset


class RngKeepsRingPositionAfterReset(RngDevice):
    """After a reset that found buffers in flight, carries each queue's old position (available and
    used index, wrap counters) into the rings the driver sets up next.

    def.reset.initial-state (2.4): after a reset the device is as new; its queues start again from
    index 0 (packed: wrap counters 1), as a device that only re-reads the ring addresses would not.
    """

    name = "rng-keeps-ring-position-after-reset"
    clause = "def.reset.initial-state"
    both_layouts = True
    _kept: dict | None = None

    def device_reset(self) -> None:
        live = [(i, q) for i, q in enumerate(getattr(self, "queues", ())) if q is not None and q.has_avail()]
        if live:
            self._kept = {i: q.state() for i, q in live}
        super().device_reset()

    def set_status(self, status: int) -> None:
        super().set_status(status)
        if status & C.DRIVER_OK and self._kept:
            with self.lock:
                for i, kept in self._kept.items():
                    q = self.queues[i] if i < len(self.queues) else None
                    if q is not None:
                        q.set_state(kept_state(q, kept))  # BUG: the old position survives the reset
            self._kept = None
