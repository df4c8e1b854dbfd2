"""The conformance suites against the real vhost-user back-ends of targets.example.toml, as CI runs
them (issue 4, item 4): qemu-storage-daemon (vhost-user-blk, every variant), DPDK testpmd (net), and
our own models served over vhost-user (serve-*).

Each target gets one child run, as a user would type it:

    python3 -m pytest suites --target-file targets.example.toml --target file:NAME \\
        --waivers waivers/third-party.toml --conformance-json OUT -p no:cacheprovider --device-timeout 3

and the JSON report must show (reports/verdict.py: NON-CONFORMANT > INCONCLUSIVE > CONFORMANT; a
waived failure leaves CONFORMANT with the waiver listed):

- no harness errors (they make the verdict INCONCLUSIVE: the harness, not the device, failed);
- no unwaived MUST or SHOULD violation, verdict CONFORMANT;
- every waiver of waivers/third-party.toml naming this target was used -- an unused one means the
  back-end got fixed or the harness changed, so it fails here, naming the waiver;
- serve-blk/net/rng/console: every test's outcome equals the one against model:blk/net/rng/console,
  except a skip naming a limit of the vhost-user transport (a device duty it cannot observe, a config
  op it cannot carry) and the vhost-user protocol suite, which has nothing to judge on a model.

Every child runs the whole suite set (no -k subset), stress suite at its default (short) length.
Measured on this 2-core machine, shared with other work: ~37 s per qsd variant, 20-30 s per serve-*
entry plus ~8 s for its model, 90-145 s for testpmd (the vu_backend fixture starts a fresh back-end
for each of the ~25 protocol tests, ~2-3 s a testpmd start); 7-10 min for all ten.
testpmd's forwarding core spins a CPU, so the children never run concurrently: .ci/run runs this
module alone, after the other self-tests, and a lock serializes the children if it is ever spread
over xdist workers. Where qemu-storage-daemon or dpdk-testpmd is absent, the target skips, naming
the program.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from reports.waivers import load_waivers
from targets.inventory import load_inventory

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = ROOT / "targets.example.toml"
WAIVERS = ROOT / "waivers" / "third-party.toml"
DEVICE_TIMEOUT = "3"  # seconds per wait on the back-end: real back-ends answer in milliseconds
CHILD_TIMEOUT = 600  # bound on one child run (the slowest, testpmd, takes about a minute)
LOCK = Path(tempfile.gettempdir()) / "virtio-conformance-third-party.lock"

ENTRIES = [e for e in load_inventory(INVENTORY) if e.transport == "vhost-user"]
SERVED = {e.name: e.device for e in ENTRIES if e.name.startswith("serve-")}

# Skips that name a limit of the vhost-user transport rather than of the device: the texts of
# fixtures/plugin.py (device_duty marker vs missing_duties()), virtio.errors.UnsupportedOp and
# fixtures/devices.py need_capability.
TRANSPORT_LIMIT = re.compile(r"device duty '[^']+' cannot be observed through this target"
                             r"|config op \w+\(\) unsupported by this transport"
                             r"|transport capability '[^']+' absent")
# fixtures/vhost_user.py: the protocol suite skips on any other transport.
NOT_VHOST_USER = re.compile(r"vhost-user protocol test: .* transport, not vhost-user")

@contextlib.contextmanager
def _alone():
    """One child at a time on this machine (testpmd spins a CPU; 2 cores)."""
    with open(LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_child(args: list[str], out: Path) -> tuple[dict, float]:
    """Run the suites in a child pytest with ``args``; return (JSON report, wall seconds)."""
    cmd = [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q", "-p", "no:xdist",
           "--device-timeout", DEVICE_TIMEOUT, "--conformance-json", str(out), *args]
    # The outer run's pytest settings must not leak into the child.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST")}
    with _alone():
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{' '.join(cmd[2:])}: no result after {CHILD_TIMEOUT} s\n{(exc.stdout or b'')[-3000:]!r}")
        seconds = time.monotonic() - start
    if not out.exists():
        pytest.fail(f"no report from {' '.join(cmd[2:])} (exit {proc.returncode}, {seconds:.1f} s):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text()), seconds


def _line(r: dict) -> str:
    text = f"{r['nodeid']}: {r.get('message') or ''}"
    if r.get("expected") is not None or r.get("observed") is not None:
        text += f" (expected {r.get('expected')}, observed {r.get('observed')})"
    return text


def verdict_problems(report: dict, target_id: str) -> list[str]:
    """What keeps ``target_id`` from a clean verdict: harness errors, unwaived MUST/SHOULD violations."""
    target = report["targets"].get(target_id)
    if target is None:
        return [f"the report has no target {target_id} (targets: {sorted(report['targets'])})"]
    problems = []
    if target.get("error"):
        problems.append(f"target could not be opened: {target['error']}")
    for r in report["results"]:
        if r["target"] != target_id:
            continue
        if r["kind"] == "harness-error":
            problems.append(f"harness error: {_line(r)}")
        elif r["kind"] == "violation" and r["severity"] in ("must", "should"):
            problems.append(f"unwaived {r['severity'].upper()} violation of {', '.join(r['violated'])}: {_line(r)}")
    if target["verdict"] != "CONFORMANT":
        problems.append(f"verdict {target['verdict']}: {'; '.join(target['verdict_reasons'])}")
    return problems


def _names(waiver: dict, target_id: str) -> bool:
    return fnmatch.fnmatchcase(target_id, waiver["target"])


def unused_waivers(report: dict, target_id: str) -> list[str]:
    """Waivers naming ``target_id`` that covered no failure of it (each one named, with its reason)."""
    mine = [r for r in report["results"] if r["target"] == target_id]
    used = {(w["source"], w["entry"]) for r in mine for w in r["waivers"]}
    stale = []
    for w in report["waivers"]["applied"] + report["waivers"]["unused"]:
        if _names(w, target_id) and (w["source"], w["entry"]) not in used:
            why = "expired" if w.get("expired") else "the back-end now passes (or the harness changed)"
            stale.append(f"{w['source']} #{w['entry']} (target {w['target']!r}, clause {w['clause']}, "
                         f"test {w['test'] or '*'}) waives nothing on {target_id}: {why}; reason was: {w['reason']}")
    return stale


def outcomes(report: dict, target_id: str) -> dict[str, dict]:
    """Results of ``target_id`` keyed by node id with the target id taken out (comparable across targets)."""
    return {r["nodeid"].replace(target_id, "<target>"): r for r in report["results"] if r["target"] == target_id}


def outcome_differences(served: dict, model: dict) -> list[str]:
    """Per-test outcome differences between a served model and the in-process one.

    Allowed: a skip on the served side naming a vhost-user transport limit; tests that skip on the
    model because they are vhost-user protocol tests (they may be parametrized differently there).
    """
    protocol_only = {r["test"] for r in model.values() if r["kind"] == "skip" and NOT_VHOST_USER.search(r.get("message") or "")}
    served = {k: r for k, r in served.items() if r["test"] not in protocol_only}
    model = {k: r for k, r in model.items() if r["test"] not in protocol_only}
    diffs = [f"{k}: only against the model ({model[k]['kind']})" for k in sorted(set(model) - set(served))]
    diffs += [f"{k}: only against the served model ({served[k]['kind']})" for k in sorted(set(served) - set(model))]
    for k in sorted(set(served) & set(model)):
        s, m = served[k], model[k]
        if s["kind"] == m["kind"]:
            continue
        if s["kind"] == "skip" and TRANSPORT_LIMIT.search(s.get("message") or ""):
            continue
        diffs.append(f"{k}: {s['kind']} over vhost-user ({s.get('message') or ''}) but {m['kind']} "
                     f"in-process ({m.get('message') or ''})")
    return diffs


@pytest.mark.selftest_slow
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.target_id for e in ENTRIES])
def test_suites_on_backend(entry, tmp_path):
    missing = entry.missing()
    if missing:
        pytest.skip(missing)
    load_waivers(WAIVERS)  # a malformed waiver file fails here, naming the entry, before any child runs
    html = tmp_path / "report.html"  # for a human: waived failures with reason, evidence, values seen
    report, seconds = run_child(["--target-file", str(INVENTORY), "--target", entry.target_id,
                                 "--waivers", str(WAIVERS), "--conformance-html", str(html)], tmp_path / "report.json")
    print(f"{entry.target_id}: suites ran in {seconds:.1f} s")
    problems = verdict_problems(report, entry.target_id) + unused_waivers(report, entry.target_id)
    if entry.name in SERVED:
        model_id = f"model:{SERVED[entry.name]}"
        model, model_seconds = run_child(["--target", model_id], tmp_path / "model.json")
        print(f"{model_id}: suites ran in {model_seconds:.1f} s")
        problems += [f"differs from {model_id}: {d}" for d in
                     outcome_differences(outcomes(report, entry.target_id), outcomes(model, model_id))]
    assert not problems, f"{entry.target_id} ({seconds:.0f} s, report {html}):\n  " + "\n  ".join(problems)


# -- the checks themselves, on small reports (each must be able to fail) ------------------------------


def _result(tid, name, kind, message="", clauses=("c.1",), violated=(), waivers=(), severity=None):
    return {"nodeid": f"suites/test_x.py::{name}[{tid}]", "test": f"suites/test_x.py::{name.split('[')[0]}",
            "target": tid, "kind": kind, "message": message, "clauses": list(clauses), "violated": list(violated),
            "waivers": list(waivers), "severity": severity, "expected": None, "observed": None}


def _report(tid, results, verdict="CONFORMANT", applied=(), unused=()):
    return {"targets": {tid: {"verdict": verdict, "verdict_reasons": [], "error": None}}, "results": results,
            "waivers": {"applied": list(applied), "unused": list(unused)}}


def _waiver(entry, target, clause="c.1"):
    return {"source": "w.toml", "entry": entry, "target": target, "clause": clause, "test": None,
            "reason": "r", "evidence": "e", "expires": None}


def test_verdict_check_names_harness_errors_and_unwaived_failures():
    tid = "file:qsd"
    results = [_result(tid, "a", "harness-error", "boom"), _result(tid, "b", "violation", "bad", violated=["c.1"], severity="should"),
               _result(tid, "c", "violation", "note", violated=["c.2"], severity="may"), _result(tid, "d", "waived")]
    problems = verdict_problems(_report(tid, results, verdict="INCONCLUSIVE"), tid)
    assert len(problems) == 3, problems
    assert "harness error: suites/test_x.py::a[file:qsd]: boom" in problems[0]
    assert "unwaived SHOULD violation of c.1" in problems[1] and "verdict INCONCLUSIVE" in problems[2]
    assert verdict_problems(_report(tid, [_result(tid, "d", "waived")]), tid) == []
    assert "no target file:qsd" in verdict_problems(_report("file:other", []), tid)[0]


def test_unused_waiver_naming_the_target_is_reported():
    tid = "file:qsd-blk-a"
    used, other_target = _waiver(1, "file:qsd-*"), _waiver(3, "file:testpmd-net")
    stale = _waiver(2, "file:qsd-blk-?")
    results = [_result(tid, "a", "waived", violated=["c.1"], waivers=[{**used, "clause": "c.1"}])]
    report = _report(tid, results, applied=[{**used, "results": []}], unused=[stale, other_target])
    (line,) = unused_waivers(report, tid)
    assert line.startswith("w.toml #2 (target 'file:qsd-blk-?', clause c.1") and "waives nothing on file:qsd-blk-a" in line
    # Used on another target of the same glob, unused here: still stale for this one.
    report = _report(tid, [], applied=[{**used, "results": ["x"]}])
    assert len(unused_waivers(report, tid)) == 1


def test_served_model_must_match_the_in_process_model():
    s, m = "file:serve-blk", "model:blk"
    limit = "config op get_shm_region() unsupported by this transport: no GET_SHMEM_CONFIG"
    duty = "device duty 'driver-ok' cannot be observed through this target: rings reach it at DRIVER_OK"
    capability = "transport capability 'net-control-queue' absent: the front-end serves it"
    proto = f"vhost-user protocol test: target {m} uses the model transport, not vhost-user"
    served = [_result(s, "same", "pass"), _result(s, "shm", "skip", limit), _result(s, "early", "skip", duty),
              _result(s, "ctrl", "skip", capability), _result(s, "proto[split", "pass"), _result(s, "proto[packed", "pass")]
    model = [_result(m, "same", "pass"), _result(m, "shm", "pass"), _result(m, "early", "pass"), _result(m, "ctrl", "pass"),
             _result(m, "proto", "skip", proto)]
    assert outcome_differences(outcomes(_report(s, served), s), outcomes(_report(m, model), m)) == []
    served += [_result(s, "other", "skip", "test applies to net devices"), _result(s, "bad", "violation", "x"),
               _result(s, "new", "pass")]
    model += [_result(m, "other", "pass"), _result(m, "bad", "pass"), _result(m, "gone", "pass")]
    diffs = outcome_differences(outcomes(_report(s, served), s), outcomes(_report(m, model), m))
    assert [d.split(":")[2] for d in diffs] == ["gone[<target>]", "new[<target>]", "bad[<target>]", "other[<target>]"], diffs
    assert "bad[<target>]: violation over vhost-user (x) but pass in-process" in diffs[2]


def test_every_waiver_names_a_third_party_target():
    """A waiver whose target glob matches no entry here would never be checked for use: a typo."""
    ids = [e.target_id for e in ENTRIES]
    orphans = [f"{WAIVERS} #{w.entry} (target {w.target!r}, clause {w.clause})" for w in load_waivers(WAIVERS)
               if not any(fnmatch.fnmatchcase(t, w.target) for t in ids)]
    assert not orphans, f"waivers naming no target of {INVENTORY.name} ({', '.join(ids)}):\n  " + "\n  ".join(orphans)
