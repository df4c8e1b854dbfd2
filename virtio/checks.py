"""``require``: the suites' assertion, which names the clause a failed check breaks."""

from __future__ import annotations

from .errors import DeviceViolation, InvalidUsedFlags, InvalidUsedId, InvalidUsedIdx, InvalidUsedLen


def require(condition, clause: str, message: str, *, expected=None, observed=None, queue=None, level=None) -> None:
    if not condition:
        raise DeviceViolation(clause, message, expected=expected, observed=observed, queue=queue, level=level)


def blame(clause: str, what: str, exchange) -> None:
    """Run ``exchange`` (after a control exchange passed); a device failure inside it -- a timeout
    included -- is charged to ``clause``, the one thing the test changed since the control."""
    try:
        exchange()
    except (InvalidUsedId, InvalidUsedLen, InvalidUsedIdx, InvalidUsedFlags):
        raise  # already pinned on the ring clause it breaks, whatever the test changed
    except DeviceViolation as e:
        raise DeviceViolation(clause, f"{what}: {e.message}", expected=e.expected, observed=e.observed, queue=e.queue) from e
