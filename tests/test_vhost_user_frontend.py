"""Self-tests of the vhost-user front-end (targets/vhost_user/frontend.py): against the real
back-ends installed here (qemu-storage-daemon, DPDK testpmd; see docs/BACKENDS.md) and
against scripted misbehaving peers (bad input must become a named error, never a hang)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from targets.registry import open_target, parse_target
from targets.vhost_user import VhostUserTransport
from targets.vhost_user import protocol as vu
from targets.vhost_user.channel import Channel
from targets.vhost_user.handover import USER_BASE
from virtio import constants as C
from virtio.checks import poll
from virtio.driver import VirtioDriver, VqInfo
from virtio.errors import DeviceViolation, TargetError, UnsupportedOp
from virtio.workloads import workload_for

QSD = "/usr/bin/qemu-storage-daemon"
TESTPMD = "/usr/bin/dpdk-testpmd"


def _wait_socket(path, proc, seconds, log):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if proc.poll() is not None:
            pytest.fail(f"back-end exited with {proc.returncode} before its socket appeared: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no socket {path} after {seconds}s: {log.read_text()[-2000:]}")
        time.sleep(0.02)


def _stop(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture(params=["file", "null-co"])
def qsd(request, tmp_path):
    if not shutil.which(QSD):
        pytest.skip(f"{QSD} is not installed")
    sock = tmp_path / "qsd.sock"
    if request.param == "file":
        disk = tmp_path / "disk.img"
        with open(disk, "wb") as f:
            f.truncate(16 << 20)
        blockdev = f"driver=file,node-name=n0,filename={disk}"
    else:
        blockdev = "driver=null-co,node-name=n0,size=16777216"
    log = tmp_path / "qsd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [QSD, "--blockdev", blockdev, "--export",
             f"type=vhost-user-blk,id=exp0,node-name=n0,addr.type=unix,addr.path={sock},writable=on,num-queues=1,logical-block-size=512"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        _wait_socket(str(sock), proc, 10, log)
        yield str(sock), request.param
    finally:
        _stop(proc)


@pytest.fixture
def testpmd(tmp_path):
    if not shutil.which(TESTPMD):
        pytest.skip(f"{TESTPMD} is not installed")
    sock = tmp_path / "net.sock"
    log = tmp_path / "testpmd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [TESTPMD, "-l", "0,1", "--main-lcore", "0", "--no-huge", "-m", "1024", "--no-pci", "--file-prefix", f"vcA{os.getpid()}",
             "--vdev", f"net_vhost0,iface={sock},queues=1", "--", "-i", "--forward-mode=rxonly", "--nb-cores=1"],
            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        _wait_socket(str(sock), proc, 30, log)
        proc.stdin.write(b"start\n")  # interactive mode: forwarding (which polls the rings) starts here
        proc.stdin.flush()
        yield str(sock)
    finally:
        try:
            proc.stdin.write(b"quit\n")
            proc.stdin.close()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _stop(proc)


# -- real back-ends ----------------------------------------------------------------------------------
def test_qsd_identity_features_and_config(qsd):
    path, _ = qsd
    t = VhostUserTransport(path, "blk", "test", timeout=3)
    try:
        ident = t.identity()
        assert ident.transport == "vhost-user" and ident.device_type == "blk"
        assert "REPLY_ACK" in ident.extra["protocol_features_negotiated"]
        assert t.backend_features >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1
        # bit 30 and LOG_ALL are the transport's: not shown to the driver
        assert not t.get_extended_features() >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1
        assert not t.get_extended_features() >> vu.VHOST_F_LOG_ALL & 1
        assert t.get_extended_features() >> C.VIRTIO_F_VERSION_1 & 1
        d = VirtioDriver(t, timeout=3)
        d.reset()
        assert d.config_field("capacity") == (16 << 20) // 512
        assert d.config_field("blk_size") == 512
        assert set(t.missing_duties()) == {"status", "driver-ok", "generation"}  # qsd has no STATUS
        assert t.bus_name() == f"vhost-user:{path}"
        assert t.vq_num_max(0) == 1024 and t.vq_num_max(1) == 0  # num-queues=1
        with pytest.raises(UnsupportedOp):
            t.get_shm_region(0)
    finally:
        t.close()


def _started(t):
    """A driver that has reset and initialized the device behind ``t``, and its first queue."""
    d = VirtioDriver(t, timeout=3)
    d.reset()
    return d, d.initialize()[0]


def test_qsd_requests_complete_and_reset_reconnects_with_fresh_memory(qsd):
    path, kind = qsd
    t = VhostUserTransport(path, "blk", "test", timeout=3)
    try:
        d, vq = _started(t)
        assert d.status() == C.ACKNOWLEDGE | C.DRIVER | C.FEATURES_OK | C.DRIVER_OK
        w = workload_for(d, [vq], 3)
        for _ in range(5):  # a FLUSH each: no data to check, so the null-co disk works too
            out, in_ = w.light_buffers()
            vq.add(out, in_, "light")
            vq.kick()
            chain = vq.wait_used(1, 3, awaited="flush")[0]
            assert vq.read_in(chain, chain.writable)[-1] == C.VIRTIO_BLK_S_OK
        # call eventfd -> vq.interrupt(), on the event thread: it may lag the used ring we polled
        assert poll(lambda: vq.interrupts >= 1, 3)
        old_mem = t.mem
        d.reset()
        assert t.mem is not old_mem and t.mem.base == old_mem.base  # a new session, new memfd
        vq = d.initialize()[0]
        out, in_ = workload_for(d, [vq], 3).light_buffers()
        vq.add(out, in_, "light")
        vq.kick()
        vq.wait_used(1, 3, awaited="flush after reset")
    finally:
        t.close()
    assert threading.active_count() < 50 and not any(th.name == "vhost-user-events" for th in threading.enumerate())


def test_qsd_ring_in_user_addresses_and_get_vring_base(qsd):
    """The two address spaces differ: ring addresses travel as user addresses (USER_BASE); the
    back-end still finds the ring, and GET_VRING_BASE reports how far it got."""
    path, _ = qsd
    t = VhostUserTransport(path, "blk", "test", timeout=3)
    try:
        d, vq = _started(t)
        assert t.mem_region().user_addr == USER_BASE != t.mem.base
        out, in_ = workload_for(d, [vq], 3).light_buffers()
        vq.add(out, in_, "light")
        vq.kick()
        vq.wait_used(1, 3)
        assert t.get_vring_base(0) == 1
    finally:
        t.close()


def test_testpmd_status_and_tx(testpmd):
    t = VhostUserTransport(testpmd, "net", "test", timeout=5)
    try:
        assert t.has_protocol(vu.PROTOCOL_F_STATUS) and not t.has_protocol(vu.PROTOCOL_F_CONFIG)
        assert "status" not in t.missing_duties() and "config" in t.missing_duties()
        assert not t.get_extended_features() >> C.VIRTIO_NET_F_CTRL_VQ & 1  # the front-end's in vhost-user
        with pytest.raises(UnsupportedOp, match="PROTOCOL_F_CONFIG"):
            t.get(0, 6)
        d = VirtioDriver(t, timeout=5)
        d.reset()
        assert d.status() == 0
        vqs = d.initialize()
        assert d.status() & C.DRIVER_OK  # read back with GET_STATUS
        tx = vqs[1]
        from virtio.buffers import Sg

        frame = bytes(12) + b"\xff" * 6 + b"\x02" + bytes(5) + b"\x08\x00" + bytes(46)
        a = t.mem.alloc(len(frame))
        t.mem.write(a, frame)
        tx.add([Sg(a, len(frame))], [], "tx")
        tx.kick()
        tx.wait_used(1, 5, awaited="transmitted frame")
    finally:
        t.close()


def test_registry_builds_the_transport(qsd):
    path, _ = qsd
    ops = open_target(parse_target(f"vhost-user:blk:{path},timeout=2"))
    try:
        assert isinstance(ops, VhostUserTransport) and ops.timeout == 2.0
    finally:
        ops.close()


# -- bad input ------------------------------------------------------------------------------------
def test_missing_socket_is_a_target_error(tmp_path):
    with pytest.raises(TargetError, match="no vhost-user back-end at .*no such file"):
        VhostUserTransport(str(tmp_path / "nope.sock"), "blk", "t", timeout=1)


def test_unknown_device_type(tmp_path):
    with pytest.raises(TargetError, match="unknown device type"):
        VhostUserTransport(str(tmp_path / "x.sock"), "gpu", "t")


class ScriptedBackend:
    """A listening socket whose peer answers each request with ``answer(msg)`` (bytes, None to stay
    silent, or "close"); records what it received."""

    def __init__(self, path, answer):
        self.path = path
        self.answer = answer
        self.seen: list[int] = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conn, _ = self.srv.accept()
        ch = Channel(conn, "front-end")
        try:
            while True:
                msg = ch.recv(10)
                msg.close_fds()
                self.seen.append(msg.request)
                out = self.answer(msg)
                if out == "close":
                    break
                if out is not None:
                    conn.sendall(out)
        except vu.ProtocolError:
            pass
        finally:
            ch.close()
            self.srv.close()


def _reply(request, payload, flags=vu.VERSION | vu.FLAG_REPLY):
    return vu.HEADER.pack(request, flags, len(payload)) + payload


def _scripted(tmp_path, answer):
    return ScriptedBackend(str(tmp_path / "fake.sock"), answer)


def test_silent_peer_times_out_naming_the_message(tmp_path):
    b = _scripted(tmp_path, lambda m: None)
    t0 = time.monotonic()
    with pytest.raises(TargetError, match="no answer to GET_FEATURES within 0.5s"):
        VhostUserTransport(b.path, "blk", "t", timeout=0.5)
    assert time.monotonic() - t0 < 3


def test_garbage_answer_shows_the_bytes(tmp_path):
    b = _scripted(tmp_path, lambda m: b"\xde\xad\xbe\xef" * 3 + b"\x01\x02")
    with pytest.raises(TargetError, match=r"GET_FEATURES.*de ad be ef"):
        VhostUserTransport(b.path, "blk", "t", timeout=0.5)


def test_wrong_request_code_and_short_payload(tmp_path):
    b = _scripted(tmp_path, lambda m: _reply(vu.GET_QUEUE_NUM, vu.U64.pack(1)))
    with pytest.raises((TargetError, DeviceViolation), match="names another request"):
        VhostUserTransport(b.path, "blk", "t", timeout=0.5)
    b2 = ScriptedBackend(str(tmp_path / "fake2.sock"), lambda m: _reply(m.request, b"\x01\x02"))
    with pytest.raises((TargetError, DeviceViolation), match="answered with 2 bytes"):
        VhostUserTransport(b2.path, "blk", "t", timeout=0.5)
    b3 = ScriptedBackend(str(tmp_path / "fake3.sock"), lambda m: _reply(m.request, vu.U64.pack(1), flags=vu.VERSION))
    with pytest.raises((TargetError, DeviceViolation), match="reply flag"):
        VhostUserTransport(b3.path, "blk", "t", timeout=0.5)


def _minimal_backend(close_on=None, features=1 << C.VIRTIO_F_VERSION_1):
    """Answers GETs as a protocol-feature-less blk back-end; closes the socket on ``close_on``."""

    def answer(m):
        if m.request == close_on:
            return "close"
        if m.request == vu.GET_FEATURES:
            return _reply(m.request, vu.U64.pack(features))
        if m.request == vu.GET_VRING_BASE:
            return _reply(m.request, vu.VRING_STATE.pack(0, 0))
        return None

    return answer


def test_peer_closing_mid_session_is_named(tmp_path):
    b = _scripted(tmp_path, _minimal_backend(close_on=vu.SET_VRING_KICK))
    t = VhostUserTransport(b.path, "blk", "t", timeout=0.5)
    try:
        assert t.protocol_features == 0 and set(t.missing_duties()) >= {"status", "config"}
        with pytest.raises(UnsupportedOp):
            t.get(0, 8)
        d = VirtioDriver(t, timeout=0.5)
        d.reset()
        d.negotiate(1 << C.VIRTIO_F_VERSION_1)
        assert d.status() == C.ACKNOWLEDGE | C.DRIVER | C.FEATURES_OK  # front-end bookkeeping
        d.find_vqs([VqInfo("requestq", size=8)])
        with pytest.raises((TargetError, DeviceViolation), match="dropped the connection|connection is gone|closed"):
            d.driver_ok()
        assert vu.SET_MEM_TABLE in b.seen and vu.SET_VRING_ADDR in b.seen
    finally:
        t.close()


def test_inflight_fd_get_and_set_against_our_server(tmp_path):
    """get_inflight_fd / set_inflight_fd against our model server (which offers INFLIGHT_SHMFD):
    the buffer fits the queues asked about, is accepted back, and a description the fd cannot
    hold is refused (the ack says so)."""
    import mmap

    from targets.vhost_user.inflight import InflightBuffer
    from targets.vhost_user.protocol import InflightInfo

    from .test_vhost_user_backend import start_server, stop_server

    proc, path = start_server(tmp_path, "blk")
    t = VhostUserTransport(path, "blk", "t", timeout=3)
    try:
        assert t.has_protocol(vu.PROTOCOL_F_INFLIGHT_SHMFD)
        info, fd = t.get_inflight_fd(1, 128)
        try:
            assert info.num_queues == 1 and info.queue_size == 128 and info.mmap_offset == 0
            assert os.fstat(fd).st_size >= info.mmap_size >= 16 + 16 * 128
            with mmap.mmap(fd, info.mmap_size) as m:
                region = InflightBuffer(m, 1, 128, stride=info.mmap_size).queue(0)
                assert region.valid() and region.in_flight() == []
                region = None
            assert t.set_inflight_fd(info, fd) == 0
            assert t.set_inflight_fd(InflightInfo(info.mmap_size * 4, 0, 1, 128), fd) != 0
        finally:
            os.close(fd)
    finally:
        t.close()
        code, err = stop_server(proc)
    assert code == 0, err
