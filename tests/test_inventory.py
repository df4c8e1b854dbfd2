"""Spawned back-ends (targets/inventory.py, --target-file): placeholders, readiness, restart after
a crash, teardown by PID (also when the run is interrupted or killed), per-worker instances,
missing binaries, bad inventory files. The back-ends are tests/examples/fake_backend.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from targets.inventory import BackendError, InventoryError, SpawnedBackend, load_inventory

ROOT = Path(__file__).resolve().parent.parent
FAKE = '["{python}", "-m", "tests.examples.fake_backend", "--socket", "{socket}", "--pidfile", "{pidfile}"%s]'
FRONT = 'transport = "python:tests.examples.fake_frontend:connect"'


def entry_toml(name="fake", extra_args="", body="", device="rng"):
    return f'[targets.{name}]\ndevice = "{device}"\ncommand = {FAKE % extra_args}\n{FRONT}\n{body}\n'


def inventory(tmp_path, text) -> Path:
    p = tmp_path / "targets.toml"
    p.write_text(textwrap.dedent(text))
    return p


def gone(pid: int) -> bool:
    """No such process, or a zombie waiting for a reaper that is not ours."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, bound: float = 5.0) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.02)
    return gone(pid)


def backend(tmp_path, text, worker="gw0") -> SpawnedBackend:
    (entry,) = load_inventory(inventory(tmp_path, text))
    return SpawnedBackend(entry, tmp_path / "work", worker)


# -- the file ------------------------------------------------------------------------------------
def test_placeholders_expand_per_worker(tmp_path):
    text = entry_toml(body='disk = {size = "2M"}\nenv = {FAKE_WORKER = "{worker}"}').replace(
        '"{pidfile}"]', '"{pidfile}", "{workdir}", "{worker}", "{name}", "{device}", "{disk}", "{disk_size}", "{unique}", "{root}", "{{literal}}"]'
    )
    b0, b1 = backend(tmp_path, text, "gw0"), backend(tmp_path, text, "gw1")
    args = b0.expand(b0.entry.command)
    assert args[0] == sys.executable
    assert args[4] == b0.socket and args[6] == b0.pidfile
    assert args[7:] == [str(b0.workdir), "gw0", "fake", "rng", str(b0.workdir / "disk.img"), str(2 << 20), b0.values()["unique"], str(ROOT), "{literal}"]
    assert b0.socket != b1.socket and b0.workdir != b1.workdir and b0.values()["unique"] != b1.values()["unique"]
    b0.start()
    try:
        assert os.path.getsize(b0.workdir / "disk.img") == 2 << 20
        assert int(Path(b0.pidfile).read_text()) == b0.pid
        assert "worker gw0" in (b0.workdir / "stdout.log").read_text()  # env placeholders too
    finally:
        b0.close()


def test_long_workdir_still_gets_a_socket(tmp_path):
    deep = tmp_path / ("d" * 100)
    (entry,) = load_inventory(inventory(tmp_path, entry_toml()))
    b = SpawnedBackend(entry, deep, "gw0")
    assert len(b.socket) <= 107
    b.start()
    try:
        assert b.alive()
    finally:
        b.close()


@pytest.mark.parametrize(
    "text, line, words",
    [
        ('[targets.a]\ndevice = "blk"\ncommand = ["x",\n', 3, "not valid TOML"),
        ('[targets.a]\ndevice = "blk"\ncommand = "x"\n\n[targets.b]\ndevice = "nic"\ncommand = "x"\n', 6, "unknown device type 'nic'"),
        ('[targets.a]\ndevice = "blk"\ncommand = "x --s {sockit}"\n', 3, "unknown placeholder {sockit}"),
        ('[targets.a]\ndevice = "blk"\ncommand = "x {disk}"\n', 3, "unknown placeholder {disk}"),
        ('[targets.a]\ndevice = "blk"\n', 1, "missing required key 'command'"),
        ('[targets.a]\ndevice = "blk"\ncommand = "x"\nready = {stdout = "("}\n', 4, "not a regular expression"),
        ('[targets.a]\ndevice = "blk"\ncommand = "x"\nready_timeout = -1\n', 4, "expected seconds"),
        ('[targets.a]\ndevice = "blk"\ncommand = "x"\ndisk = {size = "lots"}\n', 4, "disk size 'lots'"),
        ('[targets.a]\ndevice = "blk"\ncommand = "x"\nreadyy = "socket"\n', 4, "unknown key(s) ['readyy']"),
        ('[targets.a]\ndevice = "net"\ncommand = "x"\nnet_forward = "swap"\n', 4, "got 'swap'"),
        ('[targets.a]\ndevice = "blk"\ncommand = "x"\nnet_forward = "any"\n', 4, "applies to net devices only"),
    ],
)
def test_bad_inventory_names_the_line(tmp_path, text, line, words):
    p = inventory(tmp_path, text)
    with pytest.raises(InventoryError) as e:
        load_inventory(p)
    assert f"{p}:" in str(e.value) and words in str(e.value)
    assert f"line {line}" in str(e.value) or f"{p}:{line}:" in str(e.value)


def test_net_forward_declaration(tmp_path):
    """What a net back-end does to the frames it sends back is the entry's to declare (default any)."""
    p = inventory(tmp_path, '[targets.a]\ndevice = "net"\ncommand = "x"\n\n[targets.b]\ndevice = "net"\ncommand = "x"\nnet_forward = "macswap"\n')
    assert [e.net_forward for e in load_inventory(p)] == ["any", "macswap"]
    example = {e.name: e.net_forward for e in load_inventory(ROOT / "targets.example.toml") if e.device == "net"}
    assert example["testpmd-net-macswap"] == "macswap" and example["testpmd-net"] == example["serve-net"] == "unchanged"


def test_bad_inventory_is_a_usage_error(tmp_path):
    p = inventory(tmp_path, '[targets.a]\ndevice = "blk"\ncommand = "x {sockit}"\n')
    r = run_pytest(tmp_path, p, ["tests/examples/inventory_suite.py"])
    assert r.returncode == 4, r.stdout + r.stderr
    assert f"{p}:3" in r.stderr and "{sockit}" in r.stderr


# -- start, readiness, stop ----------------------------------------------------------------------
def test_readiness_timeout_fails_fast_naming_the_check(tmp_path):
    b = backend(tmp_path, entry_toml(extra_args=', "--behaviour", "never-ready"', body="ready_timeout = 1"))
    t0 = time.monotonic()
    with pytest.raises(BackendError) as e:
        b.start()
    assert time.monotonic() - t0 < 4
    msg = str(e.value)
    assert f"not ready after 1s waiting for the socket {b.socket} to appear" in msg and "file:fake (worker gw0)" in msg
    pid = int(Path(b.pidfile).read_text())
    assert wait_gone(pid), "a back-end that never became ready was left running"


def test_stdout_and_command_readiness(tmp_path):
    body = 'ready = {stdout = "listening on {socket}", command = ["test", "-S", "{socket}"]}'
    b = backend(tmp_path, entry_toml(extra_args=', "--delay", "0.3"', body=body))
    b.start()
    try:
        assert "listening on" in (b.workdir / "stdout.log").read_text()
    finally:
        b.close()
    b2 = backend(tmp_path, entry_toml(name="b2", body='ready = {stdout = "never printed"}\nready_timeout = 0.5'))
    with pytest.raises(BackendError, match=r"waiting for a stdout line matching /never printed/"):
        b2.start()


def test_exit_before_ready_reports_status_and_stderr(tmp_path):
    b = backend(tmp_path, entry_toml(extra_args=', "--behaviour", "exit"'))
    with pytest.raises(BackendError) as e:
        b.start()
    assert "exited before it was ready" in str(e.value) and "exit status 2" in str(e.value)
    assert "fatal: cannot open the export (on purpose)" in str(e.value)


def test_crash_then_restart(tmp_path):
    b = backend(tmp_path, entry_toml())
    b.start()
    first = b.pid
    os.kill(first, signal.SIGKILL)
    assert wait_gone(first) or b.proc.wait(5) is not None
    b.proc.wait(5)
    note = b.died()
    assert "died (killed by SIGKILL)" in note
    b.start()
    try:
        assert b.alive() and b.pid != first
    finally:
        b.close()
    assert wait_gone(first)


def test_stop_escalates_to_sigkill_and_takes_the_group(tmp_path):
    b = backend(tmp_path, entry_toml(extra_args=', "--behaviour", "ignore-term"', body="stop_timeout = 0.5"))
    b.start()
    pid = b.pid
    t0 = time.monotonic()
    b.stop()
    assert gone(pid) and time.monotonic() - t0 < 3
    assert not os.path.exists(b.socket)
    b2 = backend(tmp_path, entry_toml(name="b2", extra_args=', "--behaviour", "child"'))
    b2.start()
    time.sleep(0.2)
    grandchild = int((b2.workdir / "stdout.log").read_text().split("grandchild pid ")[1].split()[0])
    assert not gone(grandchild)
    b2.close()
    assert wait_gone(grandchild), "the back-end's own child outlived the teardown"


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_no_backend_outlives_the_harness(tmp_path, how):
    """At normal interpreter exit without stop() (atexit), and when the harness is SIGKILLed (PDEATHSIG)."""
    p = inventory(tmp_path, entry_toml())
    code = textwrap.dedent(f"""
        import sys, time
        from targets.inventory import SpawnedBackend, load_inventory
        b = SpawnedBackend(load_inventory({str(p)!r})[0], {str(tmp_path / 'w')!r}, "gw0")
        b.start()
        print(b.pid, flush=True)
        if {how!r} == "sigkill":
            time.sleep(600)
        sys.stdin.readline()  # exit only once the test has seen the back-end alive
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pid = int(child.stdout.readline())
    assert not gone(pid)
    if how == "sigkill":
        child.kill()
    else:
        child.stdin.write("\n")
        child.stdin.flush()
    child.wait(10)
    assert wait_gone(pid), f"back-end {pid} outlived the harness ({how})"


# -- through the plugin ----------------------------------------------------------------------------
def run_pytest(tmp_path, target_file, args, env=None, **kw):
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--rootdir={ROOT}", "--target-file", str(target_file),
           "--target-workdir", str(tmp_path / "run"), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, **kw)


def pidlog(path: Path) -> list[tuple[str, str, int]]:
    return [(t, w, int(p)) for t, w, p in (line.split() for line in path.read_text().splitlines())]


def test_plugin_reports_a_death_and_restarts(tmp_path):
    p = inventory(tmp_path, entry_toml())
    log, js = tmp_path / "pids", tmp_path / "r.json"
    r = run_pytest(tmp_path, p, ["tests/examples/inventory_suite.py", "-k", "not a_serves or a_serves and 0", "--conformance-json", str(js)],
                   env={"VC_PIDLOG": str(log), "VC_KILL": "1"})
    results = {x["nodeid"].split("::")[1].split("[")[0]: x for x in json.loads(js.read_text())["results"]}
    b, c = results["test_b_backend_dies_unnoticed"], results["test_c_backend_dies_and_test_fails"]
    for res in (b, c):
        assert res["outcome"] == "failed", res
        assert "died (exit status 3)" in res["message"] and "a client asked me to die" in res["message"], res
    assert b["kind"] == "harness-error"
    assert results["test_d_serves_again"]["outcome"] == "passed" and results["test_a_serves"]["outcome"] == "passed"
    assert results["test_a1_skipped_in_the_target_fixture"]["outcome"] == "skipped"
    assert results["test_a2_serves_after_a_skip"]["outcome"] == "passed", "a skip in the target fixture leaked the connection"
    pids = {t: pid for t, _, pid in pidlog(log)}
    assert pids["a"] != pids["d"], "the back-end was not started again after it died"
    assert all(gone(pid) for pid in pids.values())
    assert "file:fake" in r.stdout + str(results)
    target = json.loads(js.read_text())["targets"]["file:fake"]
    assert "tests.examples.fake_backend --socket" in target["description"] and f"{p}:1" in target["description"]


def test_per_worker_instances(tmp_path):
    p = inventory(tmp_path, entry_toml())
    log = tmp_path / "pids"
    r = run_pytest(tmp_path, p, ["tests/examples/inventory_suite.py", "-n", "2", "-k", "a_serves or d_serves"], env={"VC_PIDLOG": str(log)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    by_worker: dict[str, set] = {}
    for _, worker, pid in pidlog(log):
        by_worker.setdefault(worker, set()).add(pid)
    assert set(by_worker) == {"gw0", "gw1"}, by_worker
    assert all(len(p) == 1 for p in by_worker.values()), f"one process per worker for the whole run: {by_worker}"
    assert by_worker["gw0"] != by_worker["gw1"]
    assert all(gone(pid) for pids in by_worker.values() for pid in pids)


def test_interrupted_run_leaves_no_backend(tmp_path):
    p = inventory(tmp_path, entry_toml())
    log = tmp_path / "pids"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--rootdir={ROOT}", "--target-file", str(p), "--target-workdir",
           str(tmp_path / "run"), "tests/examples/inventory_suite.py", "-k", "interruptible"]
    child = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "VC_PIDLOG": str(log), "VC_HANG": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    (_, _, pid), = pidlog(log)
    child.send_signal(signal.SIGINT)
    child.wait(30)
    assert wait_gone(pid), "Ctrl-C left the back-end running"


def test_missing_binary_skips_naming_it(tmp_path):
    p = inventory(tmp_path, entry_toml(body='requires = ["vc-no-such-backend-binary"]'))
    r = run_pytest(tmp_path, p, ["tests/examples/inventory_suite.py", "-rs", "-k", "d_serves"], env={"VC_PIDLOG": str(tmp_path / "pids")})
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout[-2000:]
    assert "file:fake requires vc-no-such-backend-binary: not found on PATH" in r.stdout
    assert not (tmp_path / "pids").exists()


def test_target_selects_inventory_entries(tmp_path):
    p = inventory(tmp_path, entry_toml() + entry_toml(name="other"))
    r = run_pytest(tmp_path, p, ["tests/examples/inventory_suite.py", "--collect-only", "--target", "file:other"])
    assert r.returncode == 0 and "[file:other" in r.stdout and "[file:fake" not in r.stdout, r.stdout[-2000:]
    r = run_pytest(tmp_path, p, ["tests/examples/inventory_suite.py", "--collect-only", "--target", "file:nope"])
    assert r.returncode == 4 and "file:nope: no such entry" in r.stderr and "file:fake, file:other" in r.stderr


EXAMPLE = load_inventory(ROOT / "targets.example.toml")


@pytest.mark.parametrize("entry", EXAMPLE, ids=[e.target_id for e in EXAMPLE])
def test_example_inventory_entries_start_and_stop(tmp_path, entry):
    """Every shipped entry starts on this machine (real qemu-storage-daemon / testpmd where
    installed), becomes ready, and leaves no process or socket behind."""
    missing = entry.missing()
    if missing:
        pytest.skip(missing)
    b = SpawnedBackend(entry, tmp_path, "gw0")
    b.start()
    pid = b.pid
    try:
        assert b.alive() and os.path.exists(b.socket)
    finally:
        b.close()
    assert wait_gone(pid) and not os.path.exists(b.socket)
