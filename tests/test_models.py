"""Unit tests of the reference model devices, driven through ModelTransport and the driver-side
SplitVirtqueue exactly as a suite would (no pytest plugin needed)."""

from __future__ import annotations

import dataclasses
import os
import struct
import time

import pytest

from targets.config_ops import ShmRegion, VqInfo
from targets.model import BlkDevice, BlkZonedDevice, ConsoleDevice, NetDevice, RngDevice
from targets.model.transport import ModelTransport
from virtio import blk as B
from virtio import blk_zoned as Z
from virtio import constants as C
from virtio.config_layout import BLK_CONFIG, CONSOLE_CONFIG, NET_CONFIG
from virtio.messages import BLK_LIFETIME, NET_HDR_SIZE, NetHdr, blk_discard_segment, blk_outhdr

MODES = ("notify", "threaded")
SECTOR = C.SECTOR_SIZE
TIMEOUT = 2.0
DRIVER_STATUS = C.ACKNOWLEDGE | C.DRIVER


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


@pytest.fixture
def transports():
    """Every transport a test opens is closed at the end, even if the test fails."""
    opened = []
    yield opened
    for t in opened:
        t.close()


def bring_up(transports, device, names, features=None):
    """Driver initialization (3.1.1): reset, ACKNOWLEDGE|DRIVER, features, FEATURES_OK, vqs, DRIVER_OK."""
    t = ModelTransport(device, f"model:{device.name}")
    transports.append(t)
    t.reset()
    t.set_status(DRIVER_STATUS)
    offered = t.get_extended_features()
    t.finalize_features(offered if features is None else features & offered)
    t.set_status(DRIVER_STATUS | C.FEATURES_OK)
    assert t.get_status() & C.FEATURES_OK
    vqs = t.find_vqs([VqInfo(n) for n in names])
    t.set_status(DRIVER_STATUS | C.FEATURES_OK | C.DRIVER_OK)
    return t, vqs


def config(t, layout):
    return layout.unpack(t.get(0, layout.size))


def settle(t):
    """Wait until the device has taken every available buffer and finished processing them
    (threaded mode runs the device on its own thread)."""
    dev = t.device
    for _ in range(1000):
        if not any(q is not None and q.has_avail() for q in dev.queues):
            break
        time.sleep(0.001)
    t.synchronize_cbs()


def submit(vq, out=(), in_=(), **kw):
    """Add one buffer, kick, wait for it to be used."""
    chain = vq.add(out, in_, **kw)
    vq.kick()
    (used,) = vq.wait_used(1, timeout=TIMEOUT)
    assert used is chain
    return used


# ---------------------------------------------------------------------------------------------
# block
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def blk(mode, transports):
    dev = BlkDevice(mode=mode)
    t, (vq,) = bring_up(transports, dev, ["requestq"])
    return dev, t, vq


def blk_req(vq, req_type, sector=0, out_data=b"", in_len=0, **kw):
    """A request: header + data readable, in_len data bytes + status writable. -> (status, data, used len)."""
    out = [blk_outhdr(req_type, sector)] + ([out_data] if out_data else [])
    chain = submit(vq, out, [in_len + 1] if in_len else [1], **kw)
    raw = vq.read_in(chain, chain.writable)
    return raw[-1], raw[:-1], chain.used_len


def test_blk_config(blk):
    dev, t, _ = blk
    offered = t.get_extended_features()
    for bit in (C.VIRTIO_BLK_F_SIZE_MAX, C.VIRTIO_BLK_F_SEG_MAX, C.VIRTIO_BLK_F_BLK_SIZE, C.VIRTIO_BLK_F_FLUSH,
                C.VIRTIO_BLK_F_DISCARD, C.VIRTIO_BLK_F_WRITE_ZEROES, C.VIRTIO_BLK_F_CONFIG_WCE):
        assert offered >> bit & 1
    assert not offered >> C.VIRTIO_BLK_F_RO & 1
    cfg = config(t, BLK_CONFIG)
    assert cfg["capacity"] == 2048
    assert cfg["seg_max"] == 254 and cfg["blk_size"] == 512 and cfg["writeback"] == 1
    assert cfg["max_discard_seg"] >= 1 and cfg["max_write_zeroes_seg"] >= 1


def test_blk_write_then_read(blk):
    dev, t, vq = blk
    data = os.urandom(3 * SECTOR)
    status, _, used_len = blk_req(vq, C.VIRTIO_BLK_T_OUT, 10, out_data=data)
    assert (status, used_len) == (C.VIRTIO_BLK_S_OK, 1)
    status, got, used_len = blk_req(vq, C.VIRTIO_BLK_T_IN, 10, in_len=len(data))
    assert status == C.VIRTIO_BLK_S_OK
    assert used_len == len(data) + 1
    assert got == data
    # The same read as separate data segments through an indirect table.
    chain = submit(vq, [blk_outhdr(C.VIRTIO_BLK_T_IN, 10)], [SECTOR, 2 * SECTOR, 1], indirect=True)
    raw = vq.read_in(chain)
    assert chain.used_len == len(data) + 1 and raw[:-1] == data and raw[-1] == C.VIRTIO_BLK_S_OK
    assert dev.requests_handled == 3


def test_blk_get_id_and_flush(blk):
    _, _, vq = blk
    status, got, used_len = blk_req(vq, C.VIRTIO_BLK_T_GET_ID, in_len=C.VIRTIO_BLK_ID_BYTES)
    assert status == C.VIRTIO_BLK_S_OK and used_len == 21
    assert got == b"vconf-model-blk".ljust(20, b"\0")
    assert blk_req(vq, C.VIRTIO_BLK_T_FLUSH) == (C.VIRTIO_BLK_S_OK, b"", 1)


def test_blk_discard_and_write_zeroes(blk):
    dev, _, vq = blk
    blk_req(vq, C.VIRTIO_BLK_T_OUT, 0, out_data=b"\xaa" * (16 * SECTOR))
    allocated = lambda: struct.unpack_from("<Q", dev.shm_read(0, 12 * 8, 8))[0]  # noqa: E731
    assert allocated() == 16
    segs = blk_discard_segment(0, 4) + blk_discard_segment(8, 2)
    assert blk_req(vq, C.VIRTIO_BLK_T_DISCARD, out_data=segs)[0] == C.VIRTIO_BLK_S_OK
    assert blk_req(vq, C.VIRTIO_BLK_T_WRITE_ZEROES, out_data=blk_discard_segment(4, 2))[0] == C.VIRTIO_BLK_S_OK
    unmap = blk_discard_segment(12, 2, C.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)
    assert blk_req(vq, C.VIRTIO_BLK_T_WRITE_ZEROES, out_data=unmap)[0] == C.VIRTIO_BLK_S_OK
    _, got, _ = blk_req(vq, C.VIRTIO_BLK_T_IN, 0, in_len=16 * SECTOR)
    zero, aa = bytes(SECTOR), b"\xaa" * SECTOR
    expect = [zero] * 6 + [aa] * 2 + [zero] * 2 + [aa] * 2 + [zero] * 2 + [aa] * 2
    assert got == b"".join(expect)
    assert allocated() == 16 - 4 - 2 - 2  # discard and unmap deallocate; plain write zeroes does not


@pytest.mark.parametrize(
    "req_type, seg, why",
    [
        (C.VIRTIO_BLK_T_DISCARD, blk_discard_segment(0, 1, C.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP), "unmap on discard"),
        (C.VIRTIO_BLK_T_DISCARD, blk_discard_segment(0, 1, 2), "unknown flag"),
        (C.VIRTIO_BLK_T_WRITE_ZEROES, blk_discard_segment(0, 1, 4), "unknown flag"),
        (C.VIRTIO_BLK_T_DISCARD, blk_discard_segment(0, 1) * 9, "more than max_discard_seg"),
    ],
)
def test_blk_discard_unsupp(blk, req_type, seg, why):
    _, _, vq = blk
    assert blk_req(vq, req_type, out_data=seg) == (C.VIRTIO_BLK_S_UNSUPP, b"", 1), why


def test_blk_errors(blk):
    dev, t, vq = blk
    # Beyond capacity: IOERR, and the used len still covers the (zeroed) data and the status.
    status, got, used_len = blk_req(vq, C.VIRTIO_BLK_T_IN, 2047, in_len=2 * SECTOR)
    assert (status, got, used_len) == (C.VIRTIO_BLK_S_IOERR, bytes(2 * SECTOR), 2 * SECTOR + 1)
    assert blk_req(vq, C.VIRTIO_BLK_T_OUT, 2048, out_data=bytes(SECTOR))[0] == C.VIRTIO_BLK_S_IOERR
    assert blk_req(vq, C.VIRTIO_BLK_T_DISCARD, out_data=blk_discard_segment(2040, 16))[0] == C.VIRTIO_BLK_S_IOERR
    assert blk_req(vq, C.VIRTIO_BLK_T_IN, 0, in_len=100)[0] == C.VIRTIO_BLK_S_IOERR  # not whole sectors
    # Unknown / unoffered types; GET_LIFETIME only where VIRTIO_BLK_F_LIFETIME was negotiated.
    for req_type in (99, C.VIRTIO_BLK_T_SECURE_ERASE):
        assert blk_req(vq, req_type) == (C.VIRTIO_BLK_S_UNSUPP, b"", 1)
    lifetime = blk_req(vq, C.VIRTIO_BLK_T_GET_LIFETIME, in_len=6)
    if dev.driver_features >> C.VIRTIO_BLK_F_LIFETIME & 1:
        assert lifetime == (C.VIRTIO_BLK_S_OK, BLK_LIFETIME.pack(*dev.lifetime()), 7)
    else:
        assert lifetime == (C.VIRTIO_BLK_S_UNSUPP, bytes(6), 7)
    # A header that is not all readable: IOERR in the status byte.
    chain = submit(vq, [blk_outhdr(C.VIRTIO_BLK_T_IN)[:8]], [1])
    assert chain.used_len == 1 and vq.read_in(chain) == bytes([C.VIRTIO_BLK_S_IOERR])
    assert not t.get_status() & C.DEVICE_NEEDS_RESET
    # No writable byte at all: nowhere to report, so the device needs a reset.
    vq.add([blk_outhdr(C.VIRTIO_BLK_T_FLUSH)], [])
    vq.kick()
    t.synchronize_cbs()
    for _ in range(200):  # bounded: 2 s
        if t.get_status() & C.DEVICE_NEEDS_RESET:
            break
        time.sleep(0.01)
    assert t.get_status() & C.DEVICE_NEEDS_RESET


def test_blk_read_only(mode, transports):
    dev = BlkDevice(mode=mode, read_only=True, capacity_sectors=64)
    t, (vq,) = bring_up(transports, dev, ["requestq"])
    assert t.get_extended_features() >> C.VIRTIO_BLK_F_RO & 1
    assert config(t, BLK_CONFIG)["capacity"] == 64
    assert blk_req(vq, C.VIRTIO_BLK_T_OUT, 0, out_data=b"\x55" * SECTOR)[0] == C.VIRTIO_BLK_S_IOERR
    assert blk_req(vq, C.VIRTIO_BLK_T_WRITE_ZEROES, out_data=blk_discard_segment(0, 1))[0] == C.VIRTIO_BLK_S_IOERR
    assert blk_req(vq, C.VIRTIO_BLK_T_IN, 0, in_len=SECTOR)[1] == bytes(SECTOR)


def test_blk_not_negotiated_discard_is_unsupp(mode, transports):
    dev = BlkDevice(mode=mode)
    feats = (1 << C.VIRTIO_F_VERSION_1) | (1 << C.VIRTIO_BLK_F_FLUSH)
    t, (vq,) = bring_up(transports, dev, ["requestq"], features=feats)
    assert blk_req(vq, C.VIRTIO_BLK_T_DISCARD, out_data=blk_discard_segment(0, 1))[0] == C.VIRTIO_BLK_S_UNSUPP


def test_blk_wce_without_flush_starts_writethrough(mode, transports):
    dev = BlkDevice(mode=mode)
    feats = (1 << C.VIRTIO_F_VERSION_1) | (1 << C.VIRTIO_BLK_F_CONFIG_WCE)
    t, _ = bring_up(transports, dev, ["requestq"], features=feats)
    assert config(t, BLK_CONFIG)["writeback"] == 0
    t.reset()
    assert config(t, BLK_CONFIG)["writeback"] == 1


def test_blk_resize(blk):
    dev, t, vq = blk
    gen, irqs = t.generation(), t.config_interrupts
    t.trigger_config_change()
    assert t.generation() != gen
    assert t.config_interrupts == irqs + 1
    assert config(t, BLK_CONFIG)["capacity"] == 2048 + 8
    data = os.urandom(8 * SECTOR)
    assert blk_req(vq, C.VIRTIO_BLK_T_OUT, 2048, out_data=data)[0] == C.VIRTIO_BLK_S_OK
    assert blk_req(vq, C.VIRTIO_BLK_T_IN, 2048, in_len=len(data))[1] == data


def test_blk_shm_region(blk):
    dev, t, vq = blk
    assert t.get_shm_region(0) == ShmRegion(0x80_0000_0000, 4096)
    assert t.get_shm_region(1) is None
    blk_req(vq, C.VIRTIO_BLK_T_FLUSH)
    page = dev.shm_read(0, 0, 4096)
    assert len(page) == 4096 and struct.unpack_from("<Q", page, 0)[0] == dev.requests_handled == 1


# ---------------------------------------------------------------------------------------------
# net
# ---------------------------------------------------------------------------------------------

MAC = bytes.fromhex("525400123456")
OTHER = bytes.fromhex("525400abcdef")
MCAST = bytes.fromhex("01005e000001")
RXBUF = 1526  # 5.1.6.3.1: 12-byte header + a 1514-byte frame


def _zoned(mode, transports):
    dev = BlkZonedDevice(mode=mode)
    t, (vq,) = bring_up(transports, dev, ["requestq"])
    return dev, t, vq


def _zones(vq):
    status, got, _ = blk_req(vq, B.VIRTIO_BLK_T_ZONE_REPORT, 0, in_len=Z.report_buffer_len(16))
    assert status == C.VIRTIO_BLK_S_OK
    nr, zones = Z.parse_zone_report(got)
    assert nr == len(zones) == 16
    return zones


def _append(vq, sector, data):
    chain = submit(vq, [blk_outhdr(B.VIRTIO_BLK_T_ZONE_APPEND, sector), data], [Z.APPEND_SECTOR.size, 1])
    raw = vq.read_in(chain, chain.writable)
    return raw[-1], Z.APPEND_SECTOR.unpack(raw[:-1])[0]


def test_blk_zoned_needs_zoned_feature(transports):
    dev = BlkZonedDevice()
    t = ModelTransport(dev, "model:blk-zoned")
    transports.append(t)
    t.reset()
    t.set_status(DRIVER_STATUS)
    offered = t.get_extended_features()
    assert offered >> C.VIRTIO_BLK_F_ZONED & 1 and not offered >> C.VIRTIO_BLK_F_DISCARD & 1
    t.finalize_features(offered & ~(1 << C.VIRTIO_BLK_F_ZONED))
    t.set_status(DRIVER_STATUS | C.FEATURES_OK)
    assert not t.get_status() & C.FEATURES_OK  # 5.2.5.2: host-managed


def test_blk_zoned_config_and_report(mode, transports):
    _, t, vq = _zoned(mode, transports)
    cfg = config(t, BLK_CONFIG)
    assert (cfg["zoned.zone_sectors"], cfg["zoned.max_open_zones"], cfg["zoned.max_active_zones"]) == (128, 2, 3)
    assert (cfg["zoned.max_append_sectors"], cfg["zoned.write_granularity"], cfg["zoned.model"]) == (64, 512, Z.VIRTIO_BLK_Z_HM)
    zones = _zones(vq)
    assert [z.z_start for z in zones] == [i * 128 for i in range(16)]
    assert [z.z_type for z in zones[:3]] == [Z.VIRTIO_BLK_ZT_CONV] * 3
    assert {z.z_type for z in zones[3:]} == {Z.VIRTIO_BLK_ZT_SWR}
    assert zones[11].z_state == Z.VIRTIO_BLK_ZS_RDONLY and zones[12].z_state == Z.VIRTIO_BLK_ZS_OFFLINE


def test_blk_zoned_state_machine(mode, transports):
    _, _, vq = _zoned(mode, transports)
    a, b, c, d = (i * 128 for i in (3, 4, 5, 6))
    unit = os.urandom(SECTOR)
    assert blk_req(vq, C.VIRTIO_BLK_T_OUT, a + 1, out_data=unit)[0] == B.VIRTIO_BLK_S_ZONE_UNALIGNED_WP
    assert blk_req(vq, C.VIRTIO_BLK_T_OUT, a, out_data=unit)[0] == C.VIRTIO_BLK_S_OK
    assert _zones(vq)[3].z_state == Z.VIRTIO_BLK_ZS_IOPEN and _zones(vq)[3].z_wp == a + 1
    assert _append(vq, a, unit) == (C.VIRTIO_BLK_S_OK, a + 1)
    # Two explicit opens with max_open_zones 2: the implicitly open zone is closed to make room.
    assert blk_req(vq, B.VIRTIO_BLK_T_ZONE_OPEN, b)[0] == C.VIRTIO_BLK_S_OK
    assert blk_req(vq, B.VIRTIO_BLK_T_ZONE_OPEN, c)[0] == C.VIRTIO_BLK_S_OK
    states = [z.z_state for z in _zones(vq)[3:6]]
    assert states == [Z.VIRTIO_BLK_ZS_CLOSED, Z.VIRTIO_BLK_ZS_EOPEN, Z.VIRTIO_BLK_ZS_EOPEN]
    # Three active zones (closed, open, open): a fourth cannot become active.
    assert blk_req(vq, B.VIRTIO_BLK_T_ZONE_OPEN, d)[0] == B.VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE
    assert blk_req(vq, C.VIRTIO_BLK_T_OUT, d, out_data=unit)[0] == B.VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE
    assert blk_req(vq, B.VIRTIO_BLK_T_ZONE_FINISH, a)[0] == C.VIRTIO_BLK_S_OK
    assert blk_req(vq, B.VIRTIO_BLK_T_ZONE_OPEN, d)[0] == B.VIRTIO_BLK_S_ZONE_OPEN_RESOURCE
    assert blk_req(vq, B.VIRTIO_BLK_T_ZONE_OPEN, 0)[0] == B.VIRTIO_BLK_S_ZONE_INVALID_CMD  # conventional
    assert blk_req(vq, B.VIRTIO_BLK_T_ZONE_RESET, a)[0] == C.VIRTIO_BLK_S_OK
    status, got, _ = blk_req(vq, C.VIRTIO_BLK_T_IN, a, in_len=2 * SECTOR)
    assert status == C.VIRTIO_BLK_S_OK and got == bytes(2 * SECTOR)  # unwritten data reads as zeros
    assert blk_req(vq, C.VIRTIO_BLK_T_IN, a + 127, in_len=2 * SECTOR)[0] == B.VIRTIO_BLK_S_ZONE_INVALID_CMD
    assert blk_req(vq, B.VIRTIO_BLK_T_ZONE_RESET_ALL)[0] == C.VIRTIO_BLK_S_OK
    assert [z.z_state for z in _zones(vq)[3:7]] == [Z.VIRTIO_BLK_ZS_EMPTY] * 4


@pytest.fixture
def net(mode, transports):
    dev = NetDevice(mode=mode)
    # One queue pair (with MQ controlq would be queue 2N), no announcements on a link flap, and
    # one buffer per frame (MRG_RXBUF would wait for more buffers instead of dropping a big frame).
    single = ~(1 << C.VIRTIO_NET_F_MQ | 1 << C.VIRTIO_NET_F_GUEST_ANNOUNCE | 1 << C.VIRTIO_NET_F_MRG_RXBUF)
    t, vqs = bring_up(transports, dev, ["receiveq1", "transmitq1", "controlq"], features=single)
    return dev, t, vqs


def frame(dest, payload=b"", src=OTHER):
    return dest + src + b"\x88\xb5" + (payload or os.urandom(60))


def post_rx(t, rx, *sizes):
    """Make receive buffers available and wait until the device holds them."""
    for n in sizes:
        rx.add((), [n])
    rx.kick()
    settle(t)


def transmit(t, tx, frm):
    """Send one frame; the TX buffer comes back with used len 0 (nothing written)."""
    chain = submit(tx, [NetHdr().pack() + frm])
    assert chain.used_len == 0
    t.synchronize_cbs()  # the loopback runs after the TX batch, under the device lock


def received(rx):
    """The next used RX buffer as (hdr, frame), checking used len = header + frame."""
    (chain,) = rx.wait_used(1, timeout=TIMEOUT)
    raw = rx.read_in(chain)
    assert chain.used_len == len(raw) >= NET_HDR_SIZE
    return NetHdr.unpack(raw[:NET_HDR_SIZE]), raw[NET_HDR_SIZE:]


def ctrl(ctrlq, cls, cmd, data=b""):
    chain = submit(ctrlq, [bytes([cls, cmd]) + data], [1])
    assert chain.used_len == 1
    return ctrlq.read_in(chain)[0]


def test_net_config(net):
    dev, t, _ = net
    cfg = config(t, NET_CONFIG)
    assert cfg["mac"] == MAC and cfg["status"] == C.VIRTIO_NET_S_LINK_UP


def test_net_loopback(net):
    dev, t, (rx, tx, _) = net
    post_rx(t, rx, RXBUF)
    frm = frame(MAC, os.urandom(200))
    transmit(t, tx, frm)
    hdr, payload = received(rx)
    assert payload == frm
    assert (hdr.flags, hdr.gso_type, hdr.num_buffers) == (0, C.VIRTIO_NET_HDR_GSO_NONE, 1)


def test_net_pending_frames_wait_for_rx_buffers(net):
    dev, t, (rx, tx, _) = net
    frames = [frame(MAC), frame(b"\xff" * 6)]  # own MAC and broadcast
    for f in frames:
        transmit(t, tx, f)
    assert rx.get_buf() is None
    for _ in frames:
        rx.add((), [RXBUF])
    rx.kick()
    chains = rx.wait_used(2, timeout=TIMEOUT)
    assert [rx.read_in(c)[NET_HDR_SIZE:] for c in chains] == frames
    assert all(c.used_len == NET_HDR_SIZE + len(f) for c, f in zip(chains, frames))


def test_net_filtering(net):
    dev, t, (rx, tx, cq) = net
    post_rx(t, rx, *[RXBUF] * 4)
    # Another unicast MAC and an unlisted multicast group are filtered by default.
    transmit(t, tx, frame(OTHER))
    transmit(t, tx, frame(MCAST))
    assert rx.get_buf() is None
    # Promiscuous mode lets the other unicast MAC through.
    assert ctrl(cq, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_PROMISC, b"\x01") == C.VIRTIO_NET_OK
    f = frame(OTHER)
    transmit(t, tx, f)
    assert received(rx)[1] == f
    assert ctrl(cq, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_PROMISC, b"\x00") == C.VIRTIO_NET_OK
    transmit(t, tx, frame(OTHER))
    assert rx.get_buf() is None
    # The multicast table admits its group.
    table = struct.pack("<I", 0) + struct.pack("<I", 1) + MCAST
    assert ctrl(cq, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_TABLE_SET, table) == C.VIRTIO_NET_OK
    f = frame(MCAST)
    transmit(t, tx, f)
    assert received(rx)[1] == f
    # ADDR_SET moves the MAC: config follows, the old address is filtered.
    gen = t.generation()
    assert ctrl(cq, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_ADDR_SET, OTHER) == C.VIRTIO_NET_OK
    assert config(t, NET_CONFIG)["mac"] == OTHER and t.generation() != gen
    transmit(t, tx, frame(MAC))
    assert rx.get_buf() is None
    f = frame(OTHER)
    transmit(t, tx, f)
    assert received(rx)[1] == f
    # Reset forgets all of it.
    t.reset()
    assert config(t, NET_CONFIG)["mac"] == MAC
    assert not dev.promisc and not dev.multi_table and dev.mac == MAC


def test_net_allmulti(net):
    dev, t, (rx, tx, cq) = net
    post_rx(t, rx, RXBUF)
    assert ctrl(cq, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_ALLMULTI, b"\x01") == C.VIRTIO_NET_OK
    f = frame(MCAST)
    transmit(t, tx, f)
    assert received(rx)[1] == f


@pytest.mark.parametrize(
    "cls, cmd, data",
    [
        (7, 0, b""),  # unknown class
        (C.VIRTIO_NET_CTRL_RX, 9, b"\x01"),  # unknown command
        (C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_PROMISC, b""),  # missing byte
        (C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_PROMISC, b"\x02"),  # neither 0 nor 1
        (C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_TABLE_SET, struct.pack("<I", 2) + MAC),  # short table
        (C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_ADDR_SET, MAC[:5]),
    ],
)
def test_net_ctrl_err(net, cls, cmd, data):
    dev, t, (_, _, cq) = net
    assert ctrl(cq, cls, cmd, data) == C.VIRTIO_NET_ERR
    assert not dev.promisc and dev.mac == MAC


def test_net_ctrl_needs_negotiated_feature(mode, transports):
    dev = NetDevice(mode=mode)
    feats = (1 << C.VIRTIO_F_VERSION_1) | (1 << C.VIRTIO_NET_F_MAC) | (1 << C.VIRTIO_NET_F_CTRL_VQ)
    t, (_, _, cq) = bring_up(transports, dev, ["receiveq1", "transmitq1", "controlq"], features=feats)
    assert ctrl(cq, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_PROMISC, b"\x01") == C.VIRTIO_NET_ERR


def test_net_refuses_broken_dependency(transports):
    t = ModelTransport(NetDevice(), "model:net")
    transports.append(t)
    t.reset()
    t.set_status(DRIVER_STATUS)
    t.finalize_features((1 << C.VIRTIO_F_VERSION_1) | (1 << C.VIRTIO_NET_F_CTRL_RX))  # without CTRL_VQ
    t.set_status(DRIVER_STATUS | C.FEATURES_OK)
    assert not t.get_status() & C.FEATURES_OK


def test_net_frame_too_big_is_dropped(net):
    dev, t, (rx, tx, _) = net
    post_rx(t, rx, NET_HDR_SIZE + 64)
    transmit(t, tx, frame(MAC, bytes(100)))
    assert rx.get_buf() is None and dev.stats["rx_too_big"] == 1
    f = frame(MAC, bytes(40))  # 54 bytes: fits the same buffer
    transmit(t, tx, f)
    assert received(rx)[1] == f


def test_net_link_flap(net):
    dev, t, (rx, tx, _) = net
    gen, irqs = t.generation(), t.config_interrupts
    t.trigger_config_change()
    assert config(t, NET_CONFIG)["status"] == 0
    assert t.generation() != gen and t.config_interrupts == irqs + 1
    t.trigger_config_change()
    assert config(t, NET_CONFIG)["status"] == C.VIRTIO_NET_S_LINK_UP
    assert t.config_interrupts == irqs + 2


# ---------------------------------------------------------------------------------------------
# rng
# ---------------------------------------------------------------------------------------------


def test_rng(mode, transports):
    t, (vq,) = bring_up(transports, RngDevice(mode=mode), ["requestq"])
    chain = submit(vq, (), [64])
    assert chain.used_len == 64
    a = vq.read_in(chain)
    chain = submit(vq, (), [16, 48])
    assert chain.used_len == 64 and vq.read_in(chain) != a  # 2^-512 chance of a false failure
    chain = submit(vq, [b"readable only"])
    assert chain.used_len == 0
    with pytest.raises(Exception, match="trigger_config_change"):
        t.trigger_config_change()


# ---------------------------------------------------------------------------------------------
# console
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def console(mode, transports):
    dev = ConsoleDevice(mode=mode)
    t, vqs = bring_up(transports, dev, ["receiveq", "transmitq"])
    return dev, t, vqs


def test_console_echo(console):
    dev, t, (rx, tx) = console
    assert t.get_extended_features() >> C.VIRTIO_CONSOLE_F_SIZE & 1
    cfg = config(t, CONSOLE_CONFIG)
    assert (cfg["cols"], cfg["rows"]) == (80, 25)
    rx.add((), [64])
    rx.kick()
    settle(t)
    assert submit(tx, [b"hello, "]).used_len == 0
    t.synchronize_cbs()
    (chain,) = rx.wait_used(1, timeout=TIMEOUT)
    assert rx.read_in(chain) == b"hello, "


def test_console_split_and_pending(console):
    dev, t, (rx, tx) = console
    data = os.urandom(100)
    assert submit(tx, [data[:30], data[30:]]).used_len == 0  # data arrives before any RX buffer
    t.synchronize_cbs()
    assert rx.get_buf() is None
    for n in (40, 40, 40):
        rx.add((), [n])
    rx.kick()
    chains = rx.wait_used(3, timeout=TIMEOUT)
    assert [c.used_len for c in chains] == [40, 40, 20]
    assert b"".join(rx.read_in(c) for c in chains) == data


def test_console_resize(console):
    dev, t, _ = console
    gen, irqs = t.generation(), t.config_interrupts
    t.trigger_config_change()
    cfg = config(t, CONSOLE_CONFIG)
    assert (cfg["cols"], cfg["rows"]) != (80, 25)
    assert t.generation() != gen and t.config_interrupts == irqs + 1


# ---------------------------------------------------------------------------------------------
# the device-side queue interface (targets/model/device_queue.py) and queue state
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
def test_queue_state_round_trip(transports, packed):
    """state()/set_state() carry a queue's position (2.7 counters, 2.8 slots and wrap counters)
    onto a fresh queue, and Device.detach_queue/attach_queue move it as the vhost-user back-end does."""
    features = (1 << C.VIRTIO_F_VERSION_1) | (1 << C.VIRTIO_F_RING_PACKED if packed else 0)
    dev = RngDevice()
    t, (vq,) = bring_up(transports, dev, ["requestq"], features=features)
    num = vq.num
    for _ in range(num + 3):  # past the end of the ring: packed wrap counters flip
        assert submit(vq, (), [8]).used_len == 8
    q = dev.queue(0)
    assert q.layout == ("packed" if packed else "split")
    st = q.state()
    assert (st.size, st.ready, st.addrs) == (num, True, q.addrs)
    if packed:
        assert (st.next_avail, st.next_used, st.avail_wrap_counter, st.used_wrap_counter) == (3, 3, False, False)
    else:
        assert (st.next_avail, st.next_used, st.avail_wrap_counter, st.used_wrap_counter) == (num + 3, num + 3, True, True)
    with dev.lock:
        assert dev.detach_queue(0) == st
        assert dev.queue(0) is None
        q2 = dev.attach_queue(0, st.addrs, st)
    assert q2 is not q and q2.state() == st
    assert submit(vq, (), [8]).used_len == 8  # the driver goes on where it was
    with pytest.raises(ValueError):
        q2.set_state(dataclasses.replace(st, size=num * 2))


def test_queue_state_refuses_packed_slot_outside_ring(transports):
    dev = RngDevice()
    bring_up(transports, dev, ["requestq"], features=(1 << C.VIRTIO_F_VERSION_1) | (1 << C.VIRTIO_F_RING_PACKED))
    q = dev.queue(0)
    with pytest.raises(ValueError, match="outside"):
        q.set_state(dataclasses.replace(q.state(), next_avail=q.num))
    with pytest.raises(NotImplementedError):
        q.track_inflight(None, [])  # vhost-user's inflight layout is a split-ring one


def test_queue_factory_and_batch_path_follow_subclasses(transports):
    """Device.make_queue builds split_queue_class; a subclass that changes how chains are walked
    keeps the per-chain path (pop_simple says False), as on packed rings (test_packed)."""
    from targets.model.split_ring import DeviceSplitQueue

    walked = type("Walked", (DeviceSplitQueue,), {"walk": lambda self, head: DeviceSplitQueue.walk(self, head)})
    dev = type("WalkedRng", (RngDevice,), {"split_queue_class": walked})()
    t, (vq,) = bring_up(transports, dev, ["requestq"], features=1 << C.VIRTIO_F_VERSION_1)
    assert type(dev.queue(0)) is walked
    vq.add((), [8])
    vq.publish()  # made available, no notification yet
    assert dev.queue(0).pop_simple() is False
    vq.kick()
    assert [c.used_len for c in vq.wait_used(1, timeout=TIMEOUT)] == [8]
