"""Device factories for the ``python:`` target form, as a vendor would write them.

``python:tests.examples.devices:user_rng`` -- a user's own device model on our device-side API;
``...:silent`` -- a device that takes buffers and never answers; ``...:broken`` -- a factory that raises.
"""

from __future__ import annotations

import hashlib

from targets.model.device import Device
from virtio import constants as C


class CounterRng(Device):
    """A deterministic entropy device (a simulator's stand-in): SHA-256 of a counter (5.4)."""

    device_id = C.VIRTIO_ID_RNG
    name = "user-rng"
    num_queues = 1

    def on_reset(self):
        self.counter = 0

    def handle(self, qindex, queue, chain):
        out = bytearray()
        while len(out) < chain.writable_len:
            self.counter += 1
            out += hashlib.sha256(self.counter.to_bytes(8, "little")).digest()
        return queue.write_writable(chain, bytes(out[: chain.writable_len]))


class SilentRng(CounterRng):
    """Never uses a buffer: every wait on it must end in a bounded timeout, not a hang."""

    name = "silent-rng"

    def process_queue(self, index):
        return


def user_rng(mode="notify"):
    return CounterRng(mode=mode)


def silent(mode="notify"):
    return SilentRng(mode=mode)


def broken():
    raise RuntimeError("simulator licence server unreachable")
