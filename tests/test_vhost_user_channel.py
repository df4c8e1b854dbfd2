"""targets.vhost_user.channel.Channel.connect: bounded, and patient with a back-end that has bound its socket
but not yet called listen() (seen with a just-restarted DPDK testpmd: 'Connection refused'). The
other waits of the vhost-user front-end are bounded too: a send to a peer that stops reading, and
EventThread.synchronize behind a handler that does not return."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from targets.vhost_user import protocol as vu
from targets.vhost_user.channel import Channel
from targets.vhost_user.events import EventThread, new_eventfd
from virtio.errors import HarnessError


def test_refused_until_listen_then_connected(tmp_path):
    path = str(tmp_path / "late.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)  # the file exists, nobody listens yet
    timer = threading.Timer(0.2, srv.listen)
    timer.start()
    try:
        t0 = time.monotonic()
        chan = Channel.connect(path, timeout=3.0)
        assert 0.15 < time.monotonic() - t0 < 3.0
        chan.close()
    finally:
        timer.cancel()
        srv.close()


def test_refused_for_the_whole_timeout_fails_in_bound(tmp_path):
    path = str(tmp_path / "never.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    try:
        t0 = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            Channel.connect(path, timeout=0.3)
        assert time.monotonic() - t0 < 1.0
    finally:
        srv.close()


def test_missing_socket_fails_at_once(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError):
        Channel.connect(str(tmp_path / "absent.sock"), timeout=5.0)
    assert time.monotonic() - t0 < 0.5


def test_send_to_a_peer_that_does_not_read_is_bounded():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    chan = Channel(ours, "silent peer", timeout=0.3)
    t0 = time.monotonic()
    try:
        with pytest.raises(vu.ProtocolTimeout, match="no room to send SET_CONFIG within 0.3s"):
            while time.monotonic() - t0 < 10:
                chan.send(vu.Message(vu.SET_CONFIG, vu.VERSION, bytes(4096)))
        assert time.monotonic() - t0 < 5
    finally:
        chan.close()
        theirs.close()


def test_synchronize_is_bounded_and_names_the_handler():
    started, release = threading.Event(), threading.Event()
    events = EventThread(timeout=0.3)
    fd = new_eventfd()
    try:
        events.register(fd, lambda: (started.set(), release.wait(5)), "call eventfd of queue 3 (requestq)")
        os.eventfd_write(fd, 1)
        assert started.wait(5)
        t0 = time.monotonic()
        with pytest.raises(HarnessError, match=r"after 0.3s .* call eventfd of queue 3 \(requestq\)"):
            events.synchronize()
        assert time.monotonic() - t0 < 2
        release.set()
        events.synchronize()  # the handler has returned: no wait left
    finally:
        release.set()
        events.unregister(fd)
        events.stop()
        os.close(fd)
