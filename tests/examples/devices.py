"""Device factories for the ``python:`` target form, as a vendor would write them.

``python:tests.examples.devices:user_rng`` -- a user's own device model on our device-side API;
``...:silent`` -- a device that takes buffers and never answers; ``...:broken`` -- a factory that raises;
``...:slow`` -- answers the first buffer after each reset late ($VC_SLOW_S seconds, default 0.5), so a
run is mid-flight when a self-test signals it; ``...:killer`` -- kills the process it runs in with
SIGKILL on its first buffer (once per run if $VC_KILL_ONCE names a file: the file records the kill);
``...:crashing`` -- its handler raises (a simulator bug): a harness error, not a verdict on the device.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time

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


class SlowRng(CounterRng):
    name = "slow-rng"

    def handle(self, qindex, queue, chain):
        if self.counter == 0:
            time.sleep(float(os.environ.get("VC_SLOW_S", "0.5")))
        return super().handle(qindex, queue, chain)


class KillerRng(CounterRng):
    """A device that takes the harness down with it (a simulator crashing its host process)."""

    name = "killer-rng"

    def handle(self, qindex, queue, chain):
        once = os.environ.get("VC_KILL_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return super().handle(qindex, queue, chain)
        os.kill(os.getpid(), signal.SIGKILL)


class CrashingRng(CounterRng):
    name = "crashing-rng"

    def handle(self, qindex, queue, chain):
        raise RuntimeError("simulator crashed")


def crashing(mode="notify"):
    return CrashingRng(mode=mode)


def slow(mode="notify"):
    return SlowRng(mode=mode)


def killer(mode="notify"):
    return KillerRng(mode=mode)


def user_rng(mode="notify"):
    return CounterRng(mode=mode)


def silent(mode="notify"):
    return SilentRng(mode=mode)


def broken():
    raise RuntimeError("simulator licence server unreachable")
