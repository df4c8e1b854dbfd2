"""The plugin's behaviour on bad input and under xdist: usage errors, failing factories, silent
devices, unsupported ops, serial vs parallel reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_pytest(*args, timeout=300, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.parametrize("spec", ["bogus", "model:nope", "vhost:blk", "model:blk,mode=turbo", "python:not a module"])
def test_bad_target_is_a_usage_error(spec):
    r = run_pytest("suites", "--target", spec, "--co")
    assert r.returncode == 4, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "valid --target forms" in out and "Traceback" not in out


def test_unknown_clause_id_is_a_usage_error(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "@pytest.mark.clause('dev.no.such.clause.1')\n"
        "def test_x(target_spec):\n    pass\n"
    )
    r = run_pytest("-p", "fixtures.plugin", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "dev.no.such.clause.1" in r.stdout + r.stderr


def test_failing_factory_and_silent_device_do_not_stop_the_run(tmp_path):
    out = tmp_path / "r.json"
    html = tmp_path / "r.html"
    r = run_pytest(
        "suites/test_split_virtqueue.py", "suites/test_device_status.py",
        "--target", "model:rng",
        "--target", "python:tests.examples.devices:broken",
        "--target", "python:tests.examples.devices:silent",
        "--device-timeout", "0.2",
        "--conformance-json", str(out), "--conformance-html", str(html),
    )
    assert out.exists() and html.exists(), r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(out.read_text())
    targets = report["targets"]
    assert targets["model:rng"]["verdict"] == "CONFORMANT"
    broken = targets["python:tests.examples.devices:broken"]
    assert broken["verdict"] == "INCONCLUSIVE"
    assert "simulator licence server unreachable" in (broken.get("error") or "")
    silent = [x for x in report["results"] if x["target"] == "python:tests.examples.devices:silent"]
    assert silent and any(x["kind"] == "violation" and "timed out after" in x["message"] for x in silent)
    assert targets["python:tests.examples.devices:silent"]["verdict"] == "NON-CONFORMANT"
    assert r.returncode == 1, "the exit status follows the worst verdict (NON-CONFORMANT)"
    # two paths of the suites: a selection, said in the verdict and counted against the whole
    assert report["scope"]["partial"] and report["verdict_text"].startswith("NON-CONFORMANT on ")
    assert "RuntimeError" in (broken.get("error") or "") or "raised" in (broken.get("error") or "")


def test_user_device_through_python_target(tmp_path):
    out = tmp_path / "r.json"
    r = run_pytest("suites", "--target", "python:tests.examples.devices:user_rng", "--conformance-json", str(out))
    assert r.returncode == 0, r.stdout[-3000:]
    report = json.loads(out.read_text())
    assert report["verdict"] == "CONFORMANT"


def test_unsupported_op_is_a_skip_naming_the_op(tmp_path):
    out = tmp_path / "r.json"
    run_pytest("suites/test_device_reset.py", "--target", "model:rng", "--conformance-json", str(out))
    report = json.loads(out.read_text())
    skipped = [x for x in report["results"] if x["kind"] == "skip"]
    assert any("trigger_config_change" in x["message"] for x in skipped)


def _facts(path):
    report = json.loads(Path(path).read_text())
    results = sorted((x["nodeid"], x["outcome"], x["kind"], tuple(x["clauses"])) for x in report["results"])
    clauses = [(c["id"], c["status"]) for c in report["clauses"]]
    verdicts = {t: (v["verdict"], v["verdict_text"], v["scope"]["tests"]) for t, v in report["targets"].items()}
    return results, clauses, verdicts, report["verdict_text"], report["scope"]["clauses_not_selected"]


def test_xdist_report_equals_serial(tmp_path):
    args = ("suites", "--target", "model:rng", "--target", "model:console", "-k", "not wraparound")
    serial, parallel = tmp_path / "s.json", tmp_path / "p.json"
    run_pytest(*args, "--conformance-json", str(serial))
    run_pytest(*args, "-n", "2", "--conformance-json", str(parallel))
    assert _facts(serial) == _facts(parallel)


def _module_state(path: Path) -> list[str]:
    """Module-level names of ``path`` that start out as an empty container (state collected while
    a run goes on), and ``global`` statements; constant tables are filled where they are written."""
    import ast

    tree = ast.parse(path.read_text(), str(path))
    out = [f"{path.name}:{n.lineno}: global {', '.join(n.names)}" for n in ast.walk(tree) if isinstance(n, ast.Global)]
    for node in tree.body:
        targets, value = ([node.target], node.value) if isinstance(node, ast.AnnAssign) else (getattr(node, "targets", []), getattr(node, "value", None))
        empty = (isinstance(value, (ast.Dict, ast.List, ast.Set)) and not getattr(value, "keys", getattr(value, "elts", None))) or (
            isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in ("dict", "list", "set", "defaultdict") and not value.args)
        if empty:
            out += [f"{path.name}:{node.lineno}: {ast.unparse(t)} starts empty at module level" for t in targets]
    return out


def test_no_run_state_in_module_globals():
    """The plugin's and the reports' run state lives in config.stash / the registered RunState
    (fixtures/state.py), never in a module global: two runs in one process (pytester, an IDE)
    would share it, and hooks would read another run's config."""
    problems = [p for d in ("fixtures", "reports") for f in sorted((ROOT / d).glob("*.py")) for p in _module_state(f)]
    assert not problems, "\n".join(problems)


def test_module_state_scan_catches_the_old_run_state(tmp_path):
    p = tmp_path / "old_run.py"  # fixtures/run.py kept the config in ``_STATE: dict = {}`` for its hooks
    p.write_text("_STATE: dict = {}\n_SEEN = set()\nTABLE = {'a': 1}\n\ndef f():\n    global _SEEN\n")
    assert len(_module_state(p)) == 3
