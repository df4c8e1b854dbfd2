"""vhost-user message formats, defined once (QEMU docs/interop/vhost-user.rst, "Message types"
and "Message specification").

Request codes, header flags, protocol feature bits and payload layouts, the ``Message`` a peer
sends and the errors framing raises. Used by the front-end transport (frontend.py), the raw session
of the protocol suite (session.py), the back-end that serves our models (backend.py) and the
socket channel all three talk over (channel.py). A message is a 12-byte header (request, flags,
size) and ``size`` payload bytes, with file descriptors in SCM_RIGHTS ancillary data. These are
socket messages, not shared memory, so ``struct`` packing is fine here (the torn-store rule is about
ring fields).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from virtio.areas import RingAddrs

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
INFLIGHT_MIN = INFLIGHT.size - 4  # the tail padding may be missing
VRING_AREA = struct.Struct("<QQQ")  # u64 (index | NOFD), size, offset

# u64 payload of SET_VRING_KICK/CALL/ERR: bits 0-7 the queue index, bit 8 "no fd" (polling).
VRING_IDX_MASK = 0xFF
VRING_NOFD_MASK = 1 << 8


def pack_vring_addr(index: int, addrs: RingAddrs, flags: int = 0, log: int = 0) -> bytes:
    """SET_VRING_ADDR payload for a ring whose areas are given at the addresses the back-end
    expects (front-end user addresses): the spec's driver area travels in the "available" field,
    its device area in the "used" field, whatever the layout (virtio/areas.py)."""
    return VRING_ADDR.pack(index, flags, addrs.desc, addrs.device, addrs.driver, log)


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


@dataclass
class InflightInfo:
    """GET/SET_INFLIGHT_FD payload ("Inflight description")."""

    mmap_size: int
    mmap_offset: int
    num_queues: int
    queue_size: int

    def pack(self) -> bytes:
        return INFLIGHT.pack(self.mmap_size, self.mmap_offset, self.num_queues, self.queue_size)

    @classmethod
    def unpack(cls, payload: bytes) -> InflightInfo:
        """The description in ``payload`` (at least INFLIGHT_MIN bytes: the padding may be missing)."""
        if len(payload) < INFLIGHT_MIN:
            raise ProtocolError(f"inflight description of {len(payload)} bytes", payload)
        return cls(*INFLIGHT.unpack_from(bytes(payload).ljust(INFLIGHT.size, b"\0")))


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
    def has_reply_header(self) -> bool:
        """The header flags a reply must carry ("Message specification"): version 1, reply bit."""
        return self.flags & FLAG_VERSION_MASK == VERSION and self.is_reply

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
        close_fds(self.fds)
        self.fds = []


def close_fds(fds) -> None:
    """Close received descriptors nobody will use; one already closed is no error."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
