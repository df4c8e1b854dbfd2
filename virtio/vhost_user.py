"""vhost-user message formats and the socket channel both sides use.

Defined once here (QEMU docs/interop/vhost-user.rst, "Message types" and "Message specification")
and used by the front-end transport (targets/vhost_user/frontend.py), the back-end that serves our
models (targets/vhost_user/backend.py) and the protocol suite. Messages are plain byte strings on a
SOCK_STREAM UNIX socket: a 12-byte header (request, flags, size) and ``size`` payload bytes, with
file descriptors in SCM_RIGHTS ancillary data. These are socket messages, not shared memory, so
``struct`` packing is fine here (the torn-store rule is about ring fields).

Everything a peer sends is untrusted: ``Channel.recv`` bounds every wait, and a closed socket, a
short header, an oversized or short payload raises ``ProtocolError`` carrying the bytes seen.
"""

from __future__ import annotations

import array
import errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field

# -- header ----------------------------------------------------------------------------------------
HEADER = struct.Struct("<III")  # request, flags, size
VERSION = 0x1
FLAG_VERSION_MASK = 0x3
FLAG_REPLY = 1 << 2
FLAG_NEED_REPLY = 1 << 3
MAX_PAYLOAD = 4096 + 16  # no defined message is larger; a bigger size field is garbage
MAX_FDS = 8  # VHOST_MEMORY_BASELINE_NREGIONS: at most 8 fds ride on one message
MEM_TABLE_MAX_REGIONS = 8

# -- front-end -> back-end requests ---------------------------------------------------------------
GET_FEATURES = 1
SET_FEATURES = 2
SET_OWNER = 3
RESET_OWNER = 4
SET_MEM_TABLE = 5
SET_LOG_BASE = 6
SET_LOG_FD = 7
SET_VRING_NUM = 8
SET_VRING_ADDR = 9
SET_VRING_BASE = 10
GET_VRING_BASE = 11
SET_VRING_KICK = 12
SET_VRING_CALL = 13
SET_VRING_ERR = 14
GET_PROTOCOL_FEATURES = 15
SET_PROTOCOL_FEATURES = 16
GET_QUEUE_NUM = 17
SET_VRING_ENABLE = 18
SEND_RARP = 19
NET_SET_MTU = 20
SET_BACKEND_REQ_FD = 21
IOTLB_MSG = 22
SET_VRING_ENDIAN = 23
GET_CONFIG = 24
SET_CONFIG = 25
CREATE_CRYPTO_SESSION = 26
CLOSE_CRYPTO_SESSION = 27
POSTCOPY_ADVISE = 28
POSTCOPY_LISTEN = 29
POSTCOPY_END = 30
GET_INFLIGHT_FD = 31
SET_INFLIGHT_FD = 32
GPU_SET_SOCKET = 33
RESET_DEVICE = 34
VRING_KICK = 35
GET_MAX_MEM_SLOTS = 36
ADD_MEM_REG = 37
REM_MEM_REG = 38
SET_STATUS = 39
GET_STATUS = 40

REQUEST_NAMES = {v: k for k, v in dict(globals()).items() if k.isupper() and isinstance(v, int) and 1 <= v <= 40 and not k.startswith(("FLAG", "MAX", "MEM", "VERSION"))}

# Requests whose reply is part of the request itself (a reply is always sent, REPLY_ACK or not).
REPLY_REQUESTS = frozenset(
    {GET_FEATURES, GET_PROTOCOL_FEATURES, GET_VRING_BASE, GET_QUEUE_NUM, GET_CONFIG, GET_INFLIGHT_FD,
     GET_MAX_MEM_SLOTS, GET_STATUS, SET_LOG_BASE, POSTCOPY_ADVISE}
)

# -- back-end -> front-end requests (on the SET_BACKEND_REQ_FD channel) ---------------------------
BACKEND_IOTLB_MSG = 1
BACKEND_CONFIG_CHANGE_MSG = 2
BACKEND_VRING_HOST_NOTIFIER_MSG = 3

# -- protocol feature bits (GET/SET_PROTOCOL_FEATURES) --------------------------------------------
PROTOCOL_F_MQ = 0
PROTOCOL_F_LOG_SHMFD = 1
PROTOCOL_F_RARP = 2
PROTOCOL_F_REPLY_ACK = 3
PROTOCOL_F_NET_MTU = 4
PROTOCOL_F_BACKEND_REQ = 5
PROTOCOL_F_CROSS_ENDIAN = 6
PROTOCOL_F_CRYPTO_SESSION = 7
PROTOCOL_F_PAGEFAULT = 8
PROTOCOL_F_CONFIG = 9
PROTOCOL_F_BACKEND_SEND_FD = 10
PROTOCOL_F_HOST_NOTIFIER = 11
PROTOCOL_F_INFLIGHT_SHMFD = 12
PROTOCOL_F_RESET_DEVICE = 13
PROTOCOL_F_INBAND_NOTIFICATIONS = 14
PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15
PROTOCOL_F_STATUS = 16
PROTOCOL_F_XEN_MMAP = 17
PROTOCOL_F_SHARED_OBJECT = 18
PROTOCOL_F_DEVICE_STATE = 19

PROTOCOL_FEATURE_NAMES = {v: k[len("PROTOCOL_F_"):] for k, v in dict(globals()).items() if k.startswith("PROTOCOL_F_")}

# VIRTIO feature bit 30: the back-end speaks GET/SET_PROTOCOL_FEATURES (vhost-user only).
VHOST_USER_F_PROTOCOL_FEATURES = 30
# VIRTIO feature bit 26: the back-end can log dirty pages (vhost's VHOST_F_LOG_ALL, for migration).
VHOST_F_LOG_ALL = 26

# -- payloads ---------------------------------------------------------------------------------------
U64 = struct.Struct("<Q")
VRING_STATE = struct.Struct("<II")  # index, num
VRING_ADDR = struct.Struct("<IIQQQQ")  # index, flags, descriptor, used, available, log
VRING_ADDR_F_LOG = 1
MEM_REGION = struct.Struct("<QQQQ")  # guest_addr, size, user_addr, mmap_offset
MEM_TABLE_HEAD = struct.Struct("<II")  # num_regions, padding
SINGLE_MEM_REGION_HEAD = struct.Struct("<Q")  # padding, then one MEM_REGION
CONFIG_HEAD = struct.Struct("<III")  # offset, size, flags
CONFIG_MAX = 256
CONFIG_F_WRITABLE = 0
CONFIG_F_MIGRATION = 1
INFLIGHT = struct.Struct("<QQHH4x")  # mmap_size, mmap_offset, num_queues, queue_size; 24 bytes as QEMU sends it (C tail padding)
VRING_AREA = struct.Struct("<QQQ")  # u64 (index | NOFD), size, offset

# u64 payload of SET_VRING_KICK/CALL/ERR: bits 0-7 the queue index, bit 8 "no fd" (polling).
VRING_IDX_MASK = 0xFF
VRING_NOFD_MASK = 1 << 8


def vring_base_packed(avail_idx: int, avail_wrap: int, used_idx: int = 0, used_wrap: int = 0) -> int:
    """The ``num`` of a vring state for a packed ring: bits 0-14 last avail index, bit 15 avail
    wrap counter, bits 16-30 last used index, bit 31 used wrap counter."""
    return (avail_idx & 0x7FFF) | (avail_wrap & 1) << 15 | (used_idx & 0x7FFF) << 16 | (used_wrap & 1) << 31


def split_vring_base_packed(num: int) -> tuple[int, int, int, int]:
    """Inverse of vring_base_packed: (avail_idx, avail_wrap, used_idx, used_wrap)."""
    return num & 0x7FFF, num >> 15 & 1, num >> 16 & 0x7FFF, num >> 31 & 1


@dataclass
class MemRegion:
    """One region of a memory table: guest-physical and front-end user address of the same bytes."""

    guest_addr: int
    size: int
    user_addr: int
    mmap_offset: int = 0

    def pack(self) -> bytes:
        return MEM_REGION.pack(self.guest_addr, self.size, self.user_addr, self.mmap_offset)

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> MemRegion:
        return cls(*MEM_REGION.unpack_from(data, offset))


def pack_mem_table(regions: list[MemRegion]) -> bytes:
    """SET_MEM_TABLE payload: the spec's fixed form carries 8 region slots."""
    body = b"".join(r.pack() for r in regions)
    return MEM_TABLE_HEAD.pack(len(regions), 0) + body + bytes(MEM_REGION.size * (MEM_TABLE_MAX_REGIONS - len(regions)))


def unpack_mem_table(payload: bytes) -> list[MemRegion]:
    if len(payload) < MEM_TABLE_HEAD.size:
        raise ProtocolError("SET_MEM_TABLE payload shorter than its header", payload)
    n, _ = MEM_TABLE_HEAD.unpack_from(payload)
    if n > MEM_TABLE_MAX_REGIONS or len(payload) < MEM_TABLE_HEAD.size + n * MEM_REGION.size:
        raise ProtocolError(f"SET_MEM_TABLE with {n} regions in {len(payload)} bytes", payload)
    return [MemRegion.unpack(payload, MEM_TABLE_HEAD.size + i * MEM_REGION.size) for i in range(n)]


def pack_single_region(region: MemRegion) -> bytes:
    """ADD_MEM_REG / REM_MEM_REG payload."""
    return SINGLE_MEM_REGION_HEAD.pack(0) + region.pack()


def unpack_single_region(payload: bytes) -> MemRegion:
    if len(payload) < SINGLE_MEM_REGION_HEAD.size + MEM_REGION.size:
        raise ProtocolError("memory region payload too short", payload)
    return MemRegion.unpack(payload, SINGLE_MEM_REGION_HEAD.size)


def request_name(code: int) -> str:
    return REQUEST_NAMES.get(code, f"request {code}")


# -- errors -----------------------------------------------------------------------------------------
class ProtocolError(Exception):
    """The peer broke the message framing or closed the socket; ``seen`` holds the raw bytes."""

    def __init__(self, message: str, seen: bytes = b""):
        self.seen = bytes(seen)
        shown = self.seen[:64].hex(" ")
        more = f" (+{len(self.seen) - 64} more)" if len(self.seen) > 64 else ""
        super().__init__(f"{message}; bytes seen: [{shown}]{more}" if seen else message)


class ProtocolTimeout(ProtocolError):
    """No (complete) message within the bound."""


class PeerClosed(ProtocolError):
    """The peer closed the socket (EOF or ECONNRESET)."""


@dataclass
class Message:
    request: int
    flags: int = VERSION
    payload: bytes = b""
    fds: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return request_name(self.request)

    @property
    def is_reply(self) -> bool:
        return bool(self.flags & FLAG_REPLY)

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & FLAG_NEED_REPLY)

    def u64(self) -> int:
        if len(self.payload) < 8:
            raise ProtocolError(f"{self.name}: expected a u64 payload, got {len(self.payload)} bytes", self.raw())
        return U64.unpack_from(self.payload)[0]

    def raw(self) -> bytes:
        return HEADER.pack(self.request, self.flags, len(self.payload)) + self.payload

    def close_fds(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


class Channel:
    """One end of a vhost-user socket: framed send with fds, bounded framed receive.

    Not thread-safe on its own; a caller that shares it between threads holds a lock around each
    request/reply pair.
    """

    def __init__(self, sock: socket.socket, peer: str = "peer"):
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
            sock.settimeout(None)
            return cls(sock, path)

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
        for fd in self._rx_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._rx_fds = []
        self._rx_fd_marks = []
        try:
            self.sock.close()
        except OSError:
            pass
