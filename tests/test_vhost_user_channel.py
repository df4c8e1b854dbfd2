"""targets.vhost_user.channel.Channel.connect: bounded, and patient with a back-end that has bound its socket
but not yet called listen() (seen with a just-restarted DPDK testpmd: 'Connection refused')."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from targets.vhost_user.channel import Channel


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
