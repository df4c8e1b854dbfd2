"""Tests run by tests/test_inventory.py in a child pytest against spawned fake back-ends
(tests/examples/fake_backend.py behind tests/examples/fake_frontend.py). Each test appends
``test worker pid`` to the file named by $VC_PIDLOG, so the parent can check restarts and teardown.
Not collected by ``pytest tests`` (its name does not start with test_)."""

import os

import pytest


def _log(name, target):
    pid = target.backend_pid()
    with open(os.environ["VC_PIDLOG"], "a") as f:
        f.write(f"{name} {os.environ.get('PYTEST_XDIST_WORKER', 'master')} {pid}\n")
    return pid


@pytest.mark.parametrize("i", range(6))
def test_a_serves(target, i):
    _log("a", target)


@pytest.mark.device_types("blk")
def test_a1_skipped_in_the_target_fixture(target):
    raise AssertionError("the fake back-end serves an rng device: never reached")


def test_a2_serves_after_a_skip(target):
    _log("a2", target)  # the fake serves one connection at a time: a leaked one would block this


def test_b_backend_dies_unnoticed(target):
    if os.environ.get("VC_KILL") == "1":
        target.kill_backend()  # the test itself sees nothing wrong: the plugin must report the death


def test_c_backend_dies_and_test_fails(target):
    if os.environ.get("VC_KILL") == "1":
        target.kill_backend()
        target.backend_pid()  # fails: nobody answers any more


def test_d_serves_again(target):
    _log("d", target)


def test_e_interruptible(target):
    _log("e", target)
    if os.environ.get("VC_HANG") == "1":
        import time

        time.sleep(600)  # the parent interrupts the run here
