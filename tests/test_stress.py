"""Self-tests of the ring stress suite (suites/stress, fixtures/stress.py): it passes on the clean
models in both modes, it catches ring mutants and says how to replay the failure, a seed replays
the same steps, and a soak keeps to its time.

Each check runs the suite in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.stress import DEFAULT_SEED
from targets.model import MODELS
from targets.model.device import MODES

ROOT = Path(__file__).resolve().parent.parent
STRESS = "suites/stress"
pytestmark = pytest.mark.selftest_slow


def run_stress(tmp_path: Path, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / f"r{time.monotonic_ns()}.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS" and not k.startswith(("PYTEST_XDIST", "VC_STRESS"))}
    cmd = [sys.executable, "-m", "pytest", STRESS, "-q", "-p", "no:cacheprovider", "--conformance-json", str(out), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if not out.exists():
        pytest.fail(f"no report from {' '.join(cmd[2:])} (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc, json.loads(out.read_text())


def test_clean_models_pass(tmp_path):
    targets = [f"model:{m},mode={mode}" for m in sorted(MODELS) for mode in MODES]
    proc, report = run_stress(tmp_path, *(a for t in targets for a in ("--target", t)))
    outcomes = {r["target"]: (r["outcome"], r["message"]) for r in report["results"]}
    assert len(outcomes) == len(targets), proc.stdout[-3000:]
    assert all(o == "passed" for o, _ in outcomes.values()), f"{outcomes}\n{proc.stdout[-4000:]}"


@pytest.mark.parametrize(
    "mutant, clause",
    [
        ("rng-used-id-one-based", "def.split.used-elem-id"),
        ("rng-used-len-overstated", "dev.basic.virtqueues.the-virtqueue-used-ring.2"),
        ("rng-used-idx-counts-descriptors", "def.split.used-idx"),
        ("blk-one-descriptor-per-part", "dev.basic.message-framing.1"),
    ],
)
def test_catches_ring_mutant(tmp_path, mutant, clause):
    """The run fails on the clause the mutant breaks, and the failure shows the seed, the shrunk
    steps and the replay command (in the report's longrepr, where a reader of the report sees it)."""
    proc, report = run_stress(tmp_path, "--target", f"model:{mutant}", "--device-timeout", "1", "--stress-seed", "7")
    (result,) = report["results"]
    assert result["outcome"] == "failed" and result["kind"] == "violation", result
    assert result["violated"] == [clause], result
    text = result["longrepr"]
    assert "ring stress: seed 7" in text and f"--target model:{mutant} --stress-seed 7" in text, text[-2000:]
    # The shrunk program, step by step (hypothesis heads it "Falsifying example:" in some versions).
    assert "state.add(" in text and "state.teardown()" in text, text[-2000:]


def _steps(tmp_path: Path, name: str, *args: str) -> list[str]:
    log = tmp_path / name
    proc, report = run_stress(tmp_path, "--target", "model:net", "--stress-log", str(log), *args)
    assert report["results"][0]["outcome"] == "passed", proc.stdout[-3000:]
    return log.read_text().splitlines()


def test_seed_replays_the_same_steps(tmp_path):
    first = _steps(tmp_path, "a.log", "--stress-seed", "12345")
    again = _steps(tmp_path, "b.log", "--stress-seed", "12345")
    other = _steps(tmp_path, "c.log", "--stress-seed", "54321")
    assert first[0] == "== seed 12345" and sum(line.startswith("add(") for line in first) > 20
    assert first == again
    assert other != first


def test_soak_runs_for_its_time(tmp_path):
    t0 = time.monotonic()
    log = tmp_path / "soak.log"
    proc, report = run_stress(tmp_path, "--target", "model:rng", "--stress-seconds", "2", "--stress-log", str(log))
    elapsed = time.monotonic() - t0
    (result,) = report["results"]
    assert result["outcome"] == "passed", proc.stdout[-3000:]
    assert 2 <= result["duration"] < 20 and elapsed < 20, (result["duration"], elapsed)
    seeds = [line for line in log.read_text().splitlines() if line.startswith("== seed")]
    assert seeds and f"== seed {DEFAULT_SEED}" not in seeds, seeds  # a soak explores seeds of its own
