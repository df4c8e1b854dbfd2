"""The device-side API of a model device, and the behaviour common to every device type.

A model is what a user's ``python:`` factory also returns: an object with this interface (subclass
Device, or duck-type it). The transport side (targets/model/transport.py) calls the methods in the
"driver-visible" section, the way a virtio-pci device's common configuration would be accessed;
the device calls ``self.bus.interrupt_vq(i)`` / ``self.bus.interrupt_config()`` to notify the driver.

Duties implemented here: status field (2.1), feature negotiation (2.2, 3.1), device reset (2.4),
configuration space and generation (2.5), virtqueue processing and notification suppression (2.7).

Queues are DeviceQueue objects (device_queue.py), built by ``make_queue`` in the negotiated layout.
A host that runs the device's queues itself -- the vhost-user back-end, which learns ring addresses
and positions from its front-end -- uses these, never ``queues``/``queues_cfg``/``held`` directly:
``queue(i)`` (the running queue or None), ``attach_queue(i, addrs, state=None)`` (queue_set +
queue_enable, optionally at a QueueState), ``detach_queue(i) -> QueueState | None`` (stop it, held
buffers kept), ``forget_buffers(i)`` (drop what the device holds on it, as a queue reset does), and
the queue's own ``state()``/``set_state()``/``track_inflight()``.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from virtio import constants as C
from virtio.areas import RingAddrs
from virtio.buffers import ChainError, DeviceChain
from virtio.config_layout import CONFIG_LAYOUTS
from virtio.memory import GuestMemory
from virtio.queue_state import QueueState
from virtio.split import MAX_QUEUE_SIZE

from .device_queue import DeviceQueue
from .packed_ring import DevicePackedQueue
from .split_ring import DeviceSplitQueue

MODES = ("notify", "threaded")
_BATCH_OK: dict[type, bool] = {}  # per device class: may handle_batch serve its queues?


class InOrderBatcher:
    """Completions of one process_queue pass grouped into the batches VIRTIO_F_IN_ORDER allows
    (2.7.9 split, 2.8.8 packed): one used entry per batch, naming its last buffer with that
    buffer's len, written where the batch's first buffer was made available. The buffers before
    the last are "assumed to have been used ... completely", so a buffer whose used len is less
    than its writable length always ends its batch; and a batch holds at most ``size()`` buffers
    (0: no limit), asked anew for each batch."""

    def __init__(self, queue, size):
        self.queue = queue
        self.size = size
        self.heads: list[int] = []
        self.last_len = 0
        self.limit = size()

    def add(self, head: int, length: int, writable: int) -> None:
        self.heads.append(head)
        self.last_len = length
        if length != writable or len(self.heads) == self.limit:
            self.flush()

    def add_run(self, heads: np.ndarray, lens: np.ndarray, writable: np.ndarray) -> None:
        """``add`` for a run from pop_simple, vectorized when the batch size is not limited."""
        if self.limit:
            for h, n, w in zip(heads.tolist(), lens.tolist(), writable.tolist()):
                self.add(h, n, w)
            return
        ends = np.flatnonzero(lens != writable)  # each partly used buffer ends a batch
        if self.heads:
            k = len(self.heads)
            heads = np.concatenate((np.array(self.heads, dtype=np.intp), heads))
            lens = np.concatenate((np.zeros(k, dtype=lens.dtype), lens))
            ends = ends + k
            self.heads = []
        cut = int(ends[-1]) + 1 if len(ends) else 0
        if cut:
            self.queue.push_in_order_run(heads[:cut], ends, lens[ends])
        if cut < len(heads):  # used completely: the batch may go on in the next run
            self.heads = heads[cut:].tolist()
            self.last_len = int(lens[-1])

    def flush(self) -> None:
        if self.heads:
            heads = np.array(self.heads, dtype=np.intp)
            self.queue.push_in_order_run(heads, np.array([len(heads) - 1], dtype=np.intp), np.array([self.last_len], dtype=np.uint32))
            self.heads = []
            self.limit = self.size()


class NullBus:
    """Where notifications go when no transport is attached."""

    def interrupt_vq(self, index: int) -> None:
        pass

    def interrupt_config(self) -> None:
        pass


@dataclass
class QueueConfig:
    size: int = 0
    addrs: RingAddrs | None = None
    enabled: bool = False


class Device:
    """Base of every model device.

    Subclasses set ``device_id``, ``name``, ``num_queues``, ``features`` and implement
    ``handle(qindex, queue, chain) -> int | None``: the bytes written into the chain's writable
    part, or None to keep the chain for later (then call ``complete``). ``__init__`` calls
    ``initial_config()`` and ``on_reset()``, so a subclass sets its own state before super().__init__().
    """

    device_id = 0
    name = "device"
    num_queues = 1
    queue_size_max = 256
    features = 0  # offered feature bits
    # Always offered by our models unless a subclass says otherwise.
    base_features = (
        (1 << C.VIRTIO_F_VERSION_1)
        | (1 << C.VIRTIO_F_INDIRECT_DESC)
        | (1 << C.VIRTIO_F_EVENT_IDX)
        | (1 << C.VIRTIO_F_RING_PACKED)
        | (1 << C.VIRTIO_F_RING_RESET)
        | (1 << C.VIRTIO_F_IN_ORDER)
        | (1 << C.VIRTIO_F_NOTIFICATION_DATA)
        | (1 << C.VIRTIO_F_SUSPEND)
    )
    # With VIRTIO_F_IN_ORDER the model answers a batch of buffers with one used elem (split,
    # 2.7.9) or used descriptor (packed, 2.8.8): the most buffers one entry answers for, 0 for
    # no limit, 1 for one entry per buffer. See in_order_batch_size and InOrderBatcher.
    in_order_batch_max = 0
    # The device side of each layout's virtqueues (a mutant may set a subclass); make_queue picks.
    split_queue_class: type[DeviceQueue] = DeviceSplitQueue
    packed_queue_class: type[DeviceQueue] = DevicePackedQueue

    def __init__(self, mode: str = "notify"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.mem: GuestMemory | None = None
        self.bus = NullBus()
        self.lock = threading.RLock()
        self.layout = CONFIG_LAYOUTS.get(self.device_id)
        self.config = bytearray(self.initial_config())
        self.config_generation = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._kick = threading.Event()
        # per queue: "notifications" from the driver, "interrupts" sent (device statistics)
        self.queue_counters: defaultdict[int, Counter] = defaultdict(Counter)
        self.device_reset()

    # -- to override ------------------------------------------------------------------------------
    def initial_config(self) -> bytes:
        return b""

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int | None:
        raise NotImplementedError

    def on_reset(self) -> None:
        """Device-type state to forget on reset."""

    def on_driver_ok(self) -> None:
        """Called once when DRIVER_OK is set."""

    def offered_features(self) -> int:
        return self.features | self.base_features

    def accept_features(self, driver_features: int) -> bool:
        """2.2.2: refuse FEATURES_OK unless the accepted set is a subset of what was offered."""
        return driver_features & ~self.offered_features() == 0

    def shm_regions(self) -> dict[int, tuple[int, int]]:
        return {}

    # -- attachment -----------------------------------------------------------------------------
    def attach(self, mem: GuestMemory, bus) -> None:
        self.mem = mem
        self.bus = bus
        if self.mode == "threaded" and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._worker, name=f"model-{self.name}", daemon=True)
            self._thread.start()

    def detach(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.bus = NullBus()

    # -- driver-visible: status, features, config ---------------------------------------------
    def device_reset(self) -> None:
        pending = getattr(self, "deferred_config", None)
        with self.lock:
            self.status = 0
            self.driver_features = 0
            self.queues_cfg = [QueueConfig(size=self.queue_size_max) for _ in range(self.num_queues)]
            self.queues: list[DeviceQueue | None] = [None] * self.num_queues
            self.held: dict[int, dict[int, DeviceChain]] = {}
            self.notification_data_errors: list[str] = []
            if pending:
                self._apply_config(pending)  # the change happened; a reset drops only its notification
            self.deferred_config: dict = {}  # config changes made while suspended (3.4)
            self.on_reset()

    def get_device_features(self) -> int:
        return self.offered_features()

    def set_driver_features(self, features: int) -> None:
        with self.lock:
            if not self.status & C.FEATURES_OK:
                self.driver_features = features

    def get_status(self) -> int:
        return self.status

    def set_status(self, status: int) -> None:
        with self.lock:
            if status == 0:
                self.device_reset()
                return
            old = self.status
            if self.suspend_or_resume(old, status):
                return
            status &= ~C.SUSPEND  # 3.4.1: ignored before DRIVER_OK (and without VIRTIO_F_SUSPEND)
            if status & C.FEATURES_OK and not old & C.FEATURES_OK:
                if not self.accept_features(self.driver_features):
                    status &= ~C.FEATURES_OK  # 2.2.2: fail to set FEATURES_OK
            # DEVICE_NEEDS_RESET is the device's to set; only a reset clears it.
            self.status = status | (old & C.DEVICE_NEEDS_RESET)
            if status & C.DRIVER_OK and not old & C.DRIVER_OK:
                for i, qc in enumerate(self.queues_cfg):
                    if qc.enabled and qc.addrs is not None:
                        self.queues[i] = self.make_queue(i, qc.addrs)
                self.on_driver_ok()

    # -- device suspend (3.4) -------------------------------------------------------------------
    def suspended(self) -> bool:
        return bool(self.status & C.SUSPEND)

    def suspend_or_resume(self, old: int, status: int) -> bool:
        """3.4: SUSPEND written on a running device that negotiated VIRTIO_F_SUSPEND suspends it (under
        the lock, so no buffer is half processed: the used ones are all signalled already), and
        DRIVER_OK written on a suspended device resumes it. Returns whether ``status`` was one of those."""
        if not self.driver_features >> C.VIRTIO_F_SUSPEND & 1:
            return False
        if status & C.SUSPEND and old & C.DRIVER_OK and not old & C.SUSPEND:
            self.before_suspend()
            self.status = (old & ~C.DRIVER_OK) | C.SUSPEND
            return True
        if old & C.SUSPEND and status & C.DRIVER_OK:
            self.status = (old & ~C.SUSPEND) | C.DRIVER_OK
            self.resumed()
            return True
        return old & C.SUSPEND != 0  # other writes while suspended change nothing

    def before_suspend(self) -> None:
        """Hook (3.4.1, SHOULD): use the buffers still being processed, and notify, before suspending."""

    def resumed(self) -> None:
        """3.4.1: the config change made while suspended now takes effect and is notified; buffers
        made available meanwhile are processed."""
        if self.deferred_config:
            values, self.deferred_config = self.deferred_config, {}
            self.update_config(**values)
        if self.mode == "threaded":
            self._kick.set()
        else:
            for i in range(self.num_queues):
                if self.queues[i] is not None and self.queues[i].has_avail():
                    self.process_queue(i)

    def config_read(self, offset: int, length: int) -> bytes:
        with self.lock:
            data = bytes(self.config[offset : offset + length])
        return data + bytes(length - len(data))

    def config_write(self, offset: int, data: bytes) -> None:
        """Writes land only on fields the layout marks writable; the rest are read-only."""
        if self.layout is None:
            return
        with self.lock:
            if self.suspended():
                return  # 3.4.1: writes to the configuration space are ignored while suspended
            offered = self.offered_features()
            for f in self.layout.fields.values():
                if not f.exists(offered):
                    continue  # the field does not exist on this device (or is padding)
                if f.writable and offset <= f.offset and f.offset + f.size <= offset + len(data):
                    start = f.offset - offset
                    self.config[f.offset : f.offset + f.size] = data[start : start + f.size]
                    self.config_field_written(f.name)

    def config_field_written(self, name: str) -> None:
        pass

    def get_config_generation(self) -> int:
        return self.config_generation

    def update_config(self, **values) -> None:
        """Change config fields; the generation moves and the driver is notified (2.5, 4.1.4.3).
        While suspended the change waits for the resume (3.4.1)."""
        with self.lock:
            if self.suspended():
                self.deferred_config.update(values)
                return
            self._apply_config(values)
        self.config_changed()

    def config_changed(self) -> None:
        """The configuration change notification for a change just applied (2.5): only a live
        device sends one (2.4.1: none after a reset until the driver sets DRIVER_OK again)."""
        if self.status & C.DRIVER_OK:
            self.bus.interrupt_config()

    def _apply_config(self, values: dict) -> None:
        for name, value in values.items():
            f = self.layout[name]
            self.config[f.offset : f.offset + f.size] = f.encode(value)
        self.bump_generation()

    def bump_generation(self) -> None:
        self.config_generation = (self.config_generation + 1) & 0xFF

    def change_config(self) -> None:
        """Out-of-band stimulus: make a config change a real device could make (resize, link flap)."""
        raise NotImplementedError(f"{self.name} has no configuration that can change")

    def config_value(self, name: str):
        f = self.layout[name]
        return f.decode(self.config[f.offset : f.offset + f.size])

    # -- driver-visible: virtqueues -------------------------------------------------------------
    def queue_max(self, index: int) -> int:
        return self.queue_size_max if 0 <= index < self.num_queues else 0

    def queue_set(self, index: int, addrs: RingAddrs) -> None:
        with self.lock:
            if not 0 <= index < self.num_queues:
                raise IndexError(f"queue {index} does not exist")
            if addrs.num > self.queue_max(index) or addrs.num > MAX_QUEUE_SIZE:
                raise ValueError(f"queue size {addrs.num} above maximum {self.queue_max(index)}")
            qc = self.queues_cfg[index]
            qc.size, qc.addrs = addrs.num, addrs

    def queue_enable(self, index: int) -> None:
        with self.lock:
            self.queues_cfg[index].enabled = True
            if self.status & C.DRIVER_OK and self.queues_cfg[index].addrs is not None:
                self.queues[index] = self.make_queue(index, self.queues_cfg[index].addrs)

    def queue_reset(self, index: int) -> None:
        """2.6.1.1.1: stop using the queue and forget its state; it stays off until re-enabled.

        Buffers the device held are dropped, not returned: after a reset the driver reclaims
        them itself (detach_unused_buf), and the device must not touch them again.
        """
        with self.lock:
            if not self.driver_features >> C.VIRTIO_F_RING_RESET & 1:
                return  # not negotiated: the driver has no such operation
            self.queues[index] = None
            self.queues_cfg[index] = QueueConfig(size=self.queue_max(index))
            self.forget_buffers(index)

    def make_queue(self, index: int, addrs: RingAddrs) -> DeviceQueue:
        """The device side of one virtqueue, in the layout the driver negotiated (2.7 split, 2.8
        packed): the one place a queue is built."""
        cls = self.packed_queue_class if self.driver_features >> C.VIRTIO_F_RING_PACKED & 1 else self.split_queue_class
        return cls(self.mem, index, addrs, self.driver_features)

    # -- queues for a device-side host (the vhost-user back-end): see the module docstring -------
    def queue(self, index: int) -> DeviceQueue | None:
        """The running queue ``index``, or None."""
        return self.queues[index] if 0 <= index < self.num_queues else None

    def attach_queue(self, index: int, addrs: RingAddrs, state: QueueState | None = None) -> DeviceQueue | None:
        """Set queue ``index`` up at ``addrs`` and enable it, as a driver would (queue_set,
        queue_enable); with ``state``, start it there. Returns the running queue, None before
        DRIVER_OK (no queue runs then, 2.1.2)."""
        with self.lock:
            self.queue_set(index, addrs)
            self.queue_enable(index)
            q = self.queues[index]
            if q is not None and state is not None:
                q.set_state(state)
            return q

    def detach_queue(self, index: int) -> QueueState | None:
        """Stop running queue ``index`` and return where it stood; the buffers the device holds
        on it stay held (see forget_buffers), so a queue attached again can complete them."""
        with self.lock:
            q = self.queues[index]
            self.queues[index] = None
            self.queues_cfg[index].enabled = False
            return q.state() if q is not None else None

    def forget_buffers(self, index: int) -> None:
        """Drop the buffers the device holds on queue ``index`` and the device-type state tied to
        the queue, as a queue reset does (2.6.1.1.1): the driver owns them again."""
        with self.lock:
            self.held.pop(index, None)
            self.on_queue_reset(index)

    def check_notification_data(self, index: int, data: int) -> None:
        """The model checks what the driver announces: a wrong vqn or offset is the driver's bug
        (ours, when the harness drives), kept in ``notification_data_errors`` for the self-tests."""
        q = self.queues[index] if 0 <= index < self.num_queues else None
        if not self.driver_features >> C.VIRTIO_F_NOTIFICATION_DATA & 1:
            self.notification_data_errors.append(f"queue {index}: notification data without the feature")
            return
        vqn, nxt = data & 0xFFFF, data >> 16
        if vqn != index:
            self.notification_data_errors.append(f"queue {index}: data names vqn {vqn}")
        elif q is not None and nxt != q.notification_position():
            self.notification_data_errors.append(f"queue {index}: next {nxt:#x}, ring says {q.notification_position():#x}")

    def on_queue_reset(self, index: int) -> None:
        """Device-type state tied to one queue (e.g. frames waiting for RX buffers)."""

    def notify(self, index: int, data: int | None = None) -> None:
        """Available buffer notification from the driver (with VIRTIO_F_NOTIFICATION_DATA, ``data``
        holds vqn | next_off << 16 | next_wrap << 31, 2.9)."""
        if data is not None:
            self.check_notification_data(index, data)
        self.queue_counters[index]["notifications"] += 1
        if self.mode == "threaded":
            self._kick.set()
            return
        self.process_queue(index)

    # -- processing -----------------------------------------------------------------------------
    def running(self) -> bool:
        return bool(self.status & C.DRIVER_OK) and not self.status & (C.DEVICE_NEEDS_RESET | C.FAILED)

    def process_queue(self, index: int) -> None:
        with self.lock:
            if not self.running() or not 0 <= index < self.num_queues:
                return  # 2.1.2: no buffer is consumed before DRIVER_OK
            q = self.queues[index]
            if q is None:
                return
            batch = InOrderBatcher(q, lambda: self.in_order_batch_size(index)) if self.driver_features >> C.VIRTIO_F_IN_ORDER & 1 else None
            fast = self._batch_handler(q)  # batch fast path (see _batch_handler)
            try:
                while True:
                    if fast is not None:
                        run = q.pop_simple()  # None: nothing available; False: next chain not simple
                        if run is None:
                            break
                        if run is not False:
                            heads, addrs, lens, flags = run
                            used = fast(index, q, addrs, lens, flags)
                            if batch is None:
                                q.push_batch(heads, used)
                            else:
                                batch.add_run(heads, used, np.where(flags & C.VIRTQ_DESC_F_WRITE, lens, 0))
                            continue
                    if (chain := q.pop()) is None:
                        break
                    n = self.handle(index, q, chain)
                    if n is None:
                        if batch is not None:
                            batch.flush()  # the batch ends before a buffer the device keeps
                        self.held.setdefault(index, {})[chain.head] = chain
                    elif batch is not None:
                        batch.add(chain.head, n, chain.writable_len)
                    else:
                        q.push(chain.head, n)
                if batch is not None:
                    batch.flush()
            except ChainError:
                # The driver broke the ring: a device reports that with DEVICE_NEEDS_RESET (2.1.2).
                self.needs_reset()
                return
            self.after_process(index)
            self.signal(index)

    def in_order_batch_size(self, index: int) -> int:
        """With IN_ORDER: the most buffers the next used entry of queue ``index`` may answer for
        (0: no limit, 1: one entry per buffer); asked once per batch, so a device may vary it."""
        return self.in_order_batch_max

    # -- batch fast path (runs of one-descriptor chains, vectorized) -------------------------------
    # A device may define ``handle_batch(qindex, queue, addrs, lens, flags) -> used lens array``
    # for runs of simple chains (one descriptor, no NEXT/INDIRECT) that DeviceQueue.pop_simple
    # gathers; it must write the bytes it reports, as handle does. Other chains keep the per-chain path.
    def _batch_handler(self, q):
        """``handle_batch`` if it may serve ``q``: a queue with pop_simple (a duck-typed one may
        have none), and handle_batch defined no higher in the class tree than ``handle`` (a
        subclass overriding only ``handle``, such as a mutant, keeps the per-chain path and so its
        own behaviour)."""
        fn = getattr(self, "handle_batch", None)
        if fn is None or not hasattr(q, "pop_simple") or "handle" in self.__dict__:
            return None
        cls = type(self)
        ok = _BATCH_OK.get(cls)
        if ok is None:
            owner = lambda name: next(k for k in cls.__mro__ if name in k.__dict__)  # noqa: E731
            ok = _BATCH_OK[cls] = issubclass(owner("handle_batch"), owner("handle"))
        return fn if ok else None

    # -- end of batch fast path --------------------------------------------------------------------

    def after_process(self, index: int) -> None:
        """Hook: e.g. net moves TX frames to RX once a batch is done."""

    def complete(self, index: int, chain: DeviceChain, length: int) -> None:
        """Return a held chain; the caller decides when to ``signal``."""
        q = self.queues[index]
        self.held.get(index, {}).pop(chain.head, None)
        q.push(chain.head, length)

    def complete_together(self, index: int, chains: list[DeviceChain], lengths: list[int]) -> None:
        """Return held chains that the driver must see used at once (one frame's buffers)."""
        held = self.held.get(index, {})
        for c in chains:
            held.pop(c.head, None)
        self.queues[index].push_together([c.head for c in chains], lengths)

    def signal(self, index: int) -> None:
        q = self.queues[index]
        if q is not None and q.should_interrupt():
            self.queue_counters[index]["interrupts"] += 1
            self.bus.interrupt_vq(index)

    def needs_reset(self) -> None:
        with self.lock:
            self.status |= C.DEVICE_NEEDS_RESET
        if self.status & C.DRIVER_OK:
            self.bus.interrupt_config()

    def _worker(self) -> None:
        # Threaded mode: a device thread that runs concurrently with the driver, woken by kicks
        # and also polling, as a device with its own processing loop would.
        while not self._stop.is_set():
            self._kick.wait(0.0005)
            self._kick.clear()
            for i in range(self.num_queues):
                if self._stop.is_set():
                    return
                q = self.queues[i]
                if q is not None and q.has_avail():
                    self.process_queue(i)
