"""The vhost-user front-end transport: config ops carried out as vhost-user messages.

Implements the front-end side of QEMU docs/interop/vhost-user.rst ("Communication", "Ring states",
"Multiple queue support", "Memory access", "Front-end message types", "VHOST_USER_PROTOCOL_F_REPLY_ACK")
in the order QEMU's front-end uses it: at connect GET_FEATURES, GET/SET_PROTOCOL_FEATURES,
GET_QUEUE_NUM, SET_BACKEND_REQ_FD, SET_OWNER; ``finalize_features`` is SET_FEATURES; the rings are
handed over at DRIVER_OK (SET_MEM_TABLE, then per ring SET_VRING_NUM/BASE/ADDR/CALL/ERR/KICK, then
SET_VRING_ENABLE, then SET_STATUS).

Guest memory is a memfd (virtio.memory.GuestMemory) passed by SCM_RIGHTS as one region whose
guest address (``mem.base``) and front-end user address (handover.USER_BASE) differ on purpose:
ring addresses travel as user addresses, descriptors carry guest-physical ones, so a back-end that
mixes the two address spaces up cannot pass.

Decisions (documented here because the suites rely on them):
- Feature bits that belong to vhost-user, not to the device (bit 30 VHOST_USER_F_PROTOCOL_FEATURES,
  bit 26 VHOST_F_LOG_ALL), and, for net, the control-virtqueue family (handled by the front-end's
  virtio-net in QEMU; the back-end never sees the control queue) are not shown to the driver. The
  raw GET_FEATURES is reported in ``identity()``; bit 30 is set in SET_FEATURES when offered.
- Duties a back-end cannot expose are named by ``missing_duties()`` (status byte without
  PROTOCOL_F_STATUS, config space without PROTOCOL_F_CONFIG, the config generation, the DRIVER_OK
  gate); tests resting on them skip with the reason instead of judging the front-end's bookkeeping.
- reset(): rings are stopped with GET_VRING_BASE; then RESET_DEVICE where negotiated, otherwise the
  connection is re-made with FRESH guest memory (qemu-storage-daemon keeps completing in-flight
  requests after a disconnect, into the memory it had mapped).
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Callable

from virtio import constants as C
from virtio.config_layout import CONFIG_LAYOUTS
from virtio.errors import DeviceViolation, HarnessError, TargetError, UnsupportedOp
from virtio.memory import GuestMemory

from ..config_ops import ConfigOps, ShmRegion, TargetIdentity, VqInfo, build_vqs
from . import protocol as vu
from .channel import Channel
from .events import EventThread, acquire_within, drain_eventfd, new_eventfd
from .handover import Send, enable_ring, mem_region, program_ring, set_mem_table

# Protocol features this front-end implements (and so acks when offered).
SUPPORTED_PROTOCOL_FEATURES = C.bits(
    vu.PROTOCOL_F_MQ, vu.PROTOCOL_F_REPLY_ACK, vu.PROTOCOL_F_BACKEND_REQ, vu.PROTOCOL_F_CONFIG, vu.PROTOCOL_F_INFLIGHT_SHMFD,
    vu.PROTOCOL_F_RESET_DEVICE, vu.PROTOCOL_F_CONFIGURE_MEM_SLOTS, vu.PROTOCOL_F_STATUS,
)

# Feature bits of the vhost-user transport, not of the virtio device.
VHOST_TRANSPORT_FEATURES = 1 << vu.VHOST_USER_F_PROTOCOL_FEATURES | 1 << vu.VHOST_F_LOG_ALL

# Device features whose duties sit in the front-end under vhost-user (QEMU's virtio-net serves the
# control virtqueue itself; MQ, GUEST_ANNOUNCE and every control-queue command class need it).
FRONTEND_DEVICE_FEATURES = {
    C.VIRTIO_ID_NET: C.bits(
        C.VIRTIO_NET_F_CTRL_VQ, C.VIRTIO_NET_F_CTRL_RX, C.VIRTIO_NET_F_CTRL_VLAN, C.VIRTIO_NET_F_CTRL_RX_EXTRA,
        C.VIRTIO_NET_F_GUEST_ANNOUNCE, C.VIRTIO_NET_F_MQ, C.VIRTIO_NET_F_CTRL_MAC_ADDR,
        C.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, C.VIRTIO_NET_F_NOTF_COAL, C.VIRTIO_NET_F_VQ_NOTF_COAL,
        C.VIRTIO_NET_F_DEVICE_STATS, C.VIRTIO_NET_F_RSS,
    ),
}

# Queues a device has without multiqueue (5.1.2 net: one pair; 5.3.2 console: receiveq, transmitq).
BASE_QUEUES = {C.VIRTIO_ID_NET: 2, C.VIRTIO_ID_CONSOLE: 2}
VQ_NUM_MAX = 1024  # a vhost-user back-end announces no maximum; QEMU's default for blk and net
DEVICE_IDS = {name: device_id for device_id, name in C.DEVICE_TYPES.items()}


_catalogue_ids: set[str] | None = None


def violation(clause_id: str, message: str, *, expected=None, observed=None, queue=None) -> Exception:
    """The exception for a back-end breaking the vhost-user protocol.

    A DeviceViolation naming ``clause_id`` where the catalogue has it (the vu.* group), else a
    TargetError that still names the clause: the back-end's fault, never a harness error.
    """
    global _catalogue_ids
    if _catalogue_ids is None:
        try:
            from virtio.clauses import load_catalogue

            _catalogue_ids = {c.id for c in load_catalogue()}
        except Exception:
            _catalogue_ids = set()
    if clause_id in _catalogue_ids:
        return DeviceViolation(clause_id, message, expected=expected, observed=observed, queue=queue)
    parts = [message] + [f"{k} {v}" for k, v in (("expected", expected), ("observed", observed)) if v is not None]
    return TargetError(f"[{clause_id}] " + "; ".join(parts))


def socket_problem(path: str) -> str | None:
    """Why ``path`` cannot be a listening UNIX socket, from its file alone (None: it may be one)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"no vhost-user back-end at {path} (no such file)"
    except OSError as e:
        return f"cannot reach {path}: {e.strerror or e}"
    if stat.S_ISSOCK(mode):
        return None
    kind = "a directory" if stat.S_ISDIR(mode) else "a regular file" if stat.S_ISREG(mode) else "not a socket file"
    return f"{path} is not a socket ({kind}); give the UNIX socket the back-end listens on"


class VhostUserTransport(ConfigOps):
    transport = "vhost-user"
    one_session = False  # the back-end exits when its front-end leaves (inventory one_session)
    capabilities = frozenset()  # the vhost-user protocol carries no PCI device (targets/config_ops.py CAPABILITIES)

    def __init__(self, socket_path: str, device_type: str, spec_id: str, *, timeout: float = 5.0, mem_size: int = 64 << 20, vq_num_max: int = VQ_NUM_MAX,
                 config_change_hook: Callable[[], None] | None = None, retry_refused: bool = True):
        """``retry_refused``: retry a refused first connection until ``timeout`` (a spawned back-end
        that is restarting binds before it listens); False for a back-end that should be running."""
        super().__init__()
        # How to make the back-end change its device config out of band (a signal to its process,
        # a management command); None: trigger_config_change is unsupported.
        self.config_change_hook = config_change_hook
        if device_type not in DEVICE_IDS:
            raise TargetError(f"{spec_id}: unknown device type {device_type!r}; known: {', '.join(sorted(DEVICE_IDS))}")
        self.socket_path = socket_path
        self.device_type = device_type
        self.spec = spec_id
        self.timeout = timeout
        self.mem_size = mem_size
        self.ring_size_max = vq_num_max  # the largest ring we offer to set up (vhost-user has no query)
        self.device_id = DEVICE_IDS[device_type]
        self.layout = CONFIG_LAYOUTS.get(self.device_id)
        self._lock = threading.RLock()  # one request/reply pair at a time on the channel
        self.events = EventThread(timeout=timeout)
        self.chan: Channel | None = None
        self.mem: GuestMemory | None = None
        self._backend_chan: Channel | None = None
        self.vqs: list = []
        self._kick: dict[int, int] = {}
        self._call: dict[int, int] = {}
        self._err: dict[int, int] = {}
        self.vring_errors: dict[int, int] = {}  # queue index -> err eventfd signals seen
        self.stale_kicks = 0  # notifications of a queue the back-end no longer owns
        self.config_interrupts = 0
        self.backend_requests: list[str] = []  # back-end requests we refused (for the report)
        self._generation = 0
        self._status = 0  # the front-end's copy (the only one without PROTOCOL_F_STATUS)
        self._features_accepted = False
        self._rings_started = False
        self._running_rings: set[int] = set()  # rings handed to the back-end and not yet stopped
        self._stop_problems: list[str] = []
        self._mem_table_sent = False
        self.lost: str | None = None  # why the connection is gone, once it is
        try:
            self._connect(retry_refused=retry_refused)
        except (vu.ProtocolError, DeviceViolation, TargetError) as e:  # before the session exists: unreachable target
            closed = self.lost  # set by request() when the back-end hung up instead of answering
            self.close()
            if closed is not None:
                raise TargetError(f"{spec_id}: the back-end at {socket_path} closed the connection during the opening exchange "
                                  f"(instead of answering {closed.removeprefix('closed after ')})") from None
            if isinstance(e, TargetError):
                raise
            # The bytes seen are the evidence: keep them (DeviceViolation.observed), drop only the clause prefix.
            what = getattr(e, "message", None) or str(e)
            seen = getattr(e, "observed", None)
            raise TargetError(f"{spec_id}: {socket_path} does not speak vhost-user: {what}"
                              + (f"; observed {seen}" if seen is not None else "")) from None
        except BaseException:
            self.close()
            raise

    # -- connection --------------------------------------------------------------------------------
    def _connect(self, *, retry_refused: bool = True) -> None:
        """Open the socket and run QEMU's initialization exchange (vhost_user_backend_init)."""
        problem = socket_problem(self.socket_path)  # at once: connect() would say only "refused"
        if problem:
            raise TargetError(f"{self.spec}: {problem}")
        try:
            self.chan = Channel.connect(self.socket_path, self.timeout, retry_refused=retry_refused)
        except FileNotFoundError:
            raise TargetError(f"{self.spec}: no vhost-user back-end at {self.socket_path} (no such file)") from None
        except ConnectionRefusedError:
            raise TargetError(f"{self.spec}: connection refused at {self.socket_path}: the socket file exists but no back-end "
                              "is listening on it (not started, or exited and left its socket behind)") from None
        except OSError as e:
            raise TargetError(f"{self.spec}: cannot connect to {self.socket_path}: {e.strerror or e}") from None
        self.lost = None
        self.mem = GuestMemory(self.mem_size)
        self._mem_table_sent = False
        self._rings_started = False
        self.protocol_features = 0
        self.backend_features = self._get_u64(vu.GET_FEATURES)
        self.protocol_offered = 0
        if self.backend_features >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1:
            self.protocol_offered = self._get_u64(vu.GET_PROTOCOL_FEATURES)
            wanted = self.protocol_offered & SUPPORTED_PROTOCOL_FEATURES
            self._call_ack(vu.SET_PROTOCOL_FEATURES, vu.U64.pack(wanted))
            self.protocol_features = wanted
        self.queue_num = None
        if self.has_protocol(vu.PROTOCOL_F_MQ):
            n = self._get_u64(vu.GET_QUEUE_NUM)
            if n < 1:
                raise violation("vu.multiple-queue-support.1", "GET_QUEUE_NUM answered no queues", expected=">= 1", observed=n)
            self.queue_num = n
        if self.has_protocol(vu.PROTOCOL_F_BACKEND_REQ):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                self._call_ack(vu.SET_BACKEND_REQ_FD, b"", [theirs.fileno()])
            finally:
                theirs.close()
            self._backend_chan = Channel(ours, f"{self.socket_path} (back-end requests)", timeout=self.timeout)
            self.events.register(self._backend_chan.fileno(), self._serve_backend_request, "the back-end request channel")
        self._call_ack(vu.SET_OWNER)

    def has_protocol(self, bit: int) -> bool:
        """Whether a protocol feature was negotiated (offered by the back-end and acked by us)."""
        return bool(self.protocol_features >> bit & 1)

    def _disconnect(self) -> None:
        self._close_ring_fds()
        if self._backend_chan is not None:
            self.events.unregister(self._backend_chan.fileno())
            self._backend_chan.close()
            self._backend_chan = None
        if self.chan is not None:
            self.chan.close()
            self.chan = None
        if self.mem is not None:
            # Close only the fd: driver-side queues may still read the old mapping (a reset test
            # looks at the old rings), and the back-end may still write to its own mapping of it.
            os.close(self.mem.fd)
            self.mem.fd = -1
            self.mem = None

    # -- messages ------------------------------------------------------------------------------------
    def request(self, request: int, payload: bytes = b"", fds=(), *, need_reply: bool | None = None) -> vu.Message | None:
        """Send one front-end request and return its answer (None if none is due).

        ``need_reply`` defaults to asking an acknowledgement of every request without a reply of
        its own when REPLY_ACK is negotiated (as QEMU does for the messages that matter). The
        answer is checked against the header rules; any failure names the request.
        """
        name = vu.request_name(request)
        has_body = request in vu.REPLY_REQUESTS
        if need_reply is None:
            need_reply = not has_body and self.has_protocol(vu.PROTOCOL_F_REPLY_ACK)
        flags = vu.VERSION | (vu.FLAG_NEED_REPLY if need_reply else 0)
        # Another thread's exchange holds the channel for at most a send and a receive bound.
        busy_bound = 2 * self.timeout + 1
        if not acquire_within(self._lock, busy_bound):
            raise HarnessError(f"cannot send {name}: the channel stayed busy with another request for {busy_bound:.3g}s")
        try:
            if self.chan is None or self.chan.closed:
                raise violation("vu.communication.3", f"cannot send {name}: the back-end connection is gone ({self.lost or 'closed'})")
            try:
                self.chan.send(vu.Message(request, flags, payload, list(fds)))
                if not (has_body or need_reply):
                    return None
                reply = self.chan.recv(self.timeout, f"the answer to {name}")
            except vu.ProtocolTimeout as e:
                clause = "vu.communication.1" if has_body else "vu.vhost-user-protocol-f-reply-ack.1"
                raise violation(clause, f"no answer to {name} within {self.timeout:g}s", observed=str(e)) from None
            except vu.PeerClosed as e:
                self.lost = f"closed after {name}"
                raise violation("vu.communication.3", f"the back-end closed the connection instead of answering {name}", observed=str(e)) from None
            except vu.ProtocolError as e:
                raise violation("vu.header.2", f"malformed answer to {name}", observed=str(e)) from None
        finally:
            self._lock.release()
        if reply.request != request:
            reply.close_fds()
            raise violation("vu.header.2", f"answer to {name} names another request", expected=request, observed=f"{reply.name} ({reply.raw()[:64].hex(' ')})")
        if not reply.has_reply_header:
            reply.close_fds()
            raise violation("vu.header.1", f"answer to {name} lacks version 1 / the reply flag", expected=f"flags {vu.VERSION | vu.FLAG_REPLY:#x}", observed=f"flags {reply.flags:#x}")
        return reply

    def _get_u64(self, request: int, payload: bytes = b"") -> int:
        reply = self.request(request, payload)
        reply.close_fds()
        if len(reply.payload) != 8:
            raise violation("vu.communication.1", f"{reply.name} answered with {len(reply.payload)} bytes", expected="a u64 (8 bytes)", observed=reply.raw().hex(" "))
        return reply.u64()

    def _call_ack(self, request: int, payload: bytes = b"", fds=()) -> int:
        """Send a request without a reply body; return the REPLY_ACK value (0 without REPLY_ACK).

        0 is success. qemu-storage-daemon acks 0 and closes the socket on errors, so the ack
        alone does not prove success (docs/BACKENDS.md #2); ``_sync`` checks the connection afterwards.
        """
        reply = self.request(request, payload, fds)
        if reply is None:
            return 0
        reply.close_fds()
        if len(reply.payload) != 8:
            raise violation("vu.vhost-user-protocol-f-reply-ack.2", f"acknowledgement of {reply.name} is not a u64", observed=reply.raw().hex(" "))
        return reply.u64()

    def _must(self, request: int, payload: bytes = b"", fds=(), *, queue=None) -> None:
        ack = self._call_ack(request, payload, fds)
        if ack != 0:
            raise violation("vu.vhost-user-protocol-f-reply-ack.2", f"the back-end refused {vu.request_name(request)}", expected="ack 0", observed=f"ack {ack:#x}, payload {payload.hex(' ')}", queue=queue)

    def _sync(self, after: str) -> None:
        """A round trip proving the back-end is still there after requests that are only acked."""
        try:
            self._get_u64(vu.GET_FEATURES)
        except (DeviceViolation, TargetError) as e:
            raise violation("vu.communication.3", f"the back-end dropped the connection after {after}", observed=str(e)) from None

    # -- back-end -> front-end requests ---------------------------------------------------------------
    def _serve_backend_request(self) -> None:
        """One message on the SET_BACKEND_REQ_FD channel ("Back-end message types")."""
        chan = self._backend_chan
        if chan is None:
            return
        try:
            msg = chan.recv(self.timeout, "a back-end request")
        except vu.ProtocolError as e:
            self.events.unregister(chan.fileno())
            if not isinstance(e, vu.PeerClosed):
                self.backend_requests.append(f"malformed back-end request: {e}")
            return
        msg.close_fds()
        ok = msg.request == vu.BACKEND_CONFIG_CHANGE_MSG
        if not ok:
            self.backend_requests.append(f"refused back-end request {msg.request} ({msg.raw()[:32].hex(' ')})")
        if msg.need_reply:
            chan.send(vu.Message(msg.request, vu.VERSION | vu.FLAG_REPLY, vu.U64.pack(0 if ok else 1)))
        if ok:
            # As QEMU's virtio transports do: the generation moves, then the driver is told (2.5.1).
            self._generation += 1
            self.config_interrupts += 1
            if self.config_changed is not None:
                self.config_changed()

    # -- config space (2.5) ----------------------------------------------------------------------------
    def _config_size(self) -> int:
        # The size the back-end's offered features give (qsd answers nothing past its own size).
        return self.layout.size_for(self.backend_features) if self.layout is not None else 0

    def get(self, offset: int, length: int) -> bytes:
        """GET_CONFIG of the whole config space from offset 0, as QEMU asks it; never more than the
        device type's config size (qsd answers an empty payload above it, docs/BACKENDS.md #6)."""
        if not self.has_protocol(vu.PROTOCOL_F_CONFIG):
            self._unsupported("get", "the back-end does not offer VHOST_USER_PROTOCOL_F_CONFIG: no config space over vhost-user")
        size = self._config_size()
        if size == 0:
            return bytes(length)
        reply = self.request(vu.GET_CONFIG, vu.CONFIG_HEAD.pack(0, size, 0) + bytes(size))
        reply.close_fds()
        if len(reply.payload) != vu.CONFIG_HEAD.size + size:
            raise violation("vu.front-end-message-types.9", f"GET_CONFIG of {size} bytes answered with {len(reply.payload)} payload bytes", expected=vu.CONFIG_HEAD.size + size, observed=reply.raw()[:80].hex(" "))
        _off, got_size, _flags = vu.CONFIG_HEAD.unpack_from(reply.payload)
        if got_size != size:
            raise violation("vu.front-end-message-types.9", "GET_CONFIG answer's size field differs from the size asked for", expected=size, observed=got_size)
        data = reply.payload[vu.CONFIG_HEAD.size :][offset : offset + length]
        return data + bytes(length - len(data))  # past the end reads as zero, like the model devices

    def set(self, offset: int, data: bytes) -> None:
        if not self.has_protocol(vu.PROTOCOL_F_CONFIG):
            self._unsupported("set", "the back-end does not offer VHOST_USER_PROTOCOL_F_CONFIG: no config space over vhost-user")
        data = bytes(data)
        self.last_set_config_ack = self._call_ack(vu.SET_CONFIG, vu.CONFIG_HEAD.pack(offset, len(data), vu.CONFIG_F_WRITABLE) + data)

    def generation(self) -> int:
        """vhost-user has no generation counter: the front-end's count of CONFIG_CHANGE_MSG."""
        return self._generation

    # -- status (2.1) ------------------------------------------------------------------------------------
    def get_status(self) -> int:
        if not self.has_protocol(vu.PROTOCOL_F_STATUS):
            return self._status
        status = self._get_u64(vu.GET_STATUS)
        if status > 0xFF:
            raise violation("vu.front-end-message-types.16", "GET_STATUS answered a value wider than the status byte", observed=f"{status:#x}")
        return status

    def set_status(self, status: int) -> None:
        if status == 0:
            raise HarnessError("set_status(0) is not allowed; use reset()")  # as in Linux
        status &= 0xFF
        old = self._status
        if status & C.FEATURES_OK and not old & C.FEATURES_OK and not self._features_accepted and not self.has_protocol(vu.PROTOCOL_F_STATUS):
            # Our bookkeeping: a refused SET_FEATURES means FEATURES_OK does not stick. With
            # PROTOCOL_F_STATUS the back-end decides itself, and GET_STATUS tells.
            status &= ~C.FEATURES_OK
        if status & C.DRIVER_OK and not old & C.DRIVER_OK:
            self._start_rings()
        if self.has_protocol(vu.PROTOCOL_F_STATUS):
            self._call_ack(vu.SET_STATUS, vu.U64.pack(status))
        self._status = status

    def _stop_rings(self) -> None:
        """GET_VRING_BASE on every ring the back-end runs (QEMU's vhost_dev_stop), before the ring
        memory is freed or the device reset; what goes wrong is kept for reset() to report."""
        if self.chan is None or self.chan.closed:
            self._running_rings.clear()
            return
        for index in sorted(self._running_rings):
            try:
                self.get_vring_base(index)
            except (DeviceViolation, TargetError) as e:
                self._stop_problems.append(str(e))
        self._running_rings.clear()

    def reset(self) -> None:
        """Stop every ring (GET_VRING_BASE), then RESET_DEVICE, or a new connection with fresh memory."""
        self._stop_rings()
        problems, self._stop_problems = self._stop_problems, []
        alive = self.chan is not None and not self.chan.closed and not problems
        if alive and self.has_protocol(vu.PROTOCOL_F_STATUS):
            self._call_ack(vu.SET_STATUS, vu.U64.pack(0))
        if alive and self.has_protocol(vu.PROTOCOL_F_RESET_DEVICE):
            self._must(vu.RESET_DEVICE)
            self._close_ring_fds()
        elif not alive or self._rings_started:
            if self.one_session:
                # The back-end exits once its front-end leaves (inventory one_session): no second
                # connection can reset it, and it has no RESET_DEVICE.
                self._unsupported("reset", "the back-end serves one front-end and exits, and offers no "
                                  "VHOST_USER_PROTOCOL_F_RESET_DEVICE: no device reset once its rings ran")
            self._disconnect()
            self._connect()
        self._status = 0
        self.driver_features = 0
        self._features_accepted = False
        self._rings_started = False
        if problems:
            raise violation("vu.communication.1", "stopping the rings for a reset failed", observed="; ".join(problems))

    # -- features (2.2) -----------------------------------------------------------------------------------
    def get_extended_features(self) -> int:
        hidden = VHOST_TRANSPORT_FEATURES | FRONTEND_DEVICE_FEATURES.get(self.device_id, 0)
        return self.backend_features & ~hidden & ((1 << C.FEATURE_BITS) - 1)

    def finalize_features(self, features: int) -> None:
        """SET_FEATURES; bit 30 rides along when offered, since it decides the ring enable rules."""
        if features >> 64:
            raise UnsupportedOp("finalize_features", "SET_FEATURES carries 64 bits: feature bits above 63 cannot reach a vhost-user back-end")
        self.driver_features = features
        wire = features | (self.backend_features & 1 << vu.VHOST_USER_F_PROTOCOL_FEATURES)
        self._features_accepted = self._call_ack(vu.SET_FEATURES, vu.U64.pack(wire)) == 0

    # -- virtqueues (2.6..2.8) ---------------------------------------------------------------------------
    def _queue_count(self) -> int:
        base = BASE_QUEUES.get(self.device_id, 1)
        if self.queue_num is None:
            return base
        return 2 * self.queue_num if self.device_id == C.VIRTIO_ID_NET else max(self.queue_num, 1)

    def vq_num_max(self, index: int) -> int:
        return self.ring_size_max if 0 <= index < self._queue_count() else 0

    def find_vqs(self, infos: list[VqInfo]) -> list:
        """Driver-side queues on our memory, as ModelTransport builds them; the back-end learns of
        them at DRIVER_OK. Kicks written before then stay in the eventfd (docs/BACKENDS.md #4)."""
        if self.vqs:
            raise HarnessError("find_vqs called twice without del_vqs")

        def new_kick(vq) -> None:
            if vq.index in self._kick:
                os.close(self._kick.pop(vq.index))
            self._kick[vq.index] = new_eventfd()

        vqs = build_vqs(self, self.mem, infos, self._notify, new_kick)
        self.vqs = vqs
        if self._status & C.DRIVER_OK:
            self._start_rings()
        return vqs

    def _notify(self, vq) -> None:
        fd = self._kick.get(vq.index)
        if fd is None:
            self.stale_kicks += 1
            return
        os.eventfd_write(fd, 1)

    def mem_region(self) -> vu.MemRegion:
        """The single region of the current guest memory."""
        return mem_region(self.mem)

    def _ensure_mem_table(self) -> None:
        if not self._mem_table_sent:
            set_mem_table(self._must, [self.mem])
            self._mem_table_sent = True

    def _start_rings(self) -> None:
        """Hand every queue to the back-end (QEMU's vhost_dev_start), then enable them."""
        self._ensure_mem_table()
        started = [vq for vq in self.vqs if vq is not None]
        for vq in started:
            self._setup_ring(vq)
        if self.backend_features >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1:
            for vq in started:
                enable_ring(self._sender(vq), vq.index, 1)
        self._rings_started = True
        self._running_rings.update(vq.index for vq in started)
        self._sync("starting the rings")

    def _sender(self, vq) -> Send:
        """handover's send: a request that must be acked, failures naming ``vq``."""
        return lambda request, payload, fds: self._must(request, payload, fds, queue=vq.name)

    def _setup_ring(self, vq) -> None:
        i = vq.index
        for table, on_signal, what in ((self._call, self._on_call, "call"), (self._err, self._on_err, "err")):
            if i not in table:
                fd = table[i] = new_eventfd()
                self.events.register(fd, lambda fd=fd, i=i, f=on_signal: f(fd, i), f"{what} eventfd of queue {i} ({vq.name})")
        program_ring(self._sender(vq), vq, self.mem.base, call_fd=self._call[i], err_fd=self._err[i], kick_fd=self._kick[i])

    def _on_call(self, fd: int, index: int) -> None:
        if drain_eventfd(fd) and 0 <= index < len(self.vqs) and self.vqs[index] is not None:
            self.vqs[index].interrupt()

    def _on_err(self, fd: int, index: int) -> None:
        n = drain_eventfd(fd)
        if n:
            self.vring_errors[index] = self.vring_errors.get(index, 0) + n

    def get_vring_base(self, index: int) -> int:
        """GET_VRING_BASE: stops the ring, returns its state's ``num`` (packed: see vring_base_packed)."""
        reply = self.request(vu.GET_VRING_BASE, vu.VRING_STATE.pack(index, 0))
        self._running_rings.discard(index)
        reply.close_fds()
        if len(reply.payload) != vu.VRING_STATE.size:
            raise violation("vu.communication.1", f"GET_VRING_BASE answered {len(reply.payload)} bytes", expected="a vring state (8 bytes)", observed=reply.raw().hex(" "))
        got_index, num = vu.VRING_STATE.unpack(reply.payload)
        if got_index != index:
            raise violation("vu.front-end-message-types.3", "GET_VRING_BASE answered another queue's index", expected=index, observed=got_index)
        return num

    def _close_ring_fds(self) -> None:
        for table in (self._call, self._err):
            for fd in table.values():
                self.events.unregister(fd)
                os.close(fd)
            table.clear()
        for fd in self._kick.values():
            os.close(fd)
        self._kick.clear()

    def del_vqs(self) -> None:
        # The back-end stops using a ring before the driver frees its memory (2.6.1: a queue's
        # memory belongs to the device until it is reset or stopped).
        self._stop_rings()
        for vq in self.vqs:
            if vq is not None and vq.mem is self.mem:
                vq.free_ring()
        self.vqs = []
        if not self._rings_started:
            for fd in self._kick.values():
                os.close(fd)
            self._kick.clear()

    def synchronize_cbs(self) -> None:
        self.events.synchronize()

    def bus_name(self) -> str:
        return f"vhost-user:{self.socket_path}"

    def get_shm_region(self, region_id: int) -> ShmRegion | None:
        self._unsupported("get_shm_region", "this front-end does not implement GET_SHMEM_CONFIG")

    # -- virtqueue reset (2.6.1) ----------------------------------------------------------------------------
    def _ring_reset_ok(self, op: str) -> None:
        if not (self._status & C.FEATURES_OK and self.driver_features >> C.VIRTIO_F_RING_RESET & 1):
            raise UnsupportedOp(op, "VIRTIO_F_RING_RESET not negotiated with this device")

    def disable_vq_and_reset(self, vq) -> None:
        """As QEMU's vhost_user_reset_vring: disable the ring, then stop it (GET_VRING_BASE)."""
        self._ring_reset_ok("disable_vq_and_reset")
        if self.backend_features >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1:
            enable_ring(self._sender(vq), vq.index, 0)
        self.get_vring_base(vq.index)
        self._deliver_pending_call(vq)

    def _deliver_pending_call(self, vq) -> None:
        """A call signalled before the back-end stopped the ring belongs to the time before the
        reset: hand it to the queue now, so the event thread cannot deliver it late and make it
        look like a notification after the reset."""
        fd = self._call.get(vq.index)
        if fd is not None and drain_eventfd(fd):
            vq.interrupt()
        self.events.synchronize()  # a handler already mid-flight has finished

    def enable_vq_after_reset(self, vq) -> None:
        self._ring_reset_ok("enable_vq_after_reset")
        if vq.num > self.vq_num_max(vq.index):
            raise HarnessError(f"queue {vq.index}: size {vq.num} above the device maximum")
        self._setup_ring(vq)
        self._running_rings.add(vq.index)
        if self.backend_features >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1:
            enable_ring(self._sender(vq), vq.index, 1)

    # -- messages the protocol suite drives directly ------------------------------------------------------
    def reset_owner(self) -> int:
        return self._call_ack(vu.RESET_OWNER)

    def get_max_mem_slots(self) -> int:
        self._need_protocol(vu.PROTOCOL_F_CONFIGURE_MEM_SLOTS, "get_max_mem_slots")
        return self._get_u64(vu.GET_MAX_MEM_SLOTS)

    def add_mem_reg(self, region: vu.MemRegion, fd: int) -> int:
        self._need_protocol(vu.PROTOCOL_F_CONFIGURE_MEM_SLOTS, "add_mem_reg")
        return self._call_ack(vu.ADD_MEM_REG, vu.pack_single_region(region), [fd])

    def rem_mem_reg(self, region: vu.MemRegion) -> int:
        self._need_protocol(vu.PROTOCOL_F_CONFIGURE_MEM_SLOTS, "rem_mem_reg")
        return self._call_ack(vu.REM_MEM_REG, vu.pack_single_region(region))

    def get_inflight_fd(self, num_queues: int, queue_size: int) -> tuple[vu.InflightInfo, int]:
        """GET_INFLIGHT_FD: the back-end's inflight description and the shared-memory fd (caller closes it)."""
        self._need_protocol(vu.PROTOCOL_F_INFLIGHT_SHMFD, "get_inflight_fd")
        reply = self.request(vu.GET_INFLIGHT_FD, vu.InflightInfo(0, 0, num_queues, queue_size).pack())
        if len(reply.payload) != vu.INFLIGHT.size or len(reply.fds) != 1:
            reply.close_fds()
            raise violation("vu.front-end-message-types.11", "GET_INFLIGHT_FD answer is not an inflight description with one fd", observed=f"{len(reply.payload)} bytes, {len(reply.fds)} fds")
        return vu.InflightInfo.unpack(reply.payload), reply.fds[0]

    def set_inflight_fd(self, info: vu.InflightInfo, fd: int) -> int:
        self._need_protocol(vu.PROTOCOL_F_INFLIGHT_SHMFD, "set_inflight_fd")
        return self._call_ack(vu.SET_INFLIGHT_FD, info.pack(), [fd])

    def _need_protocol(self, bit: int, op: str) -> None:
        if not self.has_protocol(bit):
            raise UnsupportedOp(op, f"VHOST_USER_PROTOCOL_F_{vu.PROTOCOL_FEATURE_NAMES[bit]} not offered by the back-end")

    # -- harness extensions ----------------------------------------------------------------------------------
    def missing_duties(self) -> dict[str, str]:
        missing = {
            "driver-ok": "rings reach a vhost-user back-end only at DRIVER_OK (as from QEMU), so use of buffers before DRIVER_OK cannot be observed",
            "generation": "vhost-user has no config generation counter; the front-end counts CONFIG_CHANGE_MSG",
        }
        if not self.has_protocol(vu.PROTOCOL_F_STATUS):
            missing["status"] = "the back-end does not offer VHOST_USER_PROTOCOL_F_STATUS: the device status byte lives in the front-end"
        if not self.has_protocol(vu.PROTOCOL_F_CONFIG):
            missing["config"] = "the back-end does not offer VHOST_USER_PROTOCOL_F_CONFIG: no config space over vhost-user"
        return missing

    def trigger_config_change(self) -> None:
        """Run the target's config-change hook, then wait (bounded by the message timeout) for the
        back-end's BACKEND_CONFIG_CHANGE_MSG, so that on return the change is as visible as on a
        model. No message within the bound is not an error here: whether and when the device
        notifies is what the tests judge (e.g. none after a reset)."""
        if self.config_change_hook is None:
            self._unsupported("trigger_config_change", "no way to make this vhost-user back-end change its config "
                              "(an inventory entry can give one: config_change = \"signal:USR1\" or a command)")
        before = self.config_interrupts
        self.config_change_hook()
        deadline = time.monotonic() + self.timeout
        while self.config_interrupts == before and time.monotonic() < deadline:
            time.sleep(0.001)

    def identity(self) -> TargetIdentity:
        names = lambda bits: [vu.PROTOCOL_FEATURE_NAMES.get(b, f"bit {b}") for b in range(64) if bits >> b & 1]  # noqa: E731
        hidden = self.backend_features & (VHOST_TRANSPORT_FEATURES | FRONTEND_DEVICE_FEATURES.get(self.device_id, 0))
        return TargetIdentity(
            spec=self.spec,
            transport=self.transport,
            device_id=self.device_id,
            device_type=self.device_type,
            description=f"vhost-user back-end at {self.socket_path}",
            extra={
                "socket": self.socket_path,
                "get_features": f"{self.backend_features:#x}",
                "features_not_shown_to_driver": f"{hidden:#x} ({C.feature_names(hidden, self.device_id)})",
                "protocol_features_offered": names(self.protocol_offered),
                "protocol_features_negotiated": names(self.protocol_features),
                "queue_num": self.queue_num,
                "missing_duties": sorted(self.missing_duties()),
            },
        )

    def close(self) -> None:
        try:
            if self.mem is not None:
                for vq in self.vqs:
                    if vq is not None and vq.mem is self.mem:
                        vq.free_ring()
            self.vqs = []
            self._disconnect()
        finally:
            self.events.stop()
