"""Mutants of packed virtqueue handling (VIRTIO 1.4, 2.8): wrap counters, buffer ids, used
descriptor positions, the descriptor ring's ownership rules, indirect tables and driver / device
event suppression. Each breaks one thing on packed rings only (split rings stay correct): most
through a DevicePackedQueue subclass set as the model's ``packed_queue_class``."""

from __future__ import annotations

from targets.model.blk import BlkDevice
from targets.model.console import ConsoleDevice
from targets.model.packed_ring import DevicePackedQueue
from targets.model.rng import RngDevice
from virtio import constants as C
from virtio.buffers import DeviceChain
from virtio.packed import DESC_SIZE, is_avail, is_used, off_wrap, split_event, used_flags


# -- used descriptors (2.8.1, 2.8.2, 2.8.4, 2.8.6) ---------------------------------------------------
class _UsedWrapStuckQueue(DevicePackedQueue):
    def push(self, head: int, length: int) -> None:
        super().push(head, length)
        self.used_wrap_counter = 1  # BUG: the device ring wrap counter never flips


class RngPackedUsedWrapStuck(RngDevice):
    """Never flips its used wrap counter: from the second lap on, used descriptors still carry
    AVAIL=USED=1.

    def.packed.used-flags (2.8.1): a used descriptor's AVAIL and USED bits both equal the device
    ring wrap counter, which flips each time the device uses the last descriptor of the ring.
    """

    name = "rng-packed-used-wrap-stuck"
    clause = "def.packed.used-flags"
    packed_queue_class = _UsedWrapStuckQueue


class _IdFromFirstQueue(DevicePackedQueue):
    def walk(self, pos: int, wrap: int, flags: int):
        first_id = int(self.ring.desc_id[pos])
        chain, pos2, wrap2 = super().walk(pos, wrap, flags)
        if first_id != chain.head:
            # BUG: the id is taken from the first descriptor of the list, not the last
            self.pending[first_id] = self.pending.pop(chain.head)
            chain.head = first_id
        return chain, pos2, wrap2


class RngPackedIdFromFirstDescriptor(RngDevice):
    """Returns the buffer id found in the first descriptor of a list instead of the last one
    (right only with drivers that, like Linux, write the id into every descriptor).

    def.packed.used-buffer-id (2.8.6): the buffer id is included in the last descriptor in the
    list, and the used descriptor carries it.
    """

    name = "rng-packed-id-from-first-descriptor"
    clause = "def.packed.used-buffer-id"
    packed_queue_class = _IdFromFirstQueue


class _PhantomUsedQueue(DevicePackedQueue):
    def push(self, head: int, length: int) -> None:
        super().push(head, length)
        if self.used_idx == self.last_avail_idx and not self.has_avail():
            # BUG: "pre-marks" the next slot used once it has caught up with the driver
            self.ring.desc_flags[self.used_idx] = used_flags(self.used_wrap_counter)


class RngPackedPhantomUsed(RngDevice):
    """Once it has used every available buffer, marks the next ring slot used as well, although
    the driver made nothing available there.

    def.packed.used-position (2.8.2): used descriptors are written one after another and only
    where the driver made descriptors available.
    """

    name = "rng-packed-phantom-used"
    clause = "def.packed.used-position"
    packed_queue_class = _PhantomUsedQueue


class _LenPlusOneQueue(DevicePackedQueue):
    def push(self, head: int, length: int) -> None:
        super().push(head, length + 1 if length else 0)  # BUG: counts one byte more than written


class RngPackedUsedLenOverstated(RngDevice):
    """Reports one byte more than it wrote (and than the buffer holds) in each used descriptor.

    def.packed.used-len (2.8.4): with WRITE set, a used descriptor's len is the number of bytes
    written from the start of the device-writable part.
    """

    name = "rng-packed-used-len-overstated"
    clause = "def.packed.used-len"
    packed_queue_class = _LenPlusOneQueue


# -- the descriptor ring's ownership rules (2.8.12, 2.8.15) ------------------------------------------
class ConsolePackedWritesReadableBuffer(ConsoleDevice):
    """On packed rings, marks each transmit buffer consumed in place, flipping its first byte.

    dev.basic.packed-virtqueues.the-virtqueue-descriptor-table.1 (2.8.15): the device MUST NOT
    write to a device-readable buffer.
    """

    name = "console-packed-writes-readable-buffer"
    clause = "dev.basic.packed-virtqueues.the-virtqueue-descriptor-table.1"

    def handle(self, qindex: int, queue, chain: DeviceChain) -> int | None:
        n = super().handle(qindex, queue, chain)
        if queue.layout == "packed":
            for addr, length in chain.readable:
                if length:
                    self.mem.write(addr, bytes([self.mem.read(addr, 1)[0] ^ 0xFF]))  # BUG
        return n


class RngPackedWritesPastBuffer(RngDevice):
    """On packed rings, fills each entropy buffer and then one byte more: the byte right after
    its last device-writable element.

    def.packed.writable-bounds (2.8.4): a descriptor's Element Address and Length name the
    element; the device writes inside it and nowhere else.
    """

    name = "rng-packed-writes-past-buffer"
    clause = "def.packed.writable-bounds"

    def handle(self, qindex: int, queue, chain: DeviceChain) -> int:
        n = super().handle(qindex, queue, chain)
        if queue.layout == "packed" and chain.writable:
            addr, length = chain.writable[-1]
            if self.mem.contains(addr + length, 1):
                self.mem.write(addr + length, b"\0")  # BUG: one byte past the buffer
        return n


class _WritesIndirectTableQueue(DevicePackedQueue):
    def _walk_indirect(self, chain, addr: int, length: int) -> None:
        super()._walk_indirect(chain, addr, length)
        self.mem.write(addr + 12, b"\xaa\xaa")  # BUG: the first entry's id, in a read-only table


class RngPackedWritesIndirectTable(RngDevice):
    """On packed rings, stamps each indirect table it has read: writes into the id field of the
    table's first entry (a field the device ignores there anyway).

    dev.basic.packed-virtqueues.the-virtqueue-descriptor-table.1 (2.8.15, 2.8.7): the indirect
    table is read-only by the device; the device MUST NOT write to a device-readable buffer.
    """

    name = "rng-packed-writes-indirect-table"
    clause = "dev.basic.packed-virtqueues.the-virtqueue-descriptor-table.1"
    packed_queue_class = _WritesIndirectTableQueue


class _FilledSlotQueue(DevicePackedQueue):
    wrapped = False

    def pop(self):
        pos = self.last_avail_idx
        flags = int(self.ring.desc_flags[pos])
        if not self.wrapped and not is_avail(flags, 1) and int(self.ring.desc_len[pos]):
            # BUG: in the first lap a descriptor with a length counts as available, flags or not
            chain, pos2, wrap2 = self.walk(pos, 1, flags)
            self.last_avail_idx, self.avail_wrap_counter = pos2, wrap2
            self.wrapped = self.wrapped or wrap2 != 1
            return chain
        chain = super().pop()
        self.wrapped = self.wrapped or self.avail_wrap_counter != 1
        return chain


class RngPackedTakesFilledSlots(RngDevice):
    """In the ring's first lap, takes any descriptor whose length is set as available, without
    waiting for its AVAIL bit (it relies on the ring being zero-initialized).

    dev.basic.packed-virtqueues.the-virtqueue-descriptor-table.2 (2.8.15): the device MUST NOT
    use a descriptor unless it observes its AVAIL bit change.
    """

    name = "rng-packed-takes-filled-slots"
    clause = "dev.basic.packed-virtqueues.the-virtqueue-descriptor-table.2"
    packed_queue_class = _FilledSlotQueue


class _RewritesUsedQueue(DevicePackedQueue):
    prev: tuple[int, int] | None = None

    def push(self, head: int, length: int) -> None:
        slot, wrap = self.used_idx, self.used_wrap_counter
        super().push(head, length)
        if self.prev is not None:
            pslot, pwrap = self.prev
            if is_used(int(self.ring.desc_flags[pslot]), pwrap):  # not yet reused by the driver
                self.ring.desc_addr[pslot] = 0  # BUG: "cleans up" a descriptor it already marked used
        self.prev = (slot, wrap)


class RngPackedRewritesUsedDescriptor(RngDevice):
    """After writing a used descriptor, clears the address field of the previous one.

    dev.basic.packed-virtqueues.the-virtqueue-descriptor-table.3 (2.8.15): the device MUST NOT
    change a descriptor after changing its USED bit.
    """

    name = "rng-packed-rewrites-used-descriptor"
    clause = "dev.basic.packed-virtqueues.the-virtqueue-descriptor-table.3"
    packed_queue_class = _RewritesUsedQueue


class _PollsAheadQueue(DevicePackedQueue):
    def pop(self):
        chain = super().pop()
        if chain is not None:
            return chain
        pos, wrap = self.last_avail_idx, self.avail_wrap_counter
        for _ in range(self.num - 1):
            pos += 1
            if pos == self.num:
                pos, wrap = 0, wrap ^ 1
            if is_avail(int(self.ring.desc_flags[pos]), wrap):
                self.last_avail_idx, self.avail_wrap_counter = pos, wrap  # BUG: skips ahead
                return super().pop()
        return None


class RngPackedPollsAhead(RngDevice):
    """When the next descriptor is not available, looks further along the ring and takes the first
    available one it finds.

    dev.basic.packed-virtqueues.1 (2.8.12): the device MUST start processing driver descriptors
    in the order in which they appear in the ring.
    """

    name = "rng-packed-polls-ahead"
    clause = "dev.basic.packed-virtqueues.1"
    packed_queue_class = _PollsAheadQueue


# -- lists and indirect tables (2.8.7, 2.8.18) --------------------------------------------------------
class _PayloadReversedQueue(DevicePackedQueue):
    def walk(self, pos: int, wrap: int, flags: int):
        chain, pos2, wrap2 = super().walk(pos, wrap, flags)
        if chain.ndesc > 1 and len(chain.readable) > 2:
            chain.readable[1:] = chain.readable[:0:-1]  # BUG: gathers the payload last element first
        return chain, pos2, wrap2


class BlkPackedPayloadReversed(BlkDevice):
    """Gathers the device-readable elements after the first one of a descriptor list in reverse
    order (as a device that pushes them on a stack would).

    dev.basic.packed-virtqueues.scatter-gather-support.1 (2.8.18): the device MUST use the
    descriptors of a list in the order the driver made them available.
    """

    name = "blk-packed-payload-reversed"
    clause = "dev.basic.packed-virtqueues.scatter-gather-support.1"
    packed_queue_class = _PayloadReversedQueue


class _IndirectFirstEntryQueue(DevicePackedQueue):
    def _walk_indirect(self, chain, addr: int, length: int) -> None:
        # BUG: follows NEXT as in a split ring's table; packed tables have none, so it stops at entry 0
        super()._walk_indirect(chain, addr, min(length, DESC_SIZE) if length % DESC_SIZE == 0 else length)


class BlkPackedIndirectFirstEntryOnly(BlkDevice):
    """Reads a packed indirect table the split way, following NEXT flags, so it uses only the
    first entry (packed tables chain nothing: every entry counts).

    def.packed.indirect-table (2.8.7): the device uses every entry of an indirect table, in order.
    """

    name = "blk-packed-indirect-first-entry-only"
    clause = "def.packed.indirect-table"
    packed_queue_class = _IndirectFirstEntryQueue


# -- driver event suppression (2.8.10) -----------------------------------------------------------------
class _EnableEveryOtherQueue(DevicePackedQueue):
    skip = False

    def should_interrupt(self) -> bool:
        decision = super().should_interrupt()
        if decision and split_event(int(self.ring.driver_event[0]))[1] == C.RING_EVENT_FLAGS_ENABLE:
            self.skip = not self.skip
            if self.skip:
                return False  # BUG: coalesces two batches into one notification
        return decision


class RngPackedEnableNotifiesEveryOther(RngDevice):
    """With driver event suppression ENABLE, sends one used buffer notification per two batches.

    def.packed.driver-event-enable (2.8.10): while the flags are ENABLE the device notifies after
    writing used descriptors.
    """

    name = "rng-packed-enable-notifies-every-other"
    clause = "def.packed.driver-event-enable"
    packed_queue_class = _EnableEveryOtherQueue


class _IgnoresDisableQueue(DevicePackedQueue):
    def should_interrupt(self) -> bool:
        pushed = self.pushed
        decision = super().should_interrupt()
        if pushed and split_event(int(self.ring.driver_event[0]))[1] == C.RING_EVENT_FLAGS_DISABLE:
            return True  # BUG: DISABLE not honoured
        return decision


class RngPackedIgnoresEventDisable(RngDevice):
    """Notifies after every batch even when the driver event suppression flags are DISABLE.

    def.packed.driver-event-disable (2.8.10): with DISABLE the device holds back used buffer
    notifications (a SHOULD: a warning).
    """

    name = "rng-packed-ignores-event-disable"
    clause = "def.packed.driver-event-disable"
    packed_queue_class = _IgnoresDisableQueue


class _DescNeverQueue(DevicePackedQueue):
    def should_interrupt(self) -> bool:
        decision = super().should_interrupt()
        if split_event(int(self.ring.driver_event[0]))[1] == C.RING_EVENT_FLAGS_DESC:
            return False  # BUG: a descriptor-specific request is treated as DISABLE
        return decision


class RngPackedDescEventIgnored(RngDevice):
    """Treats a descriptor-specific driver event (flags DESC, with EVENT_IDX) as DISABLE: the
    driver is never notified.

    def.packed.driver-event-desc (2.8.10): the device notifies when it uses the descriptor the
    driver named.
    """

    name = "rng-packed-desc-event-ignored"
    clause = "def.packed.driver-event-desc"
    packed_queue_class = _DescNeverQueue


class _DescPlainCompareQueue(DevicePackedQueue):
    def should_interrupt(self) -> bool:
        if not self.pushed:
            return False
        old, new = self.signalled_used, self.used_idx
        self.signalled_used, self.signalled_wrap, self.pushed = new, self.used_wrap_counter, 0
        desc, flags = split_event(int(self.ring.driver_event[0]))
        if flags == C.RING_EVENT_FLAGS_DISABLE:
            return False
        if flags == C.RING_EVENT_FLAGS_DESC and self.event_idx:
            # BUG: plain positions, wrap bit ignored: a used range that reaches the end of the ring
            # (new < old, or new == 0) never contains the offset.
            return old <= desc & 0x7FFF < new
        return True


class RngPackedDescEventPlainCompare(RngDevice):
    """With VIRTIO_F_EVENT_IDX and flags DESC, tests "the named descriptor was used" as
    ``old <= offset < new`` on plain ring positions, ignoring the wrap counter: right except where
    the used descriptors reach the end of the ring.

    def.packed.driver-event-desc (2.8.10): the device notifies when it uses the descriptor at the
    offset and wrap counter the driver named (compared modulo the ring, as
    vring_packed_need_event does).
    """

    name = "rng-packed-desc-event-plain-compare"
    clause = "def.packed.driver-event-desc"
    packed_queue_class = _DescPlainCompareQueue


class _DescAlwaysQueue(DevicePackedQueue):
    def should_interrupt(self) -> bool:
        pushed = self.pushed
        decision = super().should_interrupt()
        if pushed and split_event(int(self.ring.driver_event[0]))[1] == C.RING_EVENT_FLAGS_DESC:
            return True  # BUG: a descriptor-specific request is treated as ENABLE
        return decision


class RngPackedDescEventAsEnable(RngDevice):
    """Treats a descriptor-specific driver event (flags DESC, with EVENT_IDX) as ENABLE: notifies
    after every batch.

    def.packed.driver-event-desc-only (2.8.10): with DESC the device notifies for the named
    descriptor only (a SHOULD: a warning).
    """

    name = "rng-packed-desc-event-as-enable"
    clause = "def.packed.driver-event-desc-only"
    packed_queue_class = _DescAlwaysQueue


# -- device event suppression (2.8.14) ------------------------------------------------------------------
class _DescWithoutEventIdxQueue(DevicePackedQueue):
    def __init__(self, mem, index, addrs, features):
        super().__init__(mem, index, addrs, features)
        # BUG: descriptor-specific available buffer notifications without VIRTIO_F_EVENT_IDX
        self.ring.device_event_desc[0] = off_wrap(0, 1)
        self.ring.device_event_flags[0] = C.RING_EVENT_FLAGS_DESC

    def pop(self):
        chain = super().pop()
        if chain is not None:
            self.ring.device_event_desc[0] = off_wrap(self.last_avail_idx, self.avail_wrap_counter)
        return chain


class RngPackedDescFlagWithoutEventIdx(RngDevice):
    """Publishes RING_EVENT_FLAGS_DESC in its device event suppression structure although
    VIRTIO_F_EVENT_IDX was not negotiated (the offset it gives is right, so the driver copes).

    def.packed.device-event-flags (2.8.10, 2.8.14): DESC is only valid with EVENT_IDX.
    """

    name = "rng-packed-desc-flag-without-event-idx"
    clause = "def.packed.device-event-flags"
    packed_queue_class = _DescWithoutEventIdxQueue


class _AvailOrderQueue(DevicePackedQueue):
    def __init__(self, mem, index, addrs, features):
        super().__init__(mem, index, addrs, features)
        self.stash: dict[int, int] = {}

    def push(self, head: int, length: int) -> None:
        if self.in_order:  # with IN_ORDER completion order is avail order (an in-order batch push names its last)
            return super().push(head, length)
        # BUG: a buffer completed ahead of an earlier one waits for it: used descriptors are
        # written in the order the buffers were made available, not the order they completed.
        self.stash[head] = length
        while self.pending and next(iter(self.pending)) in self.stash:
            oldest = next(iter(self.pending))
            super().push(oldest, self.stash.pop(oldest))


class BlkPackedUsedInAvailOrder(BlkDevice):
    """Completes requests out of order (GET_ID after the requests behind it) but writes the used
    descriptors in the order the buffers were made available.

    dev.basic.packed-virtqueues.2 (2.8.12): the device MUST start writing used descriptors in the
    order in which it completes the buffers.
    """

    name = "blk-packed-used-in-avail-order"
    clause = "dev.basic.packed-virtqueues.2"
    packed_queue_class = _AvailOrderQueue
