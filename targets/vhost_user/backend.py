"""The back-end side of vhost-user for our model devices (QEMU docs/interop/vhost-user.rst).

One ``Backend`` serves one front-end connection: it answers the front-end's requests, maps its
memory (backend_memory.BackendMemory), runs the model device's virtqueues when rings are started and
enabled ("Ring states"), turns kicks read from the kick eventfds into ``device.notify(index)`` and
the model's interrupts into writes on the call eventfds. Each request is one ``on_<request>(msg)``
method found through ``HANDLERS``, so that a protocol mutant subclasses Backend and overrides one.

A handler returns the reply body for requests that have one (protocol.REPLY_REQUESTS) and
None otherwise; it raises ``RequestFailed`` to refuse. Whatever the front-end sends is untrusted:
bad payloads, addresses outside its memory, wrong sizes are refused (failure in the REPLY_ACK reply,
an empty body for a request with its own reply), never a crash. A broken header ends the session.
"""

from __future__ import annotations

import mmap
import os
import selectors
import socket
import struct
import sys
import threading
from dataclasses import dataclass

from virtio import constants as C
from virtio import packed, split
from virtio.areas import RingAddrs
from virtio.buffers import ChainError
from virtio.errors import GuestMemoryError
from virtio.packed import MAX_QUEUE_SIZE
from virtio.queue_state import QueueState

from . import protocol as vu
from .backend_memory import MAX_MEM_SLOTS, BackendMemory
from .channel import Channel
from .inflight import InflightBuffer, queue_region_size_split

BIT_PROTOCOL_FEATURES = 1 << vu.VHOST_USER_F_PROTOCOL_FEATURES
STATUS_BEFORE_DRIVER_OK = C.ACKNOWLEDGE | C.DRIVER | C.FEATURES_OK
POLL_INTERVAL = 0.001  # rings in polling mode (SET_VRING_KICK with the no-fd flag)
CONFIG_CHANGE = object()  # selector key data of the config-change eventfd


class RequestFailed(Exception):
    """The back-end refuses a request; the reply (where one is sent) says failure."""


class SessionEnd(Exception):
    """The connection is over (peer closed, or sent something that is not a message)."""


@dataclass
class Ring:
    """What the front-end told us about one vring (names as in vhost-user.rst)."""

    index: int
    num: int = 0
    addr: tuple[int, int, int, int] | None = None  # user addresses: flags, descriptor, used, available
    base: int = 0  # SET_VRING_BASE; GET_VRING_BASE captures the running state here
    kick_fd: int = -1
    call_fd: int = -1
    err_fd: int = -1
    polling: bool = False  # kick "no fd" flag: the back-end polls
    started: bool = False
    discarding: bool = False  # started but disabled, its buffers consumed without effect
    enabled: bool | None = None  # None: never set by SET_VRING_ENABLE
    queue: object = None  # the model's queue object running this ring, once started
    resubmit: list[int] | None = None  # inflight heads still to resubmit; None: region not yet checked


def _state(msg: vu.Message) -> tuple[int, int]:
    if len(msg.payload) < vu.VRING_STATE.size:
        raise RequestFailed(f"{msg.name}: vring state payload of {len(msg.payload)} bytes")
    return vu.VRING_STATE.unpack_from(msg.payload)


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


class Backend:
    """Serves one front-end on ``channel`` with ``device`` (a targets/model Device)."""

    # The protocol features we implement and so offer.
    PROTOCOL_FEATURES = (
        1 << vu.PROTOCOL_F_MQ
        | 1 << vu.PROTOCOL_F_REPLY_ACK
        | 1 << vu.PROTOCOL_F_BACKEND_REQ
        | 1 << vu.PROTOCOL_F_CONFIG
        | 1 << vu.PROTOCOL_F_RESET_DEVICE
        | 1 << vu.PROTOCOL_F_CONFIGURE_MEM_SLOTS
        | 1 << vu.PROTOCOL_F_STATUS
        | 1 << vu.PROTOCOL_F_INFLIGHT_SHMFD  # split rings (GET_INFLIGHT_FD refuses a packed one)
    )

    HANDLERS = {
        vu.GET_FEATURES: "on_get_features",
        vu.SET_FEATURES: "on_set_features",
        vu.SET_OWNER: "on_set_owner",
        vu.RESET_OWNER: "on_reset_owner",
        vu.SET_MEM_TABLE: "on_set_mem_table",
        vu.SET_VRING_NUM: "on_set_vring_num",
        vu.SET_VRING_ADDR: "on_set_vring_addr",
        vu.SET_VRING_BASE: "on_set_vring_base",
        vu.GET_VRING_BASE: "on_get_vring_base",
        vu.SET_VRING_KICK: "on_set_vring_kick",
        vu.SET_VRING_CALL: "on_set_vring_call",
        vu.SET_VRING_ERR: "on_set_vring_err",
        vu.GET_PROTOCOL_FEATURES: "on_get_protocol_features",
        vu.SET_PROTOCOL_FEATURES: "on_set_protocol_features",
        vu.GET_QUEUE_NUM: "on_get_queue_num",
        vu.SET_VRING_ENABLE: "on_set_vring_enable",
        vu.SET_BACKEND_REQ_FD: "on_set_backend_req_fd",
        vu.GET_CONFIG: "on_get_config",
        vu.SET_CONFIG: "on_set_config",
        vu.RESET_DEVICE: "on_reset_device",
        vu.GET_MAX_MEM_SLOTS: "on_get_max_mem_slots",
        vu.ADD_MEM_REG: "on_add_mem_reg",
        vu.REM_MEM_REG: "on_rem_mem_reg",
        vu.SET_STATUS: "on_set_status",
        vu.GET_STATUS: "on_get_status",
        vu.GET_INFLIGHT_FD: "on_get_inflight_fd",
        vu.SET_INFLIGHT_FD: "on_set_inflight_fd",
    }

    def __init__(self, device, channel: Channel, *, timeout: float = 5.0, log=None):
        self.device = device
        self.channel = channel
        self.timeout = timeout
        self._log_file = log if log is not None else sys.stderr
        self.mem = BackendMemory()
        self.rings = [Ring(i) for i in range(device.num_queues)]
        self._call_fds = [-1] * device.num_queues  # read on every interrupt: a plain list
        self.features = 0  # SET_FEATURES, as sent (bit 30 included)
        self.protocol_features = 0  # SET_PROTOCOL_FEATURES
        self.owner = False
        self.backend_channel: Channel | None = None
        self._backend_lock = threading.Lock()
        self.sel = selectors.DefaultSelector()
        # Written by request_config_change (from a signal handler or another thread), read by run.
        self._config_change_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.config_changes = 0
        self.requests = 0
        self.failures = 0
        self.stray_interrupts = 0
        self.inflight: InflightBuffer | None = None  # SET_INFLIGHT_FD's buffer, mapped
        self._inflight_map: mmap.mmap | None = None
        # A vhost-user device has no queue maximum in the protocol: the front-end picks the size
        # (QEMU up to 1024). Lift the model's own limit for this instance, up to the spec's.
        if getattr(device, "queue_size_max", MAX_QUEUE_SIZE) < MAX_QUEUE_SIZE:
            device.queue_size_max = MAX_QUEUE_SIZE
        device.attach(self.mem, self)

    # -- logging ---------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        try:
            print(f"vhost-user backend: {text}", file=self._log_file, flush=True)
        except (OSError, ValueError):
            pass

    # -- negotiated state ----------------------------------------------------------------------
    def has_protocol(self, bit: int) -> bool:
        return bool(self.protocol_features >> bit & 1)

    @property
    def protocol_negotiated(self) -> bool:
        """VHOST_USER_F_PROTOCOL_FEATURES acked in SET_FEATURES."""
        return bool(self.features & BIT_PROTOCOL_FEATURES)

    @property
    def device_features(self) -> int:
        """The VIRTIO features the front-end accepted (the vhost-user bit 30 taken out)."""
        return self.features & ~BIT_PROTOCOL_FEATURES

    def packed(self) -> bool:
        return bool(self.features >> C.VIRTIO_F_RING_PACKED & 1)

    def ring(self, index: int) -> Ring:
        if not 0 <= index < len(self.rings):
            raise RequestFailed(f"vring {index} does not exist (the device has {len(self.rings)} queues)")
        return self.rings[index]

    # -- bus: the model's notifications ---------------------------------------------------------
    def interrupt_vq(self, index: int) -> None:
        fd = self._call_fds[index]
        if fd < 0:
            self.stray_interrupts += 1
            return
        try:
            os.eventfd_write(fd, 1)
        except OSError:
            self.stray_interrupts += 1

    def interrupt_config(self) -> None:
        """Config change or DEVICE_NEEDS_RESET: BACKEND_CONFIG_CHANGE_MSG on the back-end channel
        when CONFIG is negotiated; a needs-reset also signals every ring's error eventfd."""
        if self.device.get_status() & C.DEVICE_NEEDS_RESET:
            for ring in self.rings:
                if ring.err_fd >= 0:
                    try:
                        os.eventfd_write(ring.err_fd, 1)
                    except OSError:
                        pass
        chan = self.backend_channel
        if chan is None or not self.has_protocol(vu.PROTOCOL_F_CONFIG):
            return
        with self._backend_lock:
            try:
                chan.send(vu.Message(vu.BACKEND_CONFIG_CHANGE_MSG, vu.VERSION))
            except (OSError, vu.ProtocolError) as e:
                self.log(f"BACKEND_CONFIG_CHANGE_MSG not sent: {e}")

    # -- the session loop -----------------------------------------------------------------------
    def run(self) -> str:
        """Serve until the front-end goes; returns why the session ended."""
        self.sel.register(self.channel.sock, selectors.EVENT_READ, None)
        self.sel.register(self._config_change_fd, selectors.EVENT_READ, CONFIG_CHANGE)
        try:
            while True:
                polling = [r for r in self.rings if r.polling and r.queue is not None]
                for key, _ in self.sel.select(POLL_INTERVAL if polling else None):
                    ring = key.data
                    if ring is None:
                        self._serve_messages()
                    elif ring is CONFIG_CHANGE:
                        self._on_config_change()
                    elif ring.kick_fd == key.fd:  # else the fd went away earlier in this batch
                        self._on_kick(ring)
                for ring in polling:
                    self.service(ring)
        except SessionEnd as e:
            return str(e)

    # -- out-of-band configuration change ---------------------------------------------------------
    def request_config_change(self) -> None:
        """Ask for a device config change (a resize, a link flap); safe from a signal handler or
        another thread: the session loop carries it out between requests."""
        os.eventfd_write(self._config_change_fd, 1)

    def _on_config_change(self) -> None:
        try:
            count = os.eventfd_read(self._config_change_fd)
        except (BlockingIOError, InterruptedError):
            return
        for _ in range(count):
            try:
                # The model changes its config under its lock; with DRIVER_OK it calls
                # interrupt_config, which sends BACKEND_CONFIG_CHANGE_MSG on the back-end channel.
                self.device.change_config()
            except NotImplementedError as e:
                self.log(f"config change asked for, but {e}")
                return
            except Exception as e:  # a broken model must not end the session
                self.log(f"config change failed: {type(e).__name__}: {e}")
                return
            self.config_changes += 1
        self.log(f"device config changed ({self.config_changes} so far)")

    def _serve_messages(self) -> None:
        while True:
            try:
                msg = self.channel.recv(self.timeout, "a front-end request")
            except vu.PeerClosed:
                raise SessionEnd("front-end closed the connection") from None
            except vu.ProtocolError as e:
                raise SessionEnd(f"not a vhost-user message: {e}") from None
            if msg.flags & vu.FLAG_VERSION_MASK != vu.VERSION or msg.is_reply:
                msg.close_fds()
                raise SessionEnd(f"header flags {msg.flags:#x} are not those of a version-1 request: {msg.raw()[:64].hex(' ')}")
            self.handle(msg)
            if not self.channel.pending():
                return

    def _on_kick(self, ring: Ring) -> None:
        try:
            os.eventfd_read(ring.kick_fd)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.log(f"vring {ring.index}: kick fd read failed ({e}); ring stopped")
            self._set_kick(ring, -1)
            return
        if ring.queue is not None:
            self.service(ring)
        elif not ring.started:
            ring.started = True  # "start ring upon receiving a kick"
            self._try_update()

    def notify(self, index: int) -> None:
        """Available buffer notification to the model. A device model that raises is a broken
        device, not a broken server: it is marked DEVICE_NEEDS_RESET and the session goes on."""
        try:
            self.device.notify(index)
        except Exception as e:
            self.log(f"vring {index}: the device raised {type(e).__name__}: {e}; DEVICE_NEEDS_RESET")
            try:
                self.device.needs_reset()
            except Exception:
                pass

    # -- dispatch ---------------------------------------------------------------------------------
    def handle(self, msg: vu.Message) -> None:
        self.requests += 1
        name = self.HANDLERS.get(msg.request)
        body, ok, fds = None, True, []
        try:
            if name is None:
                raise RequestFailed(f"{msg.name} is not a request this back-end implements")
            body = getattr(self, name)(msg)
            if isinstance(body, tuple):  # a reply carrying fds (GET_INFLIGHT_FD)
                body, fds = body
            self.update_rings()
        except (RequestFailed, GuestMemoryError, vu.ProtocolError, ValueError, IndexError, OverflowError, struct.error) as e:
            ok = False
            self.failures += 1
            self.log(f"{msg.name} refused: {e}")
        except SessionEnd:
            raise
        except Exception as e:  # OSError from fds, or a model that raises: refuse, keep serving
            ok = False
            self.failures += 1
            self.log(f"{msg.name} refused: {type(e).__name__}: {e}")
        finally:
            msg.close_fds()  # fds a handler did not take
        if msg.request in vu.REPLY_REQUESTS:
            # The reply is part of the request; on failure an empty body (for GET_CONFIG the spec's
            # own error signal), which no front-end can mistake for a valid answer.
            try:
                self.reply(msg, body if ok and body is not None else b"", fds if ok else [])
            finally:
                for fd in fds:
                    _close(fd)
        elif msg.need_reply:
            # REPLY_ACK: u64 0 on success, non-zero on failure. Answered whenever the front-end
            # asks (as qemu-storage-daemon and DPDK do): a sender that sets the flag waits.
            self.reply(msg, vu.U64.pack(0 if ok else 1))

    def reply(self, msg: vu.Message, payload: bytes, fds: list[int] | None = None) -> None:
        try:
            self.channel.send(vu.Message(msg.request, vu.VERSION | vu.FLAG_REPLY, payload, fds or []))
        except vu.ProtocolError as e:
            raise SessionEnd(f"reply to {msg.name} not sent: {e}") from None

    # -- features --------------------------------------------------------------------------------
    def on_get_features(self, msg: vu.Message) -> bytes:
        offered = int(self.device.get_device_features()) & ((1 << 64) - 1)
        return vu.U64.pack(offered | BIT_PROTOCOL_FEATURES)

    def on_set_features(self, msg: vu.Message) -> None:
        features = msg.u64()
        self.features = features
        if self.has_protocol(vu.PROTOCOL_F_STATUS):
            # The front-end drives the status (SET_STATUS); FEATURES_OK decides.
            self.device.set_driver_features(self.device_features)
            return
        self._drive_features()

    def _drive_features(self) -> None:
        """Without the STATUS protocol feature nobody else negotiates with the model: do it as a
        driver would (3.1.1 steps 1-5) with what SET_FEATURES carried."""
        dev = self.device
        with dev.lock:
            status = dev.get_status()
            if status & C.FEATURES_OK:
                if dev.driver_features == self.device_features:
                    return
                if status & C.DRIVER_OK:
                    raise RequestFailed("features cannot change while the device runs")
                self._reset_model()
            dev.set_status(C.ACKNOWLEDGE | C.DRIVER)
            dev.set_driver_features(self.device_features)
            dev.set_status(C.ACKNOWLEDGE | C.DRIVER | C.FEATURES_OK)
            if not dev.get_status() & C.FEATURES_OK:
                self._reset_model()
                raise RequestFailed(f"the device refused features {self.device_features:#x}")

    def on_get_protocol_features(self, msg: vu.Message) -> bytes:
        return vu.U64.pack(self.PROTOCOL_FEATURES)

    def on_set_protocol_features(self, msg: vu.Message) -> None:
        wanted = msg.u64()
        if wanted & ~self.PROTOCOL_FEATURES:
            raise RequestFailed(f"protocol features {wanted & ~self.PROTOCOL_FEATURES:#x} were not offered")
        self.protocol_features = wanted

    def on_set_owner(self, msg: vu.Message) -> None:
        self.owner = True

    def on_reset_owner(self, msg: vu.Message) -> None:
        """Deprecated; the spec recommends ignoring it or disabling all rings: we stop them."""
        for ring in self.rings:
            self._stop(ring)

    def on_reset_device(self, msg: vu.Message) -> None:
        """Disable all rings and reset all device state; ownership and memory stay."""
        for ring in self.rings:
            self._stop(ring)
            self._forget(ring)
        self.features = 0
        self._reset_model()

    def _reset_model(self) -> None:
        with self.device.lock:
            self.device.set_status(0)
            for ring in self.rings:
                ring.queue = None
                ring.base = 0
                ring.resubmit = None
            if self.inflight is not None:  # after a reset nothing is in flight
                for region in self.inflight.queues:
                    region.init()

    # -- memory ----------------------------------------------------------------------------------
    def on_set_mem_table(self, msg: vu.Message) -> None:
        regions = vu.unpack_mem_table(msg.payload)
        with self.device.lock:
            states = self._detach_all()
            try:
                self.mem.set_table(regions, msg.fds)  # the mappings keep what they need
            finally:
                self._reattach_all(states)

    def on_get_max_mem_slots(self, msg: vu.Message) -> bytes:
        return vu.U64.pack(MAX_MEM_SLOTS)

    def on_add_mem_reg(self, msg: vu.Message) -> None:
        region = vu.unpack_single_region(msg.payload)
        if len(msg.fds) != 1:
            raise RequestFailed(f"ADD_MEM_REG needs exactly one fd, got {len(msg.fds)}")
        with self.device.lock:
            states = self._detach_all()
            try:
                self.mem.add_region(region, msg.fds[0])
            finally:
                self._reattach_all(states)

    def on_rem_mem_reg(self, msg: vu.Message) -> None:
        # An fd, if any, is closed unused (vhost-user.rst allows it for old front-ends).
        region = vu.unpack_single_region(msg.payload)
        with self.device.lock:
            states = self._detach_all()
            try:
                self.mem.remove_region(region)
            finally:
                self._reattach_all(states)

    def _detach_all(self) -> list[Ring]:
        """Running rings hold typed views into the mappings: take them off before a change."""
        running = [r for r in self.rings if r.queue is not None]
        for ring in running:
            self._deactivate(ring)
        return running

    def _reattach_all(self, rings: list[Ring]) -> None:
        for ring in rings:
            try:
                self._activate(ring)
            except (RequestFailed, GuestMemoryError, ValueError) as e:
                self.log(f"vring {ring.index} stopped: its memory is gone ({e})")
                self._stop(ring)

    # -- vring configuration --------------------------------------------------------------------
    def _stopped_ring(self, msg: vu.Message) -> tuple[Ring, int]:
        """The ring a vring state names, refused while it runs; and the state's num."""
        index, num = _state(msg)
        ring = self.ring(index)
        if ring.queue is not None:
            raise RequestFailed(f"vring {index} is running")
        return ring, num

    def on_set_vring_num(self, msg: vu.Message) -> None:
        ring, num = self._stopped_ring(msg)
        index = ring.index
        if not 1 <= num <= MAX_QUEUE_SIZE:
            raise RequestFailed(f"vring {index}: size {num} outside 1..{MAX_QUEUE_SIZE}")
        if not self.packed() and num & (num - 1):
            raise RequestFailed(f"vring {index}: split ring size {num} is not a power of 2 (VIRTIO 2.7)")
        ring.num = num

    def _ring_areas(self, ring: Ring, desc: int, used: int, avail: int) -> list[tuple[str, int, int, int]]:
        """(what, user address, length, alignment) of the descriptor, driver and device areas
        (2.7 / 2.8 layouts), in that order."""
        n = ring.num
        if self.packed():
            return [("descriptor ring", desc, packed.ring_size(n), packed.DESC_ALIGN),
                    ("driver area", avail, packed.EVENT_SUPPRESS_SIZE, packed.EVENT_ALIGN),
                    ("device area", used, packed.EVENT_SUPPRESS_SIZE, packed.EVENT_ALIGN)]
        return [("descriptor table", desc, split.desc_table_size(n), split.DESC_ALIGN),
                ("available ring", avail, split.avail_size(n), split.AVAIL_ALIGN),
                ("used ring", used, split.used_size(n), split.USED_ALIGN)]

    def _guest_addrs(self, ring: Ring) -> RingAddrs:
        flags, desc, used, avail = ring.addr
        g = []
        for what, uaddr, length, align in self._ring_areas(ring, desc, used, avail):
            try:
                g.append(self.mem.user_to_guest(uaddr, length))
            except GuestMemoryError as e:
                raise RequestFailed(f"vring {ring.index}: {what}: {e}") from None
            if g[-1] % align:
                raise RequestFailed(f"vring {ring.index}: {what} at guest {g[-1]:#x} is not {align}-byte aligned")
        return RingAddrs(ring.num, *g)

    def on_set_vring_addr(self, msg: vu.Message) -> None:
        if len(msg.payload) < vu.VRING_ADDR.size:
            raise RequestFailed(f"vring address payload of {len(msg.payload)} bytes")
        index, flags, desc, used, avail, _log = vu.VRING_ADDR.unpack_from(msg.payload)
        ring = self.ring(index)
        if ring.num == 0:
            raise RequestFailed(f"vring {index}: SET_VRING_ADDR before SET_VRING_NUM")
        old = ring.addr
        ring.addr = (flags, desc, used, avail)
        try:
            self._guest_addrs(ring)  # refuse now what cannot be mapped
        except RequestFailed:
            ring.addr = old
            raise
        if ring.queue is not None:  # on the fly (e.g. the log flag): keep the ring's state
            with self.device.lock:
                self._deactivate(ring)
                self._activate(ring)

    def on_set_vring_base(self, msg: vu.Message) -> None:
        ring, num = self._stopped_ring(msg)
        if not self.packed() and num > 0xFFFF:
            raise RequestFailed(f"vring {ring.index}: split ring base {num:#x} above 16 bits")
        ring.base = num

    def on_get_vring_base(self, msg: vu.Message) -> bytes:
        """Stops the ring and returns where it stands: the next available index (split), or for a
        packed ring the last avail index and wrap counter, and the used ones (bits 16-31)."""
        index, _ = _state(msg)
        ring = self.ring(index)
        self._stop(ring)
        return vu.VRING_STATE.pack(index, ring.base)

    def _take_fd(self, msg: vu.Message) -> tuple[Ring, int]:
        """SET_VRING_KICK/CALL/ERR: the ring and its fd (-1 with the no-fd flag)."""
        value = msg.u64()
        if value & ~(vu.VRING_IDX_MASK | vu.VRING_NOFD_MASK):
            raise RequestFailed(f"{msg.name}: reserved bits set in {value:#x}")
        ring = self.ring(value & vu.VRING_IDX_MASK)
        if value & vu.VRING_NOFD_MASK:
            return ring, -1
        if len(msg.fds) != 1:
            raise RequestFailed(f"{msg.name} for vring {ring.index}: expected one fd, got {len(msg.fds)}")
        fd = msg.fds.pop()
        os.set_blocking(fd, False)
        return ring, fd

    def on_set_vring_kick(self, msg: vu.Message) -> None:
        ring, fd = self._take_fd(msg)
        self._set_kick(ring, fd)
        ring.polling = fd < 0
        ring.started = True  # the ring starts with its kick fd (or with polling)

    def _set_kick(self, ring: Ring, fd: int) -> None:
        if ring.kick_fd >= 0:
            self.sel.unregister(ring.kick_fd)
            _close(ring.kick_fd)
        ring.kick_fd = fd
        if fd >= 0:
            self.sel.register(fd, selectors.EVENT_READ, ring)

    def on_set_vring_call(self, msg: vu.Message) -> None:
        ring, fd = self._take_fd(msg)
        self._set_call(ring, fd)

    def _set_call(self, ring: Ring, fd: int) -> None:
        with self.device.lock:  # the model signals under its lock: no write races the close
            old, ring.call_fd = ring.call_fd, fd
            self._call_fds[ring.index] = fd
        _close(old)

    def on_set_vring_err(self, msg: vu.Message) -> None:
        ring, fd = self._take_fd(msg)
        with self.device.lock:
            old, ring.err_fd = ring.err_fd, fd
        _close(old)

    def on_set_vring_enable(self, msg: vu.Message) -> None:
        index, num = _state(msg)
        if num not in (0, 1):
            raise RequestFailed(f"vring {index}: enable value {num} is neither 0 nor 1")
        self.ring(index).enabled = bool(num)

    def on_get_queue_num(self, msg: vu.Message) -> bytes:
        return vu.U64.pack(len(self.rings))

    # -- ring life cycle ---------------------------------------------------------------------------
    def enabled(self, ring: Ring) -> bool:
        """vhost-user.rst "Ring states": without VHOST_USER_F_PROTOCOL_FEATURES a ring starts
        enabled; with it, disabled until SET_VRING_ENABLE 1."""
        if ring.enabled is not None:
            return ring.enabled
        return not self.protocol_negotiated

    def discards_while_disabled(self, ring: Ring) -> bool:
        """vhost-user.rst "Ring states": a started but disabled ring is processed without side
        effects -- for a net device, no new RX packets, but TX packets processed and discarded.
        So a net transmit queue (odd index; the control queue's index is even) is drained while
        disabled; other rings are left untouched (held), which has no side effect either."""
        return self.device.device_id == C.VIRTIO_ID_NET and ring.index % 2 == 1

    def ring_mode(self, ring: Ring) -> str | None:
        """"run", "discard" (started but disabled, see discards_while_disabled) or None."""
        if not (ring.started and ring.addr is not None and ring.num):
            return None
        if self.has_protocol(vu.PROTOCOL_F_STATUS) and not self.device.get_status() & C.DRIVER_OK:
            return None
        if self.enabled(ring):
            return "run"
        return "discard" if self.discards_while_disabled(ring) else None

    def update_rings(self) -> None:
        """Bring the model's queues in line with the ring states after a request."""
        for ring in self.rings:
            if ring.queue is not None and self.device.queue(ring.index) is not ring.queue:
                ring.queue = None  # the model dropped it (reset)
            mode = self.ring_mode(ring)
            ring.discarding = mode == "discard"
            if mode and ring.queue is None:
                self._activate(ring)
                self.service(ring)  # kicks read while it was not running
            elif not mode and ring.queue is not None:
                with self.device.lock:
                    self._deactivate(ring)

    def service(self, ring: Ring) -> None:
        """A kick (or a poll) of an active ring: the model processes it, or, while it is
        disabled, its buffers are discarded."""
        if ring.discarding:
            self._discard(ring)
        else:
            self.notify(ring.index)

    def _discard(self, ring: Ring) -> None:
        """Consume every available buffer as used with length 0, nothing carried out."""
        dev = self.device
        with dev.lock:
            q = ring.queue
            if q is None or dev.queue(ring.index) is not q:
                return
            try:
                while (chain := q.pop()) is not None:
                    q.push(chain.head, 0)
            except ChainError as e:  # a broken chain: the device reports it (2.1.2)
                self.log(f"vring {ring.index}: discarding while disabled failed ({type(e).__name__}: {e}); DEVICE_NEEDS_RESET")
                dev.needs_reset()
                return
            dev.signal(ring.index)

    def _try_update(self) -> None:
        try:
            self.update_rings()
        except (RequestFailed, GuestMemoryError, ValueError) as e:
            self.log(f"ring not started: {e}")

    def _activate(self, ring: Ring) -> None:
        addrs = self._guest_addrs(ring)
        dev = self.device
        with dev.lock:
            if not self.has_protocol(vu.PROTOCOL_F_STATUS) and not dev.get_status() & C.DRIVER_OK:
                # No STATUS: the first ring start is the driver's DRIVER_OK (3.1.1 step 8).
                if not dev.get_status() & C.FEATURES_OK:
                    self._drive_features()
                dev.set_status(STATUS_BEFORE_DRIVER_OK | C.DRIVER_OK)
            q = dev.attach_queue(ring.index, addrs)
            if q is None:
                raise RequestFailed(f"vring {ring.index}: the device did not start the queue (status {dev.get_status():#x})")
            q.set_state(self._base_state(q, ring.base))
            self._track_inflight(ring, q)
            ring.queue = q

    def _deactivate(self, ring: Ring) -> None:
        """Take the ring off the model, keeping its state in ``ring.base`` (caller holds the lock)."""
        dev = self.device
        q = ring.queue
        if q is not None and dev.queue(ring.index) is q:
            ring.base = self._queue_base(q)
            dev.detach_queue(ring.index)
        ring.queue = None

    def _stop(self, ring: Ring) -> None:
        """GET_VRING_BASE: stop the ring; its kick and call fds are dropped (a restart brings
        new ones, as with QEMU)."""
        dev = self.device
        with dev.lock:
            self._deactivate(ring)
            # Buffers the device held are dropped, as the model's own queue reset does: after a
            # stop the front-end owns them again, and a restart must not complete them.
            dev.forget_buffers(ring.index)
        ring.started = False
        ring.polling = False
        ring.resubmit = None  # what it held is in flight again: checked at the next start
        self._set_kick(ring, -1)
        self._set_call(ring, -1)

    def _forget(self, ring: Ring) -> None:
        with self.device.lock:
            _close(ring.err_fd)
        ring.err_fd = -1
        ring.num, ring.addr, ring.base, ring.enabled = 0, None, 0, None

    @staticmethod
    def _queue_base(q) -> int:
        """GET_VRING_BASE's num for the queue's state (vhost-user.rst: split, the next avail
        index; packed, avail index | wrap << 15 and the used ones in bits 16-31)."""
        st = q.state()
        if q.layout == "packed":
            return vu.vring_base_packed(st.next_avail, int(st.avail_wrap_counter), st.next_used, int(st.used_wrap_counter))
        return st.next_avail & 0xFFFF

    @staticmethod
    def _base_state(q, num: int) -> QueueState:
        """The state SET_VRING_BASE's ``num`` gives the queue ``q`` (see _queue_base)."""
        st = q.state()
        if q.layout == "packed":
            avail, avail_wrap, used, used_wrap = vu.split_vring_base_packed(num)
            if num >> 16 == 0:  # only the avail half given (QEMU before 8.x): nothing in flight
                used, used_wrap = avail, avail_wrap
            st.next_avail, st.avail_wrap_counter = avail, bool(avail_wrap)
            st.next_used, st.used_wrap_counter = used, bool(used_wrap)
        else:
            st.next_avail = num & 0xFFFF
            # The used index lives in the ring (the front-end zeroes it for a fresh ring).
            st.next_used = q.published_used()
        return st

    # -- inflight I/O tracking (vhost-user.rst "Inflight I/O tracking") ------------------------------
    def _inflight_head(self, msg: vu.Message) -> tuple[int, int, int, int]:
        if not self.has_protocol(vu.PROTOCOL_F_INFLIGHT_SHMFD):
            raise RequestFailed("VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD was not negotiated")
        if len(msg.payload) < vu.INFLIGHT.size - 4:  # the 4 bytes of tail padding may be missing
            raise RequestFailed(f"inflight description of {len(msg.payload)} bytes")
        size, offset, num_queues, queue_size = vu.INFLIGHT.unpack_from(msg.payload.ljust(vu.INFLIGHT.size, b"\0"))
        if self.packed():
            raise RequestFailed("the packed-ring inflight layout is not implemented by this back-end")
        if not 1 <= num_queues <= len(self.rings) or not 1 <= queue_size <= 0x8000:
            raise RequestFailed(f"inflight for {num_queues} queues of {queue_size} (device has {len(self.rings)} queues, split sizes up to 32768)")
        return size, offset, num_queues, queue_size

    def on_get_inflight_fd(self, msg: vu.Message):
        """A fresh shared buffer for ``num_queues`` queues of ``queue_size``, nothing in flight."""
        _, _, num_queues, queue_size = self._inflight_head(msg)
        size = num_queues * queue_region_size_split(queue_size)
        fd = os.memfd_create("vhost-user-inflight", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            with mmap.mmap(fd, size) as m:
                buf = InflightBuffer(m, num_queues, queue_size)
                for q in buf.queues:
                    q.init()
                del buf, q  # the views go before the mapping closes
        except BaseException:
            _close(fd)
            raise
        return vu.INFLIGHT.pack(size, 0, num_queues, queue_size), [fd]

    def on_set_inflight_fd(self, msg: vu.Message) -> None:
        """The buffer to track in from now on (the front-end's copy, possibly an earlier
        back-end's); checked for size, mapped, read when each ring starts."""
        size, offset, num_queues, queue_size = self._inflight_head(msg)
        if len(msg.fds) != 1:
            raise RequestFailed(f"SET_INFLIGHT_FD needs exactly one fd, got {len(msg.fds)}")
        if any(r.queue is not None for r in self.rings):
            raise RequestFailed("SET_INFLIGHT_FD while rings run")
        need = num_queues * queue_region_size_split(queue_size)
        if size < need or offset % mmap.PAGESIZE:
            raise RequestFailed(f"inflight mmap_size {size} / offset {offset}: {need} bytes at a page-aligned offset needed")
        st = os.fstat(msg.fds[0])
        if st.st_size < offset + size:  # touching pages past the file's end would be SIGBUS
            raise RequestFailed(f"inflight fd has {st.st_size} bytes, mmap_size {size} at offset {offset} asked")
        m = mmap.mmap(msg.fds[0], size, offset=offset)
        self._drop_inflight()
        self._inflight_map = m
        self.inflight = InflightBuffer(m, num_queues, queue_size)
        for ring in self.rings:
            ring.resubmit = None

    def _track_inflight(self, ring: Ring, q) -> None:
        """At a ring start with a buffer set: the first time since it (re)started, recover the
        region (libvhost-user's order: the next avail index is used idx plus what is in flight,
        which is resubmitted first); then the queue records what it takes and completes."""
        region = self.inflight.queue(ring.index) if self.inflight is not None else None
        if region is None or q.layout != "split":
            return
        if ring.resubmit is None:
            if not region.valid():
                self.log(f"vring {ring.index}: inflight region version {int(region.version[0])} desc_num {int(region.desc_num[0])}, "
                         f"queue size {region.queue_size}: started afresh")
                region.init()
            if ring.num != region.queue_size:
                self.log(f"vring {ring.index}: size {ring.num}, inflight region for {region.queue_size}: not tracked")
                return
            st = q.state()
            ring.resubmit = region.recover(st.next_used)
            st.next_avail = (st.next_used + len(ring.resubmit)) & 0xFFFF
            q.set_state(st)
            if ring.resubmit:
                self.log(f"vring {ring.index}: resubmitting in-flight heads {ring.resubmit}")
        elif ring.num != region.queue_size:
            return
        q.track_inflight(region, ring.resubmit)

    def _drop_inflight(self) -> None:
        self.inflight = None
        if self._inflight_map is not None:
            try:
                self._inflight_map.close()
            except BufferError:  # a queue view still alive: the mapping goes with it
                pass
            self._inflight_map = None

    # -- configuration space -------------------------------------------------------------------
    def _config_head(self, msg: vu.Message) -> tuple[int, int, int]:
        if not self.has_protocol(vu.PROTOCOL_F_CONFIG):
            raise RequestFailed("VHOST_USER_PROTOCOL_F_CONFIG was not negotiated")
        if len(msg.payload) < vu.CONFIG_HEAD.size:
            raise RequestFailed(f"config payload of {len(msg.payload)} bytes")
        offset, size, flags = vu.CONFIG_HEAD.unpack_from(msg.payload)
        if offset + size > vu.CONFIG_MAX or len(msg.payload) != vu.CONFIG_HEAD.size + size:
            raise RequestFailed(f"config access offset {offset} size {size} in a {len(msg.payload)}-byte payload")
        return offset, size, flags

    def on_get_config(self, msg: vu.Message) -> bytes:
        offset, size, flags = self._config_head(msg)
        data = bytes(self.device.config_read(offset, size))[:size]
        return vu.CONFIG_HEAD.pack(offset, size, flags) + data + bytes(size - len(data))

    def on_set_config(self, msg: vu.Message) -> None:
        offset, size, _flags = self._config_head(msg)
        # The model keeps read-only fields as they are (vhost-user.rst: MUST NOT accept them).
        self.device.config_write(offset, msg.payload[vu.CONFIG_HEAD.size :])

    # -- status ----------------------------------------------------------------------------------
    def on_set_status(self, msg: vu.Message) -> None:
        if not self.has_protocol(vu.PROTOCOL_F_STATUS):
            raise RequestFailed("VHOST_USER_PROTOCOL_F_STATUS was not negotiated")
        status = msg.u64()
        if status > 0xFF:
            raise RequestFailed(f"status {status:#x} above 8 bits")
        if status == 0:
            self._reset_model()
            return
        self.device.set_status(status)

    def on_get_status(self, msg: vu.Message) -> bytes:
        if not self.has_protocol(vu.PROTOCOL_F_STATUS):
            raise RequestFailed("VHOST_USER_PROTOCOL_F_STATUS was not negotiated")
        return vu.U64.pack(int(self.device.get_status()) & 0xFF)

    # -- back-end channel --------------------------------------------------------------------------
    def on_set_backend_req_fd(self, msg: vu.Message) -> None:
        if not self.has_protocol(vu.PROTOCOL_F_BACKEND_REQ):
            raise RequestFailed("VHOST_USER_PROTOCOL_F_BACKEND_REQ was not negotiated")
        if len(msg.fds) != 1:
            raise RequestFailed(f"expected one fd, got {len(msg.fds)}")
        fd = msg.fds.pop()
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            _close(fd)
            raise
        if sock.family != socket.AF_UNIX:
            sock.close()
            raise RequestFailed("the back-end request fd is not a UNIX socket")
        sock.settimeout(1.0)  # a front-end that stops reading must not stall the device
        with self._backend_lock:
            old, self.backend_channel = self.backend_channel, Channel(sock, "front-end (back-end channel)")
        if old is not None:
            old.close()

    # -- teardown ----------------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.device.detach()
        except Exception as e:  # a broken device must not keep the server from the next session
            self.log(f"device detach failed: {type(e).__name__}: {e}")
        for ring in self.rings:
            with self.device.lock:
                self._deactivate(ring)
            for fd in (ring.kick_fd, ring.call_fd, ring.err_fd):
                _close(fd)
            ring.kick_fd = ring.call_fd = ring.err_fd = -1
        self._call_fds = [-1] * len(self.rings)
        if self.backend_channel is not None:
            self.backend_channel.close()
        self.sel.close()
        self._drop_inflight()
        _close(self._config_change_fd)
        self._config_change_fd = -1
        self.channel.close()
        self.mem.clear()
