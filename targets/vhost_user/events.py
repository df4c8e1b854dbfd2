"""The front-end's one event thread: eventfds and sockets the back-end signals on, served by epoll.

QEMU docs/interop/vhost-user.rst, "Communication": a back-end signals used buffers on each ring's
call eventfd (SET_VRING_CALL), errors on its err eventfd (SET_VRING_ERR), and sends its own requests
(e.g. CONFIG_CHANGE_MSG) on the SET_BACKEND_REQ_FD socket. One thread waits on all of them, so the
cost is one epoll_wait per batch of signals (docs/BACKENDS.md #12), and no wait is unbounded: the thread
wakes at least every ``POLL_S`` to notice a stop, and ``synchronize`` gives up after the timeout the
transport was opened with, naming the handler it waited for.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable

from virtio.errors import HarnessError

POLL_S = 0.25  # upper bound on how long a stop request waits for the thread, and a Ctrl-C for synchronize


def acquire_within(lock, timeout: float) -> bool:
    """``lock.acquire`` bounded by ``timeout`` seconds, waiting in slices of POLL_S so that a
    Ctrl-C in the waiting thread is seen at once; False if the lock stayed held."""
    deadline = time.monotonic() + timeout
    while not lock.acquire(timeout=max(0.0, min(POLL_S, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            return False
    return True


def new_eventfd() -> int:
    """A non-blocking eventfd: a spurious wake-up must never block the event thread."""
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def drain_eventfd(fd: int) -> int:
    """Read and reset an eventfd's counter; 0 if it was not signalled."""
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


class EventThread:
    """Calls ``handler()`` in one background thread whenever a registered fd is readable.

    Handlers run in this thread; an exception in one is kept in ``errors`` (the owner reports it)
    instead of killing the thread. ``unregister`` before closing an fd. ``timeout`` bounds
    ``synchronize``: the transport's own timeout, which also bounds each handler's waits.
    """

    def __init__(self, name: str = "vhost-user-events", *, timeout: float = 5.0):
        self.timeout = timeout
        self._epoll = select.epoll()
        self._handlers: dict[int, tuple[Callable[[], None], str]] = {}
        # Guards the handler table only, never held across a wait on the back-end.
        self._lock = threading.Lock()
        self._running = threading.Lock()  # held while a handler runs (see synchronize)
        self._current = ""  # what the handler running now serves (for synchronize's failure)
        self._stop = new_eventfd()
        self._epoll.register(self._stop, select.EPOLLIN)
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def register(self, fd: int, handler: Callable[[], None], what: str = "") -> None:
        """Call ``handler()`` whenever ``fd`` is readable; ``what`` names the fd in failures
        (e.g. "call eventfd of queue 0")."""
        with self._lock:
            self._handlers[fd] = (handler, what or f"fd {fd}")
            self._epoll.register(fd, select.EPOLLIN)

    def unregister(self, fd: int) -> None:
        with self._lock:
            if self._handlers.pop(fd, None) is not None:
                try:
                    self._epoll.unregister(fd)
                except (OSError, ValueError):
                    pass

    def _run(self) -> None:
        while True:
            try:
                events = self._epoll.poll(POLL_S)
            except (OSError, ValueError):  # epoll closed under us
                return
            for fd, _mask in events:
                if fd == self._stop:
                    return
                with self._lock:
                    entry = self._handlers.get(fd)
                if entry is None:
                    continue
                handler, self._current = entry
                with self._running:
                    try:
                        handler()
                    except Exception as e:  # keep serving the other fds; the owner reports it
                        self.errors.append(f"{type(e).__name__}: {e}")
                        self.unregister(fd)

    def synchronize(self, timeout: float | None = None) -> None:
        """Return once no handler is mid-flight (a handler started before this call has ended)
        and no fd signalled before it is still waiting for its handler (an eventfd the back-end
        wrote just before answering a message). A handler still running after ``timeout`` seconds
        (default: the thread's) is a HarnessError naming it (handlers are ours, and each bounds
        its own waits); fds that stay readable that long are a device that keeps signalling, not
        an error of ours: the wait ends there. The waits go in slices of POLL_S, so a Ctrl-C stops them."""
        if threading.current_thread() is self._thread:
            return
        bound = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + bound
        while True:
            if not acquire_within(self._running, max(0.0, deadline - time.monotonic())):
                raise HarnessError(f"timed out after {bound:.3g}s waiting for the {self._thread.name} handler of "
                                   f"{self._current or 'an fd'} to finish (synchronize)")
            self._running.release()
            if not self._pending() or time.monotonic() >= deadline:
                return
            time.sleep(0.0005)

    def _pending(self) -> bool:
        """Whether a registered fd is readable now (level-triggered: its handler has not run yet)."""
        with self._lock:
            fds = list(self._handlers)
        p = select.poll()  # not select(): fds above 1023 are fine
        for fd in fds:
            p.register(fd, select.POLLIN)
        return any(mask & select.POLLIN for _, mask in p.poll(0))  # a closed fd reports POLLNVAL only

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (bounded join) and close the epoll instance; registered fds stay open."""
        if self._thread.is_alive():
            os.eventfd_write(self._stop, 1)
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout)
        with self._lock:
            self._handlers.clear()
        self._epoll.close()
        os.close(self._stop)
