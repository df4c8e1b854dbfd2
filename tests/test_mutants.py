"""Self-test of the suites: each mutant device (targets/mutants) breaks one clause, and running the
suites against it must fail with that clause as the primary one -- no other mutant's clause and no
other MUST clause primary, and no harness error. The clean models, in both modes, must come out
CONFORMANT.

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
from targets.mutants import mutant_registry
from virtio.clauses import load_catalogue

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 300  # seconds for one whole suite run against one target
MUST_LEVELS = ("MUST", "MUST NOT", None)  # None: a clause missing from the catalogue counts as MUST

MUTANTS = mutant_registry()
CATALOGUE = load_catalogue()


def needs_heavy(mutant) -> bool:
    """Whether a mutant runs the heavy tests too (index wrap-arounds, ring stress: two thirds of a
    run). Those exercise chapter-2 ring duties; a mutant of a device type's own duty (chapter 5)
    overrides device-type handlers, not the rings, so it is spared them. The clean models run them
    all, and test_heavy_tests_claim_no_device_type_clause keeps the rule honest."""
    clause = CATALOGUE[mutant.clause] if mutant.clause in CATALOGUE else None
    return clause is None or clause.device_type is None


def _env() -> dict:
    """The outer run's pytest settings must not leak into the inner one."""
    return {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST")}


def run_suites(target: str, tmp_path: Path, *, heavy: bool = True) -> dict:
    """Run every suite against ``target`` (without ``heavy``: all but the tests marked heavy);
    return the JSON conformance report."""
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q",
           "--target", target, "--conformance-json", str(out),
           # In-process models answer in microseconds; a mutant that never answers need not cost 5 s a wait.
           "--device-timeout", "1", *(() if heavy else ("-m", "not heavy"))]
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


def violations(report: dict) -> list[dict]:
    return [r for r in report["results"] if r["kind"] in ("violation", "waived")]


def misattributed(report: dict, own: str, others: set[str]) -> dict[str, list[str]]:
    """Violations whose primary clause is not ``own`` but another mutant's clause (at any level) or
    any clause of MUST level (or none at all): primary clause -> "test: message".

    A clause of MUST level may be the primary one of a SHOULD-severity result, where a test judges
    the SHOULD half of a mixed statement (2.2.2: SHOULD accept a valid subset, else MUST refuse);
    the report counts that as a warning, and so does this check -- unless it is another mutant's.
    """
    levels = {c["id"]: c["level"] for c in report["clauses"]}
    out: dict[str, list[str]] = {}
    for r in violations(report):
        primary = r.get("primary")
        if primary == own:
            continue
        if primary in others or primary is None or (levels.get(primary) in MUST_LEVELS and r["severity"] == "must"):
            out.setdefault(str(primary), []).append(f"{r['nodeid']}: {r['message']}")
    return out


def harness_errors(report: dict) -> list[str]:
    return [f"{r['nodeid']}: {r['message']}" for r in report["results"] if r["kind"] == "harness-error"]


def test_listing():
    proc = subprocess.run([sys.executable, "-m", "targets.mutants"], cwd=ROOT, env=_env(),
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
    """The mutant fails with its own clause as the primary one; no result of it has another mutant's
    clause or any other MUST clause as primary (implicated clauses are allowed: they are not failed)."""
    mutant = MUTANTS[name]
    report = run_suites(f"model:{name}", tmp_path, heavy=needs_heavy(mutant))
    errors = harness_errors(report)
    assert not errors, "harness errors (the harness broke, not the device):\n  " + "\n  ".join(errors)
    own = [r for r in violations(report) if r.get("primary") == mutant.clause]
    assert own, f"{name} breaks {mutant.clause}, but no violation names it as primary (clause status {clause_status(report, mutant.clause)!r})"
    assert clause_status(report, mutant.clause) == "fail"
    others = misattributed(report, mutant.clause, {m.clause for m in MUTANTS.values()} - {mutant.clause})
    assert not others, f"{name} breaks only {mutant.clause}, but other clauses are primary too:\n" + "\n".join(
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
    def __init__(self): self.ids, self.heavy = set(), set()
    def pytest_collection_finish(self, session):
        for item in session.items:
            m = item.get_closest_marker("clause")
            if m:
                self.ids.update(m.args)
                if item.get_closest_marker("heavy"): self.heavy.update(m.args)
c = Claims()
pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--co", "suites"], plugins=[c])
print("CLAIMED " + json.dumps(sorted(c.ids)))
print("HEAVY " + json.dumps(sorted(c.heavy)))
"""


def _claimed(kind: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _CLAIMED_SCRIPT], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    line = next(x for x in out.stdout.splitlines() if x.startswith(kind + " "))
    return set(json.loads(line.removeprefix(kind + " ")))


def test_every_claimed_clause_has_a_mutant():
    """A test that claims a clause must be shown to fail on a device that breaks it."""
    claimed = _claimed("CLAIMED")
    broken = {m.clause for m in MUTANTS.values()}
    # vu.* clauses (suites/vhost_user) are broken by protocol mutants, checked in test_vhost_user_protocol.py
    from targets.mutants.vhost_user import PROTOCOL_MUTANTS
    broken |= {m.breaks for m in PROTOCOL_MUTANTS.values()}
    assert claimed and not claimed - broken, f"clauses claimed by suites with no mutant: {sorted(claimed - broken)}"


def test_heavy_tests_claim_no_device_type_clause():
    """The heavy tests a device-type mutant is spared (needs_heavy) must not be the ones that
    could catch it: none of them claims a chapter-5 clause."""
    heavy = _claimed("HEAVY")
    assert heavy, "no heavy test claims a clause: the marker is gone and needs_heavy spares nothing"
    own = sorted(c for c in heavy if c in CATALOGUE and CATALOGUE[c].device_type is not None)
    assert not own, f"heavy tests claim device-type clauses, so device-type mutants must run them: {own}"


def _clause_count(fn) -> int:
    """How many clauses a test function's ``@pytest.mark.clause(...)`` names (0 if none)."""
    import ast

    for dec in fn.decorator_list:
        if isinstance(dec, ast.Call) and ast.unparse(dec.func).endswith("mark.clause"):
            return len(dec.args)
    return 0


def test_plain_asserts_only_where_one_clause_is_claimed():
    """A plain ``assert`` names no clause: in a test claiming several it cannot say which broke
    (one primary clause per failure: docs/DESIGN.md "What conformant means in a report").
    Suites use ``require(..., clause, ...)`` there; a plain assert is allowed only in a test function
    claiming exactly one clause."""
    import ast

    bad = []
    for path in sorted((ROOT / "suites").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        allowed: set[int] = set()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and _clause_count(node) == 1:
                allowed.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assert) and id(node) not in allowed:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, "plain asserts where no single clause is claimed (use virtio.checks.require):\n  " + "\n  ".join(bad)


@pytest.mark.selftest_slow
def test_stress_failure_is_charged_to_its_diagnosis_and_waivable(tmp_path):
    """The ring stress suite's shrunk failure is charged to the clause of its own diagnosis (the
    symptom, a timeout, is implicated), so a waiver of that one clause covers it: the target comes
    out CONFORMANT whatever else the stress test claims."""
    mutant = MUTANTS["rng-rejects-direct-then-indirect"]
    waivers = tmp_path / "w.toml"
    waivers.write_text(f'[[waiver]]\ntarget = "model:{mutant.name}"\nclause = "{mutant.clause}"\n'
                       'reason = "self-test: the mutant breaks it"\nevidence = "targets/mutants/rings.py"\n')
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "pytest", "suites/stress", "-p", "no:cacheprovider", "-q", "--target", f"model:{mutant.name}",
           "--conformance-json", str(out), "--device-timeout", "1", "--stress-seed", "1", "--waivers", str(waivers)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    (result,) = report["results"]
    assert result["kind"] == "waived" and result["primary"] == mutant.clause, result
    assert "def.basic.buffers-are-used" in result["implicated"], result
    assert "direct descriptors then an indirect one" in result["message"], result["message"]
    assert report["targets"][f"model:{mutant.name}"]["verdict"] == "CONFORMANT", report["targets"]
