"""``require``: the suites' assertion, which names the clause a failed check breaks; ``blame`` and
``control``: which clause a failure of a variant or of its control run is charged to; ``poll`` and
``wait_until``: the bounded wait for something the device does that no queue reports."""

from __future__ import annotations

import time
from contextlib import contextmanager

from .errors import (
    DeviceTimeout,
    DeviceViolation,
    FeaturesNotAccepted,
    InvalidUsedFlags,
    InvalidUsedId,
    InvalidUsedIdx,
    InvalidUsedLen,
    WroteOutsideBuffer,
    WroteReadableBuffer,
)

# Used-ring violations: the driver saw exactly which ring duty broke (bad id, len, idx, flags).
RING_VIOLATIONS = (InvalidUsedId, InvalidUsedLen, InvalidUsedIdx, InvalidUsedFlags)
# Observations that name their own duty wherever they happen: no control or variant is charged
# with a refused FEATURES_OK (2.2.2 says which duty that is), nor with a write where the device
# must not write (outside a buffer, into a device-readable one: 2.7.5, 2.8.4).
OWN_CLAUSE = (FeaturesNotAccepted, WroteOutsideBuffer, WroteReadableBuffer)


def require(condition, clause: str, message: str, *, expected=None, observed=None, queue=None, level=None,
            implicated=()) -> None:
    if not condition:
        raise DeviceViolation(clause, message, expected=expected, observed=observed, queue=queue, level=level,
                              implicated=implicated)


POLL_INTERVAL = 0.001  # between two looks at the device: short, so Ctrl-C stops a wait at once


def poll(predicate, timeout: float, *, interval: float = POLL_INTERVAL):
    """Call ``predicate()`` until it returns a true value, for at most ``timeout`` seconds (the run's
    device timeout); its last value: true if it came in time, false if the time ran out. For a
    caller whose timeout is no violation (a skip, a settling period); the others: ``wait_until``."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)
    return value


def wait_until(predicate, timeout: float, awaited: str, clause: str, *, queue=None, observed=None,
               interval: float = POLL_INTERVAL):
    """``poll``, and a DeviceTimeout on ``clause`` (the duty the wait checks) if the time runs out:
    what was ``awaited``, on which ``queue``, for how long, and ``observed()`` (what was seen last)."""
    value = poll(predicate, timeout, interval=interval)
    if not value:
        raise DeviceTimeout(clause, awaited, timeout=timeout, queue=queue, observed=observed() if callable(observed) else observed)
    return value


def charge(clause: str, what: str, error: DeviceViolation, implicated=()) -> DeviceViolation:
    """``error`` charged to ``clause``: the clause it named and ``implicated`` become implicated."""
    # Always a plain DeviceViolation, a timeout's included (its message still says what was awaited
    # for how long): the ring stress suite's shrinking tells failures apart by type, and a diagnosed
    # failure must not pass for the undiagnosed timeout it came from.
    new = DeviceViolation(clause, f"{what}: {error.message}", expected=error.expected, observed=error.observed,
                          queue=error.queue, implicated=(error.clause, *error.implicated, *implicated))
    new.__cause__ = error
    return new


def blame(clause: str, what: str, exchange, *, ring_violations_too: bool = False) -> None:
    """Run ``exchange`` (after a control exchange passed); a device failure inside it -- a timeout
    included -- is charged to ``clause``, the one thing the test changed since the control.

    Used-ring violations (bad id, len, idx, flags) already name their own clause and keep it (with
    ``clause`` implicated), unless ``ring_violations_too``: e.g. under IN_ORDER, an out-of-order
    device shows up as used elems the in-order accounting cannot match, and the cause is the ordering.
    A refused FEATURES_OK and a write where the device must not write always keep their own clause.
    """
    try:
        exchange()
    except OWN_CLAUSE as e:
        _implicate(e, clause)
        raise
    except RING_VIOLATIONS as e:
        if not ring_violations_too:
            _implicate(e, clause)
            raise
        raise charge(clause, what, e) from e
    except DeviceViolation as e:
        if e.clause == clause:
            raise
        raise charge(clause, what, e) from e


@contextmanager
def control(clause: str, what: str, *, variant=()):
    """A control run: the test's variant will differ from it in one thing (the ``variant`` clauses,
    e.g. a feature). A failure inside is the control's, never the variant's: a timeout, or a check
    that named a ``variant`` clause, is charged to ``clause`` (the duty the control exercises); a
    used-ring violation or a check that named any other clause keeps it. ``variant`` clauses are
    listed as implicated."""
    try:
        yield
    except DeviceViolation as e:
        variant = tuple(variant)
        if e.clause == clause:
            raise
        if not isinstance(e, RING_VIOLATIONS + OWN_CLAUSE) and (isinstance(e, DeviceTimeout) or e.clause in variant):
            raise charge(clause, f"control: {what}", e, variant) from e
        _implicate(e, *variant)
        raise


def _implicate(error: DeviceViolation, *clauses: str) -> None:
    error.implicated = tuple(dict.fromkeys(c for c in (*error.implicated, *clauses) if c != error.clause))
