"""Mutants of device suspend (VIRTIO 1.4, 3.4, VIRTIO_F_SUSPEND): each is a clean model with one
method overridden."""

from __future__ import annotations

import threading

from targets.model.blk import BlkDevice
from targets.model.rng import RngDevice
from virtio import constants as C

S = "dev.init.device-suspend."


class RngSuspendBeforeDriverOk(RngDevice):
    """Takes the SUSPEND bit at any stage: written before DRIVER_OK, it sticks.

    dev.init.device-suspend.1 (3.4.1): the device MUST ignore the SUSPEND bit until it is fully
    initialized.
    """

    name = "rng-suspend-before-driver-ok"
    clause = S + "1"
    both_layouts = True

    def set_status(self, status: int) -> None:
        super().set_status(status)
        if status & C.SUSPEND and not status & C.DRIVER_OK:
            self.status |= C.SUSPEND  # BUG: not ignored before initialization completed


class BlkConfigWritableWhileSuspended(BlkDevice):
    """Takes configuration writes while suspended (writeback changes).

    dev.init.device-suspend.2 (3.4.1, SHOULD): a suspended device ought to ignore writes to its
    configuration space other than device status.
    """

    name = "blk-config-writable-while-suspended"
    clause = S + "2"
    both_layouts = True

    def config_write(self, offset: int, data: bytes) -> None:
        with self.lock:
            was, self.status = self.status, self.status & ~C.SUSPEND  # BUG: the write goes through
            try:
                super().config_write(offset, data)
            finally:
                self.status = was


class RngWorksWhileSuspended(RngDevice):
    """Reports itself suspended at once, but uses the available buffers a moment later.

    dev.init.device-suspend.3 (3.4.1): while suspended a device MUST NOT access any virtqueue or
    send notifications (a device whose worker finishes after the status says suspended).
    """

    name = "rng-works-while-suspended"
    clause = S + "3"
    both_layouts = True

    def before_suspend(self) -> None:
        threading.Timer(0.02, self._late_work).start()

    def _late_work(self) -> None:
        with self.lock:
            if not self.suspended():
                return
            self.status |= C.DRIVER_OK  # BUG: processes the rings while suspended
            try:
                for i, q in enumerate(self.queues):
                    if q is not None and q.has_avail():
                        self.process_queue(i)
            finally:
                self.status &= ~C.DRIVER_OK


class BlkConfigNotifiedWhileSuspended(BlkDevice):
    """Notifies a configuration change made while suspended at once (the change itself waits).

    dev.init.device-suspend.4 (3.4.1): no configuration change notification while suspended.
    """

    name = "blk-config-notified-while-suspended"
    clause = S + "4"
    both_layouts = True

    def update_config(self, **values) -> None:
        super().update_config(**values)
        if self.suspended():
            self.bus.interrupt_config()  # BUG: notified while suspended


class BlkConfigChangeNotNotifiedOnResume(BlkDevice):
    """Applies a configuration change made while suspended at the resume, without notifying it.

    dev.init.device-suspend.5 (3.4.1): the device MUST send the notification when it resumes.
    """

    name = "blk-config-change-not-notified-on-resume"
    clause = S + "5"
    both_layouts = True

    def resumed(self) -> None:
        with self.lock:
            values, self.deferred_config = self.deferred_config, {}
            if values:
                self._apply_config(values)  # BUG: no interrupt_config
        super().resumed()


class RngIgnoresSuspend(RngDevice):
    """Offers VIRTIO_F_SUSPEND but ignores the SUSPEND bit: it keeps running, DRIVER_OK set.

    dev.init.device-suspend.6 (3.4.1): when the driver sets SUSPEND the device MUST suspend, or
    set DEVICE_NEEDS_RESET when it cannot.
    """

    name = "rng-ignores-suspend"
    clause = S + "6"
    both_layouts = True

    def suspend_or_resume(self, old: int, status: int) -> bool:
        return False  # BUG: SUSPEND dropped like any early write of it


class RngStaysSuspended(RngDevice):
    """Does not resume: DRIVER_OK written on the suspended device changes nothing.

    dev.init.device-suspend.7 (3.4.1): the device MUST resume, or set DEVICE_NEEDS_RESET.
    """

    name = "rng-stays-suspended"
    clause = S + "7"
    both_layouts = True

    def suspend_or_resume(self, old: int, status: int) -> bool:
        if old & C.SUSPEND:
            return True  # BUG: never resumes
        return super().suspend_or_resume(old, status)
