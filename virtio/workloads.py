"""Device-type request generators for ring tests: each makes buffers whose outcome the driver can
check (used len, data integrity), so the split-ring suites run unchanged on any device type.

blk (5.2.6): a write then a read back of known data; rng (5.4.6): random bytes into writable
buffers; net (5.1.6): a frame to our own MAC looped back TX -> RX; console (5.3.6): bytes echoed.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from dataclasses import dataclass, field

from . import blk_zoned as Z
from . import constants as C
from .blk import VIRTIO_BLK_T_ZONE_REPORT
from .buffers import BufferChain
from .checks import poll
from .errors import DeviceTimeout, DeviceViolation, HarnessError, LinkDown, NotApplicable, UnsupportedOp
from .messages import NET_HDR_SIZE, NetHdr, blk_outhdr
from .net_frames import ETH_HLEN, FrameTags, check_forward_mode, difference
from .virtqueue import Virtqueue

CLAUSE_USED_LEN = "dev.basic.virtqueues.the-virtqueue-used-ring.2"
CLAUSE_READONLY = "dev.basic.virtqueues.the-virtqueue-descriptor-table.1"
CLAUSE_FRAMING = "dev.basic.message-framing.1"
CLAUSE_RNG_BYTES = "dev.rng.device-operation.1"  # 5.4.6.2: one or more random bytes per buffer

def ring_clause(vq: Virtqueue, clause: str) -> str:
    """``clause`` (a split ring's id) as it applies to ``vq``'s layout: the queue's own clause for
    that duty (a packed ring's have their own ids)."""
    if clause == CLAUSE_USED_LEN:
        return vq.used_rules.len_clause
    if clause == CLAUSE_READONLY:
        return vq.readonly_clause
    return clause


POISON = 0xA5  # fill byte of device-writable buffers, to see what the device wrote


def split_bytes(data: bytes, parts: int) -> list[bytes]:
    """Split into ``parts`` non-empty pieces (fewer if data is shorter)."""
    parts = max(1, min(parts, len(data)))
    step, rem = divmod(len(data), parts)
    out, pos = [], 0
    for i in range(parts):
        n = step + (1 if i < rem else 0)
        out.append(data[pos : pos + n])
        pos += n
    return out


def split_len(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    step, rem = divmod(total, parts)
    return [step + (1 if i < rem else 0) for i in range(parts)]


@dataclass
class Shape:
    """How a buffer is laid out in descriptors (2.7.4: the device must not care)."""

    segments: int = 1  # descriptors per side (readable data / writable data)
    indirect: bool = False
    direct_before_indirect: int = 0
    indirect_desc_write_flag: bool = False

    def kw(self) -> dict:
        return {
            "indirect": self.indirect,
            "direct_before_indirect": self.direct_before_indirect,
            "indirect_desc_write_flag": self.indirect_desc_write_flag,
        }


@dataclass
class Exchange:
    """One request in flight: the chains the driver made available and what must come back."""

    chains: list[BufferChain] = field(default_factory=list)
    readable_copy: list[tuple[int, bytes]] = field(default_factory=list)  # (addr, bytes) to verify untouched
    expect: dict = field(default_factory=dict)


class Workload:
    """Base: ``vq`` is the queue whose completions the ring tests watch."""

    vq_index = 0

    def __init__(self, driver, vqs: list[Virtqueue], timeout: float):
        self.driver = driver
        self.vqs = vqs
        self.vq = vqs[self.vq_index]
        self.timeout = timeout

    def fits(self, shape: Shape) -> bool:
        return True

    def submit(self, shape: Shape = Shape(), size: int = 64) -> Exchange:
        raise NotImplementedError

    elems_per_exchange = 1  # used elems one roundtrip puts on ``vq``

    def chains_on_main(self, ex: Exchange) -> int:
        """How many of an exchange's buffers went through ``vq`` (for index arithmetic)."""
        return len(ex.chains) if self.vq_index == 0 else 1

    def light_buffers(self) -> tuple[list, list]:
        """(readable, writable) Sg lists for a cheap request on ``vq`` that needs no other queue;
        the memory is allocated once and reused, for tests that push many buffers."""
        raise NotImplementedError

    def light_echo(self):
        """``(queue, readable, writable)`` for buffers on another queue that take back what the
        device sends in answer to light requests (a console's echo), or None: a test pushing many
        light requests adds one of these per request, so nothing is left pending afterwards."""
        return None

    def light_unfit(self) -> str | None:
        """Why light requests (and their echo buffers) cannot go through the queues as sized,
        or None when they can."""
        out, in_ = self.light_buffers()
        echo = self.light_echo()
        for vq, n in [(self.vq, len(out) + len(in_))] + ([(echo[0], len(echo[1]) + len(echo[2]))] if echo else []):
            if n > vq.num:
                return f"a light request takes {n} descriptors, {vq.name} has {vq.num}"
        return None

    def push_light(self, count: int, why: str) -> None:
        """Make ``count`` light requests available on ``vq`` and take them back, in batches as
        large as the queue size allows (the batch API: every used elem still validated), with
        their echo buffers (``light_echo``) if any. Each kick is decided from the device's
        suppression fields, so a device that strands buffers times out here, saying ``why``."""
        vq = self.vq
        out, in_ = self.light_buffers()
        per = max(1, min(256, vq.num // (len(out) + len(in_))))
        echo = self.light_echo()
        if echo is not None:
            evq, e_out, e_in = echo
            per = max(1, min(per, evq.num // (len(e_out) + len(e_in))))
            e_out, e_in = tuple(e_out), tuple(e_in)
        out, in_ = tuple(out), tuple(in_)
        done = 0
        while done < count:
            n = min(per, count - done)
            if echo is not None:
                evq.add_batch(e_out, e_in, n)
                evq.kick()
            vq.add_batch(out, in_, n)
            vq.kick()
            vq.wait_used_batch(n, self.timeout, awaited=f"{n} light requests {why} ({done} of {count} done, queue size {vq.num})")
            if echo is not None:
                evq.wait_used_batch(n, self.timeout, awaited=f"{n} buffers taking back the answers to light requests")
            done += n

    def _sgs(self, readable: list[bytes], writable: list[int]) -> tuple[list, list]:
        from .buffers import Sg

        mem = self.vq.mem
        out = []
        for data in readable:
            a = mem.alloc(len(data), 8)
            mem.write(a, data)
            out.append(Sg(a, len(data)))
        return out, [Sg(mem.alloc(n, 8), n) for n in writable]

    def kick(self) -> None:
        for vq in self.vqs:
            if vq is not None and vq.num_added:
                vq.kick()

    def finish(self, ex: Exchange) -> None:
        """Wait for the exchange's buffers (bounded) and verify them."""
        raise NotImplementedError

    def roundtrip(self, shape: Shape = Shape(), size: int = 64) -> Exchange:
        ex = self.submit(shape, size)
        self.kick()
        self.finish(ex)
        return ex

    # -- shared checks --
    def _remember_readable(self, ex: Exchange, chain: BufferChain) -> None:
        mem = self.vq.mem
        for s in chain.out_sgs:
            ex.readable_copy.append((s.addr, mem.read(s.addr, s.len)))

    def check_readable_untouched(self, ex: Exchange) -> None:
        """2.7.5.1: the device must not write to a device-readable buffer."""
        mem = self.vq.mem
        for addr, data in ex.readable_copy:
            now = mem.read(addr, len(data))
            if now != data:
                diff = next(i for i in range(len(data)) if now[i] != data[i])
                raise DeviceViolation(
                    ring_clause(self.vq, CLAUSE_READONLY),
                    "device wrote into a device-readable buffer",
                    expected=f"bytes at {addr:#x} unchanged",
                    observed=f"byte {diff} changed {data[diff]:#04x} -> {now[diff]:#04x}",
                    queue=self.vq.name,
                )

    def wait(self, vq: Virtqueue, chain: BufferChain, what: str) -> BufferChain:
        """Wait for one specific chain; other chains completing meanwhile stay with the queue
        for a later wait (Virtqueue.wait_chain)."""
        return vq.wait_chain(chain, self.timeout, awaited=what)


def blk_block_sectors(driver) -> int:
    """512-byte sectors per logical block of a blk device: blk_size / 512 where VIRTIO_BLK_F_BLK_SIZE
    is negotiated (5.2.4: the device's block size), else 1. Sector numbers stay in 512-byte units
    (5.2.6), but a driver keeps each request's sector and length multiples of the block, as Linux
    does by making blk_size the logical block size; a device may fail a request that is not
    (QEMU answers VIRTIO_BLK_S_IOERR), so the workloads never send one. An implausible blk_size
    (not a power-of-2 multiple of 512) counts as 1: the config space suites judge it."""
    if not (driver.negotiated or 0) >> C.VIRTIO_BLK_F_BLK_SIZE & 1:
        return 1
    size = driver.config_field("blk_size")
    if size < C.SECTOR_SIZE or size & (size - 1) or size > 1 << 20:
        return 1
    return size // C.SECTOR_SIZE


def zoned_blk(driver, features: int) -> bool:
    """A blk device with VIRTIO_BLK_F_ZONED in ``features`` whose zoned.model is HM or HA."""
    if driver.device_id != C.VIRTIO_ID_BLOCK or not features >> C.VIRTIO_BLK_F_ZONED & 1:
        return False
    return driver.config_field("zoned.model") != Z.VIRTIO_BLK_Z_NONE


def blk_zone_report(driver, vq: Virtqueue, timeout: float, sector: int = 0, nzones: int | None = None) -> tuple[int, bytes]:
    """One VIRTIO_BLK_T_ZONE_REPORT from the zone holding ``sector``, waited for: (status, report
    bytes), with room for ``nzones`` descriptors (default: every zone from there to the end)."""
    capacity, zs = driver.config_field("capacity"), driver.config_field("zoned.zone_sectors")
    if nzones is None:
        nzones = max(1, Z.zone_count(capacity, zs) - sector // max(zs, 1))
    c = vq.add([blk_outhdr(VIRTIO_BLK_T_ZONE_REPORT, sector)], [Z.report_buffer_len(min(nzones, 4096)), 1], "zone report")
    vq.kick()
    vq.wait_chain(c, timeout, awaited=f"zone report from sector {sector}")
    got = vq.read_in(c, c.writable)
    vq.release(c)
    return got[-1], got[:-1]


def conventional_region(driver, answer: tuple[int, bytes]) -> tuple[int, int] | str:
    """The first run of conventional zones of a zone report (whole logical blocks), as sectors
    [start, end); or why there is none."""
    status, report = answer
    if status != C.VIRTIO_BLK_S_OK:
        return (f"the zoned device answered VIRTIO_BLK_T_ZONE_REPORT with status {status}: "
                "the workloads find no conventional zone to write")
    capacity, zs = driver.config_field("capacity"), driver.config_field("zoned.zone_sectors")
    block = blk_block_sectors(driver)
    start = end = None
    for z in Z.parse_zone_report(report)[1]:
        if z.z_type != Z.VIRTIO_BLK_ZT_CONV:
            if start is not None:
                break
            continue
        if start is None:
            start = end = z.z_start
        if z.z_start != end:
            break
        end = z.z_start + zs  # a conventional zone's z_cap need not be its size
    end = min(end or 0, capacity)
    if start is None or start % block or end - start < block:
        return "the zoned device reports no conventional zone: the workloads write only where any block may be written"
    return start, start + (end - start) // block * block


# Where the workloads of a zoned blk device write, per device (its config ops), found once.
_ZONED_REGIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def probe_zoned_region(driver) -> None:
    """Before a test negotiates: for a zoned blk device, find once (a negotiation of its own, one
    ZONE_REPORT, a reset) the conventional zones the workloads will write, so that a test's own
    queues carry only its own traffic. Errors are left for the workload to report as a skip."""
    try:
        if driver.device_id != C.VIRTIO_ID_BLOCK or driver.ops in _ZONED_REGIONS:
            return
        if not zoned_blk(driver, driver.wanted_features()):
            _ZONED_REGIONS[driver.ops] = None  # not zoned: nothing to find, and nothing to ask again
            return
    except Exception:  # ops that cannot be weakly referenced, a device that fails a read: reported inline
        return
    try:
        (vq, *_) = driver.initialize()
        _ZONED_REGIONS[driver.ops] = conventional_region(driver, blk_zone_report(driver, vq, driver.timeout))
    except Exception as e:  # the suites judge the device; this only plans the workloads
        _ZONED_REGIONS[driver.ops] = f"the zone report that locates the conventional zones failed: {type(e).__name__}: {e}"
    finally:
        with contextlib.suppress(Exception):  # a device that cannot reset fails the driver fixture's reset
            driver.reset()


class BlkWorkload(Workload):
    """A write of known data, then a read of it back, as two chains (5.2.6).

    The read goes out only once the write is used: 5.2.6 orders no two requests in flight together
    (VIRTIO_F_IN_ORDER, 2.7.9, orders their use, not their execution; qemu-storage-daemon runs them
    concurrently), so a read made available beside the write may legally return the old data. ``submit`` makes the
    write available; ``finish`` waits for it, then makes the read available, kicks and waits.
    """

    sector_base = 0

    def __init__(self, driver, vqs, timeout):
        super().__init__(driver, vqs, timeout)
        self.capacity = driver.config_field("capacity")
        self.read_only = bool((driver.negotiated or 0) >> C.VIRTIO_BLK_F_RO & 1)
        self.elems_per_exchange = 1 if self.read_only else 2  # write + read back
        self.block = blk_block_sectors(driver)
        # The sectors [sector_base, region_end) the workload reads and writes: the whole disk, or
        # with VIRTIO_BLK_F_ZONED (HM or HA) the first run of conventional zones, where any block
        # can be written at any time (5.2.6); a write elsewhere would need the zone's write pointer.
        self.region_end = self.capacity
        if zoned_blk(driver, (driver.negotiated or 0)):
            try:
                region = _ZONED_REGIONS.get(driver.ops)
            except TypeError:  # config ops that cannot be weakly referenced
                region = None
            if region is None:  # not found before this negotiation: a report on these queues
                region = conventional_region(driver, blk_zone_report(driver, self.vq, timeout))
            if isinstance(region, str):
                raise NotApplicable(region)
            self.sector_base, self.region_end = region
        self.next_sector = self.sector_base

    def submit(self, shape: Shape = Shape(), size: int = 1024) -> Exchange:
        sectors = -(-max(1, size // C.SECTOR_SIZE) // self.block) * self.block  # whole logical blocks
        if sectors > self.region_end - self.sector_base:
            raise HarnessError("disk too small for the workload")
        if self.next_sector + sectors > self.region_end:
            self.next_sector = self.sector_base
        sector = self.next_sector
        self.next_sector += sectors
        data = os.urandom(sectors * C.SECTOR_SIZE)
        ex = Exchange(expect={"data": data, "sector": sector})
        hdr_w = blk_outhdr(C.VIRTIO_BLK_T_IN if self.read_only else C.VIRTIO_BLK_T_OUT, sector)
        if self.read_only:
            self._add_read(ex, shape)
        else:
            w = self.vq.add([hdr_w] + split_bytes(data, shape.segments), [1], "write", **shape.kw())
            self._remember_readable(ex, w)
            ex.chains.append(w)
            ex.expect["read_shape"] = shape  # the read back goes out in finish(), after the write
        return ex

    def _add_read(self, ex: Exchange, shape: Shape) -> BufferChain:
        hdr_r = blk_outhdr(C.VIRTIO_BLK_T_IN, ex.expect["sector"])
        r = self.vq.add([hdr_r], split_len(len(ex.expect["data"]), shape.segments) + [1], "read", **shape.kw())
        for s in r.in_sgs:
            self.vq.mem.fill(s.addr, s.len, POISON)
        self._remember_readable(ex, r)
        ex.chains.append(r)
        return r

    def _complete(self, c: BufferChain) -> None:
        """Wait (bounded) for one request and check its status and used len."""
        self.wait(self.vq, c, f"blk {c.token} request (head {c.head})")
        status = self.vq.read_in(c, c.writable)[-1]
        if status != C.VIRTIO_BLK_S_OK:
            raise DeviceViolation(CLAUSE_FRAMING, f"blk {c.token} failed for a valid request", expected="status VIRTIO_BLK_S_OK", observed=f"status {status}", queue=self.vq.name)
        if c.len_reported and c.used_len != c.writable:
            # 5.2.6: the device writes every data byte plus the status byte of a good request;
            # an underestimate is allowed by 2.7.8 only where the device does not know.
            raise DeviceViolation(ring_clause(self.vq, CLAUSE_USED_LEN), f"used len of a completed blk {c.token}", expected=f"{c.writable} (data + status)", observed=c.used_len, queue=self.vq.name)

    def light_buffers(self):
        if (self.driver.negotiated or 0) >> C.VIRTIO_BLK_F_FLUSH & 1:
            return self._sgs([blk_outhdr(C.VIRTIO_BLK_T_FLUSH, 0)], [1])  # no data to move
        return self._sgs([blk_outhdr(C.VIRTIO_BLK_T_IN, self.sector_base)], [self.block * C.SECTOR_SIZE, 1])

    def finish(self, ex: Exchange) -> None:
        data = ex.expect["data"]
        for c in list(ex.chains):
            self._complete(c)
        shape = ex.expect.pop("read_shape", None)
        if shape is not None:  # the write is used: only now may the read back go out
            self._add_read(ex, shape)
            self.vq.kick()
            self._complete(ex.chains[-1])
        r = ex.chains[-1]
        got = self.vq.read_in(r, len(data))
        if not self.read_only and got != data:
            diff = next(i for i in range(len(data)) if got[i] != data[i])
            raise DeviceViolation(CLAUSE_FRAMING, "data read back differs from what was written", expected=f"byte {diff} = {data[diff]:#04x}", observed=f"{got[diff]:#04x}", queue=self.vq.name)
        self.check_readable_untouched(ex)
        for c in ex.chains:
            self.vq.release(c)


class RngWorkload(Workload):
    """Writable buffers filled with entropy (5.4.6: at least one byte, at most the buffer)."""

    def submit(self, shape: Shape = Shape(), size: int = 64) -> Exchange:
        c = self.vq.add([], split_len(size, shape.segments), "entropy", **shape.kw())
        for s in c.in_sgs:
            self.vq.mem.fill(s.addr, s.len, POISON)
        return Exchange(chains=[c])

    def light_buffers(self):
        return self._sgs([], [8])

    def finish(self, ex: Exchange) -> None:
        c = self.wait(self.vq, ex.chains[0], f"entropy buffer (head {ex.chains[0].head})")
        if c.len_reported and c.used_len == 0:  # an IN_ORDER batch reports only its last len (2.7.9)
            # 5.4.6.2's duty (one or more random bytes), not 2.7.8's: a len of 0 claims no byte written.
            raise DeviceViolation(CLAUSE_RNG_BYTES, "entropy request returned no bytes", expected="used len >= 1", observed=0, queue=self.vq.name)
        self.vq.release(c)


class NetWorkload(Workload):
    """A frame to the device's own MAC on transmitq1, looped back on receiveq1 (5.1.6).

    What the back-end forwards is not a virtio duty: each frame carries a tag (virtio/net_frames.py)
    and the frame that comes back is found by it, in whichever receive buffer it landed, and
    judged as the target's ``net_forward`` declares (bit for bit, MACs swapped, or only the tag and
    payload). The virtio duties are judged in full: used elems, used len, the readable side
    untouched."""

    vq_index = 1

    def __init__(self, driver, vqs, timeout):
        super().__init__(driver, vqs, timeout)
        self.rx, self.tx = vqs[0], vqs[1]
        neg = driver.negotiated or 0
        self.mac = driver.config_field("mac") if neg >> C.VIRTIO_NET_F_MAC & 1 else bytes.fromhex("525400123456")
        try:
            self.forward = check_forward_mode(getattr(driver.ops, "net_forward", "any"))
        except ValueError as e:
            raise HarnessError(str(e)) from None
        self.tags = FrameTags()
        self.seq = 0
        self.arrived: dict[int, BufferChain] = {}  # seq -> the receive buffer its frame came back in
        self.has_status = bool(neg >> C.VIRTIO_NET_F_STATUS & 1)
        self.max_frame = ETH_HLEN + self._mtu(neg)

    def _mtu(self, neg: int) -> int:
        """The largest frame a driver may send (5.1.4.2: mtu plus the Ethernet header with
        VIRTIO_NET_F_MTU; 5.1.9.2: 1514 bytes for a frame without GSO otherwise). An mtu that cannot
        be read, or one out of 68..65535 (the config suite reports it), counts as 1500."""
        if neg >> C.VIRTIO_NET_F_MTU & 1:
            try:
                mtu = self.driver.config_field("mtu")
            except UnsupportedOp:
                return 1500
            return mtu if 68 <= mtu <= 65535 else 1500
        return 1500

    # 5.1.4: with VIRTIO_NET_F_STATUS a device may report its link down, and then no frame need
    # come back. Once DRIVER_OK is set a link that comes up within the device timeout is waited
    # for; one that stays down, or a frame lost while it was down, makes the test inapplicable
    # (LinkDown), never failed.
    def link_up(self) -> bool:
        return not self.has_status or bool(self.driver.config_field("status") & C.VIRTIO_NET_S_LINK_UP)

    def await_link_up(self) -> None:
        if not poll(self.link_up, self.timeout):
            raise LinkDown(f"the device reports its link down (status VIRTIO_NET_S_LINK_UP clear) for {self.timeout:g}s after DRIVER_OK: no frame can be looped back")

    def frame(self, size: int) -> bytes:
        self.seq += 1
        return self.tags.frame(self.mac, self.seq, size)

    def light_buffers(self):
        # A frame to an address nobody has: the device sends it nowhere, the TX buffer still returns.
        return self._sgs([NetHdr().pack() + bytes.fromhex("020000000001") + bytes(54)], [])

    def submit(self, shape: Shape = Shape(), size: int = 64) -> Exchange:
        link = self.link_up()
        if not link and self.driver.ops.get_status() & C.DRIVER_OK:
            self.await_link_up()
            link = True
        frame = self.frame(max(60, min(size, self.max_frame)))  # what the device declares it takes
        rx = self.rx.add([], split_len(NET_HDR_SIZE + len(frame) + 64, shape.segments), "rx", **shape.kw())
        for s in rx.in_sgs:
            self.rx.mem.fill(s.addr, s.len, POISON)
        tx = self.tx.add(split_bytes(NetHdr().pack() + frame, shape.segments), [], "tx", **shape.kw())
        ex = Exchange(chains=[tx, rx], expect={"frame": frame, "seq": self.seq, "link_was_down": not link})
        self._remember_readable(ex, tx)
        return ex

    def received(self, seq: int, link_was_down: bool = False) -> BufferChain:
        """The receive buffer holding frame ``seq`` (bounded wait). Buffers holding other frames of
        ours are kept for their exchanges; one holding a frame without our tag (a back-end may
        forward anything it gets, e.g. a frame to nobody) is spent and released."""
        while seq not in self.arrived:
            try:
                c = self.rx.wait_used(1, self.timeout, awaited=f"looped-back frame {seq} on receiveq1")[0]
            except DeviceTimeout:
                if link_was_down or not self.link_up():
                    raise LinkDown(f"frame {seq} did not come back; the device reported its link down (status VIRTIO_NET_S_LINK_UP clear) when it was sent or since") from None
                raise
            got = self.tags.seq_of(self._frame_bytes(c))
            if got is None:
                self.rx.release(c)
            else:
                self.arrived[got] = c
        return self.arrived.pop(seq)

    def _frame_bytes(self, c: BufferChain) -> bytes:
        """What the device wrote after the header: up to the used len, or the whole buffer where
        the used elem of a later buffer answered this one (IN_ORDER, 2.7.9: no len of its own)."""
        reported = getattr(c, "len_reported", True)
        return self.rx.read_in(c, None if reported else c.writable)[NET_HDR_SIZE:]

    def finish(self, ex: Exchange) -> None:
        tx, _ = ex.chains
        self.wait(self.tx, tx, "transmitq1 buffer to be used")
        rx = self.received(ex.expect["seq"], ex.expect["link_was_down"])
        frame = ex.expect["frame"]
        reported = rx.len_reported
        if reported and self.forward != "any" and rx.used_len != NET_HDR_SIZE + len(frame):
            raise DeviceViolation(ring_clause(self.rx, CLAUSE_USED_LEN), "used len of a received frame", expected=NET_HDR_SIZE + len(frame), observed=rx.used_len, queue=self.rx.name)
        got = self._frame_bytes(rx)
        why = difference(frame, got, self.forward, whole=reported)
        if why is not None:
            raise DeviceViolation(CLAUSE_FRAMING, f"looped-back frame differs from the frame sent (net_forward {self.forward})", expected=f"{len(frame)} bytes sent", observed=why, queue=self.rx.name)
        self.check_readable_untouched(ex)
        self.tx.release(tx)
        self.rx.release(rx)


class ConsoleWorkload(Workload):
    """Bytes sent on transmitq come back on receiveq (the model echoes; 5.3.6)."""

    vq_index = 1

    def __init__(self, driver, vqs, timeout):
        super().__init__(driver, vqs, timeout)
        self.rx, self.tx = vqs[0], vqs[1]

    def light_buffers(self):
        return self._sgs([b"wrap\n"], [])

    def light_echo(self):
        return (self.rx, *self._sgs([], [len(b"wrap\n")]))

    def submit(self, shape: Shape = Shape(), size: int = 64) -> Exchange:
        data = os.urandom(size)
        rx = self.rx.add([], split_len(size, shape.segments), "rx", **shape.kw())
        tx = self.tx.add(split_bytes(data, shape.segments), [], "tx", **shape.kw())
        ex = Exchange(chains=[tx, rx], expect={"data": data})
        self._remember_readable(ex, tx)
        return ex

    def finish(self, ex: Exchange) -> None:
        tx, rx = ex.chains
        self.wait(self.tx, tx, "transmitq buffer to be used")
        got = b""
        data = ex.expect["data"]
        self.wait(self.rx, rx, "echoed bytes on receiveq")
        got = self.rx.read_in(rx)
        if got != data[: len(got)] or not got:
            raise DeviceViolation(CLAUSE_FRAMING, "echoed bytes differ from those sent", expected=f"prefix of the {len(data)} bytes sent", observed=f"{len(got)} bytes", queue=self.rx.name)
        self.check_readable_untouched(ex)
        self.tx.release(tx)
        self.rx.release(rx)


class FsWorkload(Workload):
    """A FUSE_GETATTR of the root on the last request queue (5.11.6.1). No FUSE_INIT is sent, so
    the device may answer with an error (libfuse: EIO): any reply will do, as long as it is a
    fuse_out_header naming the request."""

    def __init__(self, driver, vqs, timeout):
        self.vq_index = len(vqs) - 1  # hiprio [, notification], requestq
        super().__init__(driver, vqs, timeout)
        self.unique = 0

    def _request(self) -> bytes:
        from . import fuse as F

        self.unique += 2  # even: libfuse keeps odd uniques for interrupts
        return F.request(F.FUSE_GETATTR, self.unique, F.FUSE_ROOT_ID, F.fuse_getattr_in.pack())

    def light_buffers(self):
        from . import fuse as F

        return self._sgs([self._request()], [F.fuse_out_header.size + F.ATTR_OUT_SIZE])

    def submit(self, shape: Shape = Shape(), size: int = 64) -> Exchange:
        from . import fuse as F

        req = self._request()
        c = self.vq.add(split_bytes(req, shape.segments), split_len(F.fuse_out_header.size + F.ATTR_OUT_SIZE, shape.segments), "getattr", **shape.kw())
        for s in c.in_sgs:
            self.vq.mem.fill(s.addr, s.len, POISON)
        ex = Exchange(chains=[c], expect={"unique": self.unique})
        self._remember_readable(ex, c)
        return ex

    def finish(self, ex: Exchange) -> None:
        from . import fuse as F

        c = self.wait(self.vq, ex.chains[0], f"FUSE_GETATTR reply (head {ex.chains[0].head})")
        out = F.fuse_out_header.unpack(self.vq.read_in(c, F.fuse_out_header.size))
        if out.unique != ex.expect["unique"]:
            raise DeviceViolation(CLAUSE_FRAMING, "FUSE reply does not name the request it answers", expected=f"unique {ex.expect['unique']}", observed=f"unique {out.unique}", queue=self.vq.name)
        if c.len_reported and c.used_len < F.fuse_out_header.size:
            raise DeviceViolation(ring_clause(self.vq, CLAUSE_USED_LEN), "used len below the fuse_out_header the device wrote", expected=f">= {F.fuse_out_header.size}", observed=c.used_len, queue=self.vq.name)
        self.check_readable_untouched(ex)
        self.vq.release(c)


WORKLOADS = {
    C.VIRTIO_ID_FS: FsWorkload,
    C.VIRTIO_ID_BLOCK: BlkWorkload,
    C.VIRTIO_ID_RNG: RngWorkload,
    C.VIRTIO_ID_NET: NetWorkload,
    C.VIRTIO_ID_CONSOLE: ConsoleWorkload,
}


def workload_for(driver, vqs, timeout: float) -> Workload:
    cls = WORKLOADS.get(driver.device_id)
    if cls is None:
        raise HarnessError(f"no workload for device id {driver.device_id}")
    return cls(driver, vqs, timeout)
