"""Self-test: Ctrl-C stops a run within about a second, as an interrupt (exit 2), and nothing it
cut short is reported as the device's violation or the harness's error (fixtures/interrupt.py,
virtio/interrupt.py).

A child pytest runs a suite -- the ring stress on models in both modes, the ring stress on a model
served over vhost-user by the inventory, the whole suites on a threaded model -- and SIGINT goes to
its process group, as a terminal sends it, at a random moment after the first test has started.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from virtio import interrupt

ROOT = Path(__file__).resolve().parent.parent

# From SIGINT to exit: the run stops within a second; the rest is writing the report, closing
# targets and the interpreter's own exit, on a machine that may be busy.
EXIT_BOUND_S = 3.0
STARTED_BOUND_S = 60.0  # the child's first test starts within this (collection, imports)

SERVED = """
[targets.serve-blk]
device = "blk"
command = ["{python}", "-m", "targets.vhost_user.serve", "--device", "{device}", "--socket", "{socket}", "--pidfile", "{pidfile}"]
"""

MODELS = ["--target", "model:blk", "--target", "model:net,mode=threaded", "--target", "model:console,mode=threaded",
          "--target", "model:rng"]
CASES = {
    # name: (arguments, tries, latest moment of the signal after the first test started)
    "stress-models": (["suites/stress", "--stress-seconds", "30", *MODELS], 4, 6.0),
    "stress-served": (["suites/stress", "--stress-seconds", "30", "--target-file", "{inventory}"], 3, 4.0),
    "suites-threaded": (["suites", "--target", "model:blk,mode=threaded"], 3, 4.0),
}


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS" and not k.startswith(("PYTEST_XDIST", "VC_STRESS"))}


class Child:
    """A pytest run in its own process group, its output collected by a thread."""

    def __init__(self, args: list[str], report: Path):
        self.cmd = [sys.executable, "-u", "-m", "pytest", *args, "-v", "-p", "no:cacheprovider", "--conformance-json", str(report)]
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.started = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):  # not by line: -v names a test as it starts, ending the line later
            self.lines.append(chunk.decode(errors="replace"))
            if "::" in self.lines[-1]:
                self.started.set()
        self.started.set()

    def interrupt(self) -> float:
        """SIGINT to the process group; seconds until the child exited (inf past the bound)."""
        sent = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(EXIT_BOUND_S * 4)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return float("inf")
        took = time.monotonic() - sent
        self._reader.join(5)
        return took

    def output(self) -> str:
        return "".join(self.lines)


@pytest.mark.selftest_slow
@pytest.mark.parametrize("case", list(CASES))
def test_ctrl_c_is_an_interrupt(case, tmp_path):
    args, tries, latest = CASES[case]
    inventory = tmp_path / "served.toml"
    inventory.write_text(SERVED)
    args = [a.format(inventory=inventory) for a in args]
    rnd = random.Random()
    problems = []
    for i in range(tries):
        report = tmp_path / f"r{i}.json"
        child = Child(args, report)
        if not child.started.wait(STARTED_BOUND_S) or child.proc.poll() is not None:
            child.interrupt()
            pytest.fail(f"the child run never started a test:\n{child.output()[-3000:]}")
        delay = rnd.uniform(0.0, latest)
        time.sleep(delay)
        if child.proc.poll() is not None:
            problems.append(f"try {i}: the run ended (exit {child.proc.returncode}) before the signal at {delay:.2f}s; lengthen it")
            continue
        took = child.interrupt()
        out = child.output()
        where = f"try {i} (SIGINT {delay:.2f}s after the first test started)"
        if took > EXIT_BOUND_S:
            problems.append(f"{where}: exited {took:.2f}s after the signal (bound {EXIT_BOUND_S}s)")
        if child.proc.returncode != 2:
            problems.append(f"{where}: exit status {child.proc.returncode}, not 2 (interrupted)")
        if "KeyboardInterrupt" not in out:
            problems.append(f"{where}: pytest did not report an interrupt")
        bad_lines = [ln for ln in out.splitlines() if ln.startswith(("FAILED ", "ERROR ")) or " FAILED " in ln or " ERROR " in ln]
        if bad_lines:
            problems.append(f"{where}: the terminal shows failures: {bad_lines[:3]}")
        if report.exists():
            results = json.loads(report.read_text()).get("results", [])
            bad = [f"{r['nodeid']}: {r['kind']}: {r['message']}" for r in results if r.get("kind") in ("violation", "harness-error")]
            if bad:
                problems.append(f"{where}: the report charges the interrupt to someone: {bad[:3]}")
        if problems and problems[-1].startswith(where):
            problems.append(f"{where}: output tail:\n{out[-2500:]}")
    assert not problems, "\n".join(problems)


# -- where an interrupt gets lost: each case in a child run of its own ------------------------------
SWALLOWED = {
    # a finally that fails on the state the interrupt left (as hypothesis's teardown did)
    "finally-raises": """
def test_it():
    try:
        signal.raise_signal(signal.SIGINT)
        time.sleep(10)
    finally:
        raise AssertionError("a check on half-updated state")
""",
    # Python can only print an exception raised in a gc callback: the interrupt must come again
    "gc-callback": """
def test_it():
    def callback(phase, info):
        if phase == "start" and callback in gc.callbacks:
            gc.callbacks.remove(callback)
            signal.raise_signal(signal.SIGINT)
            for _ in range(1000):
                pass  # the handler runs here, inside the callback
    gc.callbacks.append(callback)
    gc.collect()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.01)
""",
    # code that catches everything and carries on
    "except-baseexception": """
def test_it():
    try:
        signal.raise_signal(signal.SIGINT)
        time.sleep(10)
    except BaseException:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.01)
""",
}


@pytest.mark.parametrize("case", list(SWALLOWED))
def test_interrupt_is_not_lost(case, tmp_path):
    test = tmp_path / "test_swallowed.py"
    test.write_text("import gc, signal, time\n" + SWALLOWED[case] + "\ndef test_after():\n    pass\n")
    cmd = [sys.executable, "-m", "pytest", "-p", "fixtures.interrupt", "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path), str(test)]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{out[-3000:]}"
    assert "KeyboardInterrupt" in out and "failed" not in out.splitlines()[-1] and "error" not in out.splitlines()[-1], out[-3000:]
    assert took < 9, f"the interrupt was only noticed after {took:.1f}s:\n{out[-3000:]}"


def test_interrupted_follows_the_context_chain():
    try:
        try:
            raise KeyboardInterrupt
        finally:
            raise AssertionError("raised on the way out")
    except AssertionError as e:
        assert interrupt.interrupted(e)
    assert not interrupt.interrupted(ValueError("plain"))
    assert interrupt.interrupted(KeyboardInterrupt())
