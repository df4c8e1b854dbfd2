"""The device side of a virtqueue (VIRTIO 1.4, 2.6), whatever its layout: the interface every model
device uses, and what does not depend on the layout, written once. The layouts hold only their ring
format: split_ring.DeviceSplitQueue (2.7) and packed_ring.DevicePackedQueue (2.8); a model gets one
from ``Device.make_queue``, which picks the layout from the negotiated features.

The interface (a model names no layout class):

- ``pop() -> DeviceChain | None``: take the next available buffer (2.7.13 / 2.8.13 seen from the
  device); ``chain.head`` is what ``push`` names it by (split: head index; packed: buffer id).
- ``pop_simple()``: the leading run of one-descriptor buffers at once, ``(heads, addrs, lens,
  flags)`` arrays; None when nothing is available, False when the next buffer is not simple (then
  ``pop`` takes, or rejects, it). ``write_batch`` fills such a run's buffers.
- ``push(head, len)``, ``push_batch(heads, lens)``: used elems / used descriptors (2.7.8, 2.8.6);
  ``push_in_order_run(heads, ends, lens)``: VIRTIO_F_IN_ORDER batches (2.7.9, 2.8.8).
- ``should_interrupt()``: the used buffer notification decision for what was pushed since the
  last one (2.7.7, 2.8.10). ``has_avail()``, ``notification_position()`` (2.9).
- ``read_readable(chain)``, ``write_writable(chain, data, offset)``: buffer contents.
- ``state() -> QueueState``, ``set_state(QueueState)``: where the queue stands (virtio/queue_state.py),
  for a device that stops a queue and starts it again (vhost-user GET/SET_VRING_BASE, resets).
- ``published_used()``: where the used side stands as the device area shows it (split: used idx).
- ``track_inflight(region, resubmit)``: record what is taken and made used in a vhost-user inflight
  region (split rings only: vhost-user defines no packed layout the back-end implements).
- attributes: ``mem``, ``index``, ``num``, ``addrs``, ``ring`` (the layout's typed views),
  ``layout`` ("split" / "packed"), ``event_idx``, ``in_order``.

What the driver wrote is untrusted: a malformed chain raises ChainError instead of reading outside
guest memory or looping forever.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from virtio import constants as C
from virtio.areas import RingAddrs
from virtio.buffers import ChainError, DeviceChain
from virtio.memory import GuestMemory, count_nonzero, u64_view
from virtio.queue_state import QueueState


class DeviceQueue(ABC):
    """One virtqueue as the device sees it; subclassed once per layout, which names itself in the
    class statement (``class X(DeviceQueue, layout="split", ring_class=SplitRing, desc_size=16)``),
    and by mutants."""

    layout: str
    ring_class: type  # the layout's typed views (virtio/split.SplitRing, virtio/packed.PackedRing)
    desc_size: int  # bytes per descriptor (an indirect table is an array of them)
    _layout_class: type

    def __init_subclass__(cls, layout: str | None = None, ring_class: type | None = None, desc_size: int = 0, **kwargs):
        super().__init_subclass__(**kwargs)
        if layout is not None:
            cls.layout, cls.ring_class, cls.desc_size = layout, ring_class, desc_size
            cls._layout_class = cls  # what a subclass (a mutant) is compared with, see _batch_ok

    def __init__(self, mem: GuestMemory, index: int, addrs: RingAddrs, features: int):
        self.mem = mem
        self.index = index
        self.num = num = addrs.num
        self.ring = self.ring_class(mem, addrs)
        self.event_idx = bool(features >> C.VIRTIO_F_EVENT_IDX & 1)
        self.in_order = bool(features >> C.VIRTIO_F_IN_ORDER & 1)
        self.inflight: tuple | None = None  # (region, resubmit list), see track_inflight
        # -- batch fast path views (pop_simple / push_batch / write_batch) --
        # (Few instance attributes: past a couple of dozen, every attribute access gets slower.)
        self._idx2 = np.arange(2 * num, dtype=np.intp) % num
        self._desc_addr = self.ring.desc_addr
        self._desc_word = self.ring.desc_word
        self._basec = np.full(num, mem.base, dtype=np.uint64)
        self._sizec = np.full(num, mem.size, dtype=np.uint64)
        self._mem_bytes = mem.bytes
        self._mem_u64 = u64_view(mem.bytes)
        self._tiles: dict[int, np.ndarray] = {}
        self._run: tuple = (None, None)
        # A subclass that changes how chains are taken or used entries written (a mutant) keeps
        # the per-chain path, and so its own behaviour.
        cls, layout_cls = type(self), self._layout_class
        self._batch_ok = all(getattr(cls, m) is getattr(layout_cls, m) for m in ("pop", "walk", "push"))
        self.set_state(QueueState(num, True, addrs, event_idx=self.event_idx))  # 2.8.1: wrap counters 1
        self._init_layout()

    # -- the layout's part ---------------------------------------------------------------------------
    @abstractmethod
    def _init_layout(self) -> None:
        """The layout's own views and device-area fields, once the queue is at its initial state."""

    @abstractmethod
    def pop(self) -> DeviceChain | None: ...

    @abstractmethod
    def walk(self, *args): ...

    @abstractmethod
    def pop_simple(self): ...

    @abstractmethod
    def push(self, head: int, length: int) -> None: ...

    @abstractmethod
    def push_batch(self, heads: np.ndarray, lens: np.ndarray) -> None: ...

    @abstractmethod
    def push_together(self, heads: list[int], lens: list[int]) -> None:
        """Used elems / descriptors published in one step, so that the driver sees all or none."""

    @abstractmethod
    def push_in_order_run(self, heads: np.ndarray, ends: np.ndarray, lens: np.ndarray) -> None: ...

    @abstractmethod
    def should_interrupt(self) -> bool: ...

    @abstractmethod
    def has_avail(self) -> bool: ...

    @abstractmethod
    def notification_position(self) -> int: ...

    @abstractmethod
    def state(self) -> QueueState: ...

    @abstractmethod
    def set_state(self, state: QueueState) -> None:
        """Put the queue where ``state`` says (its positions and wrap counters); nothing is in
        flight afterwards. ``state.size`` must be this queue's size."""

    @abstractmethod
    def published_used(self) -> int: ...

    @property
    def addrs(self) -> RingAddrs:
        return self.ring.addrs

    def track_inflight(self, region, resubmit: list[int]) -> None:
        """vhost-user.rst "Inflight I/O tracking": record each buffer taken in ``region`` (an
        object with ``take(heads)``, ``link_batch(heads)``, ``retire(heads, used_idx)``) before
        the model handles it, and each batch made used; hand out the heads in ``resubmit`` (the
        caller's list, consumed in place) before anything new."""
        raise NotImplementedError(f"inflight tracking on a {self.layout} ring")

    def _check_state(self, state: QueueState) -> None:
        if state.size != self.num:
            raise ValueError(f"queue {self.index}: state of a queue of size {state.size}, this one has {self.num}")

    # -- descriptor chains: what both layouts check the same way ------------------------------------
    def _indirect_entries(self, addr: int, length: int) -> int:
        """The number of descriptors in an indirect table (2.7.5.3, 2.8.7), checked."""
        if length % self.desc_size or length == 0:
            raise ChainError(f"indirect table length {length} is not a multiple of {self.desc_size}")
        if not self.mem.contains(addr, length):
            raise ChainError(f"indirect table [{addr:#x},+{length}) outside guest memory")
        return length // self.desc_size

    def _add_element(self, chain: DeviceChain, write: int, addr: int, length: int, where: int | None) -> None:
        """Append one element to ``chain``, inside guest memory and readable ones first (2.7.4.2,
        2.8.4). ``where``: the descriptor's index, None for a packed indirect table's entry."""
        if not self.mem.contains(addr, length):
            what = "indirect element" if where is None else f"descriptor {where} buffer"
            raise ChainError(f"{what} [{addr:#x},+{length}) outside guest memory")
        if write:
            chain.writable.append((addr, length))
        else:
            if chain.writable:
                raise ChainError("device-readable descriptor after a device-writable one")
            chain.readable.append((addr, length))

    # -- buffer contents ------------------------------------------------------------------------------
    def read_readable(self, chain: DeviceChain) -> bytes:
        return b"".join(self.mem.read(a, n) for a, n in chain.readable)

    def write_writable(self, chain: DeviceChain, data: bytes, offset: int = 0) -> int:
        """Write ``data`` into the writable elements starting ``offset`` bytes in; returns bytes written."""
        written = 0
        pos = 0
        for a, n in chain.writable:
            if offset >= pos + n:
                pos += n
                continue
            start = max(0, offset - pos)
            take = min(n - start, len(data) - written)
            if take <= 0:
                break
            self.mem.write(a + start, data[written : written + take])
            written += take
            pos += n
        return written

    def write_batch(self, addrs: np.ndarray, lens: np.ndarray, data: np.ndarray, width: int | None = None) -> None:
        """Write ``data`` (uint8, ``sum(lens)`` bytes) into the buffers at ``addrs``: ``lens[i]``
        bytes from the start of buffer ``i``. The buffers come from pop_simple, so they lie in
        guest memory. ``width``: every len equals it (lets the model skip the general scatter)."""
        total = len(data)
        if total == 0:
            return
        n = len(addrs)
        run_addrs, off = self._run
        if run_addrs is not addrs:
            off = addrs - self._basec[:n]
            if count_nonzero((off >= self._sizec[:n]) | (off + lens > self._sizec[:n])):
                raise ChainError("write_batch: a buffer outside guest memory")
        off = off.view(np.intp)  # offsets within guest memory: far below 2**63
        if width is not None and width & 7 == 0 and self._mem_u64 is not None and not count_nonzero(off & 7):
            # Every buffer 8-byte aligned and a multiple of 8 long: 8-byte stores, 1/8 the indexes.
            words = width >> 3
            if words == 1:
                idx = off >> 3
            else:
                idx = (off >> 3).repeat(words)
                idx += self._tile(-words, words)[: n * words]
            self._mem_u64[idx] = data.view(np.uint64)
            return
        if width is not None:
            idx = off.repeat(width)
            idx += self._tile(width, width)[: n * width]
        else:
            lens = np.asarray(lens).astype(np.intp)
            starts = np.cumsum(lens)
            starts -= lens
            idx = np.repeat(off - starts, lens)
            idx += np.arange(total, dtype=np.intp)
        self._mem_bytes[idx] = data

    def _tile(self, key: int, width: int) -> np.ndarray:
        """0..width-1 repeated once per queue entry (cached): the offsets inside each buffer."""
        tile = self._tiles.get(key)
        if tile is None:
            tile = self._tiles[key] = np.tile(np.arange(width, dtype=np.intp), self.num)
        return tile
