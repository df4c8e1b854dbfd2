"""The in-process transport: config ops implemented by direct calls into a model device.

Guest memory is a memfd mapping shared by driver and device; notifications are method calls
(notify-driven mode) or wake a device thread (threaded mode).
"""

from __future__ import annotations

from virtio import constants as C
from virtio.checks import poll
from virtio.errors import HarnessError, TargetError, UnsupportedOp
from virtio.memory import GuestMemory
from virtio.virtqueue import Virtqueue

from ..config_ops import NET_CONTROL_QUEUE, ConfigOps, ShmRegion, TargetIdentity, VqInfo, build_vqs


class ModelTransport(ConfigOps):
    transport = "model"
    # In-process calls: no PCI device; the model serves its own control queue (targets/config_ops.py).
    capabilities = frozenset({NET_CONTROL_QUEUE})

    def __init__(self, device, spec: str, mem_size: int = 64 << 20, *, timeout: float = 5.0):
        """``timeout``: the run's device timeout (--device-timeout), the bound on synchronize_cbs."""
        super().__init__()
        for attr in ("device_id", "get_device_features", "set_status", "get_status", "notify", "queue_set"):
            if not hasattr(device, attr):
                raise TargetError(f"{spec}: device object {type(device).__name__} lacks {attr!r} (see targets/model/device.py)")
        self.device = device
        self.spec = spec
        self.timeout = timeout
        self.net_forward = getattr(device, "net_forward", "any")  # a model says how it loops frames back
        self.shared_dir = getattr(device, "shared_dir", None)  # a virtio-fs model's in-memory tree
        self.device_id = device.device_id
        self.mem = GuestMemory(mem_size)
        self.vqs: list[Virtqueue] = []
        self.config_interrupts = 0
        self._affinity: dict[int, object] = {}
        device.attach(self.mem, self)

    # -- bus: device -> driver notifications ----------------------------------------------------
    def interrupt_vq(self, index: int) -> None:
        if 0 <= index < len(self.vqs) and self.vqs[index] is not None:
            self.vqs[index].interrupt()
        else:
            self.stray_interrupts = getattr(self, "stray_interrupts", 0) + 1

    def interrupt_config(self) -> None:
        self.config_interrupts += 1
        if self.config_changed is not None:
            self.config_changed()

    # -- config ops --------------------------------------------------------------------------------
    def get(self, offset: int, length: int) -> bytes:
        return bytes(self.device.config_read(offset, length))

    def set(self, offset: int, data: bytes) -> None:
        self.device.config_write(offset, bytes(data))

    def generation(self) -> int:
        return int(self.device.get_config_generation())

    def get_status(self) -> int:
        return int(self.device.get_status()) & 0xFF

    def set_status(self, status: int) -> None:
        if status == 0:
            raise HarnessError("set_status(0) is not allowed; use reset()")  # as in Linux
        self.device.set_status(status & 0xFF)

    def reset(self) -> None:
        self.device.set_status(0)
        self.driver_features = 0

    def get_extended_features(self) -> int:
        return int(self.device.get_device_features()) & ((1 << C.FEATURE_BITS) - 1)

    def finalize_features(self, features: int) -> None:
        self.driver_features = features
        self.device.set_driver_features(features)

    def vq_num_max(self, index: int) -> int:
        return int(self.device.queue_max(index))

    def find_vqs(self, infos: list[VqInfo]) -> list[Virtqueue]:
        if self.vqs:
            raise HarnessError("find_vqs called twice without del_vqs")

        def attach(vq) -> None:
            self.device.queue_set(vq.index, vq.addrs)
            self.device.queue_enable(vq.index)

        vqs = build_vqs(self, self.mem, infos, self._notify, attach)
        self.vqs = vqs
        return vqs

    def _notify(self, vq) -> None:
        if self.driver_features >> C.VIRTIO_F_NOTIFICATION_DATA & 1:
            # 2.9: the notification carries vqn (low 16 bits) and where the driver will add next.
            self.device.notify(vq.index, data=vq.index | vq.next_notification() << 16)
        else:
            self.device.notify(vq.index)

    def del_vqs(self) -> None:
        for vq in self.vqs:
            if vq is not None:
                vq.free_ring()
        self.vqs = []

    def synchronize_cbs(self) -> None:
        # The device signals while holding its lock: once we hold it, no callback is mid-flight.
        # Short tries within the bound, so Ctrl-C ends the wait at once. No clause: the callback
        # that runs under the lock is the driver's as much as the device's.
        if not poll(lambda: self.device.lock.acquire(timeout=0.05), self.timeout, interval=0):
            raise HarnessError(f"{self.spec}: timed out after {self.timeout:.3g}s waiting for the device's lock "
                               "(synchronize_cbs: a device-side callback still running)")
        self.device.lock.release()

    def bus_name(self) -> str:
        return f"model:{self.device.name}"

    def set_vq_affinity(self, vq, cpus) -> None:
        self._affinity[vq.index] = frozenset(cpus) if cpus is not None else None

    def get_vq_affinity(self, vq):
        return self._affinity.get(vq.index)

    def get_shm_region(self, region_id: int) -> ShmRegion | None:
        region = self.device.shm_regions().get(region_id)
        return None if region is None else ShmRegion(*region)

    def _ring_reset_ok(self, op: str) -> None:
        negotiated = self.get_status() & C.FEATURES_OK and self.driver_features >> C.VIRTIO_F_RING_RESET & 1
        if not negotiated or not hasattr(self.device, "queue_reset"):
            raise UnsupportedOp(op, "VIRTIO_F_RING_RESET not negotiated with this device")

    def disable_vq_and_reset(self, vq) -> None:
        self._ring_reset_ok("disable_vq_and_reset")
        self.device.queue_reset(vq.index)

    def enable_vq_after_reset(self, vq) -> None:
        """Re-enable with whatever ring (and size) the driver-side queue now has (2.6.1.2)."""
        self._ring_reset_ok("enable_vq_after_reset")
        if vq.num > self.vq_num_max(vq.index):
            raise HarnessError(f"queue {vq.index}: size {vq.num} above the device maximum")
        self.device.queue_set(vq.index, vq.addrs)
        self.device.queue_enable(vq.index)

    def trigger_config_change(self) -> None:
        try:
            self.device.change_config()
        except NotImplementedError as e:
            raise UnsupportedOp("trigger_config_change", str(e)) from None

    def identity(self) -> TargetIdentity:
        return TargetIdentity(
            spec=self.spec,
            transport=self.transport,
            device_id=self.device_id,
            device_type=C.DEVICE_TYPES.get(self.device_id, f"id {self.device_id}"),
            description=f"{type(self.device).__module__}.{type(self.device).__name__} ({getattr(self.device, 'mode', 'notify')} mode)",
            extra={"mode": getattr(self.device, "mode", "notify")},
        )

    def close(self) -> None:
        self.del_vqs()
        try:
            self.device.detach()
        finally:
            self.mem.close()
