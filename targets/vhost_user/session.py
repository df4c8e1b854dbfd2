"""A bare vhost-user front-end for the protocol suite: every message explicit, every wait bounded.

Implements just enough of the front-end side of QEMU docs/interop/vhost-user.rst ("Communication",
"Ring states", "Memory access", "VHOST_USER_PROTOCOL_F_REPLY_ACK") for tests to put one message at
a time to any back-end and judge its answer. It is not the transport (frontend.py): the suite
must be able to send what a well-behaved transport never would, and to see raw replies.

Memory regions and rings are handed over as the transport hands them (handover.py: user
addresses ``USER_BASE + offset`` for rings, guest-physical ones in descriptors).

Everything the back-end sends is untrusted: a closed socket, a timeout, a malformed header or a
reply to the wrong request becomes a DeviceViolation naming the request, the clause and the bytes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from virtio import constants as C
from virtio.buffers import Sg
from virtio.errors import DeviceViolation, TargetError
from virtio.memory import GuestMemory
from virtio.messages import NetHdr, blk_outhdr
from virtio.packed_queue import PackedVirtqueue
from virtio.split_queue import SplitVirtqueue

from . import protocol as vu
from .channel import Channel
from .handover import add_mem_reg, enable_ring, program_ring, set_mem_table, set_vring_kick, user_addr

CLAUSE_HEADER_FLAGS = "vu.header.1"
CLAUSE_HEADER_MATCH = "vu.header.2"
CLAUSE_ALWAYS_ANSWERED = "vu.communication.1"

# Protocol features the session acks by default when offered: what the suite exercises. STATUS is
# left out unless asked for, since with it acked DPDK runs nothing before SET_STATUS DRIVER_OK.
DEFAULT_PROTOCOL = C.bits(vu.PROTOCOL_F_MQ, vu.PROTOCOL_F_REPLY_ACK, vu.PROTOCOL_F_CONFIG)

# Device-type workloads: which ring carries a request the back-end completes without outside
# traffic (blk: requestq 0; net: transmitq 1, whose receiveq 0 a net back-end also wants set up).
PROBE_RING = {"blk": 0, "net": 1}
RINGS_NEEDED = {"blk": (0,), "net": (0, 1)}
READ_POISON = b"\xa5"  # fills a read buffer before the back-end is asked to write it


@dataclass
class RawRing:
    """One ring set up by the session: the driver-side virtqueue and its kick/call eventfds."""

    index: int
    vq: SplitVirtqueue | PackedVirtqueue
    kick_fd: int
    call_fd: int
    chains: list = field(default_factory=list)


class RawSession:
    """One connection to a back-end at ``path``, with guest memory and the rings it set up.

    ``clause`` is what the running test proves: a back-end that breaks the conversation on the way
    (closes, times out, garbles) is reported against it, since the test cannot go on.
    """

    def __init__(self, path: str, device_type: str, *, timeout: float = 5.0, clause: str = CLAUSE_ALWAYS_ANSWERED,
                 mem_size: int = 8 << 20):
        self.path = path
        self.device_type = device_type
        self.timeout = timeout
        self.clause = clause
        self.chan = self._connect()
        self.mem = GuestMemory(mem_size, name="vu-protocol")
        self.extra_mems: list[GuestMemory] = []  # regions added later (add_region)
        self.rings: dict[int, RawRing] = {}
        self.offered = 0
        self.features = 0  # acked with SET_FEATURES
        self.protocol_offered = 0
        self.protocol = 0  # acked with SET_PROTOCOL_FEATURES
        self.log: list[str] = []  # the conversation, for failure messages

    def _connect(self) -> Channel:
        try:
            return Channel.connect(self.path, self.timeout)
        except OSError as e:
            raise TargetError(f"vhost-user back-end at {self.path}: cannot connect ({e.strerror or e})") from None

    def reconnect(self) -> None:
        """Drop the connection and make a new one; memory and rings stay (a front-end that
        reconnects after a back-end restart hands the same ones over again)."""
        self.chan.close()
        self.chan = self._connect()
        self.log.append("<reconnect>")

    # -- framing ---------------------------------------------------------------------------------
    def user_addr(self, gpa: int) -> int:
        return user_addr(gpa, self.mem.base)

    def _violation(self, clause: str, what: str, exc: vu.ProtocolError) -> DeviceViolation:
        kind = {vu.PeerClosed: "closed the connection", vu.ProtocolTimeout: "did not answer"}.get(type(exc), "sent a malformed message")
        return DeviceViolation(clause, f"back-end {kind} {what}", expected="a well-formed reply", observed=f"{exc} (after: {' '.join(self.log[-6:])})")

    def send(self, request: int, payload: bytes = b"", fds=(), *, need_reply: bool = False, clause: str | None = None) -> None:
        flags = vu.VERSION | (vu.FLAG_NEED_REPLY if need_reply else 0)
        self.log.append(vu.request_name(request) + ("!" if need_reply else ""))
        try:
            self.chan.send(vu.Message(request, flags, payload, list(fds)))
        except vu.ProtocolError as e:
            raise self._violation(clause or self.clause, f"before {vu.request_name(request)} was sent", e) from None

    def recv_reply(self, request: int, *, clause: str | None = None, timeout: float | None = None) -> vu.Message:
        """The answer to ``request``: bounded wait, header checked (vu.header.1/2)."""
        what = f"the reply to {vu.request_name(request)}"
        t = self.timeout if timeout is None else timeout
        try:
            msg = self.chan.recv(t, what)
        except vu.ProtocolError as e:
            raise self._violation(clause or self.clause, f"while awaited: {what} ({t:.3g}s)", e) from None
        if request != vu.GET_INFLIGHT_FD:  # no other reply carries an fd we use
            msg.close_fds()
        if not msg.has_reply_header:
            raise DeviceViolation(CLAUSE_HEADER_FLAGS, f"{what} has wrong header flags", expected=f"version 1 with the reply bit ({vu.VERSION | vu.FLAG_REPLY:#x})", observed=f"flags {msg.flags:#x}; bytes {msg.raw()[:64].hex(' ')}")
        if msg.request != request:
            raise DeviceViolation(CLAUSE_HEADER_MATCH, f"{what} names another request", expected=f"request {request} ({vu.request_name(request)})", observed=f"request {msg.request} ({msg.name}); bytes {msg.raw()[:64].hex(' ')}")
        return msg

    def request(self, request: int, payload: bytes = b"", fds=(), *, need_reply: bool = False,
                clause: str | None = None, timeout: float | None = None) -> vu.Message | None:
        """Send; if the request has a reply body or ``need_reply`` is set, return the checked reply."""
        self.send(request, payload, fds, need_reply=need_reply, clause=clause)
        if request in vu.REPLY_REQUESTS or need_reply:
            return self.recv_reply(request, clause=clause, timeout=timeout)
        return None

    def u64(self, request: int, payload: bytes = b"", fds=(), *, need_reply: bool = False, clause: str | None = None) -> int:
        msg = self.request(request, payload, fds, need_reply=need_reply, clause=clause)
        if len(msg.payload) != vu.U64.size:
            raise DeviceViolation(clause or CLAUSE_ALWAYS_ANSWERED, f"reply to {msg.name} is not a u64", expected="8-byte payload", observed=f"{len(msg.payload)} bytes: {msg.payload[:64].hex(' ')}")
        return vu.U64.unpack(msg.payload)[0]

    def setup(self, request: int, payload: bytes = b"", fds=()) -> None:
        """A configuration message the test relies on: with REPLY_ACK negotiated, ask for the ack
        and treat a refusal (or EOF) as the back-end failing the test's clause."""
        if self.protocol >> vu.PROTOCOL_F_REPLY_ACK & 1:
            ack = self.u64(request, payload, fds, need_reply=True)
            if ack != 0:
                raise DeviceViolation(self.clause, f"back-end refused a valid {vu.request_name(request)}", expected="ack 0", observed=f"ack {ack:#x}")
        else:
            self.send(request, payload, fds)

    def silent(self, window: float = 0.2) -> bytes:
        """Bytes the back-end sent unasked within ``window`` seconds (b"" if none)."""
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            if self.chan.pending():
                try:
                    return self.chan.recv(max(0.01, deadline - time.monotonic()), "an unsolicited message").raw()
                except vu.PeerClosed as e:
                    return b"<EOF> " + e.seen
                except vu.ProtocolError as e:
                    return e.seen
            time.sleep(0.01)
        return b""

    def expect_silence(self, clause: str, what: str, window: float = 0.2) -> None:
        """Nothing arrives within ``window`` seconds; else a DeviceViolation showing the bytes."""
        extra = self.silent(window)
        if extra:
            raise DeviceViolation(clause, f"back-end sent {what}", expected=f"no message within {window}s", observed=extra[:64].hex(" "))

    def alive(self, clause: str | None = None) -> None:
        """The session still answers (GET_FEATURES round trip)."""
        self.u64(vu.GET_FEATURES, clause=clause or self.clause)

    # -- negotiation -----------------------------------------------------------------------------
    def handshake(self, *, protocol: bool = True, protocol_mask: int = DEFAULT_PROTOCOL, features: int | None = None) -> None:
        """SET_OWNER, GET_FEATURES, (GET/SET_PROTOCOL_FEATURES), SET_FEATURES, as QEMU orders them."""
        self.send(vu.SET_OWNER)
        self.offered = self.u64(vu.GET_FEATURES, clause=CLAUSE_ALWAYS_ANSWERED)
        use_protocol = protocol and bool(self.offered >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1)
        if use_protocol:
            self.protocol_offered = self.u64(vu.GET_PROTOCOL_FEATURES, clause=CLAUSE_ALWAYS_ANSWERED)
            self.protocol = self.protocol_offered & protocol_mask
            self.send(vu.SET_PROTOCOL_FEATURES, vu.U64.pack(self.protocol))
        wanted = (1 << C.VIRTIO_F_VERSION_1) if features is None else features
        if self.device_type == "blk":
            # A host-managed zoned device fails a feature set without VIRTIO_BLK_F_ZONED (5.2.5.2);
            # accepting it is valid with every zoned model, and it is acked only where offered.
            wanted |= 1 << C.VIRTIO_BLK_F_ZONED
        self.features = wanted & self.offered
        if use_protocol:
            self.features |= 1 << vu.VHOST_USER_F_PROTOCOL_FEATURES
        self.setup(vu.SET_FEATURES, vu.U64.pack(self.features))

    def has_protocol(self, bit: int) -> bool:
        return bool(self.protocol >> bit & 1)

    def set_mem_table(self) -> None:
        """SET_MEM_TABLE with every region the session has, each at user address USER_BASE + its
        offset from the first region's guest address."""
        set_mem_table(self.setup, [self.mem] + self.extra_mems)

    def add_region(self, size: int, *, single: bool = False) -> GuestMemory:
        """A further memfd region above the others (as a memory hot-plug adds one), sent with a
        new SET_MEM_TABLE that keeps the existing regions, or alone with ADD_MEM_REG (``single``)."""
        last = ([self.mem] + self.extra_mems)[-1]
        mem = GuestMemory(size, base=last.base + last.size + (1 << 30), name="vu-protocol-extra")
        self.extra_mems.append(mem)
        if single:
            self.add_mem_reg(mem)
        else:
            self.set_mem_table()
        return mem

    def add_mem_reg(self, mem: GuestMemory) -> None:
        """ADD_MEM_REG of one region (CONFIGURE_MEM_SLOTS), its fd alone with it."""
        add_mem_reg(self.setup, mem, self.mem.base)

    # -- rings -----------------------------------------------------------------------------------
    def setup_ring(self, index: int, num: int = 64, *, packed: bool = False, enable: bool | None = None,
                   kick: bool = True, base: int | None = None) -> RawRing:
        """SET_VRING_NUM/BASE/ADDR/CALL (and KICK unless ``kick`` is False), then SET_VRING_ENABLE
        1 where protocol features were negotiated (``enable`` None) or as ``enable`` says.
        ``base`` None: a fresh ring's (handover.INITIAL_VRING_BASE)."""
        kick_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        call_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        notify = lambda _vq: os.eventfd_write(kick_fd, 1)  # noqa: E731
        vq = (PackedVirtqueue if packed else SplitVirtqueue)(self.mem, index, num, notify, features=self.features)
        ring = RawRing(index, vq, kick_fd, call_fd)
        self.rings[index] = ring
        self._program(ring, base, kick=kick, enable=enable)
        return ring

    def restart_ring(self, index: int, base: int) -> None:
        """After GET_VRING_BASE stopped it: size, addresses, base, call and kick again, then
        enable -- QEMU's vhost_dev_start order (DPDK frees per-ring state on GET_VRING_BASE and
        rebuilds it on SET_VRING_NUM)."""
        self._program(self.rings[index], base, kick=True, enable=None)

    def _program(self, ring: RawRing, base: int | None, *, kick: bool, enable: bool | None) -> None:
        program_ring(self.setup, ring.vq, self.mem.base, call_fd=ring.call_fd, kick_fd=ring.kick_fd if kick else None, base=base)
        if enable is None:
            enable = bool(self.features >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1)
        if enable:
            self.enable(ring.index, 1)

    def set_kick(self, index: int) -> None:
        set_vring_kick(self.setup, index, self.rings[index].kick_fd)

    def enable(self, index: int, on: int) -> None:
        enable_ring(self.setup, index, on)

    def setup_device_rings(self, num: int = 64, *, packed: bool = False, enable: bool | None = None, kick: bool = True) -> RawRing:
        """Set up every ring the device type needs to run; return the probe ring."""
        if self.device_type not in PROBE_RING:
            raise DeviceViolation(self.clause, f"no ring workload for a {self.device_type} back-end")  # pragma: no cover
        for index in RINGS_NEEDED[self.device_type]:
            self.setup_ring(index, num, packed=packed, enable=enable, kick=kick)
        return self.rings[PROBE_RING[self.device_type]]

    def add_request(self, ring: RawRing, kick: bool = True, data_at: GuestMemory | None = None):
        """Make one request the back-end completes on its own (blk: read sector 0; net: a frame to
        transmit), its data in ``data_at`` if given, and kick unless told not to."""
        if self.device_type == "blk":
            data = C.SECTOR_SIZE if data_at is None else Sg(data_at.alloc(C.SECTOR_SIZE), C.SECTOR_SIZE)
            chain = ring.vq.add([blk_outhdr(C.VIRTIO_BLK_T_IN, 0)], [data, 1], "read")
        else:
            frame = NetHdr().pack() + b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes(46)
            if data_at is not None:
                addr = data_at.alloc(len(frame))
                data_at.write(addr, frame)
                frame = Sg(addr, len(frame))
            chain = ring.vq.add([frame], [], "tx")
        ring.chains.append(chain)
        if kick:
            ring.vq.kick()
        else:
            ring.vq.publish()
        return chain

    def add_blk(self, ring: RawRing, kind: int, sector: int, data: bytes = b"", kick: bool = True):
        """A block request (5.2.6): VIRTIO_BLK_T_OUT writes ``data`` at ``sector``;
        VIRTIO_BLK_T_IN reads one sector there. The status byte is the last writable one."""
        if kind == C.VIRTIO_BLK_T_OUT:
            chain = ring.vq.add([blk_outhdr(kind, sector), data], [1], "write")
        else:
            # Filled with a poison first: a back-end that reports a read without writing the
            # buffer (null-co without read-zeroes) must not seem to return what was there before.
            buf = self.mem.alloc(C.SECTOR_SIZE)
            self.mem.write(buf, READ_POISON * C.SECTOR_SIZE)
            chain = ring.vq.add([blk_outhdr(kind, sector)], [Sg(buf, C.SECTOR_SIZE), 1], "read")
        ring.chains.append(chain)
        if kick:
            ring.vq.kick()
        return chain

    def blk_result(self, ring: RawRing, chain) -> tuple[int | None, bytes]:
        """(status byte, data read) of a used block request; status None if none was written."""
        got = ring.vq.read_in(chain, chain.writable)
        if chain.used_len is None or chain.used_len < 1:
            return None, got[:-1]
        return got[-1], got[:-1]

    def wait_used(self, ring: RawRing, count: int, clause: str, what: str, timeout: float | None = None) -> list:
        """``count`` buffers completed on ``ring`` within the bound (DeviceTimeout against ``clause``)."""
        got = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(got) < count:
            chain = ring.vq.get_buf()
            if chain is not None:
                got.append(chain)
                continue
            if time.monotonic() > deadline:
                raise DeviceViolation(clause, f"timed out after {self.timeout:.3g}s waiting for {what}", queue=ring.index,
                                      expected=f"{count} used buffer(s)", observed=f"{len(got)} (conversation: {' '.join(self.log[-8:])})")
            time.sleep(0.001)
        return got

    def stays_unused(self, ring: RawRing, window: float = 0.3) -> bool:
        """True if the back-end completes nothing on ``ring`` for ``window`` seconds."""
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            if ring.vq.more_used():
                return False
            time.sleep(0.005)
        return True

    def get_vring_base(self, index: int, clause: str) -> tuple[int, int]:
        msg = self.request(vu.GET_VRING_BASE, vu.VRING_STATE.pack(index, 0), clause=clause)
        if len(msg.payload) != vu.VRING_STATE.size:
            raise DeviceViolation(CLAUSE_ALWAYS_ANSWERED, "reply to GET_VRING_BASE is not a vring state", expected="8-byte payload", observed=f"{len(msg.payload)} bytes: {msg.payload[:64].hex(' ')}")
        return vu.VRING_STATE.unpack(msg.payload)

    # -- end -------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.mem is None:
            return
        self.chan.close()
        for ring in self.rings.values():
            for fd in (ring.kick_fd, ring.call_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.rings.clear()
        # Buffers may still be written by a back-end that kept working after the disconnect
        # (docs/BACKENDS.md #7): the memfd mapping goes away with the last reference only.
        for mem in [self.mem] + self.extra_mems:
            mem.close()
        self.mem = None
        self.extra_mems = []


class BackEndUnderTest:
    """What the protocol suite is handed: a back-end's socket and device type; ``open`` starts a
    fresh session (closed again by ``close``) for the clause a test proves."""

    def __init__(self, path: str, device_type: str, timeout: float = 5.0):
        self.path = path
        self.device_type = device_type
        self.timeout = timeout
        self.sessions: list[RawSession] = []

    def open(self, clause: str, **kw) -> RawSession:
        session = RawSession(self.path, self.device_type, timeout=self.timeout, clause=clause, **kw)
        self.sessions.append(session)
        return session

    def close(self) -> None:
        while self.sessions:
            self.sessions.pop().close()
