"""Ring stress (VIRTIO 1.4, 2.7, 2.8): one hypothesis state machine drives every virtqueue of a
device at once -- chains of random shape (direct, indirect, direct then indirect; 1..6 elements per
side, cut at random places), kicks or none, notification suppression, polling, queue resets,
re-negotiation with other features -- and checks all the time that every buffer made available comes
back exactly once, with a used len within its writable bytes and the data its device type promises
(blk: read back what was written; net: looped-back frames; rng: bytes really written; console: echo).

A failure is pinned on a clause as the other suites do, by controls: a used ring slot the driver has
consumed is refilled with a value no device writes (so a used idx that runs ahead shows as such),
a buffer returned under another's id is told by which buffer the device really wrote, a queue reset
is bracketed by exchanges on that queue, and a timeout or bad data is narrowed down afterwards on a
fresh start with the workloads (plain exchange passes, one shaped like X fails: X's clause).

Randomized but reproducible (fixtures/stress.py): ``--stress-seed N`` replays a sequence and
``--stress-seconds S`` soaks. Any target: only the driver-side API and the workloads are used.
"""

from __future__ import annotations

import functools
import random
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from virtio import constants as C
from virtio import fuse, interrupt
from virtio.checks import blame, require
from virtio.errors import (
    DeviceTimeout,
    DeviceViolation,
    HarnessError,
    InvalidUsedId,
    InvalidUsedIdx,
    InvalidUsedLen,
    UnsupportedOp,
)
from virtio.messages import NET_HDR_SIZE, NetHdr, blk_outhdr
from virtio.net_frames import difference
from virtio.workloads import CLAUSE_FRAMING, CLAUSE_READONLY, CLAUSE_RNG_BYTES, CLAUSE_USED_LEN, POISON, Shape

try:
    from virtio.workloads import ring_clause  # a duty's clause id on the queue's layout (split / packed)
except ImportError:  # a tree without packed rings

    def ring_clause(vq, clause: str) -> str:
        return clause


CLAUSE_USED_ID = "def.split.used-elem-id"
CLAUSE_USED_IDX = "def.split.used-idx"
CLAUSE_BUFFERS_USED = "def.basic.buffers-are-used"
CLAUSE_DESC_TABLE = "dev.basic.virtqueues.the-virtqueue-descriptor-table.2"
CLAUSE_QUEUE_RESET = "dev.basic.virtqueues.virtqueue-reset.virtqueue-reset.2"
CLAUSE_INDIRECT = "dev.basic.virtqueues.the-virtqueue-descriptor-table.indirect-descriptors.2"
CLAUSE_SPURIOUS_KICK = "dev.basic.virtqueues.available-buffer-notification-suppression.5"
CLAUSE_PACKED_CHAIN = "dev.basic.packed-virtqueues.scatter-gather-support.1"
CLAUSE_PACKED_INDIRECT = "def.packed.indirect-table"

USED_SLOT_FILL = 0xFFFFFFFF  # what the driver leaves in a used ring slot it has consumed (never a valid id)
SIZES = (None, 64, 16, 8)  # queue sizes a seed may choose (None: the device's maximum)
RENEGOTIATE_AFTER = 15  # steps of an epoch before re-negotiation may end it


# -- buffers ---------------------------------------------------------------------------------------
def cut(data: bytes, parts: int, rnd: random.Random) -> list[bytes]:
    """``data`` in ``parts`` non-empty pieces (fewer if it is shorter), cut at random places."""
    parts = max(1, min(parts, len(data)))
    points = sorted(rnd.sample(range(1, len(data)), parts - 1))
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


def cut_len(total: int, parts: int, rnd: random.Random) -> list[int]:
    return [len(p) for p in cut(bytes(total), parts, rnd)]


@dataclass
class Req:
    """One buffer made available: what was put in, and what must come back."""

    kind: str
    data: bytes = b""  # blk write / read-back data, net frame, console bytes
    sector: int = 0
    token: int = 0
    chain: object = None
    readable: tuple = ()  # (addr, bytes) of every device-readable element, to see they stay untouched
    desc: object = None  # copy of the chain's descriptors (split), to see the device leaves them alone


# -- per device type: what goes in the queues and how it is checked -----------------------------
class Traffic:
    """Requests of one device type, built on its workload (config it read, MAC, capacity)."""

    held: tuple[int, ...] = ()  # queues whose buffers wait for traffic on another queue

    def __init__(self, st: RingStress):
        self.st = st
        self.work = st.work

    def queues(self) -> list[int]:
        return list(range(len(self.st.vqs)))

    def build(self, q: int, size: int, parts: int, rnd: random.Random):
        """(readable pieces, writable lengths, Req) for a new buffer on queue ``q``, or None."""
        raise NotImplementedError

    def check(self, q: int, req: Req, chain) -> None:
        """Raise a DeviceViolation if what came back is wrong."""

    def reclaimed(self, req: Req) -> None:
        """A queue reset gave the buffer back unused (or used, unseen)."""

    def feed(self) -> None:
        """Send what lets held buffers complete."""

    def write_off(self) -> bool:
        """Forget traffic a device may legitimately have dropped; True if there was some."""
        return False

    def before_reset(self, q: int) -> None:
        """Get to a state where resetting queue ``q`` cannot lose anything the checks count on."""


class BlkTraffic(Traffic):
    """Writes of random data to random sectors and reads that compare with the last data written
    (5.2.6). A small window of sectors, so reads often meet earlier writes; sectors with a request
    in flight are not touched again until it completes (the device may reorder requests)."""

    WINDOW = 64

    def __init__(self, st):
        super().__init__(st)
        # The workload's region: the whole disk, or a zoned device's conventional zones (workloads.py).
        self.base = self.work.sector_base
        self.window = min(self.work.region_end - self.base, self.WINDOW)
        self.writing: set[int] = set()
        self.reading: dict[int, int] = {}
        neg = st.driver.negotiated
        self.seg_max = st.driver.config_field("seg_max") if neg >> C.VIRTIO_BLK_F_SEG_MAX & 1 else None

    def build(self, q, size, parts, rnd):
        # Whole logical blocks (blk_size) at block-aligned sectors, as a driver sends (workloads.py).
        block = self.work.block
        blocks = self.window // block
        if not blocks:
            return None
        n = block * min(1 + size * 8 // 8193, blocks)  # 1..8 blocks
        write = not self.work.read_only and rnd.random() < 0.5
        if self.seg_max:
            parts = min(parts, self.seg_max)
        for _ in range(8):
            sector = self.base + block * rnd.randrange(blocks - n // block + 1)
            span = range(sector, sector + n)
            if not any(s in self.writing or (write and self.reading.get(s)) for s in span):
                break
        else:
            return None  # every range tried has a request in flight
        if write:
            data = rnd.randbytes(n * C.SECTOR_SIZE)
            self.writing.update(span)
            return cut(blk_outhdr(C.VIRTIO_BLK_T_OUT, sector) + data, parts, rnd), [1], Req("write", data, sector)
        for s in span:
            self.reading[s] = self.reading.get(s, 0) + 1
        # The status byte shares the last writable element with data (framing is the device's problem).
        writable = cut_len(n * C.SECTOR_SIZE + 1, parts, rnd)
        return cut(blk_outhdr(C.VIRTIO_BLK_T_IN, sector), parts, rnd), writable, Req("read", bytes(n * C.SECTOR_SIZE), sector)

    def _unlock(self, req):
        span = range(req.sector, req.sector + len(req.data) // C.SECTOR_SIZE)
        for s in span:
            if req.kind == "write":
                self.writing.discard(s)
            else:
                self.reading[s] -= 1
        return span

    def check(self, q, req, chain):
        vq = self.st.vqs[q]
        span = self._unlock(req)
        got = vq.read_in(chain, chain.writable)
        what = f"blk {req.kind} of sectors {span.start}..{span.stop - 1}"
        status = got[-1]
        require(status == C.VIRTIO_BLK_S_OK, CLAUSE_FRAMING, f"{what} failed", expected="VIRTIO_BLK_S_OK", observed=status,
                queue=vq.name)
        if self.st.reported(chain):
            require(chain.used_len == chain.writable, ring_clause(vq, CLAUSE_USED_LEN), f"used len of a completed {what}",
                    expected=f"{chain.writable} (data + status)", observed=chain.used_len, queue=vq.name)
        disk = self.st.disk
        for i, s in enumerate(span):
            block = slice(i * C.SECTOR_SIZE, (i + 1) * C.SECTOR_SIZE)
            if req.kind == "write":
                disk[s] = req.data[block]
            elif s in disk:
                same = got[block] == disk[s]
                require(same, CLAUSE_FRAMING, f"{what}: sector {s} differs from the data last written to it", queue=vq.name)

    def reclaimed(self, req):
        for s in self._unlock(req):
            if req.kind == "write":
                self.st.disk.pop(s, None)  # the write may or may not have happened


class RngTraffic(Traffic):
    """Device-writable buffers only; the device fills at least one byte (5.4.6), and every byte
    it reports as written (used len) really was: no 8-byte word of it still holds the fill."""

    def build(self, q, size, parts, rnd):
        return [], cut_len(size, parts, rnd), Req("entropy")

    def check(self, q, req, chain):
        if not self.st.reported(chain):
            return
        vq = self.st.vqs[q]
        clause = ring_clause(vq, CLAUSE_USED_LEN)
        require(chain.used_len >= 1, CLAUSE_RNG_BYTES, "entropy request returned no bytes", expected=">= 1 byte", observed=0, queue=vq.name)
        data = vq.read_in(chain)
        fill = bytes([POISON]) * 8
        untouched = [i for i in range(0, len(data) - 7, 8) if data[i : i + 8] == fill]
        require(not untouched, clause, "used len covers bytes the device never wrote", queue=vq.name,
                expected=f"all of the first {chain.used_len} bytes written", observed=f"bytes at {untouched[:4]} still hold the fill")


class NetTraffic(Traffic):
    """Frames to the device's own MAC on transmitq1 come back on receiveq1 (5.1.6); each received
    frame must be one that was sent, byte for byte. A network may drop frames, so a lost frame is
    no failure -- but every receive buffer must come back once enough frames were sent to fill it."""

    RX, TX, CTRL = 0, 1, 2
    held = (RX,)
    MAX_IN_TRANSIT = 64  # frames sent and not yet received (the model queues 256 before dropping)

    def __init__(self, st):
        super().__init__(st)
        self.sent: dict[int, bytes] = {}  # seq -> frame
        self.in_transit: set[int] = set()
        self.seq = st.net_seq

    def queues(self):
        ctrl = len(self.st.vqs) > self.CTRL and self.st.driver.negotiated >> C.VIRTIO_NET_F_CTRL_RX & 1  # a command to send
        return [self.RX, self.TX] + ([self.CTRL] if ctrl else [])

    def frame(self, length: int, rnd: random.Random) -> tuple[bytes, Req]:
        self.seq = self.st.net_seq = self.seq + 1
        frame = self.work.tags.frame(self.work.mac, self.seq, length, rnd.randbytes(length))
        self.sent[self.seq] = frame
        self.in_transit.add(self.seq)
        return frame, Req("tx", frame)

    def build(self, q, size, parts, rnd):
        if q == self.RX:
            return [], cut_len(NET_HDR_SIZE + 1514, parts, rnd), Req("rx")  # 5.1.6.3.1: at least 1526 bytes
        if q == self.CTRL:
            promisc_off = bytes([C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_PROMISC, 0])  # changes nothing here
            return cut(promisc_off, parts, rnd), [1], Req("ctrl")
        if len(self.in_transit) >= self.MAX_IN_TRANSIT:
            return None
        frame, req = self.frame(60 + size % (min(1514, self.work.max_frame) - 59), rnd)  # never over the mtu
        return cut(NetHdr().pack() + frame, parts, rnd), [], req

    def check(self, q, req, chain):
        vq = self.st.vqs[q]
        if req.kind == "ctrl":
            ack = vq.read_in(chain, 1)[0]
            require(ack == C.VIRTIO_NET_OK, CLAUSE_FRAMING, "control command VIRTIO_NET_CTRL_RX_PROMISC (off) failed",
                    expected="ack VIRTIO_NET_OK", observed=ack, queue=vq.name)
        if req.kind != "rx":
            return
        got = vq.read_in(chain, chain.used_len if self.st.reported(chain) else chain.writable)[NET_HDR_SIZE:]
        # Matched by the tag in its payload and judged as the target declares (virtio/net_frames.py):
        # what a forwarding back-end changes in a frame is not a virtio duty.
        seq = self.work.tags.seq_of(got)
        frame = self.sent.get(seq)
        why = "no tag of ours" if frame is None else difference(frame, got, self.work.forward, whole=False)
        require(why is None, CLAUSE_FRAMING, "received frame is none of the frames sent",
                expected=f"one of {len(self.sent)} frames sent (net_forward {self.work.forward})", observed=f"{len(got)} bytes, seq {seq}: {why}", queue=vq.name)
        if self.st.reported(chain) and self.work.forward != "any":
            require(chain.used_len == NET_HDR_SIZE + len(frame), ring_clause(vq, CLAUSE_USED_LEN), "used len of a received frame",
                    expected=NET_HDR_SIZE + len(frame), observed=chain.used_len, queue=vq.name)
        self.in_transit.discard(seq)

    def reclaimed(self, req):
        if req.kind in ("rx", "tx"):
            self.in_transit.clear()  # frames in flight may be lost with the queue

    def feed(self):
        rnd = random.Random(self.seq)
        tx = self.st.vqs[self.TX]
        for _ in range(min(tx.num_free, len(self.st.outstanding[self.RX]) - len(self.in_transit))):
            frame, req = self.frame(60, rnd)
            self.st.submit(self.TX, [NetHdr().pack() + frame], [], req)

    def write_off(self):
        lost = bool(self.in_transit)
        self.in_transit.clear()
        return lost


class ConsoleTraffic(Traffic):
    """Bytes sent on transmitq come back on receiveq (the model echoes, 5.3.6): the bytes received,
    in used-ring order, are the bytes sent, in order. Before a queue reset everything sent is
    received first, so that the reset cannot lose bytes of the stream."""

    RX, TX = 0, 1
    held = (RX,)
    MAX_UNRECEIVED = 4096  # the model keeps 64 KiB waiting for receive buffers

    def __init__(self, st):
        super().__init__(st)
        self.stream = bytearray()
        self.received = 0
        self.blind = False  # a receive buffer came back without its length (IN_ORDER batch)

    def unreceived(self) -> int:
        return len(self.stream) - self.received

    def build(self, q, size, parts, rnd):
        n = 1 + size % 512
        if q == self.RX:
            return [], cut_len(n, parts, rnd), Req("rx")
        if self.unreceived() + n > self.MAX_UNRECEIVED:
            return None
        data = rnd.randbytes(n)
        self.stream += data
        return cut(data, parts, rnd), [], Req("tx", data)

    def check(self, q, req, chain):
        if req.kind != "rx":
            return
        if not self.st.reported(chain):
            self.blind = True
        if self.blind:
            return
        vq = self.st.vqs[q]
        got = vq.read_in(chain)
        want = bytes(self.stream[self.received : self.received + len(got)])
        diff = next((i for i in range(len(got)) if i >= len(want) or got[i] != want[i]), None)
        require(diff is None, CLAUSE_FRAMING, "echoed bytes differ from the bytes sent, in order", queue=vq.name,
                expected=f"{len(got)} bytes from stream offset {self.received}", observed=f"first difference at byte {diff}")
        self.received += len(got)

    def feed(self):
        room = sum(r.chain.writable for r in self.st.outstanding[self.RX].values())
        need = room - (0 if self.blind else self.unreceived())
        rnd = random.Random(len(self.stream))
        tx = self.st.vqs[self.TX]
        while need > 0 and tx.num_free:
            data = rnd.randbytes(min(need, 512))
            self.stream += data
            self.st.submit(self.TX, [data], [], Req("tx", data))
            need -= len(data)

    def before_reset(self, q):
        st = self.st
        st.kick_all()
        st.wait_all(self.TX)
        while self.unreceived() > 0 and not self.blind:  # bounded: a lap gets echoed bytes back or wait() raises DeviceTimeout
            room = sum(r.chain.writable for r in st.outstanding[self.RX].values())
            if room < self.unreceived():
                st.submit(self.RX, [], [self.unreceived() - room], Req("rx"))
            st.kick_all()
            st.wait(self.RX, 1, "echoed bytes before a queue reset")


class FsTraffic(Traffic):
    """FUSE_GETATTR of the root on the request queue (5.11.6.1); every reply must be a
    fuse_out_header naming its request (before FUSE_INIT an error reply is fine)."""

    def __init__(self, st):
        super().__init__(st)
        self.unique = 0

    def queues(self):
        return [len(self.st.vqs) - 1]  # the request queue; hiprio requests have no reply

    def build(self, q, size, parts, rnd):
        self.unique += 2
        req = fuse.request(fuse.FUSE_GETATTR, self.unique, fuse.FUSE_ROOT_ID, fuse.fuse_getattr_in.pack())
        n = fuse.fuse_out_header.size + fuse.ATTR_OUT_SIZE
        return cut(req, min(parts, 4), rnd), cut_len(n, min(parts, 4), rnd), Req("getattr", sector=self.unique)

    def check(self, q, req, chain):
        vq = self.st.vqs[q]
        out = fuse.fuse_out_header.unpack(vq.read_in(chain, fuse.fuse_out_header.size))
        require(out.unique == req.sector, CLAUSE_FRAMING, "FUSE reply does not name the request it answers",
                expected=f"unique {req.sector}", observed=f"unique {out.unique}", queue=vq.name)


TRAFFIC = {
    C.VIRTIO_ID_FS: FsTraffic,
    C.VIRTIO_ID_BLOCK: BlkTraffic,
    C.VIRTIO_ID_RNG: RngTraffic,
    C.VIRTIO_ID_NET: NetTraffic,
    C.VIRTIO_ID_CONSOLE: ConsoleTraffic,
}


# -- the driver under stress (plain Python; the hypothesis machine below only picks its steps) ------
class RingStress:
    """One device, all of its queues: add, kick, poll, wait, suppress notifications, reset a queue,
    re-negotiate; with the bookkeeping that proves each buffer comes back once and intact."""

    def __init__(self, session, seed: int):
        self.session = session
        self.driver = session.driver
        self.timeout = session.timeout
        self.disk: dict[int, bytes] = {}  # blk: sector -> last data written (the medium survives resets)
        self.net_seq = 0
        self.serial = 0
        self.vqs: list = []
        self.steps_in_epoch = 0
        # Queue sizes come with the seed, not the example: all examples share one device, and one
        # that remembers a size across resets would otherwise fail for a reason not of this run.
        self.sizes = random.Random(seed).randrange(256)

    # -- epochs: one negotiation each ------------------------------------------------------------
    def start(self, features: int) -> str:
        d, self.features = self.driver, features
        offered, base = d.device_features(), d.wanted_features()
        # Bits of ``features`` flip, in this order: the ring features offered, then the device's own
        # (never VIRTIO_BLK_F_RO: a driver must take a read-only disk as read-only; never
        # VIRTIO_BLK_F_BLK_SIZE: without it a driver cannot know the logical block size a device
        # with 4096-byte blocks needs its requests in, and Linux always takes it; never
        # VIRTIO_BLK_F_ZONED: a host-managed device refuses FEATURES_OK without it, 5.2.5.2).
        ring = (C.VIRTIO_F_INDIRECT_DESC, C.VIRTIO_F_EVENT_IDX, C.VIRTIO_F_RING_RESET, C.VIRTIO_F_RING_PACKED)
        toggles = [b for b in ring if offered >> b & 1]
        kept = (C.VIRTIO_BLK_F_RO, C.VIRTIO_BLK_F_BLK_SIZE, C.VIRTIO_BLK_F_ZONED) if d.device_id == C.VIRTIO_ID_BLOCK else ()
        toggles += [b for b in range(24) if base >> b & 1 and b not in kept]
        flip = [b for i, b in enumerate(toggles) if features >> i & 1]
        want = tuple(b for b in flip if not base >> b & 1)
        refuse = tuple(b for b in flip if base >> b & 1)
        size_of = {}
        for i, name in enumerate(d.default_vq_names()):
            choice = SIZES[self.sizes >> 2 * i & 3]
            try:
                if choice is not None:
                    size_of[name] = min(choice, d.ops.vq_num_max(i))
            except UnsupportedOp:
                pass
        self.work = self.session.start(want=want, refuse=refuse, sizes=size_of)
        self.vqs = list(self.work.vqs)
        neg = d.negotiated
        self.indirect = bool(neg >> C.VIRTIO_F_INDIRECT_DESC & 1)
        self.ring_reset = bool(neg >> C.VIRTIO_F_RING_RESET & 1)
        self.in_order = bool(neg >> C.VIRTIO_F_IN_ORDER & 1)
        self.outstanding: list[dict[int, Req]] = [{} for _ in self.vqs]
        self.good = [0] * len(self.vqs)  # buffers that came back and passed the checks, per queue
        self.traffic = TRAFFIC[d.device_id](self)
        self.steps_in_epoch = 0
        self.layouts_used: set[str] = set()  # chain layouts this epoch made available (for explain)
        for vq in self.vqs:
            self._fill_used_ring(vq)
        return f"features {C.feature_names(neg, d.device_id)}; sizes {[vq.num for vq in self.vqs]}"

    def stop(self) -> None:
        """Reset the device; buffers it never returned are the driver's again."""
        for q, vq in enumerate(self.vqs):
            for req in self.outstanding[q].values():
                vq.release(req.chain)
        self.vqs = []
        self.driver.reset()

    # -- adding buffers -------------------------------------------------------------------------
    def add(self, q: int, layout: str, segments: int, size: int, seed: int, kick: bool) -> None:
        vq, rnd = self.vqs[q], random.Random(seed)
        parts = min(segments, max(1, (vq.num - 2) // 2))  # a chain never longer than the queue (2.7.5.3.1)
        if not self._room(q, 2 * parts + 2):
            return
        built = self.traffic.build(q, size, parts, rnd)
        if built is None:
            return
        out, in_, req = built
        n = len(out) + len(in_)
        if layout == "direct" or not self.indirect:
            shape = Shape(segments=1)
            used = "chained" if parts > 1 else "direct"
        elif layout == "indirect" or n == 1 or vq.layout == "packed":  # 2.8.19: no direct before indirect
            shape, used = Shape(indirect=True), "indirect"
        else:
            shape, used = Shape(indirect=True, direct_before_indirect=rnd.randrange(1, n)), "direct+indirect"
        self.layouts_used.add(used)
        self.submit(q, out, in_, req, shape)
        if kick:
            self.kick(q)

    def submit(self, q: int, out, in_, req: Req, shape: Shape = Shape()) -> bool:
        """Make one buffer available (not yet published); False if the queue has no room."""
        vq = self.vqs[q]
        if vq.num_free < len(out) + len(in_):
            return False
        self.serial += 1
        req.token = self.serial
        req.chain = chain = vq.add(out, in_, req.token, **shape.kw())
        for s in chain.in_sgs:
            vq.mem.fill(s.addr, s.len, POISON)
        req.readable = tuple((s.addr, vq.mem.read(s.addr, s.len)) for s in chain.out_sgs)
        if vq.layout == "split":
            req.desc = vq.ring.desc[chain.ids].copy()
        self.outstanding[q][req.token] = req
        return True

    def _room(self, q: int, need: int) -> bool:
        """Free ``need`` descriptors on ``q`` if buffers there are sure to come back."""
        vq = self.vqs[q]
        self.poll(q)
        while vq.num_free < need and self.outstanding[q] and q not in self.traffic.held:  # bounded: a lap frees a buffer or wait() raises
            self.kick(q)
            self.wait(q, 1, "a used buffer to free descriptors")
        return vq.num_free >= need

    # -- notifications ----------------------------------------------------------------------------
    def kick(self, q: int) -> None:
        self.vqs[q].kick()

    def kick_all(self) -> None:
        for q in range(len(self.vqs)):
            self.kick(q)

    def suppress(self, q: int, how: str, ahead: int) -> None:
        vq = self.vqs[q]
        if how == "disable_cb":
            vq.disable_cb()
        elif how == "enable_cb":
            vq.enable_cb()
        elif vq.layout == "packed":
            off, wrap = vq.position_after(ahead)
            vq.set_used_event(off | wrap << 15)
        else:
            vq.set_used_event(vq.last_used_idx + ahead)

    # -- used buffers ---------------------------------------------------------------------------
    def poll(self, q: int) -> None:
        vq = self.vqs[q]
        with self._reading_used(q):
            while (chain := vq.get_buf()) is not None:
                self._returned(q, chain)

    def wait(self, q: int, count: int, what: str) -> None:
        """Bounded wait for ``count`` used buffers on ``q`` (DeviceTimeout names what is missing)."""
        vq = self.vqs[q]
        with self._reading_used(q):
            for chain in vq.wait_used(count, self.timeout, awaited=f"{what} ({len(self.outstanding[q])} outstanding)"):
                self._returned(q, chain)
        self.poll(q)

    def wait_all(self, q: int) -> None:
        if self.outstanding[q]:
            self.kick(q)
            self.wait(q, len(self.outstanding[q]), f"every buffer made available on {self.vqs[q].name}")

    def reported(self, chain) -> bool:
        """Whether the used elem gave this buffer's length (with IN_ORDER a batch reports only its last, 2.7.9)."""
        return chain.len_reported

    def _returned(self, q: int, chain) -> None:
        vq = self.vqs[q]
        req = self.outstanding[q].pop(chain.token, None)
        require(req is not None, CLAUSE_USED_ID, "a buffer came back that was not outstanding", observed=chain.head,
                queue=vq.name)
        for addr, data in req.readable:
            same = vq.mem.read(addr, len(data)) == data
            require(same, ring_clause(vq, CLAUSE_READONLY), "device wrote into a device-readable buffer",
                    expected=f"bytes at {addr:#x} unchanged", queue=vq.name)
        if req.desc is not None:
            require((vq.ring.desc[chain.ids] == req.desc).all(), CLAUSE_DESC_TABLE, "device modified the descriptors of a buffer",
                    expected="descriptor table unchanged", observed=f"descriptors {chain.ids}", queue=vq.name)
        try:
            self.traffic.check(q, req, chain)
        except DeviceViolation:
            self._suspect_wrong_id(q)
            raise
        self.good[q] += 1
        vq.release(chain)

    # -- telling who broke what ---------------------------------------------------------------------
    @contextmanager
    def _reading_used(self, q: int):
        """Around reads of the used ring: every slot consumed gets a fill value no device writes,
        so a used idx that moves past the elems the device wrote shows as that fill, not as an id."""
        vq = self.vqs[q]
        before = vq.last_used_idx
        try:
            yield
        except InvalidUsedId as e:
            slot = vq.last_used_idx % vq.num
            if vq.layout == "split" and int(vq.ring.used_ring[slot, 0]) == USED_SLOT_FILL:
                raise InvalidUsedIdx(
                    CLAUSE_USED_IDX,
                    "used idx moved past the used elems the device wrote",
                    expected=f"a used elem written at slot {slot}",
                    observed=f"slot {slot} still holds the fill the driver left there; used idx {int(vq.ring.used_idx[0])}",
                    queue=vq.name,
                ) from e
            raise
        except InvalidUsedLen:
            self._suspect_wrong_id(q)
            raise
        finally:
            if vq.layout == "split":
                for i in range((vq.last_used_idx - before) & 0xFFFF):
                    vq.ring.used_ring[(before + i) % vq.num] = USED_SLOT_FILL

    def _fill_used_ring(self, vq) -> None:
        if vq.layout == "split":
            vq.ring.used_ring[:] = USED_SLOT_FILL

    def _suspect_wrong_id(self, q: int) -> None:
        """A buffer came back wrong: if the device wrote into another buffer that no used elem names,
        the used elem named the wrong buffer (charged to the id, not to the contents)."""
        vq = self.vqs[q]
        if vq.layout != "split":
            return
        pending = (int(vq.ring.used_idx[0]) - vq.last_used_idx) & 0xFFFF
        named = {int(vq.ring.used_ring[(vq.last_used_idx + i) % vq.num, 0]) for i in range(min(pending, vq.num))}
        for chain in vq.in_flight.values():
            if chain.head not in named and any(vq.mem.read(s.addr, s.len) != bytes([POISON]) * s.len for s in chain.in_sgs):
                raise InvalidUsedId(
                    CLAUSE_USED_ID,
                    "the device wrote into a buffer that no used elem names, while a used elem named another",
                    expected=f"a used elem with id {chain.head}",
                    observed="none: the buffer it returned instead is not the one it wrote",
                    queue=vq.name,
                )

    # -- queue reset (2.6.1) and draining ----------------------------------------------------------
    def reset_queue(self, q: int) -> None:
        vq = self.vqs[q]
        self.traffic.before_reset(q)
        self.poll(q)
        probe = q not in self.traffic.held and self.good[q] > 0
        if probe:
            self._probe(q)  # control: the queue works before the reset
        try:
            reclaimed = self.driver.reset_vq(vq)
        except UnsupportedOp:
            self.ring_reset = False  # the transport cannot: the rule stays off
            return
        for chain in reclaimed:
            req = self.outstanding[q].pop(chain.token)
            self.traffic.reclaimed(req)
            vq.release(chain)
        self._fill_used_ring(vq)
        if probe:
            blame(CLAUSE_QUEUE_RESET, "the queue worked before a queue reset, not after it", lambda: self._probe(q))

    def _probe(self, q: int) -> None:
        """One small buffer on ``q``, kicked and waited for."""
        if not self._room(q, 4) or (built := self.traffic.build(q, 1, 1, random.Random(q))) is None:
            return
        out, in_, req = built
        self.submit(q, out, in_, req)
        self.kick(q)
        while req.token in self.outstanding[q]:  # bounded: a lap takes one of the buffers outstanding back, or wait() raises
            self.wait(q, 1, f"one {req.kind} buffer on {self.vqs[q].name}")

    def drain(self) -> None:
        """Kick every queue and wait (bounded) until every buffer made available has come back."""
        self.kick_all()
        written_off = False
        while True:  # bounded: a lap takes a receive buffer back, writes them off once, or wait() raises DeviceTimeout
            for q in range(len(self.vqs)):
                if q not in self.traffic.held:
                    self.wait_all(q)
                self.poll(q)
            held = [q for q in self.traffic.held if self.outstanding[q]]
            if not held:
                break
            self.traffic.feed()
            self.kick_all()
            try:
                self.wait(held[0], 1, "traffic for the receive buffers")
            except DeviceTimeout:
                if written_off or not self.traffic.write_off():
                    raise
                written_off = True
        for q, vq in enumerate(self.vqs):
            self.check_queue(q)
            if vq.layout == "split":
                used_idx = int(vq.ring.used_idx[0])
                require(used_idx == vq.last_used_idx, CLAUSE_USED_IDX, "used idx moved on with no buffer in flight",
                        expected=vq.last_used_idx, observed=used_idx, queue=vq.name)

    # -- after a failure: which clause? -------------------------------------------------------------
    def explain(self, error: Exception) -> Exception:
        """A timeout or bad data says that something failed, not what. On a fresh start with the same
        features, with the workloads: if a plain exchange passes (the control) but one laid out like
        something this run did fails, the clause of that layout is the one broken -- the primary
        clause of the failure reported (the symptom's clause is implicated), so a waiver of that
        clause covers it, whatever else the seed drew. Layouts this run did not make available are
        not tried: they cannot be the cause."""
        if not isinstance(error, DeviceViolation) or error.clause not in (CLAUSE_BUFFERS_USED, CLAUSE_FRAMING) or not self.vqs:
            return error
        packed = self.vqs[0].layout == "packed"
        used = self.layouts_used
        chained, indirect = (CLAUSE_PACKED_CHAIN, CLAUSE_PACKED_INDIRECT) if packed else (CLAUSE_FRAMING, CLAUSE_INDIRECT)
        experiments = [(chained, "a buffer over several descriptors per part", Shape(4))] if "chained" in used else []
        if self.indirect:
            if "indirect" in used:
                experiments.append((indirect, "a buffer in an indirect table", Shape(2, True)))
            if not packed and "direct+indirect" in used:
                mixed = Shape(3, True, direct_before_indirect=1)
                experiments.append((CLAUSE_INDIRECT, "direct descriptors then an indirect one", mixed))
        try:
            self.stop()
            self.start(self.features)
            work = self.work
            work.roundtrip(Shape(), size=512)
        except Exception:
            return error  # even the plain exchange fails now: nothing to narrow down
        try:
            for clause, what, shape in experiments:
                blame(clause, f"{what} failed where one descriptor per part worked", lambda shape=shape: work.roundtrip(shape, size=2048))
            for vq in work.vqs:
                vq.notify()  # nothing new is available
            blame(CLAUSE_SPURIOUS_KICK, "after notifications with nothing new available, an exchange failed", work.roundtrip)
        except DeviceViolation as found:
            found.add_note(f"(found on a fresh start, after the stress run failed with: {error})")
            return found
        except Exception:
            pass
        return error

    # -- invariants ---------------------------------------------------------------------------------
    def check_queue(self, q: int) -> None:
        vq = self.vqs[q]
        mine = set(self.outstanding[q])
        if {c.token for c in vq.in_flight.values()} != mine:
            raise HarnessError(f"{vq.name}: driver has {len(vq.in_flight)} buffers in flight, the stress test {len(mine)}")
        if vq.num_free + sum(c.ndesc for c in vq.in_flight.values()) != vq.num:
            raise HarnessError(f"{vq.name}: descriptors lost by the driver")
        if vq.layout == "split":
            used_idx = int(vq.ring.used_idx[0])
            ahead = (used_idx - vq.last_used_idx) & 0xFFFF
            require(ahead <= len(vq.in_flight), CLAUSE_USED_IDX, "used idx is ahead of the buffers in flight", queue=vq.name,
                    expected=f"at most {len(vq.in_flight)} used elems past {vq.last_used_idx}", observed=f"used idx {used_idx}")


# -- the hypothesis state machine (built on first use: importing hypothesis costs start-up time) ---
@functools.cache
def machine_class():
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

    Q = st.integers(0, 3)

    def step(fn):
        """Run a rule only on a live example; log it; note a failure for the shrink budget."""

        @functools.wraps(fn)
        def run(self, **kw):
            if not self.live:
                return
            self.stress.log(f"{fn.__name__}({', '.join(f'{k}={v!r}' for k, v in kw.items())})")
            try:
                return fn(self, **kw)
            except Exception as e:
                raise self._failed(e) from e

        return run

    class RingStressMachine(RuleBasedStateMachine):
        def __init__(self, session, stress):
            super().__init__()
            self.stress = stress
            self.live = stress.live()
            self.failed = False
            self.s = RingStress(session, stress.current_seed)
            if self.live:
                stress.log("-- example")

        def _failed(self, error: Exception) -> Exception:
            if interrupt.interrupted(error):
                return error  # raised on the way out of a Ctrl-C: nothing to explain
            if not self.failed:
                self.failed = True
                error = self.s.explain(error)
                self.stress.failed(error)
            return error

        def _q(self, q, queues=None):
            queues = queues or list(range(len(self.s.vqs)))
            return queues[q % len(queues)]

        @initialize(features=st.integers(0, 4095))
        @step
        def start(self, features):
            self.stress.log("   " + self.s.start(features))

        @rule(q=Q, layout=st.sampled_from(["direct", "indirect", "direct+indirect"]), segments=st.integers(1, 6),
              size=st.integers(1, 8192), seed=st.integers(0, 1 << 16), kick=st.booleans())
        @step
        def add(self, q, layout, segments, size, seed, kick):
            self.s.add(self._q(q, self.s.traffic.queues()), layout, segments, size, seed, kick)

        @rule(q=Q)
        @step
        def kick(self, q):
            self.s.kick(self._q(q))

        @rule(q=Q, how=st.sampled_from(["disable_cb", "enable_cb", "used_event"]), ahead=st.integers(0, 8))
        @step
        def suppress(self, q, how, ahead):
            self.s.suppress(self._q(q), how, ahead)

        @rule(q=Q)
        @step
        def poll(self, q):
            self.s.poll(self._q(q))

        @rule(q=Q)
        @step
        def wait(self, q):
            q = self._q(q)
            if q not in self.s.traffic.held and self.s.outstanding[q]:
                self.s.kick(q)
                self.s.wait(q, 1, f"a used buffer on {self.s.vqs[q].name}")

        # No preconditions: rule choice must not depend on the device (a replay draws the same steps).
        @rule(q=Q)
        @step
        def reset_queue(self, q):
            if self.s.ring_reset:  # only when VIRTIO_F_RING_RESET was negotiated
                self.s.reset_queue(self._q(q))

        @rule(features=st.integers(0, 4095))
        @step
        def renegotiate(self, features):
            if self.s.steps_in_epoch < RENEGOTIATE_AFTER:
                return  # occasionally: an epoch runs a while before it ends
            self.s.drain()
            self.s.stop()
            self.stress.log("   " + self.s.start(features))

        @invariant()
        def rings_consistent(self):
            if self.live and not self.failed and self.s.vqs:
                self.s.steps_in_epoch += 1
                try:
                    for q in range(len(self.s.vqs)):
                        self.s.check_queue(q)
                except Exception as e:
                    raise self._failed(e) from e

        def teardown(self):
            if not self.live or not self.s.vqs:
                return
            # hypothesis runs this in a ``finally``: after a Ctrl-C mid-step the bookkeeping may be
            # half-updated, and a drain would fail on it (or wait) in place of the interrupt.
            if interrupt.interrupted(sys.exc_info()[1]) or interrupt.pending():
                return  # the fixtures reset the device
            if self.failed:
                try:
                    self.s.stop()
                except Exception:
                    pass  # the failure already raised is the one to report
                return
            try:
                self.s.drain()
            except Exception as e:
                raise self._failed(e) from e
            self.s.stop()

    return RingStressMachine


@pytest.mark.clause(
    "def.basic.buffers-are-used",
    "def.split.used-elem-id",
    "def.split.used-idx",
    "dev.basic.virtqueues.the-virtqueue-used-ring.2",
    "dev.basic.message-framing.1",
    "dev.basic.virtqueues.the-virtqueue-descriptor-table.1",
    "dev.basic.virtqueues.the-virtqueue-descriptor-table.2",
)
def test_ring_stress(session, stress):
    """Random programs over every queue of the device; see the module docstring."""
    machine = machine_class()
    stress.run(lambda: machine(session, stress))
