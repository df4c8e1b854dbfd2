"""The shared inflight buffer of vhost-user (QEMU docs/interop/vhost-user.rst, "Inflight I/O tracking").

A back-end that negotiated VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD hands the front-end a shared
buffer (GET_INFLIGHT_FD), gets it back with SET_INFLIGHT_FD before the rings start, and records in
it which descriptors it has taken and not yet completed, so that after a crash or reconnect the
next back-end resubmits them. Split-ring form only, per queue:

    QueueRegionSplit  { u64 features; u16 version; u16 desc_num; u16 last_batch_head; u16 used_idx;
                        DescStateSplit desc[desc_num]; }                         16-byte header
    DescStateSplit    { u8 inflight; u8 padding[5]; u16 next; u64 counter; }     16 bytes

Queue ``i``'s region starts at ``i * stride``; the stride is 16 + 16 * queue_size rounded up to
64 bytes (libvhost-user's and DPDK's formulas give this same number), and mmap_size is
``num_queues * stride``. Fields are written through typed numpy views (one aligned store each):
the front-end, or a later back-end, reads the buffer while this one writes it.
"""

from __future__ import annotations

import numpy as np

INFLIGHT_ALIGNMENT = 64
INFLIGHT_VERSION = 1
QUEUE_REGION_SPLIT_HEADER = 16
DESC_STATE_SPLIT = 16


def queue_region_min_split(queue_size: int) -> int:
    """Bytes one queue's split region needs: its header and a DescStateSplit per descriptor."""
    return QUEUE_REGION_SPLIT_HEADER + DESC_STATE_SPLIT * queue_size


def queue_region_size_split(queue_size: int) -> int:
    """Bytes of one queue's split region, aligned to INFLIGHT_ALIGNMENT."""
    n = queue_region_min_split(queue_size)
    return (n + INFLIGHT_ALIGNMENT - 1) // INFLIGHT_ALIGNMENT * INFLIGHT_ALIGNMENT


class QueueRegionSplit:
    """Typed views over one queue's region at ``offset`` of ``buf`` (writable buffer), names as in
    vhost-user.rst; ``inflight``, ``next`` and ``counter`` are per-descriptor strided views."""

    def __init__(self, buf, offset: int, queue_size: int):
        if offset % 8:
            raise ValueError(f"inflight queue region at offset {offset} is not 8-byte aligned")
        self.queue_size = queue_size
        head16 = np.frombuffer(buf, np.uint16, QUEUE_REGION_SPLIT_HEADER // 2, offset)
        self.features = np.frombuffer(buf, np.uint64, 1, offset)
        self.version, self.desc_num, self.last_batch_head, self.used_idx = (head16[i : i + 1] for i in (4, 5, 6, 7))
        start = offset + QUEUE_REGION_SPLIT_HEADER
        self.inflight = np.frombuffer(buf, np.uint8, DESC_STATE_SPLIT * queue_size, start)[0::16]
        self.next = np.frombuffer(buf, np.uint16, DESC_STATE_SPLIT // 2 * queue_size, start)[3::8]
        self.counter = np.frombuffer(buf, np.uint64, DESC_STATE_SPLIT // 8 * queue_size, start)[1::2]
        self.global_counter = 1  # the back-end's "global counter" (kept in the back-end, not here)

    # -- reading (either side) ---------------------------------------------------------------------
    def in_flight(self) -> list[int]:
        """Heads whose ``inflight`` is 1, in the order they were taken (their counter)."""
        heads = np.flatnonzero(self.inflight == 1)
        return [int(h) for h in heads[np.argsort(self.counter[heads], kind="stable")]]

    def valid(self) -> bool:
        return int(self.version[0]) == INFLIGHT_VERSION and int(self.desc_num[0]) == self.queue_size

    # -- the back-end's duties -----------------------------------------------------------------------
    def init(self) -> None:
        """A fresh region: nothing in flight."""
        self.inflight[:] = 0
        self.counter[:] = 0
        self.next[:] = 0
        self.last_batch_head[0] = 0
        self.used_idx[0] = 0
        self.features[0] = 0
        self.desc_num[0] = self.queue_size
        self.version[0] = INFLIGHT_VERSION

    def take(self, heads) -> None:
        """Available buffers received: counter first, then inflight = 1 (spec order)."""
        heads = np.asarray(heads, dtype=np.intp)
        n = len(heads)
        self.counter[heads] = np.arange(self.global_counter, self.global_counter + n, dtype=np.uint64)
        self.global_counter += n
        self.inflight[heads] = 1

    def link_batch(self, heads) -> None:
        """Before the used idx is published: chain the batch through ``next`` from
        ``last_batch_head`` (steps 1-3 of "supplying used buffers")."""
        lbh = int(self.last_batch_head[0])
        for h in heads:
            self.next[h] = lbh
            lbh = int(h)
        self.last_batch_head[0] = lbh

    def retire(self, heads, used_idx: int) -> None:
        """After the used idx is published: the batch is no longer in flight, and ``used_idx``
        follows the ring's (steps 5-6)."""
        self.inflight[np.asarray(heads, dtype=np.intp)] = 0
        self.used_idx[0] = used_idx & 0xFFFF

    def recover(self, ring_used_idx: int) -> list[int]:
        """"When reconnecting": repair the last batch if the used idx moved past ``used_idx``
        (its inflight fields may still say 1), then the heads to resubmit, in counter order.
        The buffer is untrusted: a chain through ``next`` longer than the batch, or heads outside
        the queue, do not go further than the queue size."""
        ring_used_idx &= 0xFFFF
        if int(self.used_idx[0]) != ring_used_idx:
            batch = (ring_used_idx - int(self.used_idx[0])) & 0xFFFF
            head = int(self.last_batch_head[0])
            for _ in range(min(batch, self.queue_size)):
                if head >= self.queue_size:
                    break
                self.inflight[head] = 0
                head = int(self.next[head])
            self.used_idx[0] = ring_used_idx
        heads = self.in_flight()
        self.global_counter = int(self.counter.max(initial=0)) + 1
        return heads


class InflightBuffer:
    """The whole shared buffer: one QueueRegionSplit per queue, ``stride`` bytes apart (by default
    the back-end's own stride; a reader of another back-end's buffer passes mmap_size // num_queues)."""

    def __init__(self, buf, num_queues: int, queue_size: int, stride: int | None = None):
        self.stride = queue_region_size_split(queue_size) if stride is None else stride
        if self.stride < queue_region_min_split(queue_size):
            raise ValueError(f"inflight stride {self.stride} too small for queue size {queue_size}")
        if len(buf) < num_queues * self.stride:
            raise ValueError(f"inflight buffer of {len(buf)} bytes, {num_queues} queues of {self.stride} need {num_queues * self.stride}")
        self.queues = [QueueRegionSplit(buf, i * self.stride, queue_size) for i in range(num_queues)]

    def queue(self, index: int) -> QueueRegionSplit | None:
        return self.queues[index] if 0 <= index < len(self.queues) else None
