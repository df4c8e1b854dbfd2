"""``require``: the suites' assertion, which names the clause a failed check breaks."""

from __future__ import annotations

from .errors import DeviceViolation


def require(condition, clause: str, message: str, *, expected=None, observed=None, queue=None, level=None) -> None:
    if not condition:
        raise DeviceViolation(clause, message, expected=expected, observed=observed, queue=queue, level=level)
