"""What can go wrong, one exception type per kind of failure, so a report can tell who broke what.

A DeviceViolation is the device's fault and names the clause it breaks; UnsupportedOp is a transport
that cannot perform a config op (a skip, never a pass); HarnessError is our own fault (inconclusive).
"""

from __future__ import annotations


class DeviceViolation(AssertionError):
    """The device broke a normative statement.

    Subclasses AssertionError so pytest reports it as a test failure, like a plain ``assert`` in a
    suite; the plugin reads ``clause``, ``expected`` and ``observed`` into the report.

    ``clause`` is the primary clause: the one duty whose breach was observed. ``implicated`` lists
    clauses the failure merely touches (the feature the test was about, a duty that may be the
    cause); the report lists them on the result, but only the primary clause fails, is judged for
    severity and can be waived.
    """

    def __init__(self, clause: str, message: str, *, expected=None, observed=None, queue=None, level=None,
                 implicated=()):
        self.clause = clause
        self.implicated = tuple(dict.fromkeys(c for c in implicated if c and c != clause))
        # A statement may join duties of two levels (2.2.2: SHOULD accept a valid subset, else MUST
        # refuse FEATURES_OK); ``level`` says which part this failure broke, if not the clause's.
        self.level = level
        self.message = message
        self.expected = expected
        self.observed = observed
        self.queue = queue
        parts = [message]
        if queue is not None:
            parts.append(f"queue {queue}")
        if expected is not None:
            parts.append(f"expected {expected}")
        if observed is not None:
            parts.append(f"observed {observed}")
        super().__init__(f"[{clause}] " + "; ".join(parts))


class InvalidUsedId(DeviceViolation):
    """A used elem names a descriptor id that is out of range or not in flight (2.7.8)."""


class InvalidUsedLen(DeviceViolation):
    """A used elem's len exceeds the device-writable bytes of its buffer (2.7.8.2)."""


class InvalidUsedIdx(DeviceViolation):
    """used idx moved by more than the number of buffers in flight (2.7.8)."""


class InvalidUsedFlags(DeviceViolation):
    """Packed ring (2.8.1): a descriptor's AVAIL/USED flags fit neither an available nor a used
    descriptor for the driver's used wrap counter, or mark used a descriptor never made available."""


class WroteOutsideBuffer(DeviceViolation):
    """A canary next to a buffer's element changed: the device wrote outside the memory it was
    given (2.7.5 / 2.8.4)."""


class WroteReadableBuffer(DeviceViolation):
    """A device-readable element (or indirect table) changed while the buffer was available
    (2.7.5.1 / 2.8.15)."""


class FeaturesNotAccepted(DeviceViolation):
    """FEATURES_OK did not stick for a feature set the driver may ask for (2.2.2, 3.1.1 step 6)."""


class DeviceTimeout(DeviceViolation):
    """A bounded wait on the device ran out: says what was awaited, where, for how long, and (as
    its clause) the duty that waiting checked -- the caller's, where it knows which."""

    def __init__(self, clause: str, awaited: str, *, timeout: float, queue=None, observed=None, implicated=()):
        self.awaited = awaited
        self.timeout = timeout
        super().__init__(
            clause,
            f"timed out after {timeout:.3g}s waiting for {awaited}",
            queue=queue,
            observed=observed,
            implicated=implicated,
        )


class UnsupportedOp(Exception):
    """The transport cannot perform this config op; tests needing it skip, naming the op."""

    def __init__(self, op: str, reason: str = ""):
        self.op = op
        self.reason = reason
        super().__init__(f"config op {op}() unsupported by this transport" + (f": {reason}" if reason else ""))


class HarnessError(Exception):
    """The harness itself failed or was misused; never blamed on the device."""


class NotApplicable(HarnessError):
    """A correct device cannot serve what a test needs (its queues are too small, its link is
    down): the test skips, saying what it needed and what the device offers; never a pass or a
    device failure."""


class LinkDown(NotApplicable):
    """A net device reports its link down (VIRTIO_NET_S_LINK_UP clear, 5.1.4) and did not bring
    it up within the device timeout: no frame can be expected back."""


class RingTooSmall(NotApplicable):
    """A test asked for more than the device's queues hold: a queue larger than its queue_num_max
    (2.6), a descriptor chain longer than the queue, or more descriptors in flight at once than
    the ring has. A correct device may offer queues that small, so the test skips, saying what it
    needed and what the device offers; it is never a pass or a device failure."""

    def __init__(self, queue: str, needed: str, offered: str):
        self.queue = queue
        super().__init__(f"{queue}: the test needs {needed}; the device offers {offered}")


class GuestMemoryError(HarnessError):
    """An access outside the guest memory the harness allocated."""


class TargetError(Exception):
    """A target could not be built or reached (bad spec, factory raised, device does not answer)."""


def ordinal(k: int) -> str:
    """1st, 2nd, 3rd, 4th, ... 11th, 12th, 13th, ... 21st: for messages that count positions."""
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"
