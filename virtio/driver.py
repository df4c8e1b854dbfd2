"""The driver side of a device as a whole (Linux's virtio.c): status, negotiation, config reads.

Takes any object with the config ops (targets/config_ops.py) -- duck-typed, so virtio/ never imports
a transport. Implements the initialization sequence of VIRTIO 1.4, 3.1.1, and the generation-counter
read loop of 2.5.1.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

from . import constants as C
from .blk_zoned import VIRTIO_BLK_Z_HM
from .checks import wait_until
from .config_layout import CONFIG_LAYOUTS
from .errors import DeviceViolation, FeaturesNotAccepted, HarnessError, NotApplicable
from .feature_table import unmet_requirements

CLAUSE_RESET_STATUS = "dev.basic.device-reset.1"
CLAUSE_FEATURES_OK = "dev.basic.feature-bits.2"
CLAUSE_RENEGOTIATION = "dev.basic.feature-bits.4"

# Feature sets each device (its config ops) has accepted in this process: a set refused after it was
# accepted once breaks 2.2.2's "SHOULD NOT fail ... after a reset", not "accept any valid subset".
_ACCEPTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
CLAUSE_GENERATION = "def.config.generation"

# Device-independent features whose driver side the harness implements. VIRTIO_F_RING_PACKED is
# implemented too (virtio/packed_queue.py) but never accepted by default: the split-ring suites must
# keep testing split rings; suites/test_packed_virtqueue.py asks for it with session.start(want=...).
DRIVER_TRANSPORT_FEATURES = (
    (1 << C.VIRTIO_F_VERSION_1)
    | (1 << C.VIRTIO_F_INDIRECT_DESC)
    | (1 << C.VIRTIO_F_EVENT_IDX)
    | (1 << C.VIRTIO_F_RING_RESET)
)

# Device-specific features the harness's drivers handle (config-only ones are always safe).
DRIVER_DEVICE_FEATURES = {
    C.VIRTIO_ID_BLOCK: sum(
        1 << b
        for b in (
            C.VIRTIO_BLK_F_SIZE_MAX,
            C.VIRTIO_BLK_F_SEG_MAX,
            C.VIRTIO_BLK_F_GEOMETRY,
            C.VIRTIO_BLK_F_RO,
            C.VIRTIO_BLK_F_BLK_SIZE,
            C.VIRTIO_BLK_F_FLUSH,
            C.VIRTIO_BLK_F_TOPOLOGY,
            C.VIRTIO_BLK_F_CONFIG_WCE,
            C.VIRTIO_BLK_F_DISCARD,
            C.VIRTIO_BLK_F_WRITE_ZEROES,
            C.VIRTIO_BLK_F_ZONED,  # all three zoned models (5.2.3); the workloads write conventional zones only
        )
    ),
    C.VIRTIO_ID_NET: sum(
        1 << b
        for b in (
            C.VIRTIO_NET_F_MAC,
            C.VIRTIO_NET_F_STATUS,
            C.VIRTIO_NET_F_CTRL_VQ,
            C.VIRTIO_NET_F_CTRL_RX,
            C.VIRTIO_NET_F_CTRL_MAC_ADDR,
            C.VIRTIO_NET_F_MTU,
        )
    ),
    C.VIRTIO_ID_CONSOLE: 1 << C.VIRTIO_CONSOLE_F_SIZE,
    C.VIRTIO_ID_RNG: 0,
}


@dataclass
class VqInfo:
    """struct virtqueue_info: name, callback, ctx; plus ``size`` (None: the device's maximum)."""

    name: str
    callback: Callable | None = None
    ctx: bool = False
    size: int | None = None


def driver_features(device_id: int) -> int:
    return DRIVER_TRANSPORT_FEATURES | DRIVER_DEVICE_FEATURES.get(device_id, 0)


def has(features: int, bit: int) -> bool:
    return bool(features >> bit & 1)


class VirtioDriver:
    """One device, driven through its config ops."""

    def __init__(self, ops, *, timeout: float = 5.0):
        self.ops = ops
        self.timeout = timeout
        self.device_id = ops.device_id
        self.layout = CONFIG_LAYOUTS.get(self.device_id)
        self._features_ok = False  # FEATURES_OK stuck for what ops.driver_features holds
        self.vqs: list = []
        self.config_notifications = 0
        try:
            self.accepted_features = _ACCEPTED.setdefault(ops, set())
        except TypeError:  # ops that cannot be weakly referenced: this driver's own memory only
            self.accepted_features = set()
        ops.config_changed = self._config_changed

    @property
    def negotiated(self) -> int | None:
        """The negotiated features (2.2): what the driver wrote, once FEATURES_OK stuck; None
        before. The one copy is the config ops' ``driver_features`` (targets/config_ops.py),
        which the transport and its queues read too."""
        return self.ops.driver_features if self._features_ok else None

    @negotiated.setter
    def negotiated(self, features: int | None) -> None:
        # A suite walking 3.1.1 step by step says FEATURES_OK stuck (None: it did not). What was
        # negotiated is what finalize_features wrote, whatever the suite recomputes afterwards
        # (a device whose offer changes after FEATURES_OK would make that another set).
        self._features_ok = features is not None

    def _config_changed(self) -> None:
        """Configuration change notification from the device (2.3)."""
        self.config_notifications += 1

    # -- status (2.1) --------------------------------------------------------------------------
    def status(self) -> int:
        return self.ops.get_status()

    def add_status(self, bit: int) -> int:
        """Set one more status bit (as Linux's virtio_add_status) and return what reads back."""
        self.ops.set_status(self.ops.get_status() | bit)
        return self.ops.get_status()

    def reset(self) -> None:
        """Reset and wait (bounded) until device status reads 0 (2.4, 2.4.2)."""
        if self.vqs:
            self.ops.del_vqs()
            self.vqs = []
        self.ops.reset()
        self._features_ok = False
        self.wait_reset()

    def wait_reset(self, what: str = "device status to read 0 after reset") -> None:
        """After ``ops.reset()``: wait (bounded) until device status reads 0 (2.4.2); a
        DeviceTimeout on 2.4.1 naming the status still read, else."""
        last = [0]

        def reads_zero() -> bool:
            last[0] = self.ops.get_status()
            return last[0] == 0

        wait_until(reads_zero, self.timeout, what, CLAUSE_RESET_STATUS, observed=lambda: f"status {C.status_names(last[0])}")

    # -- features (2.2) --------------------------------------------------------------------------
    def device_features(self) -> int:
        return self.ops.get_extended_features()

    def wanted_features(self, accept: int | None = None, refuse: int = 0) -> int:
        """The features this driver would accept: offered & implemented (& accept) & ~refuse."""
        offered = self.device_features()
        mask = driver_features(self.device_id) if accept is None else accept
        features = offered & mask & ~refuse
        if has(features, C.VIRTIO_BLK_F_DISCARD) and has(features, C.VIRTIO_BLK_F_ZONED) and self.zoned_model() == VIRTIO_BLK_Z_HM:
            features &= ~(1 << C.VIRTIO_BLK_F_DISCARD)  # 5.2.3: not with a host-managed zoned device
        # 2.2.1: a driver MUST NOT accept a feature whose prerequisite it does not accept.
        while unmet := unmet_requirements(features, self.device_id):
            for bit, _ in unmet:
                features &= ~(1 << bit)
        return features

    def negotiate(self, features: int, *, check: bool = True) -> bool:
        """Steps 1-6 of 3.1.1: reset, ACKNOWLEDGE, DRIVER, write features, FEATURES_OK, re-read.

        Returns whether FEATURES_OK stuck. With ``check``, a refusal of a subset of the offered
        features is reported against 2.2.2 (the device should accept any valid subset).
        """
        self.reset()
        self.add_status(C.ACKNOWLEDGE)
        self.add_status(C.DRIVER)
        self.ops.finalize_features(features)
        if self.ops.driver_features != features:
            raise HarnessError(f"{type(self.ops).__name__}.finalize_features did not keep the features in driver_features")
        status = self.add_status(C.FEATURES_OK)
        ok = bool(status & C.FEATURES_OK)
        if ok:
            self._features_ok = True
            self.accepted_features.add(features)
        elif check and self.zoned_refusal_expected(features):
            raise NotApplicable("a host-managed zoned device (zoned.model VIRTIO_BLK_Z_HM) refuses FEATURES_OK "
                                "without VIRTIO_BLK_F_ZONED, as 5.2.5.2 requires: that feature set is not valid for it")
        elif check and features in self.accepted_features:
            raise FeaturesNotAccepted(
                CLAUSE_RENEGOTIATION,
                "device refused FEATURES_OK, after a reset, for a feature set it accepted before",
                expected="FEATURES_OK set",
                observed=f"status {C.status_names(status)} after accepting {C.feature_names(features, self.device_id)}",
                implicated=(CLAUSE_FEATURES_OK,),
            )
        elif check:
            raise FeaturesNotAccepted(
                CLAUSE_FEATURES_OK,
                "device refused FEATURES_OK for a subset of the features it offered",
                level="SHOULD",
                expected="FEATURES_OK set",
                observed=f"status {C.status_names(status)} after accepting {C.feature_names(features, self.device_id)}",
            )
        return ok

    def zoned_model(self) -> int | None:
        """zoned.model of a blk device offering VIRTIO_BLK_F_ZONED (None otherwise). 3.1.1 step 4
        lets a driver read device configuration before accepting features; 5.2.3 has it read this."""
        if self.device_id != C.VIRTIO_ID_BLOCK or not has(self.device_features(), C.VIRTIO_BLK_F_ZONED):
            return None
        return self.config_field("zoned.model")

    def zoned_refusal_expected(self, features: int) -> bool:
        """5.2.5.2: a host-managed device must fail FEATURES_OK when ZONED is not accepted."""
        return not has(features, C.VIRTIO_BLK_F_ZONED) and self.zoned_model() == VIRTIO_BLK_Z_HM

    # -- virtqueues --------------------------------------------------------------------------------
    def default_vq_names(self) -> list[str]:
        f = self.negotiated or 0
        if self.device_id == C.VIRTIO_ID_NET:
            # 5.1.2: with MQ, receiveqK/transmitqK for K up to max_virtqueue_pairs, then controlq
            # (queue 2N). A pair count out of 1..0x8000 (5.1.4.1) is the config suite's to report.
            pairs = self.config_field("max_virtqueue_pairs") if has(f, C.VIRTIO_NET_F_MQ) else 1
            pairs = pairs if 1 <= pairs <= 0x8000 else 1
            names = [f"{q}{k}" for k in range(1, pairs + 1) for q in ("receiveq", "transmitq")]
            return names + (["controlq"] if has(f, C.VIRTIO_NET_F_CTRL_VQ) else [])
        if self.device_id == C.VIRTIO_ID_CONSOLE:
            return ["receiveq", "transmitq"]
        if self.device_id == C.VIRTIO_ID_FS:  # 5.11.2: notification queue only with the feature
            return ["hiprio"] + (["notification"] if has(f, C.VIRTIO_FS_F_NOTIFICATION) else []) + ["requestq"]
        if self.device_id == C.VIRTIO_ID_BLOCK and has(f, C.VIRTIO_BLK_F_MQ):
            # 5.2.2: requestq1..requestqN, N = num_queues; an implausible 0 counts as 1 (the
            # multiqueue suite reports it).
            n = self.config_field("num_queues") or 1
            return [f"requestq{k}" for k in range(1, n + 1)]
        return ["requestq"]

    def find_vqs(self, infos) -> list:
        self.vqs = self.ops.find_vqs(infos)
        return self.vqs

    def initialize(self, features: int | None = None, infos=None, driver_ok: bool = True) -> list:
        """The whole of 3.1.1: negotiate, set up virtqueues (step 7), then DRIVER_OK (step 8)."""
        self.negotiate(self.wanted_features() if features is None else features)
        if infos is None:
            infos = [VqInfo(n) for n in self.default_vq_names()]
        vqs = self.find_vqs(infos)
        if driver_ok:
            self.driver_ok()
        return vqs

    def reset_vq(self, vq, num: int | None = None, *, while_reset: Callable[[], None] | None = None) -> list:
        """Per-queue reset and re-enable (2.6.1, VIRTIO_F_RING_RESET), optionally with a new size;
        ``while_reset`` runs between the two, while the queue is being reset.

        Returns the buffers that were in flight: after the reset they are the driver's again.
        """
        self.ops.disable_vq_and_reset(vq)
        if while_reset is not None:
            while_reset()
        reclaimed = []
        while (chain := vq.detach_unused_buf()) is not None:
            reclaimed.append(chain)
        if num is None:
            vq.reset_state()
        else:
            vq.resize(num)
        self.ops.enable_vq_after_reset(vq)
        return reclaimed

    def driver_ok(self) -> int:
        return self.add_status(C.DRIVER_OK)

    # -- configuration space (2.5) ---------------------------------------------------------------
    def config_field(self, name: str):
        f = self.layout[name]
        return f.decode(self.ops.get(f.offset, f.size))

    def config_snapshot(self, names=None, *, attempts: int = 64) -> dict:
        """Read fields inside the generation loop of 2.5.1; bounded, since a device whose
        generation never settles would otherwise hang the driver."""
        offered = self.device_features()
        fields = [f for f in self.layout.present(offered) if names is None or f.name in names]
        for _ in range(attempts):
            before = self.ops.generation()
            values = {f.name: f.decode(self.ops.get(f.offset, f.size)) for f in fields}
            after = self.ops.generation()
            if before == after:
                return values
        raise DeviceViolation(
            CLAUSE_GENERATION,
            f"config generation never stable over {attempts} read loops",
            observed=f"last generations {before} -> {after}",
        )
