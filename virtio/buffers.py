"""The buffers both sides of a virtqueue speak of (VIRTIO 1.4, 2.6 and 2.7.5 / 2.8.4), shared by the
driver-side queues, the model devices and the vhost-user back-end, whatever the ring layout.

Driver side: ``Sg`` / ``SgArray`` (scatter-gather elements handed to ``add`` / ``add_batch``) and
``BufferChain`` (a buffer made available, and what came back). Device side: ``DeviceChain`` (an
available buffer as the device walked it) and ``ChainError`` (the driver made a malformed chain
available).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Sg:
    """One scatter-gather element: a guest address and a length."""

    addr: int
    len: int


@dataclass(frozen=True)
class SgArray:
    """One scatter-gather element per buffer of a batch (``add_batch``): ``addr`` holds one guest
    address per buffer; ``len`` is one length for all of them or one per buffer."""

    addr: np.ndarray
    len: int | np.ndarray


@dataclass
class BufferChain:
    """A buffer made available to the device: what the driver put in, and what came back."""

    head: int
    token: object
    out_sgs: list[Sg]
    in_sgs: list[Sg]
    ndesc: int
    indirect: int | None = None  # guest address of the indirect table, if any
    owned: list[int] = field(default_factory=list)  # allocations freed on completion
    ids: list[int] = field(default_factory=list)  # descriptor ids, freed on completion
    used_len: int | None = None
    batch: bool = False  # made available by add_batch (out_sgs/in_sgs read back from the table)
    # False for a buffer an IN_ORDER batch answered without an entry of its own (2.7.9, 2.8.8):
    # the device reported no len for it; the spec has it "used completely", so used_len is its
    # writable length (as Linux's in-order code takes total_in_len), not a len the device wrote.
    len_reported: bool = True
    table: Sg | None = None  # the indirect table as an element (device-readable)
    readonly: list = field(default_factory=list)  # (addr, len, copy or crc32) of device-readable memory

    @property
    def writable(self) -> int:
        return sum(s.len for s in self.in_sgs)


class ChainError(Exception):
    """The driver made a malformed descriptor chain available (a harness bug when we are the driver)."""


@dataclass
class DeviceChain:
    """One available buffer as the device sees it: readable then writable (addr, len) elements."""

    head: int
    readable: list[tuple[int, int]] = field(default_factory=list)
    writable: list[tuple[int, int]] = field(default_factory=list)

    @property
    def readable_len(self) -> int:
        return sum(n for _, n in self.readable)

    @property
    def writable_len(self) -> int:
        return sum(n for _, n in self.writable)
