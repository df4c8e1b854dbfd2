"""Every wait on a device is bounded (issue 9, item 5): a scan of suites/ for polling loops that
could spin for ever, and the bounded waits themselves.

A ``while`` loop is a polling loop when it waits for time to pass (a ``sleep``), calls a wait that
returns when its time is up (``wait``, ``wait_*``, ``acquire``, ``join``, ``select``, ``poll``: the
loop, not the wait, then decides when to stop), or idles (a body of only ``pass``, ``continue`` or
sleeps) while its condition calls something, e.g. reads the device status. Such a loop must check a
deadline (compare a clock, ``time.monotonic()``, or a ``deadline`` value), or say on its ``while``
line why it ends (``# bounded: REASON``, e.g. each lap takes one of a finite set of buffers back).
Better, it is no loop: ``virtio.checks.poll`` / ``wait_until``.

The harness's waits that raise a DeviceTimeout when their time is up (RAISING_WAITS) make a loop
around them no polling loop: each lap gets what it waited for, or the test fails.
"""

from __future__ import annotations

import ast
import io
import re
import threading
import time
import tokenize
from pathlib import Path

import pytest

from targets.model.rng import RngDevice
from targets.model.transport import ModelTransport
from virtio.checks import poll, wait_until
from virtio.errors import DeviceTimeout, HarnessError

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / "suites"
WAITS = re.compile(r"^(wait(_\w+)?|acquire|join|select|poll)$")
RAISING_WAITS = {"wait_used", "wait_used_batch", "wait_reset", "wait_until"}  # virtio/virtqueue.py, driver.py, checks.py
CLOCKS = {"monotonic", "time", "perf_counter", "monotonic_ns", "perf_counter_ns"}
BOUNDED = re.compile(r"#\s*bounded:\s*\S")


def _name(func: ast.AST) -> str | None:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _own_nodes(loop: ast.While):
    """The nodes of the loop's condition and body, not those of functions defined inside it."""
    todo = [loop.test, *loop.body, *loop.orelse]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def _is_sleep(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and _name(node.func) == "sleep"


def _idles(stmt: ast.stmt) -> bool:
    return isinstance(stmt, (ast.Pass, ast.Continue)) or (
        isinstance(stmt, ast.Expr) and (_is_sleep(stmt.value) or isinstance(stmt.value, ast.Constant)))


def _polls(loop: ast.While) -> str | None:
    """Why ``loop`` is a polling loop (None: it is not one)."""
    for node in _own_nodes(loop):
        if _is_sleep(node):
            return "sleeps"
        if isinstance(node, ast.Call) and WAITS.match(_name(node.func) or "") and _name(node.func) not in RAISING_WAITS:
            return f"calls {_name(node.func)}()"
    if all(_idles(s) for s in loop.body) and any(isinstance(n, ast.Call) for n in ast.walk(loop.test)):
        return f"idles until {ast.unparse(loop.test)}"
    return None


def _checks_deadline(loop: ast.While) -> bool:
    for node in _own_nodes(loop):
        if not isinstance(node, ast.Compare):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and _name(sub.func) in CLOCKS:
                return True
            if isinstance(sub, (ast.Name, ast.Attribute)) and "deadline" in (_name(sub) or "").lower():
                return True
    return False


def unbounded_loops(source: str, filename: str = "<suite>") -> list[str]:
    """``file:line: why`` for every polling loop in ``source`` without a deadline or a reason."""
    comments = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.While):
            continue
        why = _polls(node)
        if why and not _checks_deadline(node) and not BOUNDED.search(comments.get(node.lineno, "")):
            out.append(f"{filename}:{node.lineno}: `while {ast.unparse(node.test)}` {why} with no deadline "
                       "(virtio.checks.poll / wait_until, or `# bounded: why it ends`)")
    return out


# -- the scan ---------------------------------------------------------------------------------------
def test_no_unbounded_polling_loop_in_the_suites():
    problems = []
    for path in sorted(SUITES.rglob("*.py")):
        problems += unbounded_loops(path.read_text(), str(path.relative_to(ROOT)))
    assert not problems, "\n".join(problems)


OLD_RESET_LOOP = """
def test_reset(driver):
    d = driver
    d.ops.reset()
    while d.status() != 0:
        time.sleep(0.001)
"""


@pytest.mark.parametrize("source", [
    OLD_RESET_LOOP,  # suites/test_device_reset.py as it was before commit 506a31a
    "while d.status() != 0:\n    pass\n",
    "while not vq.more_used():\n    continue\n",
    "while not done.is_set():\n    done.wait(0.1)\n",
    "while pending:  # bounded:\n    wait(q, 1)\n",  # a reason must be given
    "while True:\n    if d.status() == 0:\n        break\n    sleep(0.01)\n",
    "while pending:\n    wait(q, 1)\n",  # a wait that may return empty-handed, laps not said to end
    "while True:\n    def later():\n        return time.monotonic() > deadline\n    time.sleep(0.01)\n",  # not this loop's check
])
def test_the_scan_catches_unbounded_polling(source):
    assert unbounded_loops(source), source


@pytest.mark.parametrize("source", [
    "deadline = time.monotonic() + 1\nwhile d.status() != 0 and time.monotonic() < deadline:\n    time.sleep(0.001)\n",
    "while d.status() != 0:\n    if time.monotonic() > deadline:\n        raise TimeoutError\n    time.sleep(0.001)\n",
    "while token in outstanding:  # bounded: each wait takes one buffer back or raises DeviceTimeout\n    wait(q, 1)\n",
    "while (c := vq.get_buf()) is not None:\n    got.append(c)\n",  # drains what is there: no waiting
    "while done < 3 * num:\n    done += len(vq.wait_used(1, 1.0))\n",  # each lap gets a buffer or raises DeviceTimeout
])
def test_the_scan_lets_bounded_loops_through(source):
    assert unbounded_loops(source) == []


# -- the bounded waits ------------------------------------------------------------------------------
def test_poll_returns_the_value_or_gives_up_in_time():
    assert poll(lambda: 7, 1.0) == 7
    t0 = time.monotonic()
    assert poll(lambda: 0, 0.05) == 0
    assert 0.05 <= time.monotonic() - t0 < 1.0


def test_wait_until_says_what_where_and_how_long():
    with pytest.raises(DeviceTimeout) as e:
        wait_until(lambda: False, 0.02, "the status to read 0", "dev.basic.device-reset.1", queue="requestq",
                   observed=lambda: "status DRIVER_OK")
    err = e.value
    assert err.clause == "dev.basic.device-reset.1" and err.queue == "requestq" and err.timeout == 0.02
    assert "timed out after 0.02s waiting for the status to read 0" in err.message and err.observed == "status DRIVER_OK"


def test_synchronize_cbs_is_bounded_by_the_device_timeout():
    t = ModelTransport(RngDevice(), "model:rng", timeout=0.2)
    held = threading.Event()
    release = threading.Event()

    def hold():
        with t.device.lock:
            held.set()
            release.wait(5)

    th = threading.Thread(target=hold)
    th.start()
    try:
        assert held.wait(5)
        t0 = time.monotonic()
        with pytest.raises(HarnessError, match=r"model:rng: timed out after 0.2s waiting for the device's lock"):
            t.synchronize_cbs()
        assert time.monotonic() - t0 < 2.0
    finally:
        release.set()
        th.join(5)
    t.synchronize_cbs()  # free again: returns at once
