"""Self-test of the suites against correct but unusual devices (tests/unusual): each does something
the VIRTIO spec allows that our models do not do, and the suites must find every one CONFORMANT --
no violation at any level, no harness error -- run as a user would, in a child pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unusual import registry

from .test_mutants import _env, harness_errors

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 300  # seconds for one whole suite run against one device

DEVICES = registry()

# What item 4 of issue 8 asks for (and a few more); more may be added, none of these may go.
EXPECTED = {
    "rng-queue-size-2", "rng-queue-size-16", "rng-queue-size-32768", "blk-queue-size-16",
    "net-queue-size-16", "console-queue-size-2",
    "rng-completes-out-of-order", "blk-completes-out-of-order", "rng-out-of-order-no-in-order-feature",
    "rng-short-reads", "rng-one-byte",
    "rng-minimal-features", "blk-minimal-features", "net-minimal-features", "console-minimal-features",
    "rng-polls", "blk-polls", "net-polls",
    "console-config-changes-twice", "blk-config-changes-twice",
    "rng-answers-late",
    "net-macswap", "net-rewrites-source-mac",
    "rng-notifies-every-buffer", "blk-notifies-every-buffer", "net-link-up-late",
}


def run_suites(target: str, options: tuple[str, ...], tmp_path: Path) -> dict:
    """Every suite against ``target`` (a later --device-timeout in ``options`` wins); the JSON report."""
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q", "--target", target,
           "--conformance-json", str(out), "--device-timeout", "1", *options]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if not out.exists():
        pytest.fail(f"no report from {' '.join(cmd[2:])} (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def test_registry_has_the_devices():
    missing = EXPECTED - set(DEVICES)
    assert not missing, f"unusual devices missing from tests/unusual: {sorted(missing)}"
    for name, dev in DEVICES.items():
        assert dev.target.startswith("python:tests.unusual."), f"{name}: target {dev.target!r}"
        assert dev.allows, f"{name}: say what it does that the spec allows, and where"
        module, factory = dev.target.removeprefix("python:").split(",")[0].split(":")
        assert callable(getattr(__import__(module, fromlist=[factory]), factory, None)), f"{name}: no factory {dev.target}"


@pytest.mark.selftest_slow
@pytest.mark.parametrize("name", sorted(DEVICES))
def test_unusual_device_is_conformant(name, tmp_path):
    dev = DEVICES[name]
    report = run_suites(dev.target, dev.options, tmp_path)
    errors = harness_errors(report)
    assert not errors, f"{name}: harness errors (the harness broke, not the device):\n  " + "\n  ".join(errors)
    failed = [f"{r['nodeid']}: [{r.get('severity')}] {r['message']}" for r in report["results"] if r["kind"] == "violation"]
    assert not failed, f"{name} ({dev.allows}) is correct, but failed:\n  " + "\n  ".join(failed)
    assert report["verdict"] == "CONFORMANT", f"{name}: {report['verdict']}"
