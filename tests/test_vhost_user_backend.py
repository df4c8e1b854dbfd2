"""Self-tests of the vhost-user back-end server (targets/vhost_user/serve.py, backend.py).

The server runs in its own process (sockets in tmp_path, stopped by PID); a small raw client on
targets.vhost_user.channel.Channel plays QEMU's front-end (docs/interop/vhost-user.rst) with a memfd guest
memory whose user addresses differ from its guest-physical ones, and drives whole sessions: features,
protocol features, memory table, rings, requests on rng and blk with the data checked.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from targets.vhost_user import protocol as vu
from targets.vhost_user.backend import Backend
from targets.vhost_user.channel import Channel
from targets.vhost_user.handover import USER_BASE, enable_ring, program_ring, set_mem_table
from targets.vhost_user.inflight import InflightBuffer, queue_region_size_split
from virtio import constants as C
from virtio.memory import GuestMemory
from virtio.messages import BLK_OUTHDR
from virtio.split_queue import SplitVirtqueue

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 5.0
BLK_T_IN, BLK_T_OUT = 0, 1


def start_server(tmp_path: Path, device: str, *extra: str) -> tuple[subprocess.Popen, str]:
    sock = str(tmp_path / f"{device}.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "targets.vhost_user.serve", "--device", device, "--socket", sock, *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    r, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if r else ""
    if line.strip() != f"listening on {sock}":
        proc.kill()
        out, err = proc.communicate(timeout=5)
        pytest.fail(f"server not ready within 20 s: stdout {line!r}{out!r}, stderr {err!r}")
    return proc, sock


def stop_server(proc: subprocess.Popen) -> tuple[int, str]:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"server ignored SIGTERM for 10 s; stderr: {err}")
    return proc.returncode, err


@pytest.fixture
def server(request, tmp_path):
    """``server(device, *args)`` starts one; every one is stopped (and must exit 0) at the end."""
    procs = []

    def start(device: str, *extra: str) -> str:
        proc, sock = start_server(tmp_path, device, *extra)
        procs.append(proc)
        return sock

    yield start
    for proc in procs:
        code, err = stop_server(proc)
        assert code == 0, f"server exit status {code}; stderr:\n{err}"
        assert "Traceback" not in err, err


class Client:
    """A raw front-end: one request at a time, every wait bounded."""

    def __init__(self, path: str, mem_size: int = 4 << 20):
        self.ch = Channel.connect(path, TIMEOUT)
        self.mem = GuestMemory(mem_size)
        self.fds: list[int] = []

    def send(self, request: int, payload: bytes = b"", fds=(), need_reply: bool = False) -> None:
        flags = vu.VERSION | (vu.FLAG_NEED_REPLY if need_reply else 0)
        self.ch.send(vu.Message(request, flags, payload, list(fds)))

    def recv(self, request: int) -> vu.Message:
        msg = self.ch.recv(TIMEOUT, f"the reply to {vu.request_name(request)}")
        assert msg.request == request and msg.flags == vu.VERSION | vu.FLAG_REPLY, msg
        return msg

    def get_u64(self, request: int) -> int:
        self.send(request)
        return self.recv(request).u64()

    def ack(self, request: int, payload: bytes = b"", fds=()) -> int:
        """Send with NEED_REPLY; the REPLY_ACK value (0 success)."""
        self.send(request, payload, fds, need_reply=True)
        return self.recv(request).u64()

    def setup(self, features: int | None = None, protocol: int | None = None) -> int:
        offered = self.get_u64(vu.GET_FEATURES)
        assert offered >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1
        self.send(vu.SET_OWNER)
        poffered = self.get_u64(vu.GET_PROTOCOL_FEATURES)
        # Default: all offered but STATUS (without it the back-end drives the device itself).
        self.protocol = poffered & ~(1 << vu.PROTOCOL_F_STATUS) if protocol is None else protocol
        self.send(vu.SET_PROTOCOL_FEATURES, vu.U64.pack(self.protocol))
        want = (1 << C.VIRTIO_F_VERSION_1) | (1 << vu.VHOST_USER_F_PROTOCOL_FEATURES) if features is None else features
        self.features = want
        assert self.ack(vu.SET_FEATURES, vu.U64.pack(want)) == 0
        set_mem_table(self.must, [self.mem])
        return offered

    def take(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def must(self, request: int, payload: bytes, fds=()) -> None:
        """handover's send: the message must be acked with success."""
        assert self.ack(request, payload, fds) == 0, vu.request_name(request)

    def ring(self, index: int, num: int = 64, *, enable: bool = True, base: int = 0) -> Ring:
        vq = SplitVirtqueue(self.mem, index, num, lambda q: None, features=self.features)
        kick, call = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0, os.EFD_NONBLOCK)
        self.fds += [kick, call]
        vq.notify_fn = lambda q: os.eventfd_write(kick, 1)
        program_ring(self.must, vq, self.mem.base, call_fd=call, kick_fd=kick, base=base)
        if enable:
            enable_ring(self.must, index)
        return Ring(vq, call)

    def close(self) -> None:
        if self.mem is None:
            return
        self.ch.close()
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.mem.close()
        self.mem = None


class Ring:
    def __init__(self, vq: SplitVirtqueue, call: int):
        self.vq, self.call = vq, call

    def wait_used(self, count: int = 1, timeout: float = TIMEOUT) -> list:
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            while (c := self.vq.get_buf()) is not None:
                got.append(c)
            if len(got) >= count:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"queue {self.vq.index}: {len(got)} of {count} used buffers within {timeout} s")
            if select.select([self.call], [], [], left)[0]:
                os.eventfd_read(self.call)
        return got


@pytest.fixture
def client_for(server):  # torn down before the servers
    clients = []

    def make(path: str) -> Client:
        c = Client(path)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def blk_request(vq: SplitVirtqueue, kind: int, sector: int, data: bytes | int):
    out = [BLK_OUTHDR.pack(kind, 0, sector)] + ([data] if kind == BLK_T_OUT else [])
    in_ = ([data] if kind == BLK_T_IN else []) + [1]
    return vq.add(out, in_)


# -- sessions ------------------------------------------------------------------------------------
def test_rng_session_random_bytes_and_vring_base(server, client_for):
    c = client_for(server("rng"))
    offered = c.setup()
    assert offered >> C.VIRTIO_F_VERSION_1 & 1
    assert c.get_u64(vu.GET_QUEUE_NUM) == 1
    r = c.ring(0)
    chains = [r.vq.add((), [64]) for _ in range(5)]
    r.vq.kick()
    used = r.wait_used(5)
    assert sorted(ch.head for ch in used) == sorted(ch.head for ch in chains)
    for ch in used:
        assert ch.used_len == 64
        assert r.vq.read_in(ch) != bytes(64)  # 64 random bytes are not all zero
    c.send(vu.GET_VRING_BASE, vu.VRING_STATE.pack(0, 0))
    assert vu.VRING_STATE.unpack(c.recv(vu.GET_VRING_BASE).payload) == (0, 5)
    # The ring is stopped: a new buffer and kick are not served.
    r.vq.add((), [16])
    r.vq.kick()
    with pytest.raises(AssertionError, match="0 of 1 used"):
        r.wait_used(1, timeout=0.3)


def test_blk_write_then_read_back(server, client_for):
    c = client_for(server("blk"))
    c.setup()
    c.send(vu.GET_CONFIG, vu.CONFIG_HEAD.pack(0, 8, 0) + bytes(8))
    reply = c.recv(vu.GET_CONFIG).payload
    assert len(reply) == 12 + 8
    capacity = struct.unpack_from("<Q", reply, 12)[0]
    assert capacity > 8
    r = c.ring(0, 128)
    pattern = bytes(range(256)) * 4  # two sectors
    w = blk_request(r.vq, BLK_T_OUT, 3, pattern)
    r.vq.kick()
    (done,) = r.wait_used(1)
    assert done is w and r.vq.read_in(done)[-1] == 0  # VIRTIO_BLK_S_OK
    rd = blk_request(r.vq, BLK_T_IN, 3, len(pattern))
    r.vq.kick()
    (done,) = r.wait_used(1)
    assert done is rd and done.used_len == len(pattern) + 1
    data = r.vq.read_in(done)
    assert data[:-1] == pattern and data[-1] == 0


def test_disabled_ring_runs_only_after_enable(server, client_for):
    c = client_for(server("rng"))
    c.setup()  # protocol features negotiated: rings start disabled
    r = c.ring(0, enable=False)
    r.vq.add((), [32])
    r.vq.kick()
    with pytest.raises(AssertionError, match="0 of 1 used"):
        r.wait_used(1, timeout=0.3)
    assert c.ack(vu.SET_VRING_ENABLE, vu.VRING_STATE.pack(0, 1)) == 0
    (done,) = r.wait_used(1)  # the kick given while disabled is honoured on enable
    assert done.used_len == 32


def test_disabled_net_tx_is_processed_and_discarded(server, client_for):
    """vhost-user.rst "Ring states": a started but disabled net ring supplies no RX packet but
    processes and discards TX packets -- the frame is used (len 0) and never looped back."""
    c = client_for(server("net"))
    c.setup()
    rx, tx = c.ring(0, enable=False), c.ring(1, enable=False)
    rx.vq.add((), [1526])
    rx.vq.kick()
    frame = bytes(12) + b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes(46)
    tx.vq.add([frame], ())
    tx.vq.kick()
    (done,) = tx.wait_used(1)  # consumed while disabled
    assert done.used_len == 0
    with pytest.raises(AssertionError, match="0 of 1 used"):
        rx.wait_used(1, timeout=0.3)
    for index in (0, 1):
        assert c.ack(vu.SET_VRING_ENABLE, vu.VRING_STATE.pack(index, 1)) == 0
    with pytest.raises(AssertionError, match="0 of 1 used"):
        rx.wait_used(1, timeout=0.3)  # the discarded frame is gone, not delivered late
    tx.vq.add([frame], ())
    tx.vq.kick()
    assert tx.wait_used(1)[0].used_len == 0
    assert rx.wait_used(1)[0].used_len == len(frame)  # enabled: the model loops it back (header + frame)


def test_without_protocol_features_the_ring_starts_enabled(server, client_for):
    c = client_for(server("rng"))
    c.setup(features=1 << C.VIRTIO_F_VERSION_1, protocol=0)
    r = c.ring(0, enable=False)
    r.vq.add((), [8])
    r.vq.kick()
    assert r.wait_used(1)[0].used_len == 8


def test_status_protocol_feature_drives_the_device(server, client_for):
    c = client_for(server("rng"))
    c.setup(protocol=Backend.PROTOCOL_FEATURES)
    assert c.get_u64(vu.GET_STATUS) == 0  # with STATUS negotiated, the front-end drives it
    r = c.ring(0)
    r.vq.add((), [8])
    r.vq.kick()
    with pytest.raises(AssertionError, match="0 of 1 used"):
        r.wait_used(1, timeout=0.3)  # 2.1.2: no buffer is used before DRIVER_OK
    for s in (C.ACKNOWLEDGE, C.ACKNOWLEDGE | C.DRIVER, C.ACKNOWLEDGE | C.DRIVER | C.FEATURES_OK):
        assert c.ack(vu.SET_STATUS, vu.U64.pack(s)) == 0
    assert c.get_u64(vu.GET_STATUS) == C.ACKNOWLEDGE | C.DRIVER | C.FEATURES_OK
    assert c.ack(vu.SET_STATUS, vu.U64.pack(C.ACKNOWLEDGE | C.DRIVER | C.FEATURES_OK | C.DRIVER_OK)) == 0
    assert r.wait_used(1)[0].used_len == 8
    assert c.ack(vu.SET_STATUS, vu.U64.pack(0)) == 0
    assert c.get_u64(vu.GET_STATUS) == 0


def test_vring_base_resumes_where_it_was(server, client_for):
    c = client_for(server("rng"))
    c.setup(features=1 << C.VIRTIO_F_VERSION_1, protocol=0)
    r = c.ring(0, 8)
    for _ in range(3):
        r.vq.add((), [4])
    r.vq.kick()
    r.wait_used(3)
    c.send(vu.GET_VRING_BASE, vu.VRING_STATE.pack(0, 0))
    assert vu.VRING_STATE.unpack(c.recv(vu.GET_VRING_BASE).payload) == (0, 3)
    # Restart with base 3 (as QEMU does after a stop): new kick and call fds, same ring memory.
    kick, call = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0, os.EFD_NONBLOCK)
    c.fds += [kick, call]
    r.vq.notify_fn = lambda q: os.eventfd_write(kick, 1)
    r.call = call
    assert c.ack(vu.SET_VRING_BASE, vu.VRING_STATE.pack(0, 3)) == 0
    assert c.ack(vu.SET_VRING_CALL, vu.U64.pack(0), [call]) == 0
    assert c.ack(vu.SET_VRING_KICK, vu.U64.pack(0), [kick]) == 0
    for _ in range(7):  # wraps the 8-entry ring
        r.vq.add((), [4])
    r.vq.kick()
    assert len(r.wait_used(7)) == 7
    c.send(vu.GET_VRING_BASE, vu.VRING_STATE.pack(0, 0))
    assert vu.VRING_STATE.unpack(c.recv(vu.GET_VRING_BASE).payload) == (0, 10)


def test_refusals_keep_the_session(server, client_for):
    c = client_for(server("rng"))
    c.setup()
    assert c.ack(99) != 0  # unknown request
    assert c.ack(vu.SET_VRING_NUM, vu.VRING_STATE.pack(5, 64)) != 0  # no such queue
    assert c.ack(vu.SET_VRING_NUM, vu.VRING_STATE.pack(0, 100)) != 0  # split size not a power of 2
    assert c.ack(vu.SET_VRING_NUM, vu.VRING_STATE.pack(0, 64)) == 0
    outside = vu.VRING_ADDR.pack(0, 0, USER_BASE + c.mem.size - 16, USER_BASE, USER_BASE + 4096, 0)
    assert c.ack(vu.SET_VRING_ADDR, outside) != 0  # descriptor table past the end of memory
    guest = vu.VRING_ADDR.pack(0, 0, c.mem.base + 8192, c.mem.base + 16384, c.mem.base + 4096, 0)
    assert c.ack(vu.SET_VRING_ADDR, guest) != 0  # guest-physical where user addresses belong
    assert c.ack(vu.SET_VRING_KICK, vu.U64.pack(0)) != 0  # no fd and no no-fd flag
    assert c.ack(vu.SET_PROTOCOL_FEATURES, vu.U64.pack(1 << 1)) != 0  # LOG_SHMFD not offered
    assert c.ack(vu.SET_MEM_TABLE, vu.pack_mem_table([vu.MemRegion(0, 1 << 30, 0, 0)]), [c.take(os.memfd_create("small"))]) != 0
    c.send(vu.GET_CONFIG, vu.CONFIG_HEAD.pack(250, 16, 0) + bytes(16))
    assert c.recv(vu.GET_CONFIG).payload == b""  # past 256 bytes: the empty error reply
    # Still serving.
    assert c.get_u64(vu.GET_QUEUE_NUM) == 1
    r = c.ring(0)
    r.vq.add((), [8])
    r.vq.kick()
    assert r.wait_used(1)[0].used_len == 8


def test_garbage_header_closes_the_session_not_the_server(server, client_for):
    path = server("rng")
    c = client_for(path)
    c.ch.sock.sendall(vu.HEADER.pack(vu.GET_FEATURES, vu.VERSION, 1 << 20))
    with pytest.raises(vu.PeerClosed):
        c.ch.recv(TIMEOUT, "EOF after a garbage header")
    c2 = client_for(path)
    c2.ch.sock.sendall(vu.HEADER.pack(vu.GET_FEATURES, 0x2, 0))  # version 2
    with pytest.raises(vu.PeerClosed):
        c2.ch.recv(TIMEOUT, "EOF after a bad version")
    c3 = client_for(path)  # the next front-end is served
    assert c3.get_u64(vu.GET_FEATURES) >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1


def test_next_connection_gets_a_fresh_device(server, client_for):
    path = server("blk")
    c = client_for(path)
    c.setup()
    r = c.ring(0)
    blk_request(r.vq, BLK_T_OUT, 0, b"\xab" * 512)
    r.vq.kick()
    r.wait_used(1)
    c.close()
    c2 = client_for(path)
    c2.setup()
    r2 = c2.ring(0)
    blk_request(r2.vq, BLK_T_IN, 0, 512)
    r2.vq.kick()
    (done,) = r2.wait_used(1)
    assert r2.vq.read_in(done)[:512] == bytes(512)


def test_once_and_pidfile(tmp_path):
    pid = tmp_path / "s.pid"
    proc, sock = start_server(tmp_path, "console", "--once", "--pidfile", str(pid))
    assert int(pid.read_text()) == proc.pid
    c = Client(sock)
    assert c.get_u64(vu.GET_QUEUE_NUM) >= 2
    c.close()
    assert proc.wait(timeout=10) == 0
    assert not os.path.exists(sock) and not pid.exists()


def test_sigterm_removes_socket_and_stale_socket_is_replaced(tmp_path):
    proc, sock = start_server(tmp_path, "rng")
    code, _ = stop_server(proc)
    assert code == 0 and not os.path.exists(sock)
    import socket as so

    stale = so.socket(so.AF_UNIX)
    stale.bind(sock)
    stale.close()
    proc, sock = start_server(tmp_path, "rng")  # binds over the stale file
    assert stop_server(proc)[0] == 0


def test_unknown_device_and_protocol_mutant_are_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "targets.vhost_user.serve", "--device", "nope", "--socket", str(tmp_path / "x")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "blk" in r.stderr
    r = subprocess.run([sys.executable, "-m", "targets.vhost_user.serve", "--device", "rng", "--socket", str(tmp_path / "x"),
                        "--protocol-mutant", "no-such-mutant"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no-such-mutant" in r.stderr


# -- out-of-band config change (serve.py SIGUSR1, inventory config_change) ------------------------------
def test_sigusr1_changes_config_through_inventory_hook(tmp_path):
    """An inventory entry with config_change = "signal:USR1": trigger_config_change signals the
    served model, which resizes (blk) and sends BACKEND_CONFIG_CHANGE_MSG; on return the new
    capacity is readable and the driver was told."""
    from targets import inventory
    from virtio.driver import VirtioDriver

    toml = tmp_path / "inv.toml"
    toml.write_text(
        '[targets.b]\ndevice = "blk"\nconfig_change = "signal:USR1"\nready = {socket = true, stdout = "listening on"}\n'
        'command = ["{python}", "-m", "targets.vhost_user.serve", "--device", "blk", "--socket", "{socket}", "--pidfile", "{pidfile}"]\n'
    )
    (entry,) = inventory.load_inventory(toml)
    assert entry.config_change == ("signal", "SIGUSR1")
    be = inventory.SpawnedBackend(entry, tmp_path)
    be.start()
    t = None
    try:
        t = inventory.connect(be, "file:b")
        d = VirtioDriver(t, timeout=TIMEOUT)
        d.initialize()
        before, notified = t.get(0, 8), d.config_notifications
        t.trigger_config_change()
        after = t.get(0, 8)
        assert struct.unpack("<Q", after)[0] > struct.unpack("<Q", before)[0]
        assert d.config_notifications == notified + 1 and t.generation() == 1
    finally:
        if t is not None:
            t.close()
        be.stop()
    assert "Traceback" not in be.stderr_tail(50)


@pytest.mark.parametrize("value, words", [("signal:NOPE", "names no signal"), ("signal:KILL", "names no signal"), (["x", "{nope}"], "nope")])
def test_bad_config_change_is_an_inventory_error(tmp_path, value, words):
    from targets import inventory

    toml = tmp_path / "inv.toml"
    rendered = f'"{value}"' if isinstance(value, str) else "[" + ", ".join(f'"{v}"' for v in value) + "]"
    toml.write_text(f'[targets.b]\ndevice = "blk"\ncommand = ["true"]\nconfig_change = {rendered}\n')
    with pytest.raises(inventory.InventoryError, match=words):
        inventory.load_inventory(toml)


def test_no_hook_means_unsupported(server):
    from targets.vhost_user.frontend import VhostUserTransport
    from virtio.errors import UnsupportedOp

    t = VhostUserTransport(server("blk"), "blk", "vhost-user:blk", timeout=TIMEOUT)
    try:
        with pytest.raises(UnsupportedOp, match="config_change"):
            t.trigger_config_change()
    finally:
        t.close()


# -- inflight I/O tracking ---------------------------------------------------------------------------
def _get_inflight(c: Client, num_queues: int, queue_size: int) -> tuple[bytes, int]:
    c.send(vu.GET_INFLIGHT_FD, vu.INFLIGHT.pack(0, 0, num_queues, queue_size))
    msg = c.recv(vu.GET_INFLIGHT_FD)
    assert len(msg.payload) == vu.INFLIGHT.size and len(msg.fds) == 1, msg
    return msg.payload, c.take(msg.fds[0])


def test_inflight_buffer_tracks_taken_and_used_heads(server, client_for):
    """GET_INFLIGHT_FD gives a zeroed split buffer (version 1, desc_num); after SET_INFLIGHT_FD a
    GET_ID held behind a READ is in flight with its counter, the READ is not, and the used batch
    is linked from last_batch_head; once the GET_ID completes nothing is in flight."""
    c = client_for(server("blk"))
    c.setup()
    payload, fd = _get_inflight(c, 1, 64)
    size, offset, nq, qs = vu.INFLIGHT.unpack(payload)
    assert (size, offset, nq, qs) == (queue_region_size_split(64), 0, 1, 64) == (1088, 0, 1, 64)
    import mmap
    view = mmap.mmap(fd, size)
    region = InflightBuffer(view, 1, 64).queue(0)
    assert region.valid() and region.in_flight() == [] and int(region.used_idx[0]) == 0
    assert c.ack(vu.SET_INFLIGHT_FD, payload, [fd]) == 0
    r = c.ring(0, 64)
    get_id = r.vq.add([BLK_OUTHDR.pack(C.VIRTIO_BLK_T_GET_ID, 0, 0)], [20, 1])
    read = blk_request(r.vq, BLK_T_IN, 0, 512)
    r.vq.kick()
    assert r.wait_used(1) == [read]
    assert region.in_flight() == [get_id.head] and int(region.counter[get_id.head]) < int(region.counter[read.head])
    assert int(region.inflight[read.head]) == 0 and int(region.last_batch_head[0]) == read.head and int(region.used_idx[0]) == 1
    assert r.wait_used(1, timeout=6) == [get_id]  # answered a pass later (or after blk.DEFER_LIMIT)
    assert region.in_flight() == [] and int(region.used_idx[0]) == 2 and int(region.next[get_id.head]) == read.head
    region = None


def test_inflight_requests_are_refused_when_wrong(server, client_for):
    c = client_for(server("blk"))
    c.setup(protocol=1 << vu.PROTOCOL_F_REPLY_ACK)  # INFLIGHT_SHMFD not negotiated
    c.send(vu.GET_INFLIGHT_FD, vu.INFLIGHT.pack(0, 0, 1, 64))
    assert c.recv(vu.GET_INFLIGHT_FD).payload == b""
    c.close()
    c = client_for(server("blk"))
    c.setup()
    payload, fd = _get_inflight(c, 1, 64)
    size = vu.INFLIGHT.unpack(payload)[0]
    for bad in (vu.INFLIGHT.pack(size * 4, 0, 1, 64),  # more than the fd holds
                vu.INFLIGHT.pack(size, 0, 1, 4096),  # too small for the queue size
                vu.INFLIGHT.pack(size, 0, 2, 64),  # the device has one queue
                vu.INFLIGHT.pack(size, 1, 1, 64)):  # offset not page-aligned
        assert c.ack(vu.SET_INFLIGHT_FD, bad, [fd]) == 1, bad
    assert c.ack(vu.SET_INFLIGHT_FD, payload) == 1  # no fd
    assert c.ack(vu.SET_INFLIGHT_FD, payload, [fd]) == 0
    c.send(vu.GET_INFLIGHT_FD, vu.INFLIGHT.pack(0, 0, 0, 64))
    assert c.recv(vu.GET_INFLIGHT_FD).payload == b""  # no queue asked about


def test_inflight_recovery_repairs_the_last_batch():
    """"When reconnecting": a back-end that published the used idx but died before clearing the
    batch's inflight fields leaves used_idx behind; recovery clears the batch from
    last_batch_head and resubmits the rest in counter order."""
    buf = bytearray(queue_region_size_split(8))
    region = InflightBuffer(buf, 1, 8).queue(0)
    region.init()
    region.take([5, 2, 7])
    region.link_batch([2, 7])  # the used idx moved to 2, inflight not yet cleared
    assert region.in_flight() == [5, 2, 7]
    assert region.recover(2) == [5] and int(region.used_idx[0]) == 2
    region.take([1])
    assert region.in_flight() == [5, 1] and region.global_counter == 5


def test_in_order_batches_with_inflight_tracking(server, client_for):
    """VIRTIO_F_IN_ORDER over the socket: the server answers each kick's buffers with one used
    elem (2.7.9: the last buffer's id at the first buffer's offset, used idx moved by all of
    them), and the inflight buffer retires the whole batch, used_idx following the ring's."""
    c = client_for(server("rng"))
    c.setup(features=(1 << C.VIRTIO_F_VERSION_1) | (1 << vu.VHOST_USER_F_PROTOCOL_FEATURES) | (1 << C.VIRTIO_F_IN_ORDER))
    payload, fd = _get_inflight(c, 1, 16)
    import mmap
    view = mmap.mmap(fd, vu.INFLIGHT.unpack(payload)[0])
    region = InflightBuffer(view, 1, 16).queue(0)
    assert c.ack(vu.SET_INFLIGHT_FD, payload, [fd]) == 0
    r = c.ring(0, 16)
    done = 0
    for n in (1, 5, 16, 3, 16, 7) * 3:  # batch sizes up to the queue size, the ring wrapping
        chains = [r.vq.add((), [32], token=i) for i in range(n)]
        first = r.vq.last_used_idx % 16
        r.vq.kick()
        got = r.wait_used(n)
        done += n
        assert got == chains and all(ch.used_len == 32 for ch in got)
        assert [ch.len_reported for ch in got] == [False] * (n - 1) + [True]
        assert int(r.vq.ring.used_ring[first, 0]) == chains[-1].head and int(r.vq.ring.used_idx[0]) == done
        assert region.in_flight() == [] and int(region.used_idx[0]) == done
        for ch in got:
            r.vq.release(ch)
    region = None
