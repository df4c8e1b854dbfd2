"""Protocol mutants: vhost-user back-ends (targets/vhost_user/backend.Backend subclasses) that each
break one back-end duty of QEMU docs/interop/vhost-user.rst, as catalogued in
virtio/clauses_vhost_user.toml. Served by ``python -m targets.vhost_user.serve --protocol-mutant
NAME``; tests/test_vhost_user_protocol.py shows the protocol suite catches each one.

Each class says in ``breaks`` the clause it breaks and in ``device`` the model it is served with
(the duty must be observable on that device); the broken line is marked ``# BUG``.
"""

from __future__ import annotations

import os

from targets.vhost_user import protocol as vu
from targets.vhost_user.backend import Backend, RequestFailed, SessionEnd
from virtio.areas import RingAddrs


class NoReplyFlag(Backend):
    """Replies go out with the version bits only: the front-end cannot tell a reply from a
    request, which vu.header.1 forbids."""

    breaks, device = "vu.header.1", "blk"

    def reply(self, msg, payload, fds=None):
        try:
            self.channel.send(vu.Message(msg.request, vu.VERSION, payload, fds or []))  # BUG: no FLAG_REPLY
        except vu.ProtocolError as e:
            raise SessionEnd(f"reply to {msg.name} not sent: {e}") from None


class WrongReplyRequest(Backend):
    """Answers GET_FEATURES under the request code of GET_PROTOCOL_FEATURES (vu.header.2)."""

    breaks, device = "vu.header.2", "blk"

    def reply(self, msg, payload, fds=None):
        request = vu.GET_PROTOCOL_FEATURES if msg.request == vu.GET_FEATURES else msg.request  # BUG
        super().reply(vu.Message(request, msg.flags, msg.payload), payload, fds)


class ShortVringBase(Backend):
    """GET_VRING_BASE is answered with the index only (4 bytes), not a vring state
    (vu.communication.1: the reply must have the documented shape)."""

    breaks, device = "vu.communication.1", "blk"

    def on_get_vring_base(self, msg):
        return super().on_get_vring_base(msg)[:4]  # BUG: num missing


class AnswersEverything(Backend):
    """Acknowledges every request, asked or not: unsolicited replies (vu.communication.2)."""

    breaks, device = "vu.communication.2", "blk"

    def handle(self, msg):
        super().handle(msg)
        if msg.request not in vu.REPLY_REQUESTS and not msg.need_reply:
            self.reply(msg, vu.U64.pack(0))  # BUG: nobody asked for this


class IgnoresNeedReply(Backend):
    """Never sends the REPLY_ACK acknowledgement (vu.vhost-user-protocol-f-reply-ack.1)."""

    breaks, device = "vu.vhost-user-protocol-f-reply-ack.1", "blk"

    def handle(self, msg):
        if msg.request not in vu.REPLY_REQUESTS:
            msg.flags &= ~vu.FLAG_NEED_REPLY  # BUG: the ack the front-end waits for is dropped
        super().handle(msg)


class AcksFailureAsSuccess(Backend):
    """Acks 0 for requests it refused or does not know (vu.vhost-user-protocol-f-reply-ack.2)."""

    breaks, device = "vu.vhost-user-protocol-f-reply-ack.2", "blk"

    def reply(self, msg, payload, fds=None):
        if msg.request not in vu.REPLY_REQUESTS:
            payload = vu.U64.pack(0)  # BUG: failure reported as success
        super().reply(msg, payload, fds)


class DoubleAck(Backend):
    """Sends an extra u64 ack after the body of a request that has its own reply, when
    need_reply is set (vu.vhost-user-protocol-f-reply-ack.3)."""

    breaks, device = "vu.vhost-user-protocol-f-reply-ack.3", "blk"

    def handle(self, msg):
        super().handle(msg)
        if msg.request in vu.REPLY_REQUESTS and msg.need_reply:
            self.reply(msg, vu.U64.pack(0))  # BUG: a second answer


class DropsOnUnknown(Backend):
    """Closes the connection after refusing an unknown request, as qemu-storage-daemon does
    (vu.communication.3: closing is for exceptional errors only)."""

    breaks, device = "vu.communication.3", "blk"

    def handle(self, msg):
        super().handle(msg)
        if msg.request not in self.HANDLERS:
            raise SessionEnd("unknown request")  # BUG: a refusal ends the session


class ProtocolFeaturesAfterSetFeatures(Backend):
    """Refuses GET_PROTOCOL_FEATURES until SET_FEATURES was received
    (vu.front-end-message-types.1)."""

    breaks, device = "vu.front-end-message-types.1", "blk"

    def on_get_protocol_features(self, msg):
        if not self.features:
            raise RequestFailed("SET_FEATURES first")  # BUG: must work before SET_FEATURES
        return super().on_get_protocol_features(msg)


class NoMqProtocolFeature(Backend):
    """Offers protocol features but not MQ (vu.multiple-queue-support.2)."""

    breaks, device = "vu.multiple-queue-support.2", "blk"

    def on_get_protocol_features(self, msg):
        return vu.U64.pack(self.PROTOCOL_FEATURES & ~(1 << vu.PROTOCOL_F_MQ))  # BUG


class ZeroQueues(Backend):
    """GET_QUEUE_NUM answers 0 (vu.multiple-queue-support.1)."""

    breaks, device = "vu.multiple-queue-support.1", "blk"

    def on_get_queue_num(self, msg):
        return vu.U64.pack(0)  # BUG


class ConfigIgnoresOffset(Backend):
    """GET_CONFIG copies from offset 0 whatever offset was asked, as qemu-storage-daemon 7.2
    does (vu.front-end-message-types.9)."""

    breaks, device = "vu.front-end-message-types.9", "blk"

    def on_get_config(self, msg):
        offset, size, flags = self._config_head(msg)
        data = bytes(self.device.config_read(0, size))[:size]  # BUG: offset ignored
        return vu.CONFIG_HEAD.pack(offset, size, flags) + data + bytes(size - len(data))


class StatusForgotten(Backend):
    """GET_STATUS always answers 0 (vu.front-end-message-types.16)."""

    breaks, device = "vu.front-end-message-types.16", "blk"

    def on_get_status(self, msg):
        super().on_get_status(msg)
        return vu.U64.pack(0)  # BUG: what SET_STATUS set is lost


class ZeroMemSlots(Backend):
    """GET_MAX_MEM_SLOTS answers 0 (vu.front-end-message-types.13)."""

    breaks, device = "vu.front-end-message-types.13", "blk"

    def on_get_max_mem_slots(self, msg):
        return vu.U64.pack(0)  # BUG


class RingAddressesAsGuest(Backend):
    """Takes SET_VRING_ADDR's user addresses for guest addresses (vu.memory-access.1)."""

    breaks, device = "vu.memory-access.1", "blk"

    def _guest_addrs(self, ring):
        _flags, desc, used, avail = ring.addr
        for addr in (desc, avail, used):
            self.mem.offset(addr, 1)  # BUG: a user address looked up as a guest address
        return RingAddrs(ring.num, desc, avail, used)


class RunsBeforeKick(Backend):
    """Starts and polls a ring as soon as its call fd is set, with no kick
    (vu.ring-states.1: a ring is stopped until kicked)."""

    breaks, device = "vu.ring-states.1", "blk"

    def on_set_vring_call(self, msg):
        super().on_set_vring_call(msg)
        ring = self.rings[msg.u64() & vu.VRING_IDX_MASK]
        ring.started = ring.polling = True  # BUG: started without a kick


class LosesEarlyKick(Backend):
    """Discards a kick written to the eventfd before SET_VRING_KICK and waits for a new one
    (vu.ring-states.3)."""

    breaks, device = "vu.ring-states.3", "blk"

    def on_set_vring_kick(self, msg):
        super().on_set_vring_kick(msg)
        ring = self.rings[msg.u64() & vu.VRING_IDX_MASK]
        if ring.kick_fd >= 0:
            try:
                os.eventfd_read(ring.kick_fd)  # BUG: the pending kick is thrown away
            except BlockingIOError:
                pass
            ring.started = False


class EnabledFromStart(Backend):
    """Rings run before SET_VRING_ENABLE 1 although protocol features were negotiated: a WRITE
    made available on the disabled ring reaches the disk (vu.ring-states.6: a disabled ring has
    no side effects), as qemu-storage-daemon 7.2 does with a file export."""

    breaks, device = "vu.ring-states.6", "blk"

    def enabled(self, ring):
        return True if ring.enabled is None else ring.enabled  # BUG: starts enabled


class NetEnabledFromStart(EnabledFromStart):
    """The same on net: a disabled ring pair loops a transmitted frame back into the receive
    ring, a side effect a disabled ring must not have (vu.ring-states.2)."""

    breaks, device = "vu.ring-states.2", "net"


class NeverEnabledWithoutEnable(Backend):
    """Waits for SET_VRING_ENABLE even when protocol features were not negotiated
    (vu.ring-states.5)."""

    breaks, device = "vu.ring-states.5", "blk"

    def enabled(self, ring):
        return bool(ring.enabled)  # BUG: never enabled without SET_VRING_ENABLE


class KeepsRunningAfterGetVringBase(Backend):
    """GET_VRING_BASE reports the state but leaves the ring running (vu.ring-states.4)."""

    breaks, device = "vu.ring-states.4", "blk"

    def on_get_vring_base(self, msg):
        index, _ = vu.VRING_STATE.unpack_from(msg.payload)
        ring = self.ring(index)
        base = self._queue_base(ring.queue) if ring.queue is not None else ring.base  # BUG: no stop
        return vu.VRING_STATE.pack(index, base)


class VringBaseOffByOne(Backend):
    """GET_VRING_BASE answers one less than the next available index
    (vu.front-end-message-types.3)."""

    breaks, device = "vu.front-end-message-types.3", "blk"

    def on_get_vring_base(self, msg):
        index, num = vu.VRING_STATE.unpack(super().on_get_vring_base(msg))
        return vu.VRING_STATE.pack(index, (num - 1) & 0xFFFF)  # BUG


class PackedBaseWithoutWrap(Backend):
    """Packed ring: GET_VRING_BASE leaves out the avail wrap counter (bit 15)
    (vu.front-end-message-types.4)."""

    breaks, device = "vu.front-end-message-types.4", "blk"

    def on_get_vring_base(self, msg):
        index, num = vu.VRING_STATE.unpack(super().on_get_vring_base(msg))
        return vu.VRING_STATE.pack(index, num & ~(1 << 15))  # BUG


class KeepsFirstMemTable(Backend):
    """Ignores a SET_MEM_TABLE that arrives once a table is set (vu.memory-access.2)."""

    breaks, device = "vu.memory-access.2", "blk"

    def on_set_mem_table(self, msg):
        if getattr(self, "_has_table", False):
            return  # BUG: the new regions are never mapped
        self._has_table = True
        super().on_set_mem_table(msg)


class AddMemRegIgnored(Backend):
    """Acks ADD_MEM_REG without mapping the region (vu.front-end-message-types.14)."""

    breaks, device = "vu.front-end-message-types.14", "blk"

    def on_add_mem_reg(self, msg):
        return None  # BUG: the region is never mapped


class ResetDeviceKeepsRings(Backend):
    """RESET_DEVICE resets nothing: the rings keep running (vu.front-end-message-types.12)."""

    breaks, device = "vu.front-end-message-types.12", "blk"

    def on_reset_device(self, msg):
        return None  # BUG: rings neither disabled nor reset


class RefusesBackendChannel(Backend):
    """Refuses a valid SET_BACKEND_REQ_FD although it offers BACKEND_REQ
    (vu.front-end-message-types.7)."""

    breaks, device = "vu.front-end-message-types.7", "blk"

    def on_set_backend_req_fd(self, msg):
        raise RequestFailed("no back-end channel")  # BUG: offered, then refused


class SetConfigWritesReadOnly(Backend):
    """SET_CONFIG stores the bytes it is given, read-only fields included
    (vu.front-end-message-types.10)."""

    breaks, device = "vu.front-end-message-types.10", "blk"

    def on_set_config(self, msg):
        offset, size, _flags = self._config_head(msg)
        with self.device.lock:
            self.device.config[offset : offset + size] = msg.payload[vu.CONFIG_HEAD.size :]  # BUG: no read-only check


class ResetOwnerForgetsMemory(Backend):
    """RESET_OWNER throws the memory table away with the rings (vu.front-end-message-types.2:
    it is ignored or disables the rings, nothing more)."""

    breaks, device = "vu.front-end-message-types.2", "blk"

    def on_reset_owner(self, msg):
        super().on_reset_owner(msg)
        with self.device.lock:
            self.mem.clear()  # BUG: session state discarded


class NoPolling(Backend):
    """SET_VRING_KICK without an fd leaves the ring waiting for a kick that cannot come
    (vu.front-end-message-types.5), as qemu-storage-daemon 7.2 does."""

    breaks, device = "vu.front-end-message-types.5", "blk"

    def on_set_vring_kick(self, msg):
        super().on_set_vring_kick(msg)
        ring = self.rings[msg.u64() & vu.VRING_IDX_MASK]
        if ring.polling:
            ring.polling = ring.started = False  # BUG: no fd, so no polling and no start


class InflightNotResubmitted(Backend):
    """Keeps the inflight buffer, but started again on one that says descriptors are in flight,
    skips past them without resubmitting them: those requests are lost
    (vu.front-end-message-types.11, what a vhost-user-blk reconnect relies on)."""

    breaks, device = "vu.front-end-message-types.11", "blk"

    def _track_inflight(self, ring, q):
        fresh = ring.resubmit is None
        super()._track_inflight(ring, q)
        if fresh and ring.resubmit:
            ring.resubmit.clear()  # BUG: in-flight descriptors dropped, never resubmitted


PROTOCOL_MUTANTS: dict[str, type[Backend]] = {
    cls.__name__: cls
    for cls in (
        NoReplyFlag, WrongReplyRequest, ShortVringBase, AnswersEverything, IgnoresNeedReply,
        AcksFailureAsSuccess, DoubleAck, DropsOnUnknown, ProtocolFeaturesAfterSetFeatures,
        NoMqProtocolFeature, ZeroQueues, ConfigIgnoresOffset, StatusForgotten, ZeroMemSlots,
        RingAddressesAsGuest, RunsBeforeKick, LosesEarlyKick, EnabledFromStart, NetEnabledFromStart,
        NeverEnabledWithoutEnable, KeepsRunningAfterGetVringBase, VringBaseOffByOne,
        PackedBaseWithoutWrap, KeepsFirstMemTable, AddMemRegIgnored, ResetDeviceKeepsRings,
        RefusesBackendChannel, SetConfigWritesReadOnly, ResetOwnerForgetsMemory,
        NoPolling, InflightNotResubmitted,
    )
}
