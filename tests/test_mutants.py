"""Self-test of the suites: each mutant device (tests/mutants) breaks one clause, and running the
suites against it must fail exactly that clause -- no other clause at MUST level, and no harness
error. The clean models, in both modes, must come out CONFORMANT.

Each check runs the suites in a subprocess, as a user would, and reads the JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from targets.model import MODELS
from targets.model.device import MODES
from targets.model.mutants import mutant_registry
from virtio.clauses import load_catalogue

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 300  # seconds for one whole suite run against one target
MUST_LEVELS = ("MUST", "MUST NOT", None)  # None: a clause missing from the catalogue counts as MUST

MUTANTS = mutant_registry()


def _env() -> dict:
    """The outer run's pytest settings must not leak into the inner one."""
    return {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST")}


def run_suites(target: str, tmp_path: Path) -> dict:
    """Run every suite against ``target``; return the JSON conformance report."""
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q",
           "--target", target, "--conformance-json", str(out),
           # In-process models answer in microseconds; a mutant that never answers need not cost 5 s a wait.
           "--device-timeout", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if not out.exists():
        pytest.fail(f"no report from {' '.join(cmd[2:])} (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def clause_status(report: dict, clause_id: str) -> str:
    entry = next((c for c in report["clauses"] if c["id"] == clause_id), None)
    if entry is None:
        return "absent"
    statuses = [pt["status"] for pt in entry["per_target"].values()]
    return "fail" if "fail" in statuses else (statuses[0] if statuses else "absent")


def must_failures(report: dict, *, besides: str | None = None) -> dict[str, list[str]]:
    """Clauses of MUST level failed by a MUST-severity violation: clause -> "test: message".

    A clause of MUST level can also fail at SHOULD severity, where a test judges the SHOULD half of
    a mixed statement (2.2.2: SHOULD accept a valid subset, else MUST refuse); the report counts
    that as a warning, and so does this check.
    """
    levels = {c["id"]: c["level"] for c in report["clauses"]}
    failing = {c["id"] for c in report["clauses"] if any(pt["status"] == "fail" for pt in c["per_target"].values())}
    out: dict[str, list[str]] = {}
    for r in report["results"]:
        if r["kind"] != "violation" or r["severity"] != "must":
            continue
        for cid in r["violated"]:
            if cid != besides and cid in failing and levels.get(cid) in MUST_LEVELS:
                out.setdefault(cid, []).append(f"{r['nodeid']}: {r['message']}")
    return out


def harness_errors(report: dict) -> list[str]:
    return [f"{r['nodeid']}: {r['message']}" for r in report["results"] if r["kind"] == "harness-error"]


def test_listing():
    proc = subprocess.run([sys.executable, "-m", "targets.model.mutants"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert all(len(r) == 2 for r in rows), f"lines must be name<TAB>clause-id: {proc.stdout!r}"
    names = [n for n, _ in rows]
    assert len(names) >= 20, f"only {len(names)} mutants"
    assert len(set(names)) == len(names), "duplicate mutant names"
    assert not set(names) & set(MODELS), "a mutant name collides with a model name"
    assert set(names) == set(MUTANTS)
    catalogue = load_catalogue()
    unknown = [f"{n}: {c}" for n, c in rows if c not in catalogue]
    assert not unknown, f"clause ids not in virtio/clauses.toml: {unknown}"
    for n, c in rows:
        assert MUTANTS[n].clause == c
        assert n.split("-", 1)[0] in MODELS, f"{n}: the name starts with its device type"


def _mutant_params():
    for name in MUTANTS:
        yield pytest.param(name, id=name)


@pytest.mark.selftest_slow
@pytest.mark.parametrize("name", list(_mutant_params()))
def test_suites_catch_mutant(name, tmp_path):
    mutant = MUTANTS[name]
    report = run_suites(f"model:{name}", tmp_path)
    errors = harness_errors(report)
    assert not errors, "harness errors (the harness broke, not the device):\n  " + "\n  ".join(errors)
    status = clause_status(report, mutant.clause)
    assert status == "fail", f"{name} breaks {mutant.clause}, but the suites report it {status!r}"
    others = must_failures(report, besides=mutant.clause)
    assert not others, f"{name} breaks only {mutant.clause}, but other MUST clauses failed too:\n" + "\n".join(
        f"  {cid}:\n    " + "\n    ".join(lines[:3]) for cid, lines in sorted(others.items())
    )


@pytest.mark.selftest_slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_clean_models_pass(model, mode, tmp_path):
    report = run_suites(f"model:{model},mode={mode}", tmp_path)
    assert not harness_errors(report), "harness errors:\n  " + "\n  ".join(harness_errors(report))
    failed = [f"{r['nodeid']}: [{r['severity']}] {r['message']}" for r in report["results"] if r["kind"] == "violation"]
    assert not failed, f"clean model {model} ({mode}) failed:\n  " + "\n  ".join(failed)
    assert report["verdict"] == "CONFORMANT", report["verdict"]


_CLAIMED_SCRIPT = """
import json, sys, pytest
class Claims:
    def __init__(self): self.ids = set()
    def pytest_collection_finish(self, session):
        for item in session.items:
            m = item.get_closest_marker("clause")
            if m: self.ids.update(m.args)
c = Claims()
pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--co", "suites"], plugins=[c])
print("CLAIMED " + json.dumps(sorted(c.ids)))
"""


def test_every_claimed_clause_has_a_mutant():
    """A test that claims a clause must be shown to fail on a device that breaks it."""
    out = subprocess.run([sys.executable, "-c", _CLAIMED_SCRIPT], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    line = next(x for x in out.stdout.splitlines() if x.startswith("CLAIMED "))
    claimed = set(json.loads(line.removeprefix("CLAIMED ")))
    broken = {m.clause for m in MUTANTS.values()}
    # vu.* clauses (suites/vhost_user) are broken by protocol mutants, checked in test_vhost_user_protocol.py
    from .mutants.vhost_user import PROTOCOL_MUTANTS
    broken |= {m.breaks for m in PROTOCOL_MUTANTS.values()}
    assert claimed and not claimed - broken, f"clauses claimed by suites with no mutant: {sorted(claimed - broken)}"
