"""A device that answers a few requests after 90% of the device timeout: slow is not wrong, and
the harness's bounds must not turn it into a failure. Run with --device-timeout 2; the 1st, 40th,
80th... request of the run (five at most) is answered after 1.8 s, from a timer, as a device
whose back-end is busy would."""

from __future__ import annotations

import threading

from targets.model.rng import RngDevice

from . import Unusual

DEVICE_TIMEOUT = 2.0
LATE = 0.9 * DEVICE_TIMEOUT
EVERY = 40
MOST = 5
_count = {"requests": 0, "late": 0}  # across the run: a model is rebuilt for every test


class RngAnswersLate(RngDevice):
    name = "rng-answers-late"

    def on_reset(self) -> None:
        super().on_reset()
        for t in getattr(self, "_timers", ()):
            t.cancel()  # a reset drops what the device held (2.4)
        self._timers: list[threading.Timer] = []

    def detach(self) -> None:
        with self.lock:
            for t in self._timers:
                t.cancel()
        super().detach()

    def handle(self, qindex, queue, chain):
        _count["requests"] += 1
        if _count["late"] >= MOST or _count["requests"] % EVERY != 1:
            return super().handle(qindex, queue, chain)
        _count["late"] += 1
        timer = threading.Timer(LATE, self._answer, (qindex, queue, chain))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return None  # held

    def _answer(self, qindex, queue, chain) -> None:
        with self.lock:
            if not self.running() or self.queues[qindex] is not queue or chain.head not in self.held.get(qindex, {}):
                return  # reset meanwhile
            self.complete(qindex, chain, super().handle(qindex, queue, chain))
            self.signal(qindex)


def rng_answers_late(mode: str = "notify"):
    return RngAnswersLate(mode=mode)


DEVICES = [
    Unusual("rng-answers-late", "python:tests.unusual.slow:rng_answers_late",
            f"answers a few requests after {LATE:g} s, 90% of a {DEVICE_TIMEOUT:g} s device timeout",
            options=("--device-timeout", f"{DEVICE_TIMEOUT:g}")),
]
