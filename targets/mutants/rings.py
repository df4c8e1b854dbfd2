"""Mutants of split virtqueue handling (VIRTIO 1.4, 2.7): descriptor chains, indirect tables, the
used ring, and notification suppression both ways. Each overrides one method of a clean model."""

from __future__ import annotations

import dataclasses
import os

from targets.model.blk import BlkDevice
from targets.model.console import ConsoleDevice
from targets.model.device_queue import DeviceQueue
from targets.model.rng import RngDevice
from virtio import constants as C
from virtio.buffers import ChainError, DeviceChain
from virtio.split import vring_need_event


# -- buffers and the used ring (2.7.4, 2.7.5, 2.7.8) --------------------------------------------
class RngUsedLenOverstated(RngDevice):
    """Fills only the first half of each entropy buffer but reports the whole buffer as written.

    dev.basic.virtqueues.the-virtqueue-used-ring.2 (2.7.8.2): before advancing used idx the
    device MUST have written at least ``len`` bytes from the start of the writable part.
    """

    name = "rng-used-len-overstated"
    clause = "dev.basic.virtqueues.the-virtqueue-used-ring.2"

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int:
        queue.write_writable(chain, os.urandom(chain.writable_len // 2))  # BUG: half the buffer...
        return chain.writable_len  # ...but all of it reported


class RngUsedIdOneBased(RngDevice):
    """Numbers descriptors from 1: every used elem id is its buffer's head plus one.

    def.split.used-elem-id (2.7.8): a used elem id is the head of a buffer the driver made
    available and that was not yet returned.
    """

    name = "rng-used-id-one-based"
    clause = "def.split.used-elem-id"

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int:
        n = super().handle(qindex, queue, chain)
        chain.head += 1  # BUG: the id written to the used elem (process_queue pushes chain.head)
        return n


class RngUsedIdxCountsDescriptors(RngDevice):
    """Advances used idx by the number of descriptors in the chain instead of by one per buffer.

    def.split.used-idx (2.7.8): used idx moves one step per used elem written. Correct for
    one-descriptor buffers, so only chains of two or more show it.
    """

    name = "rng-used-idx-counts-descriptors"
    clause = "def.split.used-idx"

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int:
        n = super().handle(qindex, queue, chain)
        # BUG: push() adds 1 for the buffer; this adds the chain's other descriptors too.
        queue.used_idx = (queue.used_idx + len(chain.writable) - 1) & 0xFFFF
        return n


class ConsoleWritesReadableBuffer(ConsoleDevice):
    """Marks each transmit buffer consumed in place, flipping its first byte after reading it.

    dev.basic.virtqueues.the-virtqueue-descriptor-table.1 (2.7.5.1): the device MUST NOT write
    to a device-readable buffer.
    """

    name = "console-writes-readable-buffer"
    clause = "dev.basic.virtqueues.the-virtqueue-descriptor-table.1"

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int | None:
        n = super().handle(qindex, queue, chain)
        for addr, length in chain.readable:
            if length:
                self.mem.write(addr, bytes([self.mem.read(addr, 1)[0] ^ 0xFF]))  # BUG
        return n


class RngWritesPastBuffer(RngDevice):
    """Fills each entropy buffer and then one byte more: the byte right after its last
    device-writable element (an off-by-one in the copy length).

    def.split.writable-bounds (2.7.5): a descriptor gives the device addr and len of one element;
    the device writes inside [addr, addr+len) and nowhere else.
    """

    name = "rng-writes-past-buffer"
    clause = "def.split.writable-bounds"

    def handle(self, qindex: int, queue, chain: DeviceChain) -> int:
        n = super().handle(qindex, queue, chain)
        if chain.writable:
            addr, length = chain.writable[-1]
            if self.mem.contains(addr + length, 1):
                self.mem.write(addr + length, b"\0")  # BUG: one byte past the buffer
        return n


class RngWritesDescriptorTable(RngDevice):
    """Clears the flags of each buffer's head descriptor to mark it consumed.

    dev.basic.virtqueues.the-virtqueue-descriptor-table.2 (2.7.5): the device MUST NOT modify
    the descriptor table of a split virtqueue (the driver owns it).
    """

    name = "rng-writes-descriptor-table"
    clause = "dev.basic.virtqueues.the-virtqueue-descriptor-table.2"

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int:
        queue.ring.desc["flags"][chain.head] = 0  # BUG: a store into the driver's table
        return super().handle(qindex, queue, chain)


class RngWritesIndirectTable(RngDevice):
    """Marks each indirect table it has walked as consumed: writes 0xffff into the ``next`` field
    of the table's first entry (harmless to itself, the table is read once).

    dev.basic.virtqueues.the-virtqueue-descriptor-table.2 (2.7.5.1): the device MUST NOT write to
    any descriptor table entry, and the entries of an indirect table are descriptor table entries.
    """

    name = "rng-writes-indirect-table"
    clause = "dev.basic.virtqueues.the-virtqueue-descriptor-table.2"

    def handle(self, qindex: int, queue, chain: DeviceChain) -> int:
        desc, idx = queue.ring.desc, chain.head
        for _ in range(queue.num):
            addr, _len, flags, nxt = desc[idx].item()
            if flags & C.VIRTQ_DESC_F_INDIRECT:
                self.mem.write(addr + 14, b"\xff\xff")  # BUG: a store into the driver's indirect table
                break
            if not flags & C.VIRTQ_DESC_F_NEXT or nxt >= queue.num:
                break
            idx = nxt
        return super().handle(qindex, queue, chain)


class BlkOneDescriptorPerPart(BlkDevice):
    """Assumes a request is [header][data][status] with exactly one descriptor for header and data:
    data split over several device-readable descriptors is cut to the first one.

    dev.basic.message-framing.1 (2.7.4): the device MUST NOT make assumptions about how a
    message is laid out in descriptors.
    """

    name = "blk-one-descriptor-per-part"
    clause = "dev.basic.message-framing.1"

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int:
        # BUG: readable elements after the second (header + first data piece) are ignored
        return super().handle(qindex, queue, DeviceChain(chain.head, chain.readable[:2], chain.writable))


class RngHoldsLargeBuffers(RngDevice):
    """Never returns an entropy buffer of 4 KiB or more: it waits for an entropy pool that size.

    def.basic.buffers-are-used (2.7, 5.4.6): a running device processes the buffers made
    available to it and returns each through the used ring in bounded time.
    """

    name = "rng-holds-large-buffers"
    clause = "def.basic.buffers-are-used"

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int | None:
        if chain.writable_len >= 4096:
            return None  # BUG: held, and nothing ever completes it
        return super().handle(qindex, queue, chain)


class RngIgnoresSmallQueueSize(RngDevice):
    """Rounds a split queue size below 8 up to 8 at setup (a ring minimum it never advertised).

    def.basic.buffers-are-used (2.7, 2.6): the driver may give a queue fewer entries than the
    device's maximum, any power of 2 for a split ring; a device that indexes the rings by another
    size misplaces avail_event and the used elems, and the buffers made available never come back.
    """

    name = "rng-ignores-small-queue-size"
    clause = "def.basic.buffers-are-used"

    def queue_set(self, index: int, addrs) -> None:
        if not self.status & C.DRIVER_OK and addrs.num < 8:  # at initialization (queue reset: another clause)
            addrs = dataclasses.replace(addrs, num=8)  # BUG: the driver's size ignored
        super().queue_set(index, addrs)


# -- indirect descriptors (2.7.5.3) ---------------------------------------------------------------
class RngRejectsWriteFlagOnIndirect(RngDevice):
    """Treats a chain whose indirect descriptor carries VIRTQ_DESC_F_WRITE as malformed.

    dev.basic.virtqueues.the-virtqueue-descriptor-table.indirect-descriptors.1 (2.7.5.3.2): the
    device MUST ignore the WRITE flag of a descriptor that refers to an indirect table.
    """

    name = "rng-rejects-write-flag-on-indirect"
    clause = "dev.basic.virtqueues.the-virtqueue-descriptor-table.indirect-descriptors.1"

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int:
        flags = int(queue.ring.desc["flags"][chain.head])
        if flags & C.VIRTQ_DESC_F_INDIRECT and flags & C.VIRTQ_DESC_F_WRITE:
            raise ChainError("indirect descriptor has WRITE set")  # BUG: the flag is not ignored
        return super().handle(qindex, queue, chain)


class RngRejectsDirectThenIndirect(RngDevice):
    """Accepts an indirect descriptor only as the head of a chain, not after direct descriptors.

    dev.basic.virtqueues.the-virtqueue-descriptor-table.indirect-descriptors.2 (2.7.5.3.2): the
    device MUST handle zero or more direct descriptors followed by one indirect descriptor.
    """

    name = "rng-rejects-direct-then-indirect"
    clause = "dev.basic.virtqueues.the-virtqueue-descriptor-table.indirect-descriptors.2"

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int:
        desc, idx = queue.ring.desc, chain.head
        while int(desc["flags"][idx]) & C.VIRTQ_DESC_F_NEXT:
            idx = int(desc["next"][idx])
            if int(desc["flags"][idx]) & C.VIRTQ_DESC_F_INDIRECT:
                raise ChainError("indirect descriptor after a direct one")  # BUG: a valid layout
        return super().handle(qindex, queue, chain)


# -- used buffer notification suppression (2.7.7) -------------------------------------------------
class RngIgnoresNoInterrupt(RngDevice):
    """Without VIRTIO_F_EVENT_IDX, notifies for every used buffer even when avail flags is 1.

    dev.basic.virtqueues.used-buffer-notification-suppression.2 (2.7.7.2): the device SHOULD NOT
    send a used buffer notification while VIRTQ_AVAIL_F_NO_INTERRUPT is set (a warning).
    """

    name = "rng-ignores-no-interrupt"
    clause = "dev.basic.virtqueues.used-buffer-notification-suppression.2"

    def signal(self, index: int) -> None:
        q = self.queues[index]
        if q is None or q.event_idx:
            return super().signal(index)
        if q.signalled_used != q.used_idx:
            q.signalled_used = q.used_idx
            self.bus.interrupt_vq(index)  # BUG: avail flags not consulted


class RngNotifiesEveryOtherBuffer(RngDevice):
    """Without VIRTIO_F_EVENT_IDX, coalesces used buffer notifications: one per two used buffers.

    dev.basic.virtqueues.used-buffer-notification-suppression.3 (2.7.7.2): without EVENT_IDX,
    while avail flags is 0, the device MUST send a notification after each used ring write.
    """

    name = "rng-notifies-every-other-buffer"
    clause = "dev.basic.virtqueues.used-buffer-notification-suppression.3"

    def signal(self, index: int) -> None:
        q = self.queues[index]
        if q is not None and not q.event_idx and q.used_idx % 2:
            return  # BUG: waits for a second used buffer before notifying
        super().signal(index)


class RngEventIdxNotifiesAlways(RngDevice):
    """With VIRTIO_F_EVENT_IDX, notifies after every used buffer, whatever used_event says.

    dev.basic.virtqueues.used-buffer-notification-suppression.6 (2.7.7.2): with EVENT_IDX the
    device SHOULD NOT notify unless the entry written has index used_event (a warning).
    """

    name = "rng-event-idx-notifies-always"
    clause = "dev.basic.virtqueues.used-buffer-notification-suppression.6"

    def signal(self, index: int) -> None:
        q = self.queues[index]
        if q is None or not q.event_idx:
            return super().signal(index)
        if q.signalled_used != q.used_idx:
            q.signalled_used = q.used_idx
            self.bus.interrupt_vq(index)  # BUG: used_event not consulted


class RngUsedEventWithoutEventIdx(RngDevice):
    """Applies the event-index rule to a non-zero used_event although EVENT_IDX was not negotiated.

    dev.basic.virtqueues.used-buffer-notification-suppression.1 (2.7.7.2): without
    VIRTIO_F_EVENT_IDX the device MUST ignore used_event.
    """

    name = "rng-used-event-without-event-idx"
    clause = "dev.basic.virtqueues.used-buffer-notification-suppression.1"

    def signal(self, index: int) -> None:
        q = self.queues[index]
        if q is not None and not q.event_idx:
            used_event = int(q.ring.used_event[0])
            # BUG: "the driver wrote a used_event, so it must want it honoured"
            if used_event and not vring_need_event(used_event, q.used_idx, q.signalled_used):
                q.signalled_used = q.used_idx
                return
        super().signal(index)


class RngNoInterruptSuppressesWithEventIdx(RngDevice):
    """With VIRTIO_F_EVENT_IDX, still lets VIRTQ_AVAIL_F_NO_INTERRUPT suppress notifications.

    dev.basic.virtqueues.used-buffer-notification-suppression.4 (2.7.7.2): with EVENT_IDX the
    device MUST ignore bit 0 of avail flags; only used_event decides.
    """

    name = "rng-no-interrupt-suppresses-with-event-idx"
    clause = "dev.basic.virtqueues.used-buffer-notification-suppression.4"

    def signal(self, index: int) -> None:
        q = self.queues[index]
        if q is not None and q.event_idx and int(q.ring.avail_flags[0]) & C.VIRTQ_AVAIL_F_NO_INTERRUPT:
            q.signalled_used = q.used_idx
            return  # BUG: the flag is honoured as well as used_event
        super().signal(index)


class RngUsedEventOffByOne(RngDevice):
    """With VIRTIO_F_EVENT_IDX, compares used_event with the new used idx instead of the index of
    the entry written, so it notifies one used buffer early and not at used_event.

    dev.basic.virtqueues.used-buffer-notification-suppression.5 (2.7.7.2): with EVENT_IDX the
    device MUST notify when the used ring entry it writes has index used_event.
    """

    name = "rng-used-event-off-by-one"
    clause = "dev.basic.virtqueues.used-buffer-notification-suppression.5"

    def signal(self, index: int) -> None:
        q = self.queues[index]
        if q is None or not q.event_idx:
            return super().signal(index)
        old, new = q.signalled_used, q.used_idx
        if old == new:
            return
        q.signalled_used = new
        # BUG: vring_need_event(used_event, new, old) tests entries old..new-1; this tests old+1..new
        if vring_need_event((int(q.ring.used_event[0]) - 1) & 0xFFFF, new, old):
            self.bus.interrupt_vq(index)


class RngUsedEventPlainCompare(RngDevice):
    """With VIRTIO_F_EVENT_IDX, tests "the entry at used_event was written" as
    ``old <= used_event < new`` in plain integers instead of modulo 2^16: right everywhere except
    where used idx wraps, so the notification for entry 65535 is never sent.

    dev.basic.virtqueues.used-buffer-notification-suppression.5 (2.7.7.2): with EVENT_IDX the
    device MUST notify when the used ring entry it writes has index used_event (indexes are
    16-bit and wrap, as vring_need_event computes).
    """

    name = "rng-used-event-plain-compare"
    clause = "dev.basic.virtqueues.used-buffer-notification-suppression.5"

    def signal(self, index: int) -> None:
        q = self.queues[index]
        if q is None or not q.event_idx:
            return super().signal(index)
        old, new = q.signalled_used, q.used_idx
        if old == new:
            return
        q.signalled_used = new
        if old <= int(q.ring.used_event[0]) < new:  # BUG: vring_need_event compares modulo 2^16
            self.bus.interrupt_vq(index)


# -- available buffer notification suppression (2.7.10) -------------------------------------------
class RngUsedFlagsGarbage(RngDevice):
    """Without VIRTIO_F_EVENT_IDX, "clears" NO_NOTIFY after a batch with ``flags = ~NO_NOTIFY``
    instead of ``flags &= ~NO_NOTIFY``, leaving every other bit set (0xfffe).

    dev.basic.virtqueues.available-buffer-notification-suppression.1 (2.7.10): without EVENT_IDX
    the device MUST set used flags to 0 or 1.
    """

    name = "rng-used-flags-garbage"
    clause = "dev.basic.virtqueues.available-buffer-notification-suppression.1"

    def after_process(self, index: int) -> None:
        q = self.queues[index]
        if q is not None and not q.event_idx:
            q.ring.used_flags[0] = ~C.VIRTQ_USED_F_NO_NOTIFY & 0xFFFF  # BUG: = instead of &=


class RngNoNotifyWithEventIdx(RngDevice):
    """With VIRTIO_F_EVENT_IDX, sets VIRTQ_USED_F_NO_NOTIFY in used flags as well as avail_event.

    dev.basic.virtqueues.available-buffer-notification-suppression.3 (2.7.10): with EVENT_IDX
    the device MUST keep used flags at 0.
    """

    name = "rng-no-notify-with-event-idx"
    clause = "dev.basic.virtqueues.available-buffer-notification-suppression.3"

    def after_process(self, index: int) -> None:
        q = self.queues[index]
        if q is not None and q.event_idx:
            q.ring.used_flags[0] = C.VIRTQ_USED_F_NO_NOTIFY  # BUG: mixes both suppression schemes


class RngNeedsResetOnSpuriousKick(RngDevice):
    """Takes a notification with nothing new available as a driver error: sets DEVICE_NEEDS_RESET.

    dev.basic.virtqueues.available-buffer-notification-suppression.5 (2.7.10): the device MUST
    tolerate spurious available buffer notifications.
    """

    name = "rng-needs-reset-on-spurious-kick"
    clause = "dev.basic.virtqueues.available-buffer-notification-suppression.5"

    def process_queue(self, index: int) -> None:
        with self.lock:
            q = self.queues[index] if 0 <= index < self.num_queues else None
            if self.running() and q is not None and not q.has_avail():
                self.needs_reset()  # BUG: a spurious kick is legal
                return
        super().process_queue(index)
