"""``require``: the suites' assertion, which names the clause a failed check breaks."""

from __future__ import annotations

from .errors import (DeviceViolation, InvalidUsedFlags, InvalidUsedId, InvalidUsedIdx, InvalidUsedLen, WroteOutsideBuffer,
                     WroteReadableBuffer)


def require(condition, clause: str, message: str, *, expected=None, observed=None, queue=None, level=None) -> None:
    if not condition:
        raise DeviceViolation(clause, message, expected=expected, observed=observed, queue=queue, level=level)


def blame(clause: str, what: str, exchange, *, ring_violations_too: bool = False) -> None:
    """Run ``exchange`` (after a control exchange passed); a device failure inside it -- a timeout
    included -- is charged to ``clause``, the one thing the test changed since the control.

    Used-ring violations (bad id, len, idx, flags) and writes where the device must not write
    (outside a buffer, into a device-readable one) already name their own clause and keep it,
    unless ``ring_violations_too``: e.g. under IN_ORDER, an out-of-order device shows up as used
    elems the in-order accounting cannot match, and the cause is the ordering.
    """
    try:
        exchange()
    except (InvalidUsedId, InvalidUsedLen, InvalidUsedIdx, InvalidUsedFlags, WroteOutsideBuffer, WroteReadableBuffer) as e:
        if not ring_violations_too:
            raise
        raise DeviceViolation(clause, f"{what}: {e.message}", expected=e.expected, observed=e.observed, queue=e.queue) from e
    except DeviceViolation as e:
        raise DeviceViolation(clause, f"{what}: {e.message}", expected=e.expected, observed=e.observed, queue=e.queue) from e
