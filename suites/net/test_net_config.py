"""VIRTIO 1.4, 5.1.4.1: the virtio-net configuration fields a device fills in -- max_virtqueue_pairs
and mtu in range, mtu never changed, speed and duplex in their value sets, the RSS limits -- and
the features it should offer only with the control virtqueue."""

from __future__ import annotations

import pytest

from fixtures.devices import need, need_capability
from virtio import constants as C
from virtio.checks import require

from .netio import NetIO

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("net")]

CFG = "dev.net.device-configuration-layout."


@pytest.mark.clause(CFG + "1")
def test_max_virtqueue_pairs_in_range(driver):
    """5.1.4.1: a device offering VIRTIO_NET_F_MQ sets max_virtqueue_pairs to 1..0x8000."""
    need_capability(driver, "net-control-queue", "MQ needs the control virtqueue, which the transport's front-end "
                    "serves (vhost-user: QEMU's virtio-net offers MQ and fills max_virtqueue_pairs itself)")
    need(driver, C.VIRTIO_NET_F_MQ)
    pairs = driver.config_field("max_virtqueue_pairs")
    require(1 <= pairs <= 0x8000, CFG + "1", "max_virtqueue_pairs of a device offering VIRTIO_NET_F_MQ",
            expected="1..0x8000", observed=pairs)


@pytest.mark.clause(CFG + "2")
def test_mtu_in_range(driver):
    need(driver, C.VIRTIO_NET_F_MTU)
    mtu = driver.config_field("mtu")
    require(68 <= mtu <= 65535, CFG + "2", "mtu of a device offering VIRTIO_NET_F_MTU", expected="68..65535", observed=mtu)


@pytest.mark.clause(CFG + "3")
def test_mtu_at_least_1280(driver):
    """5.1.4.1, SHOULD: an offered mtu is at least 1280 (the IPv6 minimum link MTU)."""
    need(driver, C.VIRTIO_NET_F_MTU)
    mtu = driver.config_field("mtu")
    if not 68 <= mtu <= 65535:
        pytest.skip(f"mtu {mtu} is outside 68..65535 (test_mtu_in_range reports it)")
    require(mtu >= 1280, CFG + "3", "mtu of a device offering VIRTIO_NET_F_MTU", expected=">= 1280", observed=mtu, level="SHOULD")


@pytest.mark.clause(CFG + "4")
def test_mtu_never_changes(session):
    """mtu read before negotiation, after DRIVER_OK and after traffic is the same value."""
    d = session.driver
    need(d, C.VIRTIO_NET_F_MTU)
    before = d.config_field("mtu")
    io = NetIO(session, want=(C.VIRTIO_NET_F_MTU,))
    after_ok = d.config_field("mtu")
    io.post_rx(1, io.hsize + 1518)
    seq, frame = io.raw(200)
    io.send(frame)
    io.receive(seq)
    after = d.config_field("mtu")
    require(before == after_ok == after, CFG + "4", "mtu across negotiation and traffic",
            expected=f"{before} throughout", observed=f"{before}, {after_ok} after DRIVER_OK, {after} after a frame")


@pytest.mark.clause(CFG + "10")
def test_speed_value(session):
    d = session.driver
    need(d, C.VIRTIO_NET_F_SPEED_DUPLEX)
    session.start(want=(C.VIRTIO_NET_F_SPEED_DUPLEX,))
    speed = d.config_field("speed")
    require(speed <= 0x7FFFFFFF or speed == 0xFFFFFFFF, CFG + "10", "speed with VIRTIO_NET_F_SPEED_DUPLEX",
            expected="0..0x7fffffff Mbit/s or 0xffffffff (unknown)", observed=hex(speed))


@pytest.mark.clause(CFG + "11")
def test_duplex_value(session):
    d = session.driver
    need(d, C.VIRTIO_NET_F_SPEED_DUPLEX)
    session.start(want=(C.VIRTIO_NET_F_SPEED_DUPLEX,))
    duplex = d.config_field("duplex")
    require(duplex in (0x00, 0x01, 0xFF), CFG + "11", "duplex with VIRTIO_NET_F_SPEED_DUPLEX",
            expected="0x00 (full), 0x01 (half) or 0xff (unknown)", observed=hex(duplex))


@pytest.mark.clause(CFG + "12")
def test_speed_and_duplex_steady_while_link_up(session):
    """5.1.4.1, SHOULD NOT: with SPEED_DUPLEX and STATUS negotiated, speed and duplex do not change
    while status says LINK_UP -- read after DRIVER_OK, then after each of a few frames through the
    device. Readings with the link down in between are not judged (a change then is allowed)."""
    d = session.driver
    need(d, C.VIRTIO_NET_F_SPEED_DUPLEX, C.VIRTIO_NET_F_STATUS)
    io = NetIO(session, want=(C.VIRTIO_NET_F_SPEED_DUPLEX, C.VIRTIO_NET_F_STATUS))

    def reading():
        snap = d.config_snapshot(("status", "speed", "duplex"))
        return snap["status"] & C.VIRTIO_NET_S_LINK_UP, snap["speed"], snap["duplex"]

    readings = [reading()]
    io.post_rx(4, io.hsize + 1518)
    for _ in range(3):
        seq, frame = io.raw(200)
        io.send(frame)
        io.receive(seq)
        readings.append(reading())
    if not all(up for up, _, _ in readings):
        pytest.skip("the link went down between readings: a change of speed or duplex is allowed then")
    values = [(hex(speed), hex(duplex)) for _, speed, duplex in readings]
    require(len(set(values)) == 1, CFG + "12", "speed and duplex while VIRTIO_NET_S_LINK_UP stays set",
            expected=f"{values[0]} throughout", observed=" -> ".join(map(str, values)), level="SHOULD")


@pytest.mark.clause(CFG + "7")
def test_rss_max_key_size_at_least_40(driver):
    """5.1.4.1: a device offering VIRTIO_NET_F_RSS or VIRTIO_NET_F_HASH_REPORT sets rss_max_key_size
    to at least 40 (the Toeplitz key of 5.1.9.4.3 is 40 bytes)."""
    offered = driver.device_features()
    if not offered >> C.VIRTIO_NET_F_RSS & 1 and not offered >> C.VIRTIO_NET_F_HASH_REPORT & 1:
        need_capability(driver, "net-control-queue", "RSS is the front-end's, which serves the control virtqueue")
        pytest.skip("device offers neither VIRTIO_NET_F_RSS nor VIRTIO_NET_F_HASH_REPORT (no rss_max_key_size)")
    size = driver.config_field("rss_max_key_size")
    require(size >= 40, CFG + "7", "rss_max_key_size of a device offering RSS or HASH_REPORT", expected=">= 40", observed=size)


@pytest.mark.clause(CFG + "8")
def test_rss_max_indirection_table_length_at_least_128(driver):
    need_capability(driver, "net-control-queue", "RSS is the front-end's, which serves the control virtqueue")
    need(driver, C.VIRTIO_NET_F_RSS)
    length = driver.config_field("rss_max_indirection_table_length")
    require(length >= 128, CFG + "8", "rss_max_indirection_table_length of a device offering VIRTIO_NET_F_RSS",
            expected=">= 128", observed=length)


def _offered_only_with_ctrl_vq(driver, feature: int, clause: str) -> None:
    """5.1.4.1, SHOULD NOT: ``feature`` offered by a device that does not offer VIRTIO_NET_F_CTRL_VQ
    (the commands that drive it go over the control virtqueue). Where the transport's front-end serves
    the control virtqueue (vhost-user: it hides CTRL_VQ), what the back-end offers beside it is the
    front-end's to present: not judged."""
    need_capability(driver, "net-control-queue", "the front-end serves the control virtqueue and decides what "
                    "is offered with it")
    need(driver, feature)
    offered = driver.device_features()
    require(offered >> C.VIRTIO_NET_F_CTRL_VQ & 1, clause, f"a device offering {C.feature_name(feature, C.VIRTIO_ID_NET)}",
            expected="VIRTIO_NET_F_CTRL_VQ offered too", observed="VIRTIO_NET_F_CTRL_VQ not offered", level="SHOULD")


@pytest.mark.clause(CFG + "13")
def test_hash_report_only_with_ctrl_vq(driver):
    _offered_only_with_ctrl_vq(driver, C.VIRTIO_NET_F_HASH_REPORT, CFG + "13")


@pytest.mark.clause(CFG + "14")
def test_ctrl_rx_extra_only_with_ctrl_vq(driver):
    _offered_only_with_ctrl_vq(driver, C.VIRTIO_NET_F_CTRL_RX_EXTRA, CFG + "14")
