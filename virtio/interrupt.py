"""Ctrl-C is an interrupt wherever it lands, never a device failure and never lost.

Python raises KeyboardInterrupt in whatever Python code the main thread runs when SIGINT arrives.
Some of that code cannot pass it on: a gc callback or ``__del__`` (Python prints it as "Exception
ignored" and goes on), a ``finally`` or ``except BaseException`` that raises something else instead
(hypothesis runs a state machine's teardown in a ``finally``). So the handler here remembers the
signal until the test runner says it has caught the interrupt (``delivered``), and a watchdog thread
sends the signal again every ``REDELIVER_S`` until then: an interrupt that was swallowed is raised
again at the next ordinary bytecode, within about a second.

``install()`` puts the handler on SIGINT; another signal that must behave like Ctrl-C (SIGTERM,
SIGHUP) can be given ``handler`` too. ``interrupted(exc)`` tells whether an exception is, or was
raised while handling, an interrupt.
"""

from __future__ import annotations

import signal
import threading

REDELIVER_S = 0.3  # a swallowed interrupt is raised again after this long

_pending: int | None = None  # the signal received and not yet delivered
_resent = 0  # signals the watchdog sent that the handler has not seen yet
_watchdog: threading.Thread | None = None
_wake = threading.Condition(threading.RLock())  # reentrant: the handler may run inside delivered()


def pending() -> bool:
    """Whether an interrupt arrived that the test runner has not caught yet."""
    return _pending is not None


def handler(signum, frame) -> None:
    """Signal handler: remember the interrupt, then raise KeyboardInterrupt here (as Python's own)."""
    global _pending, _watchdog, _resent
    with _wake:
        if _resent:
            _resent -= 1
            if _pending is None:
                # Our own resend, overtaken by the runner catching the interrupt it stood for: an
                # interrupt raised now would land in the runner's own handling of it (and Python
                # exits by SIGINT when one escapes).
                return
        _pending = signum
        if _watchdog is None or not _watchdog.is_alive():
            _watchdog = threading.Thread(target=_redeliver, args=(threading.main_thread().ident,), name="interrupt-redeliver", daemon=True)
            _watchdog.start()
    raise KeyboardInterrupt


def _redeliver(main_ident: int) -> None:
    global _resent
    with _wake:
        while _pending is not None:
            signum = _pending
            _wake.wait(REDELIVER_S)
            if _pending is not None and _pending == signum:
                _resent += 1
                signal.pthread_kill(main_ident, signum)


def delivered() -> None:
    """The runner caught the interrupt: stop sending it again (a new Ctrl-C starts afresh; a resend
    still on its way is dropped by the handler)."""
    global _pending
    with _wake:
        _pending = None
        _wake.notify_all()


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt is pending (for loops that want to stop at once)."""
    if _pending is not None:
        raise KeyboardInterrupt


def interrupted(exc: BaseException | None) -> bool:
    """``exc`` is a KeyboardInterrupt, or was raised while one propagated (its context chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def install(signum: int = signal.SIGINT):
    """Put ``handler`` on ``signum`` (main thread only; else nothing). Returns the previous handler,
    to give back to ``restore``, or None if nothing was installed."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signum, handler)


def restore(previous, signum: int = signal.SIGINT) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signum, previous)
    delivered()
