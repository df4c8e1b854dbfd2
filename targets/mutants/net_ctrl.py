"""Mutants of the virtio-net control virtqueue and multiqueue (VIRTIO 1.4, 5.1.9.5): each is the
clean net model with one command handler, filter rule or steering rule overridden."""

from __future__ import annotations

from targets.model.net import NetDevice
from targets.model.net_ctrl import BROADCAST, is_multicast
from virtio import constants as C
from virtio import net_ctrl as NC
from virtio import net_rss as R
from virtio.net_frames import ETHERTYPE, vlan_id

P = "dev.net.device-operation.control-virtqueue."


class NetAllmultiRefused(NetDevice):
    """Answers VIRTIO_NET_ERR to VIRTIO_NET_CTRL_RX_ALLMULTI.

    5.1.9.5.1.1: with CTRL_RX negotiated the device MUST support PROMISC and ALLMULTI.
    """

    name = "net-allmulti-refused"
    clause = P + "packet-receive-filtering.1"

    def _ctrl_rx(self, cmd, data):
        if cmd == C.VIRTIO_NET_CTRL_RX_ALLMULTI:
            return False  # BUG
        return super()._ctrl_rx(cmd, data)


class NetPromiscIgnored(NetDevice):
    """Acks PROMISC on but keeps filtering by address.

    5.1.9.5.1.1: in promiscuous mode the device SHOULD receive every incoming frame.
    """

    name = "net-promisc-ignored"
    clause = P + "packet-receive-filtering.2"

    def _ctrl_rx(self, cmd, data):
        ok = super()._ctrl_rx(cmd, data)
        self.promisc = False  # BUG
        return ok


class NetAllmultiIgnored(NetDevice):
    """Acks ALLMULTI on but keeps dropping multicast frames not in its table.

    5.1.9.5.1.1: with all-multicast on the device SHOULD pass every multicast frame.
    """

    name = "net-allmulti-ignored"
    clause = P + "packet-receive-filtering.4"

    def _ctrl_rx(self, cmd, data):
        ok = super()._ctrl_rx(cmd, data)
        self.allmulti = False  # BUG
        return ok


class NetAlluniRefused(NetDevice):
    """Offers CTRL_RX_EXTRA but answers VIRTIO_NET_ERR to ALLUNI.

    5.1.9.5.1.1: with CTRL_RX_EXTRA negotiated the device MUST support ALLUNI, NOMULTI, NOUNI, NOBCAST.
    """

    name = "net-alluni-refused"
    clause = P + "packet-receive-filtering.5"

    def _ctrl_rx(self, cmd, data):
        if cmd == NC.VIRTIO_NET_CTRL_RX_ALLUNI:
            return False  # BUG
        return super()._ctrl_rx(cmd, data)


class NetNomultiDropsBroadcast(NetDevice):
    """NOMULTI drops broadcast frames too (broadcast is a group address after all).

    5.1.9.5.1.1: the NOMULTI filter SHOULD NOT apply to broadcast frames.
    """

    name = "net-nomulti-drops-broadcast"
    clause = P + "packet-receive-filtering.9"

    def accepts(self, frame):
        if self.nomulti and bytes(frame[:6]) == BROADCAST and not self.promisc:
            return False  # BUG
        return super().accepts(frame)


class NetNobcastIgnored(NetDevice):
    """Acks NOBCAST on but passes broadcast frames.

    5.1.9.5.1.1: with broadcast receive suppressed the device SHOULD NOT pass broadcast frames.
    """

    name = "net-nobcast-ignored"
    clause = P + "packet-receive-filtering.12"

    def _ctrl_rx(self, cmd, data):
        ok = super()._ctrl_rx(cmd, data)
        self.nobcast = False  # BUG
        return ok


class NetPromiscLosesToSuppression(NetDevice):
    """Applies NOUNI / NOMULTI / NOBCAST before promiscuous mode.

    5.1.9.5.1.1: promiscuous mode SHOULD take effect even if another RX class mode is on.
    """

    name = "net-promisc-loses-to-suppression"
    clause = P + "packet-receive-filtering.3"

    def accepts(self, frame):
        dest = bytes(frame[:6])
        kind_off = self.nobcast if dest == BROADCAST else self.nomulti if is_multicast(dest) else self.nouni
        if self.promisc and kind_off:
            return False  # BUG
        return super().accepts(frame)


class NetAlluniIgnored(NetDevice):
    """Acks ALLUNI on but keeps filtering unicast frames by address.

    5.1.9.5.1.1: with all-unicast receive on the device SHOULD allow all incoming unicast frames.
    """

    name = "net-alluni-ignored"
    clause = P + "packet-receive-filtering.6"

    def _ctrl_rx(self, cmd, data):
        ok = super()._ctrl_rx(cmd, data)
        self.alluni = False  # BUG
        return ok


class NetNomultiOnlyAgainstAllmulti(NetDevice):
    """NOMULTI drops only what ALLMULTI would add: groups of the MAC table still get through.

    5.1.9.5.1.1: with multicast receive suppressed the device SHOULD NOT send multicast frames.
    """

    name = "net-nomulti-only-against-allmulti"
    clause = P + "packet-receive-filtering.7"

    def accepts(self, frame):
        dest = bytes(frame[:6])
        if self.nomulti and not self.allmulti and dest in self.multi_table:
            return True  # BUG
        return super().accepts(frame)


class NetNomultiLosesToAllmulti(NetDevice):
    """Lets ALLMULTI win over NOMULTI.

    5.1.9.5.1.1: NOMULTI SHOULD take effect even if ALLMULTI is on.
    """

    name = "net-nomulti-loses-to-allmulti"
    clause = P + "packet-receive-filtering.8"

    def accepts(self, frame):
        dest = bytes(frame[:6])
        if self.nomulti and self.allmulti and is_multicast(dest) and dest != BROADCAST:
            return True  # BUG
        return super().accepts(frame)


class NetNouniSparesOwnMac(NetDevice):
    """NOUNI drops other unicast frames but still passes those to its own MAC.

    5.1.9.5.1.1: with unicast receive suppressed the device SHOULD NOT send unicast frames.
    """

    name = "net-nouni-spares-own-mac"
    clause = P + "packet-receive-filtering.10"

    def accepts(self, frame):
        if self.nouni and not self.alluni and bytes(frame[:6]) == self.mac:
            return True  # BUG
        return super().accepts(frame)


class NetNouniLosesToAlluni(NetDevice):
    """Lets ALLUNI win over NOUNI.

    5.1.9.5.1.1: NOUNI SHOULD take effect even if ALLUNI is on.
    """

    name = "net-nouni-loses-to-alluni"
    clause = P + "packet-receive-filtering.11"

    def accepts(self, frame):
        dest = bytes(frame[:6])
        if self.nouni and self.alluni and not is_multicast(dest):
            return True  # BUG
        return super().accepts(frame)


class NetNobcastLosesToAllmulti(NetDevice):
    """Takes broadcast for multicast under ALLMULTI, letting it win over NOBCAST.

    5.1.9.5.1.1: NOBCAST SHOULD take effect even if ALLMULTI is on.
    """

    name = "net-nobcast-loses-to-allmulti"
    clause = P + "packet-receive-filtering.13"

    def accepts(self, frame):
        if self.nobcast and self.allmulti and bytes(frame[:6]) == BROADCAST:
            return True  # BUG
        return super().accepts(frame)


class NetMacTableKeptOverReset(NetDevice):
    """Keeps the MAC filter table across a device reset.

    5.1.9.5.2.1: the device MUST have an empty MAC filtering table on reset.
    """

    name = "net-mac-table-kept-over-reset"
    clause = P + "setting-mac-address-filtering.1"

    def ctrl_reset(self):
        kept = getattr(self, "uni_table", set()), getattr(self, "multi_table", set())
        super().ctrl_reset()
        self.uni_table, self.multi_table = kept  # BUG


class NetMacTableLate(NetDevice):
    """Applies a MAC_TABLE_SET only when the next control command comes (a lazy commit).

    5.1.9.5.2.1: the device MUST update the MAC filtering table before it consumes the command.
    """

    name = "net-mac-table-late"
    clause = P + "setting-mac-address-filtering.2"

    def ctrl_reset(self):
        super().ctrl_reset()
        self.staged = None

    def command(self, cls, cmd, data):
        if self.staged is not None:
            self.uni_table, self.multi_table = self.staged
            self.staged = None
        if cls == C.VIRTIO_NET_CTRL_MAC and cmd == C.VIRTIO_NET_CTRL_MAC_TABLE_SET and self.negotiated(C.VIRTIO_NET_F_CTRL_RX):
            tables = NC.parse_mac_table(data)
            if tables is None:
                return False
            self.staged = set(tables[0]), set(tables[1])  # BUG: not in force when the buffer is used
            return True
        return super().command(cls, cmd, data)


class NetAddrSetConfigStale(NetDevice):
    """MAC_ADDR_SET changes the address it filters on but leaves config mac as it was.

    5.1.9.5.2.1: with VIRTIO_NET_F_MAC the device MUST update config mac before it consumes the command.
    """

    name = "net-addr-set-config-stale"
    clause = P + "setting-mac-address-filtering.3"

    def _set_field(self, name, value):
        if name == "mac" and self.running():
            return  # BUG: only the reset path writes config mac
        super()._set_field(name, value)


class NetNoUnicastFilter(NetDevice):
    """Passes unicast frames of the local experimental EtherType (88b5), whatever their destination.

    5.1.9.5.2.1: the device SHOULD drop frames to a MAC neither its own nor in the filter table.
    """

    name = "net-no-unicast-filter"
    clause = P + "setting-mac-address-filtering.4"

    def accepts(self, frame):
        if not is_multicast(bytes(frame[:6])) and frame[12:14] == ETHERTYPE:
            frame = bytes(self.mac) + bytes(frame[6:])  # BUG: such unicast frames taken for its own
        return super().accepts(frame)


class NetVlanDropsUntaggedFeature(NetDevice):
    """Drops VLAN-tagged frames when CTRL_VLAN was not negotiated.

    5.1.9.5.3.1: without CTRL_VLAN the device MUST accept all VLAN-tagged frames.
    """

    name = "net-vlan-dropped-without-ctrl-vlan"
    clause = P + "vlan-filtering.1"

    def accepts(self, frame):
        if vlan_id(frame) is not None and not self.negotiated(C.VIRTIO_NET_F_CTRL_VLAN):
            return False  # BUG
        return super().accepts(frame)


class NetVlanTableIgnored(NetDevice):
    """With CTRL_VLAN drops every tagged frame, the VLANs added included.

    5.1.9.5.3.1: the device MUST accept tagged frames whose VLAN is in the filter table.
    """

    name = "net-vlan-table-ignored"
    clause = P + "vlan-filtering.2"

    def accepts(self, frame):
        if vlan_id(frame) is not None and self.negotiated(C.VIRTIO_NET_F_CTRL_VLAN):
            return False  # BUG
        return super().accepts(frame)


class NetVlanNoFilter(NetDevice):
    """With CTRL_VLAN passes tagged frames of any VLAN.

    5.1.9.5.3.1: the device SHOULD drop tagged frames whose VLAN is not in the filter table.
    """

    name = "net-vlan-no-filter"
    clause = P + "vlan-filtering.3"

    def accepts(self, frame):
        vid = vlan_id(frame)
        if vid is not None:
            self.vlans.add(vid)  # BUG: every VLAN seen is let in
        return super().accepts(frame)


class NetAnnounceNotCleared(NetDevice):
    """Acks ANNOUNCE_ACK but leaves VIRTIO_NET_S_ANNOUNCE set.

    5.1.9.5.4.2: the device MUST clear ANNOUNCE before it marks the ANNOUNCE_ACK buffer used.
    """

    name = "net-announce-not-cleared"
    clause = P + "gratuitous-packet-sending.1"

    def _ctrl_announce(self, cmd, data):
        return self.negotiated(C.VIRTIO_NET_F_GUEST_ANNOUNCE) and cmd == NC.VIRTIO_NET_CTRL_ANNOUNCE_ACK  # BUG


class _RoundRobin(NetDevice):
    """Spreads frames over the receive queues of the pairs in use, one after another."""

    def rx_queue_for(self, tx_index):
        self.turn = getattr(self, "turn", -1) + 1
        return 2 * (self.turn % self.vq_pairs)


class NetMqFromStart(_RoundRobin):
    """Uses every queue pair from reset on, before the driver sent VQ_PAIRS_SET.

    5.1.9.5.6.2: after initialization or reset the device MUST queue frames on receiveq1 only.
    """

    name = "net-mq-from-start"
    clause = P + "automatic-receive-steering-in-multiqueue-mode.1"

    def ctrl_reset(self):
        super().ctrl_reset()
        self.pairs_set = False

    def set_vq_pairs(self, pairs):
        self.pairs_set = True
        super().set_vq_pairs(pairs)

    def rx_queue_for(self, tx_index):
        if self.negotiated(C.VIRTIO_NET_F_MQ) and not self.pairs_set:
            self.vq_pairs = self.pairs_max  # BUG: every pair in use before VQ_PAIRS_SET
        return super().rx_queue_for(tx_index)


class NetMqNeverShrinks(_RoundRobin):
    """VQ_PAIRS_SET can raise the pairs in use but never lower them.

    5.1.9.5.6.2: once VQ_PAIRS_SET is used, the device MUST NOT queue frames beyond virtqueue_pairs.
    """

    name = "net-mq-never-shrinks"
    clause = P + "automatic-receive-steering-in-multiqueue-mode.2"

    def set_vq_pairs(self, pairs):
        super().set_vq_pairs(max(pairs, self.vq_pairs))  # BUG


# -- notifications coalescing (5.1.9.5.10) ---------------------------------------------------------
COAL = P + "notifications-coalescing."


class NetCoalReservedRefused(NetDevice):
    """Answers VIRTIO_NET_ERR to a VQ_SET whose reserved field is not 0.

    5.1.9.5.10: the device MUST ignore reserved."""

    name = "net-coal-reserved-refused"
    clause = COAL + "1"

    def _ctrl_notf_coal(self, cmd, data):
        if cmd == NC.VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET and len(data) == NC.NET_CTRL_COAL_VQ.size:
            if NC.NET_CTRL_COAL_VQ.unpack(data)[1]:
                return False  # BUG
        return super()._ctrl_notf_coal(cmd, data)


class NetCoalSetAllIgnored(NetDevice):
    """Acks TX_SET and RX_SET with VIRTIO_NET_OK and changes nothing.

    5.1.9.5.10: the device SHOULD answer VIRTIO_NET_ERR to a TX_SET / RX_SET it could not apply."""

    name = "net-coal-set-all-ignored"
    clause = COAL + "2"

    def _ctrl_notf_coal(self, cmd, data):
        if cmd in (NC.VIRTIO_NET_CTRL_NOTF_COAL_TX_SET, NC.VIRTIO_NET_CTRL_NOTF_COAL_RX_SET):
            return self.negotiated(C.VIRTIO_NET_F_NOTF_COAL) and len(data) == NC.NET_CTRL_COAL.size  # BUG
        return super()._ctrl_notf_coal(cmd, data)


class NetCoalVqSetIgnored(NetDevice):
    """Acks VQ_SET of an enabled queue with VIRTIO_NET_OK and changes nothing.

    5.1.9.5.10: the device MUST answer VIRTIO_NET_ERR to a VQ_SET it could not apply."""

    name = "net-coal-vq-set-ignored"
    clause = COAL + "3"

    def _ctrl_notf_coal(self, cmd, data):
        if cmd == NC.VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET and len(data) == NC.NET_CTRL_COAL_VQ.size:
            return self.negotiated(C.VIRTIO_NET_F_VQ_NOTF_COAL) and self.coal_queue_enabled(NC.NET_CTRL_COAL_VQ.unpack(data)[0])  # BUG
        return super()._ctrl_notf_coal(cmd, data)


class NetCoalCtrlQueueAccepted(NetDevice):
    """Takes VQ_SET / VQ_GET for the control queue too.

    5.1.9.5.10: VQ_SET / VQ_GET naming a queue that is not an enabled transmit or receive queue
    MUST be answered VIRTIO_NET_ERR."""

    name = "net-coal-ctrl-queue-accepted"
    clause = COAL + "4"

    def coal_queue_enabled(self, index):
        return 0 <= index < self.num_queues and self.queues[index] is not None  # BUG: controlq too


class NetCoalTxResetKeepsVqSet(NetDevice):
    """A transmit queue reset keeps the parameters VQ_SET gave it.

    5.1.9.5.10: a re-enabled transmit queue MUST take TX_SET's parameters, or 0."""

    name = "net-coal-tx-reset-keeps-vq-set"
    clause = COAL + "5"

    def coal_on_queue_reset(self, qindex):
        if self.data_queue_kind(qindex) != "tx":
            super().coal_on_queue_reset(qindex)  # BUG: transmit queues keep theirs


class NetCoalRxResetZeroes(NetDevice):
    """A receive queue reset zeroes its parameters even after an RX_SET.

    5.1.9.5.10: a re-enabled receive queue MUST take RX_SET's parameters, or 0 if none was sent."""

    name = "net-coal-rx-reset-zeroes"
    clause = COAL + "6"

    def coal_on_queue_reset(self, qindex):
        if self.data_queue_kind(qindex) == "rx":
            self.coal[qindex] = (0, 0)  # BUG: RX_SET's parameters forgotten
        else:
            super().coal_on_queue_reset(qindex)


class NetCoalNotifiesWhileSuppressed(NetDevice):
    """Once a receive queue's coalescing condition is met, notifies whether or not the driver
    suppressed notifications.

    5.1.9.5.10: the device SHOULD NOT notify while notifications are suppressed."""

    name = "net-coal-notifies-while-suppressed"
    clause = COAL + "8"

    def signal(self, index):
        q = self.queues[index]
        if q is not None and self.coal.get(index, (0, 0))[0]:
            self.bus.interrupt_vq(index)  # BUG: suppression not asked
            return
        super().signal(index)


class NetCoalKeptOverReset(NetDevice):
    """Keeps each queue's coalescing parameters over a device reset.

    5.1.9.5.10: upon reset the device MUST set every coalescing parameter to 0."""

    name = "net-coal-kept-over-reset"
    clause = COAL + "9"

    def ctrl_reset(self):
        kept = dict(getattr(self, "coal", {}))
        super().ctrl_reset()
        self.coal.update(kept)  # BUG


# -- device statistics (5.1.9.5.11) ----------------------------------------------------------------
STATS = P + "device-statistics."


def _rewrite_reply_headers(replies: bytes, change) -> bytes:
    """Each struct virtio_net_stats_reply_hdr in ``replies`` with (type, vq_index, size) as
    ``change`` returns them; the walk goes by the sizes as the model wrote them."""
    out, pos = bytearray(replies), 0
    while pos < len(out):
        rtype, r, q, r1, size = NC.NET_STATS_REPLY_HDR.unpack_from(out, pos)
        rtype, q, new_size = change(rtype, q, size)
        NC.NET_STATS_REPLY_HDR.pack_into(out, pos, rtype, r, q, r1, new_size)  # a reply being built, not a ring field
        pos += size
    return bytes(out)


class NetStatsQueryOmitsCsum(NetDevice):
    """Answers STATS_QUERY without RX_CSUM and TX_CSUM, though STATS_GET answers them.

    5.1.9.5.11: supported_stats_types MUST include every statistic type the device supports."""

    name = "net-stats-query-omits-csum"
    clause = STATS + "1"

    def _ctrl_stats(self, cmd, data):
        ok = super()._ctrl_stats(cmd, data)
        if ok and cmd == NC.VIRTIO_NET_CTRL_STATS_QUERY:
            (types,) = NC.NET_STATS_CAPABILITIES.unpack(self.ctrl_result)
            self.ctrl_result = NC.NET_STATS_CAPABILITIES.pack(types & ~(1 << 1 | 1 << 17))  # BUG
        return ok


class NetStatsUnknownTypesIgnored(NetDevice):
    """Ignores type bits it does not know in a STATS_GET entry instead of refusing the request.

    5.1.9.5.11: a types_bitmap with unknown types MUST be answered VIRTIO_NET_ERR."""

    name = "net-stats-unknown-types-ignored"
    clause = STATS + "2"

    def stats_valid(self, index, types):
        return super().stats_valid(index, types & NC.STATS_TYPES_KNOWN)  # BUG

    def stats_reply(self, index, types):
        return super().stats_reply(index, types & NC.STATS_TYPES_KNOWN)


class NetStatsBadEntrySkipped(NetDevice):
    """Answers the good entries of a STATS_GET and skips the bad ones, as long as one is good.

    5.1.9.5.11: even one bad entry MUST fail the whole command."""

    name = "net-stats-bad-entry-skipped"
    clause = STATS + "3"

    def _ctrl_stats(self, cmd, data):
        size = NC.NET_STATS_REQUEST.size
        if cmd == NC.VIRTIO_NET_CTRL_STATS_GET and data and not len(data) % size:
            entries = [data[i:i + size] for i in range(0, len(data), size)]
            good = [e for e in entries if self.stats_valid(*NC.NET_STATS_REQUEST.unpack(e)[::4])]
            if good:
                data = b"".join(good)  # BUG
        return super()._ctrl_stats(cmd, data)


class NetStatsSizeWithoutHeader(NetDevice):
    """Sets each reply's size to its counters only, leaving out the 8-byte header.

    5.1.9.5.11: size MUST be the bytes the reply occupies."""

    name = "net-stats-size-without-header"
    clause = STATS + "4"

    def stats_reply(self, index, types):
        # BUG: size without the header
        return _rewrite_reply_headers(super().stats_reply(index, types), lambda t, q, size: (t, q, size - NC.NET_STATS_REPLY_HDR.size))


class NetStatsVqIndexZero(NetDevice):
    """Puts vq_index 0 in every statistics reply header.

    5.1.9.5.11: the device MUST set the type and vq_index of each reply header."""

    name = "net-stats-vq-index-zero"
    clause = STATS + "5"

    def stats_reply(self, index, types):
        return _rewrite_reply_headers(super().stats_reply(index, types), lambda t, q, size: (t, 0, size))  # BUG: vq_index 0


class NetStatsFillsWholeBuffer(NetDevice):
    """Pads a STATS_GET result with zeros to the end of the driver's buffer and reports it all used.

    5.1.9.5.11: the device MUST fill the result buffer only up to the valid bytes."""

    name = "net-stats-fills-whole-buffer"
    clause = STATS + "6"

    def _ctrl_stats(self, cmd, data):
        ok = super()._ctrl_stats(cmd, data)
        if ok and cmd == NC.VIRTIO_NET_CTRL_STATS_GET:
            self.ctrl_result += bytes(4096)  # BUG: cut to the buffer by ctrl()
        return ok


# -- receive queues being reset (5.1.9.5.6.2 with 2.6.1) -------------------------------------------
class NetResetQueueFramesDropped(NetDevice):
    """Drops a frame whose receive queue is being reset, though another receive queue is in use.

    5.1.9.5.6.2: the device SHOULD re-select another queue for it."""

    name = "net-reset-queue-frames-dropped"
    clause = P + "automatic-receive-steering-in-multiqueue-mode.3"

    def live_rx_queue(self, rxq):
        return rxq if self.queues[rxq] is not None else None  # BUG: no other queue tried


class NetFramesKeptWhileAllReset(NetDevice):
    """With every receive queue being reset, keeps arriving frames and delivers them once a queue
    is enabled again.

    5.1.9.5.6.2: if all receive queues are being reset the device MUST drop the packet."""

    name = "net-frames-kept-while-all-reset"
    clause = P + "automatic-receive-steering-in-multiqueue-mode.4"

    def live_rx_queue(self, rxq):
        live = super().live_rx_queue(rxq)
        return rxq if live is None else live  # BUG: queued for a queue nobody can use now


# -- receive-side scaling (5.1.9.5.7) ----------------------------------------------------------------
RSS_P = P + "receive-side-scaling-rss.rss-processing."


class NetRssHashesAddressesOnly(NetDevice):
    """Hashes only the IP addresses of TCP and UDP frames, though TCPv4 / UDPv4 / TCPv6 / UDPv6
    are enabled: every flow between two hosts lands on one queue.

    5.1.9.5.7.2: the destination MUST come from the hash of 5.1.9.4.3 (ports included)."""

    name = "net-rss-hashes-addresses-only"
    clause = RSS_P + "1"

    def rss_destination(self, frame):
        if self.rss is None:
            return None
        hash_types, table, unclassified, _, key = self.rss
        fields = R.hash_input(frame, hash_types & (R.HASH_TYPE_IPv4 | R.HASH_TYPE_IPv6))  # BUG
        return unclassified if fields is None else table[R.toeplitz(key, fields) & (len(table) - 1)]


class NetRssReselectsWhenReset(NetDevice):
    """Under RSS, places a frame whose destination queue is being reset on another receive queue.

    5.1.9.5.7.2: if the destination receive queue is being reset the device MUST drop the packet."""

    name = "net-rss-reselects-when-reset"
    clause = RSS_P + "2"

    def rss_destination(self, frame):
        dest = super().rss_destination(frame)
        if dest is not None and self.queues[dest] is None:
            return self.live_rx_queue(dest) or 0  # BUG: re-selected, not dropped
        return dest
