"""The vhost-user back-end's duties (QEMU docs/interop/vhost-user.rst), checked over a raw session.

Each test opens its own session (targets.vhost_user.session.RawSession) on the target's socket and
tags the vu.* clauses (virtio/clauses_vhost_user.toml) it proves. Waits are bounded by
--device-timeout; "nothing happens" is judged over a short window (IDLE seconds).
"""

from __future__ import annotations

import mmap
import os
import socket

import pytest

from fixtures.vhost_user import DEFAULT_PROTOCOL, RINGS_NEEDED, InflightBuffer, queue_region_min_split, vu
from virtio import constants as C
from virtio.checks import poll
from virtio.errors import DeviceViolation
from virtio.messages import blk_outhdr

IDLE = 0.3  # how long a stopped or disabled ring is watched for (wrong) progress
UNKNOWN_REQUEST = 0x7E  # no request code this high is defined
BLK_NUM_QUEUES = 34  # virtio_blk_config.num_queues offset (5.2.4)
DISABLED_WRITE_SECTOR = 8  # where a write made available on a disabled ring is looked for


def _need_protocol(s, bit: int) -> None:
    if not s.offered >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1:
        pytest.skip("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES")
    if not s.protocol_offered >> bit & 1:
        pytest.skip(f"back-end does not offer protocol feature {vu.PROTOCOL_FEATURE_NAMES[bit]}")


def _reply_ack_session(vu_backend, clause):
    s = vu_backend.open(clause)
    s.handshake()
    _need_protocol(s, vu.PROTOCOL_F_REPLY_ACK)
    return s


# -- header and replies ------------------------------------------------------------------------------
@pytest.mark.clause("vu.header.1", "vu.header.2", "vu.communication.1")
def test_replies_have_reply_header_and_shape(vu_backend):
    s = vu_backend.open("vu.communication.1")
    s.send(vu.SET_OWNER)
    s.offered = s.u64(vu.GET_FEATURES)  # recv_reply checks version, reply bit and request code
    if s.offered >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1:
        s.u64(vu.GET_PROTOCOL_FEATURES)
    s.get_vring_base(0, "vu.communication.1")  # a vring state, whatever the ring's (unset) state


@pytest.mark.clause("vu.communication.2")
def test_no_reply_unless_asked(vu_backend):
    s = vu_backend.open("vu.communication.2")
    s.send(vu.SET_OWNER)
    s.expect_silence("vu.communication.2", "an answer to SET_OWNER", IDLE)
    s.offered = s.u64(vu.GET_FEATURES)
    # Protocol features not negotiated (so no REPLY_ACK): nothing below asks for an answer.
    s.send(vu.SET_FEATURES, vu.U64.pack(s.offered & (1 << C.VIRTIO_F_VERSION_1)))
    s.send(vu.SET_VRING_NUM, vu.VRING_STATE.pack(0, 64))
    s.send(vu.SET_VRING_BASE, vu.VRING_STATE.pack(0, 0))
    s.expect_silence("vu.communication.2", "an answer to SET_FEATURES, SET_VRING_NUM or SET_VRING_BASE", IDLE)


@pytest.mark.clause("vu.vhost-user-protocol-f-reply-ack.1")
def test_need_reply_is_answered(vu_backend):
    s = _reply_ack_session(vu_backend, "vu.vhost-user-protocol-f-reply-ack.1")
    for request, payload in ((vu.SET_VRING_NUM, vu.VRING_STATE.pack(0, 64)), (vu.SET_VRING_BASE, vu.VRING_STATE.pack(0, 0))):
        msg = s.request(request, payload, need_reply=True)
        if len(msg.payload) != vu.U64.size:
            raise DeviceViolation("vu.vhost-user-protocol-f-reply-ack.1", f"ack of {vu.request_name(request)} is not a u64", expected="8-byte payload", observed=f"{len(msg.payload)} bytes: {msg.payload.hex(' ')}")


@pytest.mark.clause("vu.vhost-user-protocol-f-reply-ack.2")
def test_ack_says_success_or_failure(vu_backend):
    s = _reply_ack_session(vu_backend, "vu.vhost-user-protocol-f-reply-ack.2")
    ok = s.u64(vu.SET_VRING_NUM, vu.VRING_STATE.pack(0, 64), need_reply=True)
    if ok != 0:
        raise DeviceViolation("vu.vhost-user-protocol-f-reply-ack.2", "valid SET_VRING_NUM acked as a failure", expected="0", observed=f"{ok:#x}")
    bad = s.u64(UNKNOWN_REQUEST, need_reply=True)
    if bad == 0:
        gone = " and then closed the connection" if s.silent(IDLE).startswith(b"<EOF>") else ""
        raise DeviceViolation("vu.vhost-user-protocol-f-reply-ack.2", f"request {UNKNOWN_REQUEST} (undefined) acked as carried out{gone}", expected="non-zero ack", observed="0")


@pytest.mark.clause("vu.vhost-user-protocol-f-reply-ack.3")
def test_need_reply_on_request_with_reply_body(vu_backend):
    s = _reply_ack_session(vu_backend, "vu.vhost-user-protocol-f-reply-ack.3")
    features = s.u64(vu.GET_FEATURES, need_reply=True)
    if features != s.offered:
        raise DeviceViolation("vu.vhost-user-protocol-f-reply-ack.3", "GET_FEATURES with need_reply answered something other than the features", expected=f"{s.offered:#x}", observed=f"{features:#x}")
    s.expect_silence("vu.vhost-user-protocol-f-reply-ack.3", "a second answer after the GET_FEATURES reply", IDLE)


@pytest.mark.clause("vu.communication.3")
def test_refused_request_keeps_session(vu_backend):
    s = vu_backend.open("vu.communication.3")
    s.handshake()
    need = s.has_protocol(vu.PROTOCOL_F_REPLY_ACK)
    s.send(UNKNOWN_REQUEST, need_reply=need)
    if need:
        s.recv_reply(UNKNOWN_REQUEST)
    s.alive()  # a closed socket here is a violation of vu.communication.3 (SHOULD)


# -- protocol features ---------------------------------------------------------------------------------
@pytest.mark.clause("vu.front-end-message-types.1")
def test_protocol_features_before_set_features(vu_backend):
    s = vu_backend.open("vu.front-end-message-types.1")
    s.send(vu.SET_OWNER)
    s.offered = s.u64(vu.GET_FEATURES)
    if not s.offered >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1:
        pytest.skip("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES")
    s.protocol_offered = s.u64(vu.GET_PROTOCOL_FEATURES, clause="vu.front-end-message-types.1")
    s.send(vu.SET_PROTOCOL_FEATURES, vu.U64.pack(s.protocol_offered & (1 << vu.PROTOCOL_F_REPLY_ACK)))
    s.alive()


@pytest.mark.clause("vu.multiple-queue-support.2")
def test_mq_protocol_feature_offered(vu_backend):
    s = vu_backend.open("vu.multiple-queue-support.2")
    s.handshake()
    if not s.offered >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1:
        pytest.skip("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES")
    if not s.protocol_offered >> vu.PROTOCOL_F_MQ & 1:
        raise DeviceViolation("vu.multiple-queue-support.2", "protocol features offered without MQ", expected="bit 0 set", observed=f"{s.protocol_offered:#x}")


@pytest.mark.clause("vu.multiple-queue-support.1")
def test_queue_num(vu_backend):
    s = vu_backend.open("vu.multiple-queue-support.1")
    s.handshake()
    _need_protocol(s, vu.PROTOCOL_F_MQ)
    n = s.u64(vu.GET_QUEUE_NUM)
    least = 1
    if s.device_type == "blk" and s.has_protocol(vu.PROTOCOL_F_CONFIG) and s.offered >> C.VIRTIO_BLK_F_MQ & 1:
        least = int.from_bytes(_get_config(s, BLK_NUM_QUEUES, 2, "vu.multiple-queue-support.1")[12:] or b"\1", "little") or 1
    if not least <= n <= 0xFFFF:
        raise DeviceViolation("vu.multiple-queue-support.1", "GET_QUEUE_NUM out of range", expected=f"{least}..65535", observed=n)


# -- config space ----------------------------------------------------------------------------------------
def _get_config(s, offset: int, size: int, clause: str) -> bytes:
    """The reply payload (config header + bytes), or b"" where the back-end reported an error."""
    msg = s.request(vu.GET_CONFIG, vu.CONFIG_HEAD.pack(offset, size, 0) + bytes(size), clause=clause)
    # An error is a zero-length payload (QEMU's front-end and libvhost-user read it so); a bare
    # config header with no bytes is taken as the same answer.
    if len(msg.payload) not in (vu.CONFIG_HEAD.size + size, vu.CONFIG_HEAD.size, 0):
        raise DeviceViolation("vu.front-end-message-types.9", f"GET_CONFIG({offset}, {size}) reply has the wrong size", expected=f"{vu.CONFIG_HEAD.size + size} bytes, or 0 for an error", observed=f"{len(msg.payload)}: {msg.payload[:64].hex(' ')}")
    return msg.payload if len(msg.payload) > vu.CONFIG_HEAD.size else b""


@pytest.mark.clause("vu.front-end-message-types.9")
def test_get_config_size_and_offset(vu_backend):
    s = vu_backend.open("vu.front-end-message-types.9")
    s.handshake()
    _need_protocol(s, vu.PROTOCOL_F_CONFIG)
    whole = _get_config(s, 0, 16, "vu.front-end-message-types.9")
    if not whole:
        raise DeviceViolation("vu.front-end-message-types.9", "GET_CONFIG of the first 16 bytes reported an error", expected="16 config bytes", observed="empty payload")
    for size in (vu.CONFIG_MAX - vu.CONFIG_HEAD.size, 4):  # beyond any device's space, then a small read
        _get_config(s, 0, size, "vu.front-end-message-types.9")
    part = _get_config(s, 8, 4, "vu.front-end-message-types.9")
    if part and part[12:] != whole[12 + 8 : 12 + 12]:
        raise DeviceViolation("vu.front-end-message-types.9", "GET_CONFIG at offset 8 returned other bytes than the whole read shows there", expected=whole[20:24].hex(" "), observed=part[12:].hex(" "))


@pytest.mark.clause("vu.front-end-message-types.16")
def test_status_round_trip(vu_backend):
    s = vu_backend.open("vu.front-end-message-types.16")
    s.handshake(protocol_mask=(1 << vu.PROTOCOL_F_STATUS) | (1 << vu.PROTOCOL_F_REPLY_ACK))
    _need_protocol(s, vu.PROTOCOL_F_STATUS)
    for status in (C.ACKNOWLEDGE, C.ACKNOWLEDGE | C.DRIVER, C.ACKNOWLEDGE | C.DRIVER | C.FEATURES_OK):
        s.setup(vu.SET_STATUS, vu.U64.pack(status))
        got = s.u64(vu.GET_STATUS)
        if got & status != status:
            raise DeviceViolation("vu.front-end-message-types.16", "GET_STATUS lost bits SET_STATUS set", expected=f"{status:#x} set", observed=f"{got:#x}")


@pytest.mark.clause("vu.front-end-message-types.13")
def test_max_mem_slots(vu_backend):
    s = vu_backend.open("vu.front-end-message-types.13")
    s.handshake(protocol_mask=(1 << vu.PROTOCOL_F_CONFIGURE_MEM_SLOTS) | (1 << vu.PROTOCOL_F_REPLY_ACK))
    _need_protocol(s, vu.PROTOCOL_F_CONFIGURE_MEM_SLOTS)
    slots = s.u64(vu.GET_MAX_MEM_SLOTS)
    if not 1 <= slots <= 4096:
        raise DeviceViolation("vu.front-end-message-types.13", "GET_MAX_MEM_SLOTS out of range", expected="1..4096", observed=slots)


# -- rings -------------------------------------------------------------------------------------------------
def _run_session(vu_ring_backend, clause, **handshake):
    s = vu_ring_backend.open(clause)
    s.handshake(**handshake)
    s.set_mem_table()
    return s


@pytest.mark.clause("vu.memory-access.1")
def test_request_completes(vu_ring_backend):
    # Ring parts are given at user addresses (USER_BASE + offset), buffers at guest addresses.
    s = _run_session(vu_ring_backend, "vu.memory-access.1")
    ring = s.setup_device_rings()
    s.add_request(ring)
    s.wait_used(ring, 1, "vu.memory-access.1", f"a kicked {s.device_type} request")


@pytest.mark.clause("vu.ring-states.1")
def test_no_processing_before_kick_fd(vu_ring_backend):
    s = _run_session(vu_ring_backend, "vu.ring-states.1")
    ring = s.setup_device_rings(kick=False)
    s.add_request(ring, kick=False)
    if not s.stays_unused(ring, IDLE):
        raise DeviceViolation("vu.ring-states.1", "back-end used a buffer on a ring that was never kicked (stopped)", queue=ring.index)


@pytest.mark.clause("vu.ring-states.3")
def test_kick_before_set_vring_kick_not_lost(vu_ring_backend):
    s = _run_session(vu_ring_backend, "vu.ring-states.3")
    ring = s.setup_device_rings(kick=False)
    s.add_request(ring)  # the eventfd is written before the back-end has it
    for index in list(s.rings):
        s.set_kick(index)
    s.wait_used(ring, 1, "vu.ring-states.3", "a request kicked before SET_VRING_KICK")


def _disabled_session(vu_ring_backend, clause, device_type):
    if vu_ring_backend.device_type != device_type:
        pytest.skip(f"the {clause} workload is for a {device_type} back-end, not {vu_ring_backend.device_type}")
    s = _run_session(vu_ring_backend, clause)
    if not s.features >> vu.VHOST_USER_F_PROTOCOL_FEATURES & 1:
        pytest.skip("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES (rings start enabled)")
    return s


@pytest.mark.clause("vu.ring-states.6")
def test_disabled_ring_write_has_no_effect(vu_ring_backend):
    """vhost-user.rst "Ring states": with protocol features a ring starts disabled, and a started
    but disabled ring is processed without side effects. A WRITE made available before
    SET_VRING_ENABLE 1 may be held (and carried out after it) or consumed, but if it completes
    while the ring is disabled its data must not be on the disk. Completing a READ is no side
    effect and is not judged."""
    s = _disabled_session(vu_ring_backend, "vu.ring-states.6", "blk")
    if s.offered >> C.VIRTIO_BLK_F_RO & 1:
        pytest.skip("the back-end offers VIRTIO_BLK_F_RO: a write cannot have an effect to observe")
    ring = s.setup_device_rings(enable=False)
    # Unique to this run, so what a previous run left on the disk cannot look like an effect.
    pattern = (b"vu.ring-states.6 " + os.urandom(15)) * (C.SECTOR_SIZE // 32)
    s.add_blk(ring, C.VIRTIO_BLK_T_OUT, DISABLED_WRITE_SECTOR, pattern)
    held = s.stays_unused(ring, IDLE)
    for index in list(s.rings):
        s.enable(index, 1)
    ring.vq.notify()
    [write] = s.wait_used(ring, 1, "vu.ring-states.6", "the WRITE made available before SET_VRING_ENABLE 1, after it")
    if held:
        return  # nothing done while disabled; carrying it out once enabled is the device's job
    status, _ = s.blk_result(ring, write)
    s.add_blk(ring, C.VIRTIO_BLK_T_IN, DISABLED_WRITE_SECTOR)
    [read] = s.wait_used(ring, 1, "vu.ring-states.6", "a READ after SET_VRING_ENABLE 1")
    _, seen = s.blk_result(ring, read)
    if seen != pattern:
        # Not there: unless the disk keeps nothing (null-co), the device did no harm.
        probe = bytes(reversed(pattern))
        s.add_blk(ring, C.VIRTIO_BLK_T_OUT, DISABLED_WRITE_SECTOR, probe)
        s.wait_used(ring, 1, "vu.ring-states.6", "a WRITE on the enabled ring")
        s.add_blk(ring, C.VIRTIO_BLK_T_IN, DISABLED_WRITE_SECTOR)
        [check] = s.wait_used(ring, 1, "vu.ring-states.6", "a READ of what the enabled ring wrote")
        if s.blk_result(ring, check)[1] != probe:
            pytest.skip("the back-end does not keep written data (e.g. a null-co export): whether the WRITE "
                        "completed while the ring was disabled reached the disk cannot be observed")
        return
    raise DeviceViolation("vu.ring-states.6", "a WRITE made available before SET_VRING_ENABLE 1 completed while the ring was disabled, "
                          f"and its data is on the disk (sector {DISABLED_WRITE_SECTOR}): a side effect of a disabled ring",
                          expected="the WRITE held until enabled, or its data not written",
                          observed=f"completed within {IDLE}s with status {status}; read back after enable: {seen[:32].hex(' ')}...",
                          queue=ring.index)


@pytest.mark.clause("vu.ring-states.2")
def test_disabled_ring_supplies_no_rx(vu_ring_backend):
    """A started but disabled net ring pair: no new RX packet is supplied (a transmitted frame the
    back-end could loop back included); TX may be consumed (processed and discarded). After
    SET_VRING_ENABLE 1 the transmitted buffer is used."""
    s = _disabled_session(vu_ring_backend, "vu.ring-states.2", "net")
    ring = s.setup_device_rings(enable=False)
    rx = s.rings[0]
    rx.chains.append(rx.vq.add([], [1526], "rx"))
    rx.vq.kick()
    s.add_request(ring)
    if not s.stays_unused(rx, IDLE):
        raise DeviceViolation("vu.ring-states.2", "back-end supplied an RX packet before SET_VRING_ENABLE 1", queue=rx.index)
    for index in list(s.rings):
        s.enable(index, 1)
    ring.vq.notify()
    s.wait_used(ring, 1, "vu.ring-states.2", "the transmitted buffer, once SET_VRING_ENABLE 1 came (if not consumed before)")


@pytest.mark.clause("vu.ring-states.5")
def test_ring_enabled_without_protocol_features(vu_ring_backend):
    s = _run_session(vu_ring_backend, "vu.ring-states.5", protocol=False)
    ring = s.setup_device_rings(enable=False)
    s.add_request(ring)
    s.wait_used(ring, 1, "vu.ring-states.5", "a request with no SET_VRING_ENABLE (protocol features not negotiated)")


@pytest.mark.parametrize("layout", ["split", "packed"])
@pytest.mark.clause("vu.ring-states.4", "vu.front-end-message-types.3", "vu.front-end-message-types.4")
def test_get_vring_base_stops_ring(vu_ring_backend, layout):
    packed = layout == "packed"
    s = vu_ring_backend.open("vu.ring-states.4")
    s.send(vu.SET_OWNER)
    offered = s.u64(vu.GET_FEATURES)
    s.close()
    if packed and not offered >> C.VIRTIO_F_RING_PACKED & 1:
        pytest.skip("back-end does not offer VIRTIO_F_RING_PACKED")
    s = _run_session(vu_ring_backend, "vu.ring-states.4",
                     features=(1 << C.VIRTIO_F_VERSION_1) | (int(packed) << C.VIRTIO_F_RING_PACKED))
    ring = s.setup_device_rings(packed=packed)
    for _ in range(3):
        s.add_request(ring)
    s.wait_used(ring, 3, "vu.ring-states.4", "3 requests before GET_VRING_BASE")
    clause = "vu.front-end-message-types.4" if packed else "vu.front-end-message-types.3"
    index, num = s.get_vring_base(ring.index, clause)
    if packed:  # the packed avail index counts descriptors, not buffers (VIRTIO 2.8)
        avail, wrap, _used, _used_wrap = vu.split_vring_base_packed(num)
        got, want = (index, avail, wrap), (ring.index, ring.vq.next_avail_idx, ring.vq.avail_wrap_counter)
        # A wrong index is ...types.3 on either layout; only a wrong wrap bit is the packed encoding's.
        if got[:2] != want[:2]:
            clause = "vu.front-end-message-types.3"
    else:
        got, want = (index, num), (ring.index, 3)
    if got != want:
        raise DeviceViolation(clause, "GET_VRING_BASE after 3 used requests", expected=want, observed=f"{got} (num {num:#x})",
                              queue=ring.index, implicated=("vu.front-end-message-types.4",) if packed else ())
    s.add_request(ring)
    if not s.stays_unused(ring, IDLE):
        raise DeviceViolation("vu.ring-states.4", "back-end used a buffer after GET_VRING_BASE stopped the ring", queue=ring.index)


@pytest.mark.clause("vu.memory-access.2")
def test_mem_table_change_while_stopped(vu_ring_backend):
    s = _run_session(vu_ring_backend, "vu.memory-access.2")
    ring = s.setup_device_rings()
    s.add_request(ring)
    s.wait_used(ring, 1, "vu.memory-access.2", "a request before the memory table changes")
    bases = {i: s.get_vring_base(i, "vu.memory-access.2")[1] for i in s.rings}  # stops every ring
    extra = s.add_region(1 << 20)  # as a memory hot-plug would: a second region, first one kept
    for i in s.rings:
        s.restart_ring(i, bases[i])
    s.add_request(ring, data_at=extra)
    s.wait_used(ring, 1, "vu.memory-access.2", "a request whose data lies in the region added by the new SET_MEM_TABLE")


@pytest.mark.clause("vu.front-end-message-types.14")
def test_add_mem_reg_maps_regions(vu_ring_backend):
    """With CONFIGURE_MEM_SLOTS the memory is given region by region: the rings' region by
    ADD_MEM_REG instead of SET_MEM_TABLE, then a second region while the rings run; requests in
    either resolve."""
    s = vu_ring_backend.open("vu.front-end-message-types.14")
    s.handshake(protocol_mask=DEFAULT_PROTOCOL | (1 << vu.PROTOCOL_F_CONFIGURE_MEM_SLOTS))
    _need_protocol(s, vu.PROTOCOL_F_CONFIGURE_MEM_SLOTS)
    s.add_mem_reg(s.mem)
    ring = s.setup_device_rings()
    s.add_request(ring)
    s.wait_used(ring, 1, "vu.front-end-message-types.14", "a request on rings in the region given by ADD_MEM_REG")
    extra = s.add_region(1 << 20, single=True)
    s.add_request(ring, data_at=extra)
    s.wait_used(ring, 1, "vu.front-end-message-types.14", "a request whose data lies in a second region added by ADD_MEM_REG")


@pytest.mark.clause("vu.front-end-message-types.12")
def test_reset_device_disables_rings_keeps_session(vu_ring_backend):
    """RESET_DEVICE: the rings no longer run (a buffer kicked afterwards stays unused) while the
    connection and ownership stay: the same session sets the device up again and it runs."""
    s = vu_ring_backend.open("vu.front-end-message-types.12")
    s.handshake(protocol_mask=DEFAULT_PROTOCOL | (1 << vu.PROTOCOL_F_RESET_DEVICE))
    _need_protocol(s, vu.PROTOCOL_F_RESET_DEVICE)
    s.set_mem_table()
    ring = s.setup_device_rings()
    s.add_request(ring)
    s.wait_used(ring, 1, "vu.front-end-message-types.12", "a request before RESET_DEVICE")
    s.setup(vu.RESET_DEVICE)
    s.add_request(ring)
    if not s.stays_unused(ring, IDLE):
        raise DeviceViolation("vu.front-end-message-types.12", "back-end used a buffer on a ring after RESET_DEVICE", queue=ring.index)
    # As QEMU's next vhost_dev_start: features, memory table, fresh rings from index 0.
    s.setup(vu.SET_FEATURES, vu.U64.pack(s.features))
    s.set_mem_table()
    fresh = s.setup_device_rings()
    s.add_request(fresh)
    s.wait_used(fresh, 1, "vu.front-end-message-types.12", "a request on rings set up again after RESET_DEVICE, same connection")


@pytest.mark.clause("vu.front-end-message-types.7")
def test_backend_req_fd_acked(vu_backend):
    s = vu_backend.open("vu.front-end-message-types.7")
    s.handshake(protocol_mask=DEFAULT_PROTOCOL | (1 << vu.PROTOCOL_F_BACKEND_REQ))
    _need_protocol(s, vu.PROTOCOL_F_BACKEND_REQ)
    _need_protocol(s, vu.PROTOCOL_F_REPLY_ACK)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        ack = s.u64(vu.SET_BACKEND_REQ_FD, b"", [theirs.fileno()], need_reply=True, clause="vu.front-end-message-types.7")
        theirs.close()
        if ack != 0:
            raise DeviceViolation("vu.front-end-message-types.7", "SET_BACKEND_REQ_FD with a UNIX socket acked as a failure",
                                  expected="ack 0", observed=f"ack {ack:#x}")
        s.alive()
    finally:
        theirs.close()
        ours.close()


@pytest.mark.clause("vu.front-end-message-types.10")
def test_set_config_keeps_read_only_fields(vu_backend):
    """SET_CONFIG from the front-end (flags 0, not the live-migration flag) must not change a
    read-only field: blk capacity (5.2.4) stays what GET_CONFIG said."""
    if vu_backend.device_type != "blk":
        pytest.skip(f"the read-only field probed is blk capacity; this is a {vu_backend.device_type} back-end")
    s = vu_backend.open("vu.front-end-message-types.10")
    s.handshake()
    _need_protocol(s, vu.PROTOCOL_F_CONFIG)
    before = _get_config(s, 0, 8, "vu.front-end-message-types.9")
    if not before:
        pytest.skip("GET_CONFIG of the capacity reported an error: nothing to compare SET_CONFIG against")
    changed = vu.U64.pack(vu.U64.unpack(before[12:])[0] ^ 0x5A5A)
    # No ack asked: refusing is fine, and how it refuses is not this clause's business.
    s.send(vu.SET_CONFIG, vu.CONFIG_HEAD.pack(0, 8, vu.CONFIG_F_WRITABLE) + changed)
    if s.silent(IDLE).startswith(b"<EOF>"):
        # qemu-storage-daemon 7.2 refuses by closing the connection (vu_panic): the device is
        # still there, so read the capacity through a new session.
        s = vu_backend.open("vu.front-end-message-types.10")
        s.handshake()
    after = _get_config(s, 0, 8, "vu.front-end-message-types.9")
    if after and after[12:] != before[12:]:
        raise DeviceViolation("vu.front-end-message-types.10", "SET_CONFIG without the live-migration flag changed the read-only capacity",
                              expected=before[12:].hex(" "), observed=after[12:].hex(" "))


@pytest.mark.clause("vu.front-end-message-types.2")
def test_reset_owner_keeps_session_state(vu_ring_backend):
    """RESET_OWNER (deprecated) is ignored or disables the rings, and nothing more: after it the
    rings are stopped and restarted (GET_VRING_BASE, then size/addresses/base/fds/enable) with
    the memory table and features given before, and a request completes."""
    s = _run_session(vu_ring_backend, "vu.front-end-message-types.2")
    ring = s.setup_device_rings()
    s.add_request(ring)
    s.wait_used(ring, 1, "vu.front-end-message-types.2", "a request before RESET_OWNER")
    s.send(vu.RESET_OWNER)
    s.send(vu.SET_OWNER)
    bases = {i: s.get_vring_base(i, "vu.front-end-message-types.2")[1] for i in s.rings}
    for i in s.rings:
        s.restart_ring(i, bases[i])
    s.add_request(ring)
    s.wait_used(ring, 1, "vu.front-end-message-types.2",
                "a request after RESET_OWNER on rings restarted without a new SET_MEM_TABLE or SET_FEATURES")


@pytest.mark.clause("vu.front-end-message-types.5")
def test_kick_without_fd_means_polling(vu_ring_backend):
    """SET_VRING_KICK with the invalid-FD flag (bit 8) and no fd: the back-end polls the ring, so
    a buffer made available with no notification at all is used."""
    s = _run_session(vu_ring_backend, "vu.front-end-message-types.5")
    ring = s.setup_device_rings(kick=False)
    for index in list(s.rings):
        s.setup(vu.SET_VRING_KICK, vu.U64.pack(index | vu.VRING_NOFD_MASK))
    s.add_request(ring, kick=False)
    s.wait_used(ring, 1, "vu.front-end-message-types.5", "a request on a polled ring (SET_VRING_KICK with no fd), never kicked")


# -- inflight I/O tracking ---------------------------------------------------------------------------
INFLIGHT_CLAUSE = "vu.front-end-message-types.11"
INFLIGHT_QUEUE_SIZE = 64
BLK_ID_BYTES = 20  # VIRTIO_BLK_T_GET_ID answer (5.2.6)


def _inflight_buffer(s, num_queues: int):
    """GET_INFLIGHT_FD, checked: (reply payload, fd, mapping, InflightBuffer read at the stride
    mmap_size / num_queues, as libvhost-user and DPDK lay queues out)."""
    msg = s.request(vu.GET_INFLIGHT_FD, vu.InflightInfo(0, 0, num_queues, INFLIGHT_QUEUE_SIZE).pack(), clause=INFLIGHT_CLAUSE)
    if len(msg.payload) < vu.INFLIGHT_MIN or len(msg.fds) != 1:
        msg.close_fds()
        raise DeviceViolation(INFLIGHT_CLAUSE, "GET_INFLIGHT_FD answer is not an inflight description with one fd",
                              expected=f"{vu.INFLIGHT.size} bytes and one fd", observed=f"{len(msg.payload)} bytes {msg.payload[:64].hex(' ')}, {len(msg.fds)} fds")
    info = vu.InflightInfo.unpack(msg.payload)
    size, offset = info.mmap_size, info.mmap_offset
    fd = msg.fds[0]
    need = num_queues * queue_region_min_split(INFLIGHT_QUEUE_SIZE)
    real = os.fstat(fd).st_size
    if size < need or real < offset + size or offset % mmap.PAGESIZE:
        os.close(fd)
        raise DeviceViolation(INFLIGHT_CLAUSE, "GET_INFLIGHT_FD buffer too small for the queues asked about",
                              expected=f"mmap_size >= {need} ({num_queues} split queues of {INFLIGHT_QUEUE_SIZE}) within the fd",
                              observed=f"mmap_size {size}, mmap_offset {offset}, fd of {real} bytes")
    view = mmap.mmap(fd, size, offset=offset)
    return msg.payload, fd, view, InflightBuffer(view, num_queues, INFLIGHT_QUEUE_SIZE, stride=size // num_queues)


def _inflight_session(s, payload: bytes, fd: int) -> None:
    """As QEMU's vhost_dev_start with INFLIGHT_SHMFD: the buffer goes back before the rings start."""
    s.setup(vu.SET_INFLIGHT_FD, payload, [fd])
    s.set_mem_table()


def _region_says(region, clause_what: str, *, in_flight: list[int], used_idx: int) -> None:
    got = (region.in_flight(), int(region.used_idx[0]), int(region.version[0]), int(region.desc_num[0]))
    want = (in_flight, used_idx & 0xFFFF, 1, INFLIGHT_QUEUE_SIZE)
    if got != want:
        raise DeviceViolation(INFLIGHT_CLAUSE, f"inflight region {clause_what}", expected="(in flight heads, used_idx, version, desc_num) = " + repr(want),
                              observed=repr(got))


def _wait_region(region, head: int, timeout: float) -> bool:
    return poll(lambda: region.inflight[head] == 1, timeout, interval=0.002)


@pytest.mark.clause(INFLIGHT_CLAUSE)
def test_inflight_fd_tracks_and_resubmits(vu_ring_backend):
    """vhost-user.rst "Inflight I/O tracking" (split ring): GET_INFLIGHT_FD gives a buffer for the
    queues asked about; handed back with SET_INFLIGHT_FD it says, as requests complete, that none
    is in flight and used_idx follows the used ring. A request the back-end holds (blk: a GET_ID
    made available together with a READ, which our model answers a pass later) is marked in
    flight; after a disconnect, a new session given the
    same buffer, memory and rings (base = used idx, as QEMU restores it) resubmits and completes
    it -- what QEMU's vhost-user-blk reconnect relies on."""
    device = vu_ring_backend.device_type
    if device != "blk":
        pytest.skip(f"the inflight workload (a request held in flight) is for a blk back-end, not {device}")
    mask = DEFAULT_PROTOCOL | (1 << vu.PROTOCOL_F_INFLIGHT_SHMFD)
    s = vu_ring_backend.open(INFLIGHT_CLAUSE)
    s.handshake(protocol_mask=mask)
    _need_protocol(s, vu.PROTOCOL_F_INFLIGHT_SHMFD)
    num_queues = len(RINGS_NEEDED[device])
    payload, fd, view, buf = _inflight_buffer(s, num_queues)
    region = None
    try:
        _inflight_session(s, payload, fd)
        ring = s.setup_device_rings(INFLIGHT_QUEUE_SIZE)
        for _ in range(2):
            s.add_request(ring)
        s.wait_used(ring, 2, INFLIGHT_CLAUSE, "2 requests on rings with an inflight buffer")
        _region_says(buf.queue(ring.index), "after 2 completed requests", in_flight=[], used_idx=int(ring.vq.ring.used_idx[0]))
        # A request the back-end holds.
        held_ring = ring
        held = ring.vq.add([blk_outhdr(C.VIRTIO_BLK_T_GET_ID, 0)], [BLK_ID_BYTES, 1], "get-id")
        s.add_request(ring)  # published and kicked together with the GET_ID
        s.wait_used(ring, 1, INFLIGHT_CLAUSE, "the READ made available after a GET_ID")
        region = buf.queue(held_ring.index)
        if not _wait_region(region, held.head, s.timeout):
            if held_ring.vq.more_used():
                pytest.skip("the back-end completed every request at once: nothing stays in flight to be resubmitted")
        _region_says(region, f"while descriptor {held.head} is taken and not used", in_flight=[held.head],
                     used_idx=int(held_ring.vq.ring.used_idx[0]))
        # Disconnect; the next session gets the same buffer, memory and rings.
        s.reconnect()
        s.handshake(protocol_mask=mask)
        _inflight_session(s, payload, fd)
        for index, r in s.rings.items():
            s.restart_ring(index, int(r.vq.ring.used_idx[0]))
        [got] = s.wait_used(held_ring, 1, INFLIGHT_CLAUSE, f"descriptor {held.head}, in flight at the disconnect, resubmitted by the new session")
        if got is not held:
            raise DeviceViolation(INFLIGHT_CLAUSE, "after the reconnect another buffer completed than the one in flight", expected=f"head {held.head}",
                                  observed=f"head {got.head}", queue=held_ring.index)
        _region_says(region, "after the resubmitted request completed", in_flight=[], used_idx=int(held_ring.vq.ring.used_idx[0]))
    finally:
        buf = region = None
        try:
            view.close()
        except BufferError:  # views still held by a traceback: the mapping goes with them
            pass
        os.close(fd)
