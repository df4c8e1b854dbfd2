"""A stand-in front-end for the inventory's self-tests (the ``transport = "python:..."`` form of
an inventory entry): it connects to the fake back-end's socket, and the device behind it is the
in-process model of the entry's device type, so the plugin's whole path (spawn, connect, tests,
restart, teardown) runs without a vhost-user back-end."""

from __future__ import annotations

import socket
import time

from targets.model import MODELS
from targets.model.transport import ModelTransport
from virtio.errors import TargetError


class SocketCheckedTransport(ModelTransport):
    def __init__(self, socket_path: str, device_type: str, spec_id: str, *, timeout: float = 5.0):
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn.settimeout(timeout)
        try:
            self.conn.connect(socket_path)
        except OSError as e:
            self.conn.close()
            raise TargetError(f"{spec_id}: cannot connect to {socket_path}: {e}") from None
        super().__init__(MODELS[device_type](), spec_id)

    def backend_pid(self) -> int:
        """The back-end's own answer: which process serves this connection."""
        self.conn.sendall(b"pid")
        return int(self.conn.recv(64).decode().strip())

    def kill_backend(self) -> None:
        """Make the back-end exit, and return once it has (a zombie waiting for the harness to
        reap it): the socket's EOF comes while the process is still exiting, and the test means
        "it died during this test", not "it was dying when the test ended"."""
        pid = self.backend_pid()
        self.conn.sendall(b"die")
        self.conn.recv(64)  # EOF once it is going
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                        return
            except FileNotFoundError:
                return
            time.sleep(0.005)

    def close(self) -> None:
        self.conn.close()
        super().close()


def connect(socket_path, device_type, spec_id, *, timeout=5.0):
    return SocketCheckedTransport(socket_path, device_type, spec_id, timeout=timeout)
