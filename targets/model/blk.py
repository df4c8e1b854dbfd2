"""Reference block device (VIRTIO 1.4, 5.2): a RAM-backed disk with one request queue.

Every request is validated before it touches the disk; the status byte is the last device-writable
byte of the buffer and the used len always covers it (see ``_finish``).
"""

from __future__ import annotations

import threading

import numpy as np

from virtio import constants as C
from virtio.buffers import ChainError, DeviceChain
from virtio.messages import BLK_DISCARD_WZ, BLK_LIFETIME, BLK_OUTHDR

from .device import Device
from .device_queue import DeviceQueue

SERIAL = b"vconf-model-blk"
SIZE_MAX = 1 << 20  # bytes in one data segment (a hint to the driver; 5.2.4)
MAX_DISCARD_SECTORS = 32768
MAX_DISCARD_SEG = 8
DISCARD_SECTOR_ALIGNMENT = 8  # 4 KiB, in 512-byte units
MAX_WRITE_ZEROES_SECTORS = 32768
MAX_WRITE_ZEROES_SEG = 8
RESIZE_STEP = 8  # sectors added by each change_config()
DEFER_LIMIT = 3.0  # seconds a deferred GET_ID waits at most for the next pass (then it completes anyway)

# Model extension (not in the spec): a read-only statistics page exposed as shared memory
# region 0 (2.10), so that get_shm_region() has something real to report. Counters neither
# control the device nor stream data, as 2.10.2 requires of a region. The page lies outside
# the guest RAM the harness allocates; read it device-side with ``shm_read``.
SHM_STATS_ID = 0
SHM_STATS_ADDR = 0x80_0000_0000
SHM_STATS_LEN = 4096
# The page is an array of le64 counters in this order, then zeros.
STATS_FIELDS = (
    "requests",
    "in",
    "out",
    "flush",
    "get_id",
    "discard",
    "write_zeroes",
    "ok",
    "ioerr",
    "unsupp",
    "bytes_read",
    "bytes_written",
    "allocated_sectors",
)


class BlkDevice(Device):
    """Block device model: IN, OUT, FLUSH, GET_ID, DISCARD and WRITE_ZEROES (5.2.6).

    The disk keeps an allocation map per sector so that discard and write-zeroes-with-unmap
    really deallocate (which is what makes ``write_zeroes_may_unmap = 1`` truthful, 5.2.6.2).
    """

    device_id = C.VIRTIO_ID_BLOCK
    name = "blk"
    num_queues = 2  # with VIRTIO_BLK_F_MQ (5.2.2): requestq1, requestq2 on the one medium
    queue_names = ("requestq1", "requestq2")
    queue_size_max = 256

    def __init__(self, capacity_sectors: int = 2048, mode: str = "notify", read_only: bool = False):
        # Set before Device.__init__, which builds the config and resets the device.
        self.capacity = int(capacity_sectors)
        self.read_only = bool(read_only)
        self.disk = np.zeros(self.capacity * C.SECTOR_SIZE, dtype=np.uint8)
        self.allocated = np.zeros(self.capacity, dtype=bool)
        self.stats = dict.fromkeys(STATS_FIELDS, 0)
        self.features = sum(
            1 << b
            for b in (
                C.VIRTIO_BLK_F_SIZE_MAX,
                C.VIRTIO_BLK_F_SEG_MAX,
                C.VIRTIO_BLK_F_BLK_SIZE,
                C.VIRTIO_BLK_F_FLUSH,  # 5.2.5.2: must be offered with CONFIG_WCE
                C.VIRTIO_BLK_F_DISCARD,
                C.VIRTIO_BLK_F_WRITE_ZEROES,
                C.VIRTIO_BLK_F_CONFIG_WCE,
                C.VIRTIO_BLK_F_LIFETIME,  # the model plays an eMMC-like medium with wear figures
                C.VIRTIO_BLK_F_MQ,
            )
        ) | ((1 << C.VIRTIO_BLK_F_RO) if self.read_only else 0)
        self._handlers = {
            C.VIRTIO_BLK_T_IN: self._do_in,
            C.VIRTIO_BLK_T_OUT: self._do_out,
            C.VIRTIO_BLK_T_FLUSH: self._do_flush,
            C.VIRTIO_BLK_T_GET_ID: self._do_get_id,
            C.VIRTIO_BLK_T_GET_LIFETIME: self._do_get_lifetime,
            C.VIRTIO_BLK_T_DISCARD: self._do_discard,
            C.VIRTIO_BLK_T_WRITE_ZEROES: self._do_write_zeroes,
        }
        super().__init__(mode=mode)

    @property
    def requests_handled(self) -> int:
        return self.stats["requests"]

    # -- configuration (5.2.4, 5.2.5) ------------------------------------------------------------
    def initial_config(self) -> bytes:
        return self.layout.pack(
            {
                "capacity": self.capacity,
                "size_max": SIZE_MAX,
                "seg_max": self.queue_size_max - 2,  # room for the header and status descriptors
                "blk_size": C.SECTOR_SIZE,
                "writeback": 1,
                "max_discard_sectors": MAX_DISCARD_SECTORS,
                "max_discard_seg": MAX_DISCARD_SEG,
                "discard_sector_alignment": DISCARD_SECTOR_ALIGNMENT,
                "max_write_zeroes_sectors": MAX_WRITE_ZEROES_SECTORS,
                "max_write_zeroes_seg": MAX_WRITE_ZEROES_SEG,
                "write_zeroes_may_unmap": 1,
                "num_queues": self.num_queues,
            }
        )

    def on_reset(self) -> None:
        # 5.2.5: the cache mode after reset may be either; this model always comes back writeback.
        # Capacity and disk contents are the medium, so they survive a device reset.
        self._poke_config(writeback=1)
        for entry in getattr(self, "_deferred", ()):
            entry[4].cancel()
        # (queue index, its ring, chain, pass, timer): GET_IDs held for a later pass
        self._deferred: list[tuple[int, object, DeviceChain, int, threading.Timer]] = []
        self._passes = 0
        self._handled_in_pass = 0

    def on_queue_reset(self, index: int) -> None:
        for entry in self._deferred:
            if entry[0] == index:
                entry[4].cancel()  # dropped, as held chains are
        self._deferred = [d for d in self._deferred if d[0] != index]

    def detach(self) -> None:
        with self.lock:
            for entry in self._deferred:
                entry[4].cancel()
        super().detach()

    def set_status(self, status: int) -> None:
        with self.lock:
            had_features_ok = self.status & C.FEATURES_OK
            super().set_status(status)
            if self.status & C.FEATURES_OK and not had_features_ok:
                self._init_cache_mode()

    def _init_cache_mode(self) -> None:
        """5.2.5.2: CONFIG_WCE negotiated without FLUSH -> writeback starts at 0 (writethrough)."""
        negotiated = self.driver_features
        if negotiated >> C.VIRTIO_BLK_F_CONFIG_WCE & 1 and not negotiated >> C.VIRTIO_BLK_F_FLUSH & 1:
            self._poke_config(writeback=0)

    def _poke_config(self, **values) -> None:
        """Set config fields without a change notification (the driver caused or expects it)."""
        with self.lock:
            before = bytes(self.config)
            for name, value in values.items():
                f = self.layout[name]
                self.config[f.offset : f.offset + f.size] = f.encode(value)
            if bytes(self.config) != before:
                self.bump_generation()

    def change_config(self) -> None:
        """A resize: capacity grows by RESIZE_STEP sectors; 5.2.6.2 says to notify the driver."""
        with self.lock:
            self.capacity += RESIZE_STEP
            self.disk = np.concatenate([self.disk, np.zeros(RESIZE_STEP * C.SECTOR_SIZE, dtype=np.uint8)])
            self.allocated = np.concatenate([self.allocated, np.zeros(RESIZE_STEP, dtype=bool)])
            self.update_config(capacity=self.capacity)

    # -- shared memory (2.10), a model extension ---------------------------------------------------
    def shm_regions(self) -> dict[int, tuple[int, int]]:
        return {SHM_STATS_ID: (SHM_STATS_ADDR, SHM_STATS_LEN)}

    def stats_page(self) -> bytes:
        with self.lock:
            self.stats["allocated_sectors"] = int(self.allocated.sum())
            words = b"".join(self.stats[k].to_bytes(8, "little") for k in STATS_FIELDS)
        return words.ljust(SHM_STATS_LEN, b"\0")

    def shm_read(self, region_id: int, offset: int, length: int) -> bytes:
        """Device-side read of a shared memory region (the page is read-only for the driver)."""
        if region_id != SHM_STATS_ID or offset < 0 or length < 0 or offset + length > SHM_STATS_LEN:
            raise ValueError(f"no shared memory at region {region_id} [{offset}, +{length})")
        return self.stats_page()[offset : offset + length]

    # -- out-of-order completion (2.7.8, 2.8.12) -----------------------------------------------------
    # A GET_ID request with other requests behind it in the same pass is answered after them, at
    # the next pass (the next notification with buffers), as a device whose identify path is
    # slower than its data path would: the suites see buffers completed out of the order they were
    # made available, with the earlier one still outstanding. Never with VIRTIO_F_IN_ORDER (2.7.9).
    # A GET_ID that nothing follows in its pass completes at the end of that pass, and none waits
    # longer than DEFER_LIMIT: a driver that sends nothing more still gets it in bounded time.
    def _defers(self, chain: DeviceChain, queue) -> bool:
        if self.driver_features >> C.VIRTIO_F_IN_ORDER & 1 or not chain.readable or not chain.writable:
            return False  # a request with nowhere to put a status is refused in handle, at once
        addr, n = chain.readable[0]
        return n >= BLK_OUTHDR.size and BLK_OUTHDR.unpack_from(queue.mem.read(addr, BLK_OUTHDR.size))[0] == C.VIRTIO_BLK_T_GET_ID

    def after_process(self, index: int) -> None:
        keep = []
        for entry in self._deferred:
            qi, queue, chain, since, timer = entry
            if qi != index:
                keep.append(entry)
            elif since == self._passes and self._handled_in_pass > chain.seq:
                keep.append(entry)  # requests behind it completed in this pass: it waits a pass
            else:
                timer.cancel()
                self.complete(index, chain, self._serve(queue, chain))
        self._deferred = keep
        self._passes += 1
        self._handled_in_pass = 0

    def before_suspend(self) -> None:
        """A deferred GET_ID is a request being processed: answer it before suspending (3.4.1)."""
        entries, self._deferred = self._deferred, []
        for qi, queue, chain, _, timer in entries:
            timer.cancel()
            if self.queues[qi] is queue:
                self.complete(qi, chain, self._serve(queue, chain))
        for qi in {e[0] for e in entries}:
            self.signal(qi)

    def _deferred_expired(self, chain: DeviceChain) -> None:
        """DEFER_LIMIT passed with no other pass on the queue: answer the GET_ID now."""
        with self.lock:
            entry = next((e for e in self._deferred if e[2] is chain), None)
            if entry is None or not self.running() or self.queues[entry[0]] is not entry[1]:
                return  # completed, or its queue (or the device) was reset meanwhile
            self._deferred.remove(entry)
            self.complete(entry[0], chain, self._serve(entry[1], chain))
            self.signal(entry[0])

    # -- requests (5.2.6) -----------------------------------------------------------------------
    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int | None:
        """One request: header (readable), data, status byte (the last writable byte)."""
        self._handled_in_pass += 1
        if self._defers(chain, queue):
            chain.seq = self._handled_in_pass
            timer = threading.Timer(DEFER_LIMIT, self._deferred_expired, (chain,))
            timer.daemon = True
            self._deferred.append((qindex, queue, chain, self._passes, timer))
            timer.start()
            return None  # held: answered in after_process
        return self._serve(queue, chain)

    def _serve(self, queue: DeviceQueue, chain: DeviceChain) -> int:
        self.stats["requests"] += 1
        if chain.writable_len == 0:
            # Nowhere to put a status: the request cannot be completed at all (2.1.2).
            raise ChainError(f"blk request at head {chain.head} has no device-writable status byte")
        raw = queue.read_readable(chain)
        data_len = chain.writable_len - 1  # writable bytes before the status byte
        if len(raw) < BLK_OUTHDR.size:
            status, data = C.VIRTIO_BLK_S_IOERR, b""  # the header is not all device-readable
        else:
            req_type, _reserved, sector = BLK_OUTHDR.unpack_from(raw)
            handler = self._handlers.get(req_type)
            if handler is None:
                status, data = C.VIRTIO_BLK_S_UNSUPP, b""
            else:
                status, data = handler(sector, raw[BLK_OUTHDR.size :], data_len)
        self.stats[{C.VIRTIO_BLK_S_OK: "ok", C.VIRTIO_BLK_S_IOERR: "ioerr"}.get(status, "unsupp")] += 1
        return self._finish(queue, chain, status, data)

    def _finish(self, queue: DeviceQueue, chain: DeviceChain, status: int, data: bytes) -> int:
        """Write data (zero-padded) and then the status byte; return the used len.

        2.7.8.2: the device must have written the first ``len`` writable bytes. The status byte
        sits at the end, so every byte before it is written too (data, or zeros when a request
        fails or produces nothing), and used len is the whole writable length.
        """
        data_len = chain.writable_len - 1
        body = bytes(data[:data_len]).ljust(data_len, b"\0")
        return queue.write_writable(chain, body + bytes([status]))

    def _in_range(self, sector: int, nsectors: int) -> bool:
        return sector + nsectors <= self.capacity

    def _do_in(self, sector: int, payload: bytes, data_len: int):
        if data_len % C.SECTOR_SIZE:
            return C.VIRTIO_BLK_S_IOERR, b""  # data must be whole sectors
        n = data_len // C.SECTOR_SIZE
        if not self._in_range(sector, n):
            return C.VIRTIO_BLK_S_IOERR, b""
        self.stats["in"] += 1
        self.stats["bytes_read"] += data_len
        off = sector * C.SECTOR_SIZE
        return C.VIRTIO_BLK_S_OK, self.disk[off : off + data_len].tobytes()

    def _do_out(self, sector: int, payload: bytes, data_len: int):
        if self.read_only:
            return C.VIRTIO_BLK_S_IOERR, b""  # 5.2.6.2: RO -> IOERR and nothing written
        if len(payload) % C.SECTOR_SIZE:
            return C.VIRTIO_BLK_S_IOERR, b""
        n = len(payload) // C.SECTOR_SIZE
        if not self._in_range(sector, n):
            return C.VIRTIO_BLK_S_IOERR, b""
        off = sector * C.SECTOR_SIZE
        self.disk[off : off + len(payload)] = np.frombuffer(payload, dtype=np.uint8)
        self.allocated[sector : sector + n] = True
        self.stats["out"] += 1
        self.stats["bytes_written"] += len(payload)
        return C.VIRTIO_BLK_S_OK, b""

    def _do_flush(self, sector: int, payload: bytes, data_len: int):
        # RAM has no volatile cache to write back: every completed write is already stable.
        self.stats["flush"] += 1
        return C.VIRTIO_BLK_S_OK, b""

    def _do_get_id(self, sector: int, payload: bytes, data_len: int):
        # NUL-padded to 20 bytes; a shorter buffer (a driver error) gets the string truncated.
        self.stats["get_id"] += 1
        return C.VIRTIO_BLK_S_OK, SERIAL.ljust(C.VIRTIO_BLK_ID_BYTES, b"\0")

    def lifetime(self) -> tuple[int, int, int]:
        """pre_eol_info, device_lifetime_est_typ_a, _typ_b (5.2.6): normal, up to 10% and 20% used."""
        return 1, 1, 2

    def _do_get_lifetime(self, sector: int, payload: bytes, data_len: int):
        if not self.driver_features >> C.VIRTIO_BLK_F_LIFETIME & 1:
            return C.VIRTIO_BLK_S_UNSUPP, b""  # the request type belongs to a feature not negotiated
        return C.VIRTIO_BLK_S_OK, BLK_LIFETIME.pack(*self.lifetime())

    def _do_discard(self, sector: int, payload: bytes, data_len: int):
        self.stats["discard"] += 1
        return self._do_ranges(payload, write_zeroes=False)

    def _do_write_zeroes(self, sector: int, payload: bytes, data_len: int):
        self.stats["write_zeroes"] += 1
        return self._do_ranges(payload, write_zeroes=True)

    def _do_ranges(self, payload: bytes, write_zeroes: bool):
        """DISCARD / WRITE_ZEROES: validate every segment, then apply them all (5.2.6)."""
        feature = C.VIRTIO_BLK_F_WRITE_ZEROES if write_zeroes else C.VIRTIO_BLK_F_DISCARD
        if not self.driver_features >> feature & 1:
            return C.VIRTIO_BLK_S_UNSUPP, b""  # a command the driver did not negotiate
        size = BLK_DISCARD_WZ.size
        if not payload or len(payload) % size:
            return C.VIRTIO_BLK_S_IOERR, b""  # one or more whole segments are required
        segs = [BLK_DISCARD_WZ.unpack_from(payload, i) for i in range(0, len(payload), size)]
        max_seg = self.config_value("max_write_zeroes_seg" if write_zeroes else "max_discard_seg")
        max_sectors = self.config_value("max_write_zeroes_sectors" if write_zeroes else "max_discard_sectors")
        if len(segs) > max_seg:
            return C.VIRTIO_BLK_S_UNSUPP, b""  # judgement call: a request shape we do not support
        allowed = C.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP if write_zeroes else 0
        if any(flags & ~allowed for _, _, flags in segs):
            return C.VIRTIO_BLK_S_UNSUPP, b""  # 5.2.6.2: unknown flag, or unmap on a discard
        if self.read_only:
            return C.VIRTIO_BLK_S_IOERR, b""
        for sector, nsectors, _ in segs:
            if nsectors > max_sectors or not self._in_range(sector, nsectors):
                return C.VIRTIO_BLK_S_IOERR, b""
        for sector, nsectors, flags in segs:
            off, end = sector * C.SECTOR_SIZE, (sector + nsectors) * C.SECTOR_SIZE
            self.disk[off:end] = 0  # reads after write zeroes must return zeros; after discard, ours do too
            unmap = not write_zeroes or flags & C.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
            self.allocated[sector : sector + nsectors] = not unmap
        return C.VIRTIO_BLK_S_OK, b""
