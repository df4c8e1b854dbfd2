"""Mutants of the virtio-blk device duties (VIRTIO 1.4, 5.2.5.2 and 5.2.6.2), one broken duty each."""

from __future__ import annotations

from targets.model.blk import BlkDevice
from virtio import blk as B
from virtio import constants as C
from virtio.messages import BLK_DISCARD_WZ


class BlkConfigWceWithoutFlush(BlkDevice):
    """Offers VIRTIO_BLK_F_CONFIG_WCE but not VIRTIO_BLK_F_FLUSH.

    dev.blk.device-initialization.1 (5.2.5.2): a device offering CONFIG_WCE MUST offer FLUSH.
    """

    name = "blk-config-wce-without-flush"
    clause = "dev.blk.device-initialization.1"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.features &= ~(1 << C.VIRTIO_BLK_F_FLUSH)  # BUG


class BlkWritebackLeftOn(BlkDevice):
    """Keeps writeback = 1 when CONFIG_WCE is negotiated without FLUSH.

    dev.blk.device-initialization.2 (5.2.5.2): writeback MUST start at 0 in that case.
    """

    name = "blk-writeback-left-on"
    clause = "dev.blk.device-initialization.2"

    def _init_cache_mode(self) -> None:
        self._poke_config(writeback=1)  # BUG: a volatile cache the driver cannot flush


class BlkReadOnlyWritesAnyway(BlkDevice):
    """Offers VIRTIO_BLK_F_RO and answers writes with IOERR, but stores their data first.

    dev.blk.device-operation.2 (5.2.6.2): with RO offered a write MUST get IOERR and MUST NOT
    write any data.
    """

    name = "blk-read-only-writes-anyway"
    clause = "dev.blk.device-operation.2"

    def __init__(self, capacity_sectors: int = 2048, mode: str = "notify", read_only: bool = True):
        super().__init__(capacity_sectors, mode, read_only=True)

    def _do_out(self, sector, payload, data_len):
        self.read_only = False
        try:
            super()._do_out(sector, payload, data_len)  # BUG: the data lands on the medium
        finally:
            self.read_only = True
        return C.VIRTIO_BLK_S_IOERR, b""


class BlkSegmentFlagsIgnored(BlkDevice):
    """Ignores flag bits it does not know in discard and write-zeroes segments.

    dev.blk.device-operation.3 (5.2.6.2): an unknown flag MUST get VIRTIO_BLK_S_UNSUPP.
    """

    name = "blk-segment-flags-ignored"
    clause = "dev.blk.device-operation.3"

    def _do_ranges(self, payload, write_zeroes):
        size = BLK_DISCARD_WZ.size
        raw = bytearray(payload)
        for off in range(0, len(raw) - size + 1, size):  # BUG: strip the unknown bits, keep unmap
            sector, n, flags = BLK_DISCARD_WZ.unpack_from(raw, off)
            BLK_DISCARD_WZ.pack_into(raw, off, sector, n, flags & ~B.UNKNOWN_SEGMENT_FLAG)
        return super()._do_ranges(bytes(raw), write_zeroes)


class BlkDiscardUnmapAccepted(BlkDevice):
    """Accepts a discard segment with the unmap flag set.

    dev.blk.device-operation.4 (5.2.6.2): discard with unmap MUST get VIRTIO_BLK_S_UNSUPP.
    """

    name = "blk-discard-unmap-accepted"
    clause = "dev.blk.device-operation.4"

    def _do_ranges(self, payload, write_zeroes):
        if write_zeroes:
            return super()._do_ranges(payload, write_zeroes)
        size = BLK_DISCARD_WZ.size
        raw = bytearray(payload)
        for off in range(0, len(raw) - size + 1, size):  # BUG: unmap dropped instead of refused
            sector, n, flags = BLK_DISCARD_WZ.unpack_from(raw, off)
            BLK_DISCARD_WZ.pack_into(raw, off, sector, n, flags & ~B.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)
        return super()._do_ranges(bytes(raw), write_zeroes)


class BlkWriteZeroesUnmapKeepsData(BlkDevice):
    """Write zeroes with unmap only marks the sectors deallocated; reads still see the old data.

    dev.blk.device-operation.7 (5.2.6.2): after write zeroes, unmap or not, reads MUST return zeroes.
    """

    name = "blk-write-zeroes-unmap-keeps-data"
    clause = "dev.blk.device-operation.7"

    def _do_ranges(self, payload, write_zeroes):
        size = BLK_DISCARD_WZ.size
        segs = [BLK_DISCARD_WZ.unpack_from(payload, i) for i in range(0, len(payload) - size + 1, size)]
        saved = [(s, self.disk[s * C.SECTOR_SIZE:(s + n) * C.SECTOR_SIZE].copy()) for s, n, f in segs
                 if write_zeroes and f & B.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP and s + n <= self.capacity]
        status, data = super()._do_ranges(payload, write_zeroes)
        for s, old in saved:  # BUG: deallocated, but the medium keeps its bytes
            self.disk[s * C.SECTOR_SIZE:s * C.SECTOR_SIZE + len(old)] = old
        return status, data


class BlkZoneRequestsAccepted(BlkDevice):
    """Completes zoned requests with VIRTIO_BLK_S_OK although VIRTIO_BLK_F_ZONED is not negotiated.

    dev.blk.device-operation.15 (5.2.6.2): without ZONED every zoned request MUST get UNSUPP.
    """

    name = "blk-zone-requests-accepted"
    clause = "dev.blk.device-operation.15"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for t in B.ZONE_REQUEST_TYPES.values():
            self._handlers[t] = lambda sector, payload, data_len: (C.VIRTIO_BLK_S_OK, b"")  # BUG


class BlkMarkupSerial(BlkDevice):
    """Answers GET_ID with HTML markup as its serial (20 bytes), for the report escaping test.

    Not a broken duty: 5.2.6 lets the serial be any bytes. Kept out of MUTANT_CLASSES, which
    requires a clause each mutant breaks; the report must show the serial escaped.
    """

    name = "blk-markup-serial"
    clause = None
    SERIAL = b"<script>alert(1)</s>"[: C.VIRTIO_BLK_ID_BYTES]

    def _do_get_id(self, sector, payload, data_len):
        self.stats["get_id"] += 1
        return C.VIRTIO_BLK_S_OK, self.SERIAL.ljust(C.VIRTIO_BLK_ID_BYTES, b"\0")


class BlkPaddingNotZeroed(BlkDevice):
    """Leaves garbage in the config padding byte unused0 (between writeback and num_queues).

    dev.blk.device-initialization.3 (5.2.5.2): the device MUST initialize unused0 and unused1 to 0.
    """

    name = "blk-padding-not-zeroed"
    clause = "dev.blk.device-initialization.3"

    def initial_config(self) -> bytes:
        config = super().initial_config()
        config[self.layout["unused0"].offset] = 0xA5  # BUG: uninitialized memory
        return config


class BlkLifetimeReservedValue(BlkDevice):
    """Reports a lifetime estimate of 12, past the defined 0..11 (a raw counter passed through).

    dev.blk.device-operation.14 (5.2.6.2): with the lifetime metrics offered the device MUST NOT
    send any reserved value.
    """

    name = "blk-lifetime-reserved-value"
    clause = "dev.blk.device-operation.14"

    def lifetime(self) -> tuple[int, int, int]:
        return 1, 12, 2  # BUG: 12 is reserved


class BlkMqLastQueueIgnored(BlkDevice):
    """Offers VIRTIO_BLK_F_MQ with two request queues but never serves the last one.

    def.blk.multiqueue (5.2.2): every one of the num_queues request queues serves requests.
    """

    name = "blk-mq-last-queue-ignored"
    clause = "def.blk.multiqueue"

    def process_queue(self, index: int) -> None:
        if self.driver_features >> C.VIRTIO_BLK_F_MQ & 1 and index == self.num_queues - 1:
            return  # BUG
        super().process_queue(index)


class BlkMqMediumPerQueue(BlkDevice):
    """Gives each request queue a medium of its own: what one queue wrote, another does not read.

    def.blk.multiqueue (5.2.2): the request queues are queues of one block device.
    """

    name = "blk-mq-medium-per-queue"
    clause = "def.blk.multiqueue"

    def handle(self, qindex, queue, chain):
        if not qindex:
            return super().handle(qindex, queue, chain)
        disks = self.__dict__.setdefault("_disks", {})
        own = disks.setdefault(qindex, self.disk.copy())
        shared, self.disk = self.disk, own  # BUG: a copy, not the medium
        try:
            return super().handle(qindex, queue, chain)
        finally:
            disks[qindex], self.disk = self.disk, shared
