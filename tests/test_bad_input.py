"""Bad input gets a clear error and nothing is lost (issue 8, item 7), proved on real child runs.

An unreachable target: one line saying why, every test of it reported as not run on it (result kind
"not-run"), its verdict INCONCLUSIVE with the reason, the other targets run as usual. A bad option
or input file: exit 4 before any test runs, one line naming the option, the file, the line and the
field. Neither prints a traceback of the harness.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from reports.waivers import load_waivers
from targets.vhost_user.channel import Channel
from targets.vhost_user.frontend import VhostUserTransport
from tests.test_plugin import ROOT, run_pytest
from virtio.clauses import load_catalogue
from virtio.errors import TargetError

SUITE = "suites/test_device_status.py"  # two tests: enough to see "every test", quick on a model
EXIT_USAGE = 4
# Exit status of a run with an INCONCLUSIVE target (README "Reading the verdict"): never 0, 1 (a
# test failure) or 4 (a usage error).
EXIT_INCONCLUSIVE = (6,)


def _no_traceback(out: str) -> None:
    assert "Traceback" not in out and "ERROR at setup" not in out and "\nE " not in out, out[-3000:]


def _lines_with(out: str, text: str) -> list[str]:
    return [line for line in out.splitlines() if text in line]


# -- unreachable targets ---------------------------------------------------------------------------
class ClosingBackend:
    """A UNIX socket that accepts every connection and closes it at once (a back-end that dies or
    refuses during the opening exchange)."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def unreachable(request, tmp_path):
    """(socket path, the words the one line must hold) for each way a target can be unreachable."""
    kind = request.param
    path = tmp_path / "be.sock"
    server = None
    if kind == "no such file":
        words = "(no such file)"
    elif kind == "regular file":
        path.write_text("")
        words = "is not a socket (a regular file)"
    elif kind == "directory":
        path.mkdir()
        words = "is not a socket (a directory)"
    elif kind == "refused":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))  # bound, never listening: the file a crashed back-end leaves behind
        s.close()
        words = "connection refused"
    else:
        server = ClosingBackend(path)
        words = "closed the connection during the opening exchange (instead of answering GET_FEATURES)"
    yield str(path), words
    if server is not None:
        server.close()


@pytest.mark.parametrize("unreachable", ["no such file", "regular file", "directory", "refused", "closed"], indirect=True)
def test_unreachable_target_is_not_run_with_one_line(tmp_path, unreachable):
    path, words = unreachable
    # timeout=30: a refusal retried until the timeout (as before) would take 30 s per target
    bad = f"vhost-user:blk:{path},timeout=30"
    out_json = tmp_path / "r.json"
    started = time.monotonic()
    r = run_pytest(SUITE, "--target", bad, "--target", "model:rng", "--conformance-json", str(out_json), "-p", "no:xdist")
    elapsed = time.monotonic() - started
    out = r.stdout + r.stderr
    assert r.returncode in EXIT_INCONCLUSIVE, out[-3000:]
    _no_traceback(out)
    assert len(_lines_with(out, words)) == 1, out  # -ra (addopts): one folded skip line
    assert len(_lines_with(out, "SKIPPED [2] fixtures/targets.py")) == 1, out
    assert elapsed < 25, f"the unreachable target cost {elapsed:.1f}s: retried until its timeout?"

    report = json.loads(out_json.read_text())
    tid = next(t for t in report["targets"] if t.startswith("vhost-user:"))
    target = report["targets"][tid]
    assert target["verdict"] == "INCONCLUSIVE"
    assert any(words in reason for reason in target["verdict_reasons"]), target["verdict_reasons"]
    mine = [x for x in report["results"] if x["target"] == tid]
    assert len(mine) == 2 and all(x["kind"] == "not-run" and words in x["message"] for x in mine), mine
    assert target["counts"]["not_run"] == 2 and target["counts"]["passed"] == 0
    assert report["targets"]["model:rng"]["verdict"] == "CONFORMANT"
    assert report["targets"]["model:rng"]["counts"]["passed"] == 2


def test_unreachable_target_whole_suite_without_skip_summary(tmp_path):
    """The command of the issue (3,900 lines before): a line per test at most, the reason once."""
    r = run_pytest("suites", "--target", "vhost-user:blk:/nonexistent.sock", "-rN", "-p", "no:xdist")
    out = r.stdout + r.stderr
    assert r.returncode in EXIT_INCONCLUSIVE, out[-3000:]
    _no_traceback(out)
    reason = _lines_with(out, "no vhost-user back-end at /nonexistent.sock (no such file)")
    assert len(reason) == 1 and reason[0].startswith("NOT RUN vhost-user:blk:/nonexistent.sock: "), out
    assert len(out.splitlines()) < 10, out


def test_unreachable_target_under_xdist(tmp_path):
    out_json = tmp_path / "r.json"
    r = run_pytest(SUITE, "--target", "vhost-user:blk:/nonexistent.sock", "--target", "model:rng", "-n", "2",
                   "--conformance-json", str(out_json))
    out = r.stdout + r.stderr
    assert r.returncode in EXIT_INCONCLUSIVE, out[-3000:]
    _no_traceback(out)
    assert len(_lines_with(out, "(no such file)")) == 1, out
    report = json.loads(out_json.read_text())
    assert [x["kind"] for x in report["results"] if x["target"].startswith("vhost-user:")] == ["not-run"] * 2
    assert report["targets"]["model:rng"]["verdict"] == "CONFORMANT"


def test_command_line_target_is_refused_at_once_spawned_ones_wait(tmp_path):
    """A refusal of a --target back-end is final; a spawned back-end binds before it listens, so the
    inventory's connection (retry_refused, the default) waits for it."""
    path = tmp_path / "late.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    try:
        started = time.monotonic()
        with pytest.raises(TargetError, match="connection refused"):
            VhostUserTransport(str(path), "blk", "t", timeout=10, retry_refused=False)
        assert time.monotonic() - started < 2
        threading.Timer(0.3, lambda: sock.listen(1)).start()
        chan = Channel.connect(str(path), 5.0)  # what the inventory's connect uses
        chan.close()
    finally:
        sock.close()


# -- usage errors ------------------------------------------------------------------------------------
W = '[[waiver]]\ntarget = "model:*"\nclause = "dev.basic.feature-bits.1"\nreason = "r"\nevidence = "e"\n'


def _file(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


USAGE = {
    # case: (args built from tmp_path, words the one ERROR line must hold)
    "timeout negative": (lambda t: ["--device-timeout", "-1"], ["--device-timeout", "-1", "> 0"]),
    "timeout zero": (lambda t: ["--device-timeout", "0"], ["--device-timeout", "> 0"]),
    "timeout nan": (lambda t: ["--device-timeout", "nan"], ["--device-timeout", "nan"]),
    "timeout inf": (lambda t: ["--device-timeout", "inf"], ["--device-timeout", "inf"]),
    "stress seconds": (lambda t: ["--stress-seconds", "-5"], ["--stress-seconds", ">= 0"]),
    "waivers missing": (lambda t: ["--waivers", str(t / "none.toml")], ["--waivers", "none.toml", "No such file"]),
    "waivers malformed": (lambda t: ["--waivers", _file(t, "w.toml", W + "[[waiver]\n")], ["--waivers", "w.toml:6:", "not valid TOML"]),
    "waiver without reason": (lambda t: ["--waivers", _file(t, "w.toml", W + W.replace('reason = "r"\n', ""))],
                              ["w.toml:6:", "waiver #2", "'reason'"]),
    "waiver empty evidence": (lambda t: ["--waivers", _file(t, "w.toml", W.replace('"e"', '" "'))], ["w.toml:5:", "evidence", "non-empty"]),
    "waiver unknown field": (lambda t: ["--waivers", _file(t, "w.toml", W + "expiry = 2099-01-01\n")], ["w.toml:6:", "expiry", "unknown field"]),
    "waiver unknown clause": (lambda t: ["--waivers", _file(t, "w.toml", W + W.replace("feature-bits.1", "feature-bitz.1"))],
                              ["w.toml:8:", "waiver #2", "clause", "'dev.basic.feature-bitz.1' is not in the clause catalogue"]),
    "waiver expired": (lambda t: ["--waivers", _file(t, "w.toml", W + "expires = 2020-01-01\n")], ["w.toml:6:", "expires", "expired on 2020-01-01"]),
    "target file missing": (lambda t: ["--target-file", str(t / "none.toml")], ["--target-file", "none.toml", "No such file"]),
    "target file malformed": (lambda t: ["--target-file", _file(t, "i.toml", '[targets.a]\ndevice = "blk\n')], ["--target-file", "i.toml:2:", "not valid TOML"]),
    "target file unknown key": (lambda t: ["--target-file", _file(t, "i.toml", '[targets.a]\ndevice = "blk"\ncommand = "x"\nreddy = 1\n')],
                                ["i.toml:4:", "[targets.a] reddy", "unknown key"]),
    "throughput missing": (lambda t: ["--throughput-json", str(t / "none.json")], ["--throughput-json", "none.json", "No such file"]),
    "throughput malformed": (lambda t: ["--throughput-json", _file(t, "t.json", '{"rows": [1,')], ["--throughput-json", "t.json", "line 1"]),
    "report is a directory": (lambda t: ["--conformance-html", str(t)], ["--conformance-html", "is a directory"]),
    "report under a file": (lambda t: ["--conformance-html", _file(t, "f", "") + "/r.html"], ["--conformance-html", "is not a directory"]),
    "stress log folder missing": (lambda t: ["--stress-log", str(t / "no" / "log")], ["--stress-log", "no such directory"]),
    "target workdir is a file": (lambda t: ["--target-workdir", _file(t, "f", "")], ["--target-workdir", "not a writable directory"]),
}


@pytest.mark.parametrize("case", list(USAGE))
def test_bad_option_or_file_is_a_usage_error_before_any_test(tmp_path, case):
    args, words = USAGE[case]
    report = tmp_path / "report.json"
    r = run_pytest(SUITE, "--target", "model:rng", "--conformance-json", str(report), *args(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == EXIT_USAGE, out[-3000:]
    _no_traceback(out)
    errors = _lines_with(out, "ERROR: ")
    assert len(errors) == 1 and all(w in errors[0] for w in words), (words, out)
    assert "passed" not in out and not report.exists(), "a test ran before the usage error"


def test_waivers_are_loaded_once_at_configure(tmp_path):
    """The file is read before the tests run (it used to be read after them): a test removing it
    changes nothing, and the report lists the waivers it held."""
    waivers = tmp_path / "w.toml"
    waivers.write_text(W)
    (tmp_path / "test_x.py").write_text(f"import os\ndef test_x(target_spec):\n    os.unlink({str(waivers)!r})\n")
    report = tmp_path / "r.json"
    r = run_pytest("-p", "fixtures.plugin", str(tmp_path), "--target", "model:rng", "--waivers", str(waivers),
                   "--conformance-json", str(report), cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and not waivers.exists(), out[-3000:]
    _no_traceback(out)
    listed = json.loads(report.read_text())["waivers"]
    assert [w["clause"] for w in listed["unused"]] == ["dev.basic.feature-bits.1"]


def test_third_party_waivers_stay_valid_under_the_strict_rules():
    """Every entry names a catalogued clause and none has expired on today's date."""
    waivers = load_waivers(ROOT / "waivers" / "third-party.toml", catalogue=load_catalogue(),
                           on=dt.datetime.now(dt.UTC).date())
    assert waivers


@pytest.mark.parametrize("text, line, words", [
    (W + W + "bogus = 1\n", 11, ["waiver #2", "bogus"]),
    (W + '\n[[waiver]]\ntarget = "*"\nclause = "x"\nreason = "r"\n', 7, ["waiver #2", "'evidence'"]),
    (W.replace("reason", "  'reason'"), 4, ["reason", "non-empty"]),
], ids=["unknown-field", "missing-field", "quoted-key"])
def test_waiver_errors_name_the_line(tmp_path, text, line, words):
    path = tmp_path / "w.toml"
    path.write_text(text.replace('"r"', '""') if "'reason'" in text else text)
    with pytest.raises(ValueError) as info:
        load_waivers(path, catalogue=load_catalogue())
    assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_not_run_results_are_counted_apart_and_never_pass():
    from reports import build_report, render_html

    run = {"schema": "virtio-conformance/run/1", "started": "2026-12-06T22:00:00Z",
           "targets": {"vhost-user:blk:/x": {"spec": "vhost-user:blk:/x", "error": None}},
           "results": [{"nodeid": f"suites/test_x.py::t{i}[vhost-user:blk:/x]", "target": "vhost-user:blk:/x",
                        "clauses": ["dev.basic.feature-bits.1"], "outcome": "skipped", "kind": "not-run",
                        "message": "not run: vhost-user:blk:/x: no vhost-user back-end at /x (no such file)"} for i in (1, 2)]}
    report = build_report(run, load_catalogue())
    t = report["targets"]["vhost-user:blk:/x"]
    assert t["verdict"] == "INCONCLUSIVE" and "2 test(s) not run on this target" in t["verdict_reasons"]
    assert (t["counts"]["not_run"], t["counts"]["passed"], t["counts"]["skipped"]) == (2, 0, 0)
    assert {r["kind"] for r in report["results"]} == {"not-run"}
    page = render_html(report)
    assert "Tests not run (2)" in page and "no vhost-user back-end at /x (no such file)" in page
