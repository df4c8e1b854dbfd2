"""The vhost-user socket channel: one end of a SOCK_STREAM UNIX socket carrying framed messages
(QEMU docs/interop/vhost-user.rst, "Communication"), used alike by the front-end transport, the raw
session of the protocol suite and the back-end.

Everything a peer sends is untrusted and no wait is unbounded: ``recv`` waits at most its timeout
for a whole message, ``send`` at most the channel's timeout for room in the socket; a closed socket,
a short header, an oversized or short payload raises a ``ProtocolError`` carrying the bytes seen.
"""

from __future__ import annotations

import array
import errno
import select
import socket
import time

from .protocol import HEADER, MAX_FDS, MAX_PAYLOAD, Message, PeerClosed, ProtocolError, ProtocolTimeout, close_fds

SEND_TIMEOUT = 5.0  # the bound on a send when neither the caller nor the socket gives one


class Channel:
    """One end of a vhost-user socket: framed send with fds, bounded framed receive.

    ``timeout`` bounds a send (a peer that stops reading fills the socket): it becomes the socket's
    timeout; None keeps one the socket already has, else SEND_TIMEOUT. Not thread-safe on its own;
    a caller that shares it between threads holds a lock around each request/reply pair.
    """

    def __init__(self, sock: socket.socket, peer: str = "peer", *, timeout: float | None = None):
        if timeout is not None or sock.gettimeout() is None:
            sock.settimeout(SEND_TIMEOUT if timeout is None else timeout)
        self.sock = sock
        self.peer = peer
        self._rx = bytearray()
        self._rx_fds: list[int] = []
        # Stream offset of _rx[0], and per received fd the stream offset where the recvmsg chunk
        # that carried it ended: Linux may glue earlier fd-less messages in front of the one with
        # fds in one read (it stops right after an skb with fds), so the fds belong to the message
        # holding the chunk's last byte, not to the first message parsed from the chunk.
        self._rx_pos = 0
        self._rx_fd_marks: list[int] = []
        self.closed = False

    @classmethod
    def connect(cls, path: str, timeout: float, *, retry_refused: bool = True) -> Channel:
        """Connect, bounded by ``timeout``. A refused connection is retried until then: a back-end
        creates and binds its socket file before it listens (DPDK logs the two steps apart), so a
        back-end that has just (re)started can refuse for a moment. A missing file fails at once,
        and so does a refusal with ``retry_refused=False`` (nobody is about to listen)."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                sock.connect(path)
            except ConnectionRefusedError:
                sock.close()
                if not retry_refused or time.monotonic() + 0.02 >= deadline:
                    raise
                time.sleep(0.02)
                continue
            except OSError:
                sock.close()
                raise
            return cls(sock, path, timeout=timeout)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: Message) -> None:
        if len(msg.fds) > MAX_FDS:
            raise ValueError(f"{msg.name}: {len(msg.fds)} fds, at most {MAX_FDS} per message")
        data = msg.raw()
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", msg.fds).tobytes())] if msg.fds else []
        try:
            sent = self.sock.sendmsg([data], anc)
            if sent < len(data):  # fds went with the first part
                self.sock.sendall(data[sent:])
        except (BrokenPipeError, ConnectionResetError) as e:
            self.closed = True
            raise PeerClosed(f"{self.peer}: socket closed while sending {msg.name} ({e.strerror})") from None
        except TimeoutError:
            raise ProtocolTimeout(f"{self.peer}: no room to send {msg.name} within {self.sock.gettimeout():.3g}s "
                                  "(the peer does not read its socket)") from None

    def _fill(self, need: int, deadline: float, what: str) -> None:
        while len(self._rx) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolTimeout(f"{self.peer}: no {what} within the timeout ({len(self._rx)} of {need} bytes)", bytes(self._rx))
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            try:
                data, anc, _flags, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(MAX_FDS * 4))
            except ConnectionResetError:
                data, anc = b"", []
            except TimeoutError:  # readable was spurious; the deadline above still holds
                continue
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    continue
                raise
            chunk_end = self._rx_pos + len(self._rx) + len(data)
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
                    self._rx_fds.extend(fds)
                    self._rx_fd_marks.extend([chunk_end] * len(fds))
            if not data:
                self.closed = True
                raise PeerClosed(f"{self.peer}: socket closed while waiting for {what}", bytes(self._rx))
            self._rx += data

    def recv(self, timeout: float, what: str = "a message") -> Message:
        """The next message, waiting at most ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        self._fill(HEADER.size, deadline, what)
        request, flags, size = HEADER.unpack_from(self._rx)
        if size > MAX_PAYLOAD:
            seen = bytes(self._rx)
            self._rx_pos += len(self._rx)
            self._rx.clear()
            raise ProtocolError(f"{self.peer}: {what}: header announces a {size}-byte payload (max {MAX_PAYLOAD})", seen)
        self._fill(HEADER.size + size, deadline, what)
        payload = bytes(self._rx[HEADER.size : HEADER.size + size])
        del self._rx[: HEADER.size + size]
        self._rx_pos += HEADER.size + size
        end = self._rx_pos
        n = sum(1 for mark in self._rx_fd_marks if mark <= end)  # marks are in arrival order
        fds, self._rx_fds = self._rx_fds[:n], self._rx_fds[n:]
        del self._rx_fd_marks[:n]
        return Message(request, flags, payload, fds)

    def pending(self) -> bool:
        """Whether bytes are waiting (a reply nobody asked for, or an early message)."""
        if self._rx:
            return True
        r, _, _ = select.select([self.sock], [], [], 0)
        return bool(r)

    def close(self) -> None:
        self.closed = True
        close_fds(self._rx_fds)
        self._rx_fds = []
        self._rx_fd_marks = []
        try:
            self.sock.close()
        except OSError:
            pass
