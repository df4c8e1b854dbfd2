"""Self-tests of the vhost-user protocol suite (suites/vhost_user/test_protocol.py) and its raw
session (targets/vhost_user/session.py).

1. Misbehaving peers (a closed socket, garbage, a reply to another request, silence): each gives a
   DeviceViolation naming the message, the clause and the bytes seen, within the bound.
2. The suite against the real back-ends installed here (qemu-storage-daemon, DPDK testpmd): each
   test's outcome is pinned -- pass, skip (feature not offered), or the clause the back-end is
   seen to break (evidence in the report of the suite's author; waivers are the lead's call).
3. Our back-end server (targets/vhost_user/serve.py) passes the suite; each protocol mutant
   (targets/mutants/vhost_user.py) fails the clause it breaks; every clause the suite claims has one.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from _pytest.outcomes import Skipped

from targets.mutants.vhost_user import PROTOCOL_MUTANTS
from targets.vhost_user import protocol as vu
from targets.vhost_user.session import BackEndUnderTest, RawSession
from virtio.errors import DeviceViolation

from .test_vhost_user_backend import server  # noqa: F401  (fixture: our back-end server, by PID)
from .test_vhost_user_frontend import ScriptedBackend, _stop, _wait_socket
from .test_vhost_user_frontend import _reply as reply

SUITE = Path(__file__).resolve().parent.parent / "suites" / "vhost_user" / "test_protocol.py"
QSD = "/usr/bin/qemu-storage-daemon"
TESTPMD = "/usr/bin/dpdk-testpmd"


def _suite_module():
    spec = importlib.util.spec_from_file_location("vu_protocol_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SUITE_MODULE = _suite_module()


def suite_cases():
    """(test id, function, kwargs) for every suite test, parametrized layouts expanded."""
    cases = []
    for name, fn in inspect.getmembers(SUITE_MODULE, inspect.isfunction):
        if not name.startswith("test_"):
            continue
        layouts = ["split", "packed"] if "layout" in inspect.signature(fn).parameters else [None]
        for layout in layouts:
            cases.append((f"{name}[{layout}]" if layout else name, fn, {"layout": layout} if layout else {}))
    return cases


def run_case(fn, kwargs, backend: BackEndUnderTest) -> str:
    """'pass', 'skip', or the primary clause id of the DeviceViolation the test raised (its
    implicated clauses are not failed: the report lists them only)."""
    first = next(iter(inspect.signature(fn).parameters))
    try:
        fn(**{first: backend}, **kwargs)
        return "pass"
    except Skipped:
        return "skip"
    except DeviceViolation as e:
        return e.clause
    finally:
        backend.close()


# -- 1. misbehaving peers --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "script, clause, words",
    [
        (lambda m: "close", "vu.communication.1", "closed the connection"),
        (lambda m: reply(m.request, b"\x01\x02\x03"), "vu.communication.1", "not a u64"),
        (lambda m: reply(vu.GET_QUEUE_NUM, vu.U64.pack(1)), "vu.header.2", "names another request"),
        (lambda m: reply(m.request, vu.U64.pack(1), flags=vu.VERSION), "vu.header.1", "wrong header flags"),
        (lambda m: vu.HEADER.pack(m.request, 5, 1 << 20), "vu.communication.1", "malformed"),
        (lambda m: None, "vu.communication.1", "did not answer"),
    ],
    ids=["eof", "short-payload", "wrong-request", "no-reply-bit", "huge-size", "silence"],
)
def test_bad_answers_are_violations(tmp_path, script, clause, words):
    path = str(tmp_path / "fake.sock")
    ScriptedBackend(path, lambda m: script(m) if m.request == vu.GET_FEATURES else None)
    session = RawSession(path, "blk", timeout=0.5)
    try:
        session.send(vu.SET_OWNER)
        started = time.monotonic()
        with pytest.raises(DeviceViolation) as info:
            session.u64(vu.GET_FEATURES)
        assert time.monotonic() - started < 2.0
        assert info.value.clause == clause
        assert words in str(info.value)
        assert "GET_FEATURES" in str(info.value)
    finally:
        session.close()


def test_unsolicited_message_is_seen(tmp_path):
    path = str(tmp_path / "fake.sock")
    answers = {vu.GET_FEATURES: vu.U64.pack(1 << 32), vu.SET_VRING_NUM: vu.U64.pack(0), vu.SET_VRING_BASE: vu.U64.pack(0)}
    ScriptedBackend(path, lambda m: reply(m.request, answers[m.request]) if m.request in answers else None)
    be = BackEndUnderTest(path, "blk", timeout=0.5)
    assert run_case(SUITE_MODULE.test_no_reply_unless_asked, {}, be) == "vu.communication.2"


# -- 2. real back-ends ------------------------------------------------------------------------------
def _spawn(argv: list[str], sock: Path, log: Path):
    """Run a back-end until its socket appears; yield the socket path; stop it by its PID."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_socket(str(sock), proc, 15, log)
        yield str(sock)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def qsd(tmp_path_factory):
    if not shutil.which(QSD):
        pytest.skip(f"{QSD} not installed")
    d = tmp_path_factory.mktemp("qsd")
    export = f"type=vhost-user-blk,id=exp0,node-name=n0,addr.type=unix,addr.path={d / 'qsd.sock'},writable=on,num-queues=1,logical-block-size=512"
    yield from _spawn([QSD, "--blockdev", "driver=null-co,node-name=n0,size=1073741824", "--export", export], d / "qsd.sock", d / "qsd.log")


@pytest.fixture(scope="module")
def testpmd(tmp_path_factory):
    if not shutil.which(TESTPMD):
        pytest.skip(f"{TESTPMD} not installed")
    d = tmp_path_factory.mktemp("testpmd")
    # stdin stays an open pipe: testpmd quits when it reads end of file
    argv = [TESTPMD, "-l", "0,1", "--main-lcore", "0", "--no-huge", "-m", "1024", "--no-pci",
            "--file-prefix", f"vcproto{os.getpid()}", "--vdev", f"net_vhost0,iface={d / 'net.sock'},queues=1",
            "--", "--forward-mode=rxonly", "--nb-cores=1"]
    yield from _spawn(argv, d / "net.sock", d / "testpmd.log")


# What each real back-end is seen to do; anything not listed must pass or skip. Evidence for each
# listed clause is in the protocol suite author's note (the lead decides on waivers).
EXPECTED = {
    "qsd": {
        # undefined request with need_reply: acked 0, then the connection is dropped
        "test_ack_says_success_or_failure": "vu.vhost-user-protocol-f-reply-ack.2",
        "test_refused_request_keeps_session": "vu.communication.3",
        # GET_CONFIG ignores the offset field (always copies from offset 0)
        "test_get_config_size_and_offset": "vu.front-end-message-types.9",
        # SET_VRING_KICK with the no-fd flag: the ring is never polled, a published request stays
        # unused (libvhost-user keeps kick_fd -1 and watches nothing) -- a SHOULD
        "test_kick_without_fd_means_polling": "vu.front-end-message-types.5",
        # (a kicked request completes before SET_VRING_ENABLE 1 with protocol features negotiated:
        # allowed for a read; a write that does so is judged only where the export keeps data,
        # which the null-co export here does not: test_disabled_ring_write_has_no_effect skips)
    },
    "testpmd": {
        # RESET_OWNER resets the device and frees the memory table (GET_VRING_BASE answers 0
        # afterwards; SET_VRING_ADDR is refused: "processing VHOST_USER_SET_VRING_ADDR failed")
        "test_reset_owner_keeps_session_state": "vu.front-end-message-types.2",
    },
}
CASES = suite_cases()


@pytest.fixture(params=["qsd", "testpmd"])
def real_backend(request):
    """(name, BackEndUnderTest) of a real back-end, started once per module."""
    device = {"qsd": "blk", "testpmd": "net"}[request.param]
    return request.param, BackEndUnderTest(request.getfixturevalue(request.param), device, timeout=3.0)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_suite_on_real_backend(real_backend, case):
    name, fn, kwargs = case
    which, backend = real_backend
    got = run_case(fn, kwargs, backend)
    want = EXPECTED[which].get(name)
    assert got == want if want else got in ("pass", "skip"), f"{which} {name}: {got}"


# -- 3. our own back-end server, clean and mutated ------------------------------------------------------
def claimed(fn) -> set[str]:
    return {cid for mark in getattr(fn, "pytestmark", []) if mark.name == "clause" for cid in mark.args}


SUITE_CLAUSES = set().union(*(claimed(fn) for _, fn, _ in CASES))


@pytest.mark.parametrize("device", ["blk", "net"])
def test_suite_passes_on_clean_server(server, device):  # noqa: F811 (the imported fixture)
    backend = BackEndUnderTest(server(device), device, timeout=3.0)
    outcomes = {name: run_case(fn, kwargs, backend) for name, fn, kwargs in CASES}
    assert {n: o for n, o in outcomes.items() if o not in ("pass", "skip")} == {}
    # what our server offers is tested: 3 tests have blk- or net-only workloads
    assert list(outcomes.values()).count("pass") >= len(CASES) - 3


def test_every_claimed_clause_has_a_mutant():
    assert SUITE_CLAUSES == {m.breaks for m in PROTOCOL_MUTANTS.values()}


@pytest.mark.parametrize("name", sorted(PROTOCOL_MUTANTS))
def test_suite_catches_protocol_mutant(server, name):  # noqa: F811 (the imported fixture)
    mutant = PROTOCOL_MUTANTS[name]
    backend = BackEndUnderTest(server(mutant.device, "--protocol-mutant", name), mutant.device, timeout=1.0)
    outcomes = {case: run_case(fn, kwargs, backend) for case, fn, kwargs in CASES if mutant.breaks in claimed(fn)}
    assert outcomes, f"no suite test claims {mutant.breaks}"
    assert mutant.breaks in outcomes.values(), f"{name} breaks {mutant.breaks}; the tests claiming it gave {outcomes}"
    others = {m.breaks for m in PROTOCOL_MUTANTS.values()} - {mutant.breaks}
    wrong = {case: got for case, got in outcomes.items() if got in others}
    assert not wrong, f"{name} breaks only {mutant.breaks}, but another mutant's clause is primary: {wrong}"
