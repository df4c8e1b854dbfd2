"""The seam every transport implements: Linux's ``struct virtio_config_ops``, member for member.

Names and meanings follow include/linux/virtio_config.h. An op a transport cannot perform raises
UnsupportedOp (the test needing it skips and names the op) -- never a silent success. Remarks from
the Linux header that are duties too: ``finalize_features`` may be called more than once; a device
must not be reset from its own callbacks; ``get``/``set`` may sleep.

Features are Python ints up to 128 bits (``get_extended_features``); ``get_features`` is the low 64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from virtio import constants as C
from virtio.driver import VqInfo
from virtio.errors import HarnessError, RingTooSmall, UnsupportedOp
from virtio.packed_queue import PackedVirtqueue
from virtio.split_queue import SplitVirtqueue
from virtio.virtqueue import Virtqueue

# The 18 members of struct virtio_config_ops, in the header's order.
CONFIG_OPS = (
    "get",
    "set",
    "generation",
    "get_status",
    "set_status",
    "reset",
    "find_vqs",
    "del_vqs",
    "synchronize_cbs",
    "get_features",
    "get_extended_features",
    "finalize_features",
    "bus_name",
    "set_vq_affinity",
    "get_vq_affinity",
    "get_shm_region",
    "disable_vq_and_reset",
    "enable_vq_after_reset",
)


@dataclass
class ShmRegion:
    """struct virtio_shm_region: a guest address and a length (2.10)."""

    addr: int
    len: int


@dataclass
class TargetIdentity:
    """What a report says about the device under test."""

    spec: str
    transport: str
    device_id: int
    device_type: str
    description: str = ""
    extra: dict = field(default_factory=dict)


def build_vqs(ops: ConfigOps, mem, infos: list[VqInfo], notify, on_create=None) -> list[Virtqueue | None]:
    """find_vqs as every transport does it: one driver-side queue per info (None stays None) on
    ``mem``, sized ``info.size`` or ``ops.vq_num_max(i)``, with the features the driver wrote
    (``ops.driver_features``); packed when VIRTIO_F_RING_PACKED is among them (2.8: then every
    queue is packed). ``on_create(vq)`` tells the transport's device side. On any error the queues
    made so far are freed and the error re-raised."""
    features = ops.driver_features
    cls = PackedVirtqueue if features >> C.VIRTIO_F_RING_PACKED & 1 else SplitVirtqueue
    vqs: list[Virtqueue | None] = []
    try:
        for i, info in enumerate(infos):
            if info is None:
                vqs.append(None)
                continue
            num_max = ops.vq_num_max(i)
            if num_max == 0:
                raise HarnessError(f"queue {i} ({info.name}) does not exist on this device")
            size = info.size or num_max
            if size > num_max:
                raise RingTooSmall(f"queue {i} ({info.name})", f"a queue of {size} descriptors", f"at most {num_max} (queue_num_max)")
            vq = cls(mem, i, size, notify, features=features, callback=info.callback, name=info.name)
            vqs.append(vq)
            if on_create is not None:
                on_create(vq)
    except Exception:
        for vq in vqs:
            if vq is not None:
                vq.free_ring()
        raise
    return vqs


# -- capabilities ------------------------------------------------------------------------------------
# What a transport is or can do that a suite needs to know to judge a device: a suite asks
# ``ops.has("NAME")``, never the transport's name, so a new transport declares what it has and every
# suite follows. ``transport`` stays for reports and messages.
PCI_DEVICE = "pci-device"
"""The device is a PCI device (4.1). The feature bits the spec defines for PCI devices only are
defined for it (6: VIRTIO_F_SR_IOV, "currently only PCI devices support this feature", and
VIRTIO_F_ADMIN_VQ); whether it may offer SR_IOV depends on its PCI SR-IOV capability structure."""
FS_SHARED_DIR = "fs-shared-dir"  # virtio-fs: files can be made in the device's shared directory (shared_dir)
NET_CONTROL_QUEUE = "net-control-queue"
"""The device behind this transport serves a virtio-net control virtqueue (5.1.9.5) itself. Over
vhost-user it does not: the front-end (QEMU's virtio-net) emulates controlq and the back-end never
sees it, and DPDK's vhost library serves one (VQ_PAIRS_SET only) in VDUSE mode alone
(lib/vhost/vduse.c, virtio_net_ctrl.c); the control suites then skip instead of judging a back-end."""
CAPABILITIES = frozenset({PCI_DEVICE, FS_SHARED_DIR, NET_CONTROL_QUEUE})  # every capability a transport may declare


class ConfigOps:
    """Base class: every op unsupported until a transport implements it."""

    transport = "abstract"
    capabilities: frozenset[str] = frozenset()  # of CAPABILITIES: what this transport declares
    # Net devices: what the back-end does to a frame it forwards back (virtio/net_frames.py
    # FORWARD_MODES); "any" judges only the virtio duties. Set from the target's declaration.
    net_forward = "any"
    # virtio-fs: the directory the device shares, as a targets.fs_shared_dir.SharedDir (the
    # inventory's shared_dir for a back-end, the in-memory tree for a model); None: unknown.
    shared_dir = None

    def __init__(self):
        self.config_changed: Callable[[], None] | None = None  # config change notification handler

    def has(self, capability: str) -> bool:
        """Whether this transport declares ``capability``, one of CAPABILITIES (any other name is a
        ValueError: a misspelt capability must not read as one the transport lacks)."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown transport capability {capability!r}; known: {', '.join(sorted(CAPABILITIES))}")
        return capability in self.capabilities or (capability == FS_SHARED_DIR and self.shared_dir is not None)

    def _unsupported(self, op: str, reason: str = ""):
        raise UnsupportedOp(op, reason or f"the {self.transport} transport does not implement it")

    # -- config space (2.5) --
    def get(self, offset: int, length: int) -> bytes:
        self._unsupported("get")

    def set(self, offset: int, data: bytes) -> None:
        self._unsupported("set")

    def generation(self) -> int:
        self._unsupported("generation")

    # -- status (2.1) --
    def get_status(self) -> int:
        self._unsupported("get_status")

    def set_status(self, status: int) -> None:
        self._unsupported("set_status")

    def reset(self) -> None:
        self._unsupported("reset")

    # -- virtqueues (2.6..2.8) --
    def find_vqs(self, infos: list[VqInfo]) -> list:
        self._unsupported("find_vqs")

    def del_vqs(self) -> None:
        self._unsupported("del_vqs")

    def synchronize_cbs(self) -> None:
        self._unsupported("synchronize_cbs")

    # -- features (2.2) --
    # The features the driver wrote with finalize_features (0 before and after a reset): the one
    # copy of the negotiated features. A transport sets it in finalize_features and clears it in
    # reset; build_vqs (the ring layout), the transport's own checks (NOTIFICATION_DATA,
    # RING_RESET) and VirtioDriver.negotiated read it here.
    driver_features = 0

    def get_features(self) -> int:
        return self.get_extended_features() & ((1 << 64) - 1)

    def get_extended_features(self) -> int:
        self._unsupported("get_extended_features")

    def finalize_features(self, features: int) -> None:
        self._unsupported("finalize_features")

    def bus_name(self) -> str:
        self._unsupported("bus_name")

    def set_vq_affinity(self, vq, cpus) -> None:
        self._unsupported("set_vq_affinity")

    def get_vq_affinity(self, vq):
        self._unsupported("get_vq_affinity")

    # -- shared memory regions (2.10) --
    def get_shm_region(self, region_id: int) -> ShmRegion | None:
        self._unsupported("get_shm_region")

    # -- virtqueue reset (2.6.1, VIRTIO_F_RING_RESET) --
    def disable_vq_and_reset(self, vq) -> None:
        self._unsupported("disable_vq_and_reset")

    def enable_vq_after_reset(self, vq) -> None:
        self._unsupported("enable_vq_after_reset")

    # -- harness extensions (not in Linux): identity, life cycle, out-of-band stimuli --
    device_id: int = 0

    def identity(self) -> TargetIdentity:
        self._unsupported("identity")

    def vq_num_max(self, index: int) -> int:
        """Largest size the device allows for queue ``index``; 0 if the queue does not exist."""
        self._unsupported("vq_num_max")

    def missing_duties(self) -> dict[str, str]:
        """Device duties this target cannot expose to the harness (duty name -> reason), e.g. a
        vhost-user back-end without PROTOCOL_F_STATUS has no status byte of its own: tests marked
        ``device_duty(name)`` skip with the reason instead of judging the transport's bookkeeping."""
        return {}

    def trigger_config_change(self) -> None:
        """Make the device change its configuration now (a resize, a link flap), out of band."""
        self._unsupported("trigger_config_change", "the target has no way to make the device change its config")

    def close(self) -> None:
        pass
