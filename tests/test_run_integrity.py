"""A run that did not finish never gets CONFORMANT, and a selection is said (issue 8, items 1, 2, 8, 9).

Each case runs a real child pytest on the suites and, where the case is an interruption, sends it a
real signal while a test is in flight (``python:tests.examples.devices:slow`` answers late), or lets a
device kill its own process (``...:killer``). The report (JSON and HTML) must be written, say
INCONCLUSIVE and why, keep every finished result, and never count an unfinished test as a pass.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SLOW = "python:tests.examples.devices:slow"
KILLER = "python:tests.examples.devices:killer"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]


def run(*args, timeout=300, env=None, cwd=ROOT):
    return subprocess.run(_cmd(*args), cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def journal_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def in_slow_call(path: Path) -> bool:
    """The last journal record is the setup of a test on the slow device: its call phase is under way."""
    recs = journal_records(path)
    return bool(recs) and recs[-1]["record"] == "result" and recs[-1]["when"] == "setup" and recs[-1]["target"] == SLOW


def finished_calls(path: Path) -> int:
    return sum(1 for r in journal_records(path) if r["record"] == "result" and r["when"] == "call")


def wait_for(pred, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def start(tmp_path, *args, env=None):
    """A child run of the suites against the slow device and model:rng, with JSON and HTML reports."""
    js, html = tmp_path / "r.json", tmp_path / "r.html"
    cmd = _cmd("suites", "--target", "model:rng", "--target", SLOW, "--conformance-json", str(js),
               "--conformance-html", str(html), *args)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or _env(VC_SLOW_S="0.5"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, js, html, tmp_path / "r.journal.jsonl"


def assert_unfinished(report: dict, journal: Path, words: str):
    assert report["verdict"] == "INCONCLUSIVE", report["verdict_text"]
    assert all(t["verdict"] != "CONFORMANT" for t in report["targets"].values())
    assert words in report["verdict_text"], report["verdict_text"]
    assert not report["scope"]["complete"]
    # every result finished before the stop is kept; nothing unfinished is a pass
    calls = {r["nodeid"] for r in journal_records(journal) if r["record"] == "result" and r["when"] == "call"}
    kept = {r["nodeid"] for r in report["results"] if r["kind"] != "not-run"}
    assert calls <= kept
    starts = {r["nodeid"] for r in journal_records(journal) if r["record"] == "start"}
    for r in report["results"]:
        if r["nodeid"] not in calls and r["nodeid"] in starts:
            assert r["kind"] in ("not-run", "harness-error", "skip", "violation"), r


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_mid_run_is_inconclusive_with_report(tmp_path, signame):
    proc, js, html, journal = start(tmp_path)
    try:
        wait_for(lambda: finished_calls(journal) >= 3 and in_slow_call(journal), what="a test in flight on the slow device")
        sent = time.monotonic()
        proc.send_signal(getattr(signal, signame))
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 2, out[-3000:] + err[-3000:]
    assert took < 10, f"the run took {took:.1f} s to stop after {signame}"
    report = json.loads(js.read_text())
    assert_unfinished(report, journal, f"interrupted by {signame} at test ")
    assert " of " in report["verdict_text"]
    not_run = [r for r in report["results"] if r["kind"] == "not-run"]
    assert all("interrupted" in r["message"] for r in not_run)
    # the test in flight is named and not run (unless the signal landed between two tests)
    assert bool(not_run) == (", in " in report["verdict_text"]), report["verdict_text"]
    assert "INCONCLUSIVE" in html.read_text() and f"interrupted by {signame}" in html.read_text()
    assert f"verdict: {report['verdict_text']}" in out
    assert journal_records(journal)[-1]["record"] == "final"


def test_sigterm_to_the_xdist_controller_stops_the_workers_too(tmp_path):
    proc, js, html, journal = start(tmp_path, "-n", "2")
    try:
        wait_for(lambda: finished_calls(journal) >= 4, what="four finished tests in the journal")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # to the controller only, as CI does at a time-out
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 2, out[-3000:] + err[-3000:]
    assert took < 10, f"the run took {took:.1f} s to stop after SIGTERM"
    assert_unfinished(json.loads(js.read_text()), journal, "interrupted by SIGTERM")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def test_killed_xdist_worker_is_inconclusive_naming_the_test(tmp_path):
    proc, js, html, journal = start(tmp_path, "-n", "2", "suites/test_device_status.py", "suites/test_feature_bits.py")
    try:
        wait_for(lambda: finished_calls(journal) >= 2 and len(_children(proc.pid)) >= 2, what="two workers with results")
        victim = _children(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    report = json.loads(js.read_text())
    assert proc.returncode in (1, 6), out[-3000:] + err[-3000:]
    assert report["verdict"] == "INCONCLUSIVE", report["verdict_text"]
    crashed = [r for r in report["results"] if r["kind"] == "harness-error" and "worker" in r["message"]]
    events = [e for e in report["run"]["completion"]["events"] if e["kind"] in ("worker-crashed", "worker-down")]
    assert events, report["run"]["completion"]
    if crashed:  # killed in a test (not between two): that test is named, and it is not a pass
        assert any(f"crashed in test {crashed[0]['nodeid']}" in r for r in report["scope"]["reasons"])
    assert proc.returncode == 6


def test_device_killing_the_harness_leaves_a_journal_to_rebuild(tmp_path):
    js, journal = tmp_path / "r.json", tmp_path / "r.journal.jsonl"
    r = run("suites/test_device_status.py", "suites/test_split_virtqueue.py", "--target", "model:rng", "--target", KILLER,
            "--conformance-json", str(js), timeout=240)
    assert r.returncode == -signal.SIGKILL, r.stdout[-2000:]
    assert not js.exists() and journal.exists()
    out_html, out_js = tmp_path / "rebuilt.html", tmp_path / "rebuilt.json"
    rb = subprocess.run([sys.executable, "-m", "reports", "rebuild", str(journal), "-o", str(out_html), "--json", str(out_js)],
                        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert rb.returncode == 0, rb.stderr
    report = json.loads(out_js.read_text())
    assert_unfinished(report, journal, "the journal has no final record")
    assert any(r["kind"] == "pass" for r in report["results"])  # finished results are kept
    killed = [r for r in report["results"] if r["target"] == KILLER and r["kind"] == "not-run"]
    assert killed, "the test during which the harness died is not run, not a pass"
    assert "INCONCLUSIVE" in out_html.read_text()
    assert "INCONCLUSIVE" in rb.stdout


def test_killed_xdist_worker_by_its_device(tmp_path):
    once = tmp_path / "killed"
    js = tmp_path / "r.json"
    r = run("-n", "2", "suites/test_split_virtqueue.py", "-k", "not wraparound", "--target", KILLER,
            "--conformance-json", str(js), env=_env(VC_KILL_ONCE=str(once)), timeout=300)
    assert once.exists()
    report = json.loads(js.read_text())
    assert r.returncode == 6, r.stdout[-3000:]
    assert report["verdict"] == "INCONCLUSIVE"
    crashed = [x for x in report["results"] if x["kind"] == "harness-error"]
    assert len(crashed) == 1 and "worker" in crashed[0]["message"]
    assert f"crashed in test {crashed[0]['nodeid']}" in report["verdict_text"]


def test_exitfirst_after_harness_error_is_inconclusive(tmp_path):
    js = tmp_path / "r.json"
    r = run("suites", "--target", "python:tests.examples.devices:crashing", "--target", "model:rng", "-x", "--conformance-json", str(js))
    report = json.loads(js.read_text())
    assert r.returncode == 6, r.stdout[-3000:]
    assert report["verdict"] == "INCONCLUSIVE"
    assert report["targets"]["model:rng"]["verdict"] == "INCONCLUSIVE"
    assert "stopped after 1 failure (-x)" in report["verdict_text"]


def test_maxfail_after_must_violation_stays_non_conformant(tmp_path):
    js = tmp_path / "r.json"
    r = run("suites/test_split_virtqueue.py", "--target", "python:tests.examples.devices:silent", "--device-timeout", "0.2",
            "--maxfail", "2", "--conformance-json", str(js))
    report = json.loads(js.read_text())
    assert r.returncode == 1, r.stdout[-3000:]
    assert report["verdict"] == "NON-CONFORMANT"
    assert "stopped after 2 failures (--maxfail 2)" in report["verdict_text"]


def test_collection_error_is_inconclusive_with_report(tmp_path):
    (tmp_path / "test_ok.py").write_text(
        "import pytest\n@pytest.mark.clause('dev.basic.device-status-field.1')\ndef test_ok(target_spec):\n    pass\n")
    (tmp_path / "test_broken.py").write_text("def test_(:\n")
    js = tmp_path / "r.json"
    r = run("-p", "fixtures.plugin", str(tmp_path), "--target", "model:rng", "--conformance-json", str(js), cwd=tmp_path)
    report = json.loads(js.read_text())
    assert r.returncode == 6, r.stdout[-3000:]
    assert report["verdict"] == "INCONCLUSIVE"
    assert "collection error in test_broken.py" in report["verdict_text"]


def test_selection_is_said_in_line_report_and_json(tmp_path):
    js, html, xml = tmp_path / "r.json", tmp_path / "r.html", tmp_path / "j.xml"
    r = run("suites", "--target", "model:rng", "-k", "reset", "--conformance-json", str(js), "--conformance-html", str(html),
            "--junitxml", str(xml), "-ra")
    assert r.returncode == 0, r.stdout[-3000:]
    report = json.loads(js.read_text())
    assert report["verdict"] == "CONFORMANT"
    scope = report["scope"]
    n, total = scope["tests"]["run"], scope["tests"]["total"]
    deselected = int(re.search(r"(\d+) deselected", r.stdout).group(1))
    assert 0 < n < total == n + deselected, scope["tests"]  # "of M": the whole default suites for model:rng
    assert report["verdict_text"] == f"CONFORMANT on {n} of {total} tests (selection: -k reset)"
    assert scope["partial"] and scope["selection"] == "-k reset" and scope["clauses_not_selected"]
    assert report["targets"]["model:rng"]["verdict_text"] == report["verdict_text"]
    # a clause whose tests were not selected is "not run", not "not covered" and not "covered"
    cid = scope["clauses_not_selected"][0]
    assert next(c for c in report["clauses"] if c["id"] == cid)["per_target"]["model:rng"]["status"] == "not-run"
    page = html.read_text()
    assert report["verdict_text"] in page and "-k reset" in page
    # the verdict line is the last thing before pytest's final counts, after the -ra summary
    lines = r.stdout.rstrip().splitlines()
    assert lines[-2] == f"verdict: {report['verdict_text']}", lines[-6:]
    assert report["run"]["harness"]["version"] and report["run"]["command_line"][-1] == "-ra"
    # JUnit: per test case, clause ids with their levels and the outcome class
    cases = ET.parse(xml).getroot().iter("testcase")
    props = [{(p.get("name"), p.get("value")) for p in case.iter("property")} for case in cases]
    assert props and all(("vc.outcome", "pass") in p or ("vc.outcome", "skip") in p for p in props)
    assert any(name.startswith("vc.clause.") and value in ("MUST", "MUST NOT", "SHOULD", "MAY") for p in props for name, value in p)
    assert not any(name in ("vc", "vc_identity") for p in props for name, _ in p)


def test_full_run_says_the_bare_verdict_and_exit_follows_it(tmp_path):
    js = tmp_path / "r.json"
    r = run("suites", "--target", "python:tests.examples.devices:silent", "--device-timeout", "0.2", "--conformance-json", str(js),
            "-k", "not wraparound")
    assert r.returncode == 1 and json.loads(js.read_text())["verdict"] == "NON-CONFORMANT"
    r = run("suites", "--target", "python:tests.examples.devices:broken")  # no report option: the line still comes
    assert r.returncode == 6, r.stdout[-2000:]
    assert r.stdout.rstrip().splitlines()[-2] == "verdict: INCONCLUSIVE"


def test_self_test_runs_keep_pytest_exit_status(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_a():\n    pass\n\ndef test_b():\n    assert 0\n")
    r = run("-p", "fixtures.plugin", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 1 and "verdict:" not in r.stdout
    r = run("-p", "fixtures.plugin", str(tmp_path), "-k", "test_a", cwd=tmp_path)
    assert r.returncode == 0 and "verdict:" not in r.stdout
