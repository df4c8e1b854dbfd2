"""Self-tests of the blk workload's request order and alignment (virtio/workloads.py, BlkWorkload)
and of the descriptor-table check that must allow for the order (suites/test_split_virtqueue.py).

VIRTIO 1.4 5.2.6 orders no two blk requests in flight together: a device may run a read before a
write it was given at the same time (qemu-storage-daemon does). The workload must therefore make
its read back available only once the write is used, or it blames a correct device for stale data.
Likewise a device with a 4096-byte blk_size may fail a request of a 512-byte sector count (QEMU
does): the workloads send whole logical blocks.
"""

from __future__ import annotations

import pytest

import suites.test_config_space as config_suite  # modules, not test names: pytest would collect those here
import suites.test_split_virtqueue as split_suite
from fixtures.devices import DeviceSession
from targets.model.blk import BLK_OUTHDR, BlkDevice
from targets.model.transport import ModelTransport
from virtio import constants as C
from virtio.driver import VirtioDriver
from virtio.errors import DeviceViolation
from virtio.workloads import Shape

TIMEOUT = 2.0


class ConcurrentBlk(BlkDevice):
    """A legal device that serves every request available in one pass last-first (as if they ran
    concurrently and the later ones finished first), then writes the used elems. It records each
    pass's (type, sector) list."""

    name = "blk-concurrent"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passes: list[list[tuple[int, int]]] = []

    def process_queue(self, index: int) -> None:
        with self.lock:
            q = self.queues[index] if self.running() and 0 <= index < self.num_queues else None
            if q is None:
                return
            chains = []
            while (chain := q.pop()) is not None:
                chains.append(chain)
            if not chains:
                return
            seen = []
            for chain in chains:
                req_type, _, sector = BLK_OUTHDR.unpack_from(q.read_readable(chain))
                seen.append((req_type, sector))
            self.passes.append(seen)
            done = [(chain.head, self._serve(q, chain)) for chain in reversed(chains)]
            for head, n in reversed(done):
                q.push(head, n)
            self.signal(index)


class BlkWritesReadDescriptor(BlkDevice):
    """Clears the length of a read request's first writable descriptor in the driver's table
    (2.7.5: the device MUST NOT modify the descriptor table)."""

    name = "blk-writes-read-descriptor"

    def handle(self, qindex, queue, chain):
        req_type, _, _ = BLK_OUTHDR.unpack_from(queue.read_readable(chain))
        n = super().handle(qindex, queue, chain)
        if req_type == C.VIRTIO_BLK_T_IN:
            nxt = int(queue.ring.desc["next"][chain.head])
            queue.ring.desc["len"][nxt] = 0  # BUG: a store into the driver's table
        return n


class Blk4k(BlkDevice):
    """A legal device with 4096-byte logical blocks that fails any read or write not made of whole
    blocks at a block-aligned sector with VIRTIO_BLK_S_IOERR, as QEMU's block layer does."""

    name = "blk-4k"
    BLOCK = 4096

    def initial_config(self) -> bytes:
        raw = bytearray(super().initial_config())
        f = self.layout["blk_size"]
        raw[f.offset : f.offset + f.size] = self.BLOCK.to_bytes(f.size, "little")
        return bytes(raw)

    def _serve(self, queue, chain):
        req_type, _, sector = BLK_OUTHDR.unpack_from(queue.read_readable(chain))
        data_len = (chain.readable_len - BLK_OUTHDR.size) if req_type == C.VIRTIO_BLK_T_OUT else chain.writable_len - 1
        per = self.BLOCK // C.SECTOR_SIZE
        if req_type in (C.VIRTIO_BLK_T_IN, C.VIRTIO_BLK_T_OUT) and (sector % per or data_len % self.BLOCK):
            self.unaligned = getattr(self, "unaligned", 0) + 1
            return self._finish(queue, chain, C.VIRTIO_BLK_S_IOERR, b"")
        return super()._serve(queue, chain)


@pytest.fixture
def opened():
    transports = []
    yield transports
    for t in transports:
        t.close()


def session_for(opened, device) -> DeviceSession:
    t = ModelTransport(device, f"model:{device.name}")
    opened.append(t)
    return DeviceSession(VirtioDriver(t), TIMEOUT)


@pytest.mark.parametrize("segments", [1, 3])
def test_read_back_waits_for_the_write(opened, segments):
    """Against a device that runs requests in flight together last-first, every roundtrip reads
    back what it wrote, and no pass of the device ever held a write and the read of its sector."""
    dev = ConcurrentBlk()
    work = session_for(opened, dev).start(refuse=(C.VIRTIO_F_INDIRECT_DESC,))
    for _ in range(6):
        work.roundtrip(Shape(segments=segments), size=1024)
    both = [p for p in dev.passes if {t for t, _ in p} >= {C.VIRTIO_BLK_T_OUT, C.VIRTIO_BLK_T_IN}]
    assert not both, f"a write and a read were available together: {both}"
    assert sum(len(p) for p in dev.passes) == 12  # every write and every read reached the device


def test_batched_exchanges_each_read_back(opened):
    """submit() several exchanges, kick once, finish() each (test_in_order / notification data do
    this): the writes are in flight together, each read goes out after its own write."""
    dev = ConcurrentBlk()
    work = session_for(opened, dev).start()
    exchanges = [work.submit() for _ in range(5)]
    work.kick()
    for ex in reversed(exchanges):
        work.finish(ex)
    assert len(dev.passes[0]) == 5 and {t for t, _ in dev.passes[0]} == {C.VIRTIO_BLK_T_OUT}
    assert not work.vq.in_flight


def test_read_only_device_has_no_write():
    """A read-only blk device gets the read alone, made available by submit()."""
    dev = BlkDevice(read_only=True)
    t = ModelTransport(dev, "model:blk-ro")
    try:
        work = DeviceSession(VirtioDriver(t), TIMEOUT).start()
        ex = work.submit()
        assert [c.token for c in ex.chains] == ["read"]
        work.kick()
        work.finish(ex)
    finally:
        t.close()


def test_descriptor_table_check_sees_the_late_read(opened):
    """The read back is made available inside finish(), after the table snapshot: a device that
    writes into its descriptors is still caught, on the clause, and a clean device passes."""
    split_suite.test_descriptor_table_not_written(session_for(opened, BlkDevice()))
    with pytest.raises(DeviceViolation) as e:
        split_suite.test_descriptor_table_not_written(session_for(opened, BlkWritesReadDescriptor()))
    assert e.value.clause == "dev.basic.virtqueues.the-virtqueue-descriptor-table.2"


def test_whole_logical_blocks(opened):
    """With blk_size 4096 every workload request is whole blocks at aligned sectors: roundtrips of
    several sizes and the light buffers all succeed, and the device saw no unaligned request."""
    dev = Blk4k()
    session = session_for(opened, dev)
    work = session.start()
    assert work.block == 8
    for size in (64, 512, 1024, 4096, 6000):
        work.roundtrip(Shape(segments=2), size=size)
    c = work.vq.add(*work.light_buffers())
    work.vq.kick()
    work.vq.wait_used(1, TIMEOUT, awaited="light buffer")
    assert work.vq.read_in(c, c.writable)[-1] == C.VIRTIO_BLK_S_OK
    config_suite.test_blk_capacity_is_little_endian(session_for(opened, Blk4k()))
    assert getattr(dev, "unaligned", 0) == 0


def test_blk_size_only_when_negotiated(opened):
    """Without VIRTIO_BLK_F_BLK_SIZE the driver may not rely on blk_size: 512-byte sectors again
    (and the 4k device rightly fails them, so the check itself can fail)."""
    work = session_for(opened, Blk4k()).start(refuse=(C.VIRTIO_BLK_F_BLK_SIZE,))
    assert work.block == 1
    with pytest.raises(DeviceViolation):
        work.roundtrip(size=1024)
