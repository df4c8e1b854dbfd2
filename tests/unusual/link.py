"""A net device whose link comes up only a moment after DRIVER_OK, as a NIC negotiating with its
peer does: 5.1.4 (VIRTIO_NET_F_STATUS: the link state is in ``status``, VIRTIO_NET_S_LINK_UP) with
a configuration change notification when it changes (2.5). Frames sent while the link is down go
nowhere; a driver waits for the link."""

from __future__ import annotations

import threading

from targets.model.net import NetDevice
from virtio import constants as C

from . import Unusual

LINK_DELAY = 0.2  # seconds from DRIVER_OK to link up


class NetLinkUpLate(NetDevice):
    name = "net-link-up-late"

    def on_reset(self) -> None:
        super().on_reset()  # link up, as the model comes back
        timer = getattr(self, "_link_timer", None)
        if timer is not None:
            timer.cancel()
        self._link_timer = None
        with self.lock:
            self._set_field("status", 0)  # down until a while after DRIVER_OK
            self.bump_generation()

    def on_driver_ok(self) -> None:
        super().on_driver_ok()
        self._link_timer = threading.Timer(LINK_DELAY, self._link_up)
        self._link_timer.daemon = True
        self._link_timer.start()

    def _link_up(self) -> None:
        with self.lock:
            if self.running() and not self.link_up():
                self.update_config(status=C.VIRTIO_NET_S_LINK_UP)

    def detach(self) -> None:
        if self._link_timer is not None:
            self._link_timer.cancel()
        super().detach()


def net_link_up_late(mode: str = "notify"):
    return NetLinkUpLate(mode=mode)


DEVICES = [
    Unusual("net-link-up-late", "python:tests.unusual.link:net_link_up_late",
            f"reports its link down until {LINK_DELAY:g} s after DRIVER_OK, then up with a config change notification (5.1.4, 2.5)"),
]
