"""The reference network device's control virtqueue and multiqueue (VIRTIO 1.4, 5.1.9.5).

``NetControl`` is mixed into ``NetDevice`` (net.py): it holds what the control commands set -- the
receive modes, the MAC filter table, the MAC set with ADDR_SET, the VLAN filter, the pending
announcement, the number of queue pairs in use, the guest offloads -- and the receive filter and
the automatic receive steering that read it. The data path in net.py asks it through
``ctrl_index``, ``is_ctrl_queue``, ``rx_queue_for`` and ``accepts``.
"""

from __future__ import annotations

from virtio import constants as C
from virtio import net_ctrl as NC
from virtio import net_rss as R
from virtio.buffers import ChainError, DeviceChain
from virtio.net_frames import vlan_id

from .device_queue import DeviceQueue

BROADCAST = b"\xff" * 6
PAIRS_MAX = 2  # max_virtqueue_pairs: two pairs are enough to show steering to a pair beyond the first

CTRL_FEATURES = (
    C.VIRTIO_NET_F_CTRL_VQ,
    C.VIRTIO_NET_F_CTRL_RX,
    C.VIRTIO_NET_F_CTRL_VLAN,
    C.VIRTIO_NET_F_CTRL_RX_EXTRA,
    C.VIRTIO_NET_F_GUEST_ANNOUNCE,
    C.VIRTIO_NET_F_MQ,
    C.VIRTIO_NET_F_CTRL_MAC_ADDR,
    C.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
    C.VIRTIO_NET_F_NOTF_COAL,
    C.VIRTIO_NET_F_VQ_NOTF_COAL,
    C.VIRTIO_NET_F_DEVICE_STATS,
    C.VIRTIO_NET_F_RSS,
)

# 5.1.3.1: control features that need another feature (one level; CTRL_RX needs CTRL_VQ in turn).
CTRL_FEATURE_DEPENDS = {
    C.VIRTIO_NET_F_CTRL_RX: C.VIRTIO_NET_F_CTRL_VQ,
    C.VIRTIO_NET_F_CTRL_VLAN: C.VIRTIO_NET_F_CTRL_VQ,
    C.VIRTIO_NET_F_CTRL_RX_EXTRA: C.VIRTIO_NET_F_CTRL_RX,
    C.VIRTIO_NET_F_GUEST_ANNOUNCE: C.VIRTIO_NET_F_CTRL_VQ,
    C.VIRTIO_NET_F_MQ: C.VIRTIO_NET_F_CTRL_VQ,
    C.VIRTIO_NET_F_CTRL_MAC_ADDR: C.VIRTIO_NET_F_CTRL_VQ,
    C.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS: C.VIRTIO_NET_F_CTRL_VQ,
    C.VIRTIO_NET_F_NOTF_COAL: C.VIRTIO_NET_F_CTRL_VQ,
    C.VIRTIO_NET_F_VQ_NOTF_COAL: C.VIRTIO_NET_F_CTRL_VQ,
    C.VIRTIO_NET_F_DEVICE_STATS: C.VIRTIO_NET_F_CTRL_VQ,
    C.VIRTIO_NET_F_RSS: C.VIRTIO_NET_F_CTRL_VQ,
}
# 5.1.4: the RSS limits and hash types the model offers (IPv6 extension headers it does not parse)
RSS_MAX_KEY_SIZE = 40
RSS_MAX_INDIRECTION_TABLE_LENGTH = 128
RSS_HASH_TYPES = (R.HASH_TYPE_IPv4 | R.HASH_TYPE_TCPv4 | R.HASH_TYPE_UDPv4 | R.HASH_TYPE_IPv6 | R.HASH_TYPE_TCPv6
                  | R.HASH_TYPE_UDPv6)
# 5.1.9.5.11: the statistic types this model keeps (RX_GSO, TX_GSO and the SPEED ones it does not)
STATS_SUPPORTED = tuple(NC.STATS_TYPES[b] for b in (0, 1, 16, 17, 32))
STATS_WRAP = (1 << 64) - 1  # counters wrap around to zero (5.1.9.5.11)

RX_MODES = {  # command -> attribute; each takes one byte, 0 or 1 (5.1.9.5.1)
    C.VIRTIO_NET_CTRL_RX_PROMISC: "promisc",
    C.VIRTIO_NET_CTRL_RX_ALLMULTI: "allmulti",
    NC.VIRTIO_NET_CTRL_RX_ALLUNI: "alluni",
    NC.VIRTIO_NET_CTRL_RX_NOMULTI: "nomulti",
    NC.VIRTIO_NET_CTRL_RX_NOUNI: "nouni",
    NC.VIRTIO_NET_CTRL_RX_NOBCAST: "nobcast",
}
RX_EXTRA_MODES = (NC.VIRTIO_NET_CTRL_RX_ALLUNI, NC.VIRTIO_NET_CTRL_RX_NOMULTI, NC.VIRTIO_NET_CTRL_RX_NOUNI,
                  NC.VIRTIO_NET_CTRL_RX_NOBCAST)


def is_multicast(mac: bytes) -> bool:
    return bool(mac[0] & 1)  # the group bit; broadcast is a multicast address too


class NetControl:
    """Control virtqueue state and commands; steering over ``PAIRS_MAX`` queue pairs.

    Judgement calls: a command whose class or command is unknown, whose feature was not
    negotiated, or whose data is not exactly what the command takes is answered VIRTIO_NET_ERR
    and changes nothing; the ack is the first writable byte, before any command-specific-result
    (a command whose result does not fit the writable bytes is answered VIRTIO_NET_ERR).
    Coalescing parameters are kept and reported, and notifications still go after every packet:
    5.1.9.5.10 makes coalescing best effort.
    A frame transmitted on transmitqK comes back on receiveqK when pair K is in use, otherwise on
    receiveq1 (5.1.9.5.6: the device steers a flow to the pair it was last transmitted on).
    """

    pairs_max = PAIRS_MAX

    # -- hooks for net.py ----------------------------------------------------------------------------
    def ctrl_reset(self) -> None:
        """5.1.9.5.2.1: the MAC filter table is empty on reset; every mode the commands set goes too
        (5.1.9.5.6.2: after a reset only receiveq1 is used)."""
        for attr in RX_MODES.values():
            setattr(self, attr, False)
        self.uni_table: set[bytes] = set()
        self.multi_table: set[bytes] = set()
        self.vlans: set[int] = set()
        self.vq_pairs = 1
        self.guest_offloads = None  # None: as negotiated (5.1.9.5.9)
        # 5.1.9.5.10: every coalescing parameter is 0 on reset; TX_SET / RX_SET's last values are
        # what a queue takes when it is re-enabled after a queue reset.
        self.coal: dict[int, tuple[int, int]] = {}  # queue index -> (max_packets, max_usecs)
        self.coal_set: dict[str, tuple[int, int]] = {}  # "tx" / "rx" -> the last TX_SET / RX_SET
        self.rss = None  # (hash_types, table, unclassified, max_tx_vq, key) once RSS_CONFIG is used

    def ctrl_index(self) -> int:
        """controlq is queue 2N with MQ negotiated (N = max_virtqueue_pairs), otherwise queue 2 (5.1.2)."""
        return 2 * self.pairs_max if self.negotiated(C.VIRTIO_NET_F_MQ) else 2

    def is_ctrl_queue(self, qindex: int) -> bool:
        return self.negotiated(C.VIRTIO_NET_F_CTRL_VQ) and qindex == self.ctrl_index()

    def rx_queues(self) -> range:
        """The receive queues the driver may have: receiveq1..N (queues 0, 2, ..., 2N-2)."""
        pairs = self.pairs_max if self.negotiated(C.VIRTIO_NET_F_MQ) else 1
        return range(0, 2 * pairs, 2)

    def data_queue_kind(self, qindex: int) -> str | None:
        """"rx" or "tx" for receiveqK / transmitqK (5.1.2), None for controlq or no such queue."""
        pairs = self.pairs_max if self.negotiated(C.VIRTIO_NET_F_MQ) else 1
        if self.is_ctrl_queue(qindex) or not 0 <= qindex < 2 * pairs:
            return None
        return "rx" if qindex % 2 == 0 else "tx"

    def coal_on_queue_reset(self, qindex: int) -> None:
        """5.1.9.5.10: a re-enabled queue takes the last TX_SET / RX_SET parameters, else 0."""
        kind = self.data_queue_kind(qindex)
        if kind is not None:
            self.coal[qindex] = self.coal_set.get(kind, (0, 0))

    def rx_queue_for(self, tx_index: int) -> int:
        """Automatic receive steering (5.1.9.5.6): the pair the frame was sent on, if in use."""
        pair = tx_index // 2
        return 2 * pair if pair < self.vq_pairs else 0

    def announce_on_link_up(self, status: int) -> int:
        """With GUEST_ANNOUNCE, a link that comes back up asks the driver to announce (5.1.9.5.4)."""
        if status & C.VIRTIO_NET_S_LINK_UP and self.negotiated(C.VIRTIO_NET_F_GUEST_ANNOUNCE):
            status |= C.VIRTIO_NET_S_ANNOUNCE
        return status

    def accepts(self, frame: bytes) -> bool:
        """Receive filter (5.1.9.5.1, 5.1.9.5.2, 5.1.9.5.3)."""
        vid = vlan_id(frame)
        if vid is not None and self.negotiated(C.VIRTIO_NET_F_CTRL_VLAN) and vid not in self.vlans:
            return False
        dest = bytes(frame[:6])
        if dest == BROADCAST:
            return self.promisc or not self.nobcast
        if is_multicast(dest):
            return self.promisc or (not self.nomulti and (self.allmulti or dest in self.multi_table))
        return self.promisc or (not self.nouni and (self.alluni or dest == self.mac or dest in self.uni_table))

    # -- the control queue -----------------------------------------------------------------------------
    def ctrl(self, queue: DeviceQueue, chain: DeviceChain) -> int:
        """class, command, data (readable); ack is the first writable byte, before any result."""
        if chain.writable_len == 0:
            raise ChainError(f"control command at head {chain.head} has no device-writable ack byte")
        raw = queue.read_readable(chain)
        ok = False
        self.ctrl_result = b""  # a command with a command-specific-result leaves it here
        self.ctrl_result_cut = False  # True: a result longer than the buffer is cut, not refused
        counters = self.queue_counters[queue.index]
        counters["command_num"] += 1
        if len(raw) >= NC.NET_CTRL_HDR.size:
            cls, cmd = NC.NET_CTRL_HDR.unpack_from(raw)
            ok = self.command(cls, cmd, bytes(raw[NC.NET_CTRL_HDR.size :]))
        result = self.ctrl_result if ok else b""
        if NC.ACK_SIZE + len(result) > chain.writable_len:
            if self.ctrl_result_cut:
                result = result[: chain.writable_len - NC.ACK_SIZE]  # 5.1.9.5.11: up to the valid bytes
            else:
                ok, result = False, b""  # no room for the result: refused
        counters["ok_num"] += ok
        self.stats["ctrl_ok" if ok else "ctrl_err"] += 1
        return queue.write_writable(chain, bytes([C.VIRTIO_NET_OK if ok else C.VIRTIO_NET_ERR]) + result)

    def command(self, cls: int, cmd: int, data: bytes) -> bool:
        handler = {
            C.VIRTIO_NET_CTRL_RX: self._ctrl_rx,
            C.VIRTIO_NET_CTRL_MAC: self._ctrl_mac,
            NC.VIRTIO_NET_CTRL_VLAN: self._ctrl_vlan,
            NC.VIRTIO_NET_CTRL_ANNOUNCE: self._ctrl_announce,
            NC.VIRTIO_NET_CTRL_MQ: self._ctrl_mq,
            NC.VIRTIO_NET_CTRL_GUEST_OFFLOADS: self._ctrl_guest_offloads,
            NC.VIRTIO_NET_CTRL_NOTF_COAL: self._ctrl_notf_coal,
            NC.VIRTIO_NET_CTRL_STATS: self._ctrl_stats,
        }.get(cls)
        return handler is not None and handler(cmd, data)  # unknown class: VIRTIO_NET_ERR

    def _ctrl_rx(self, cmd: int, data: bytes) -> bool:
        """5.1.9.5.1: one byte, 0 (off) or 1 (on); the EXTRA modes need CTRL_RX_EXTRA."""
        if not self.negotiated(C.VIRTIO_NET_F_CTRL_RX) or cmd not in RX_MODES:
            return False
        if cmd in RX_EXTRA_MODES and not self.negotiated(C.VIRTIO_NET_F_CTRL_RX_EXTRA):
            return False
        if len(data) != 1 or data[0] not in (0, 1):
            return False
        setattr(self, RX_MODES[cmd], bool(data[0]))
        return True

    def _ctrl_mac(self, cmd: int, data: bytes) -> bool:
        if cmd == C.VIRTIO_NET_CTRL_MAC_TABLE_SET and self.negotiated(C.VIRTIO_NET_F_CTRL_RX):
            tables = NC.parse_mac_table(data)
            if tables is None:
                return False
            # 5.1.9.5.2.1: the table is in force before the command's buffer is used.
            self.uni_table, self.multi_table = set(tables[0]), set(tables[1])
            return True
        if cmd == C.VIRTIO_NET_CTRL_MAC_ADDR_SET and self.negotiated(C.VIRTIO_NET_F_CTRL_MAC_ADDR):
            if len(data) != 6:
                return False
            self.mac = data
            if self.negotiated(C.VIRTIO_NET_F_MAC):
                # 5.1.9.5.2.1: config mac is updated before the command is used. The driver asked
                # for it, so the generation moves but no config change notification is sent.
                self._set_field("mac", self.mac)
                self.bump_generation()
            return True
        return False

    def _ctrl_vlan(self, cmd: int, data: bytes) -> bool:
        """5.1.9.5.3: le16 vid to add to or remove from the filter table."""
        if not self.negotiated(C.VIRTIO_NET_F_CTRL_VLAN) or len(data) != NC.VLAN_VID.size:
            return False
        (vid,) = NC.VLAN_VID.unpack(data)
        if vid > NC.VLAN_VID_MAX:
            return False
        if cmd == NC.VIRTIO_NET_CTRL_VLAN_ADD:
            self.vlans.add(vid)
        elif cmd == NC.VIRTIO_NET_CTRL_VLAN_DEL:
            self.vlans.discard(vid)
        else:
            return False
        return True

    def _ctrl_announce(self, cmd: int, data: bytes) -> bool:
        """5.1.9.5.4.2: ANNOUNCE_ACK clears VIRTIO_NET_S_ANNOUNCE before its buffer is used."""
        if not self.negotiated(C.VIRTIO_NET_F_GUEST_ANNOUNCE) or cmd != NC.VIRTIO_NET_CTRL_ANNOUNCE_ACK or data:
            return False
        status = self.config_value("status")
        if status & C.VIRTIO_NET_S_ANNOUNCE:
            self._set_field("status", status & ~C.VIRTIO_NET_S_ANNOUNCE)
            self.bump_generation()
        return True

    def _ctrl_mq(self, cmd: int, data: bytes) -> bool:
        """5.1.9.5.6: VQ_PAIRS_SET with 1 <= virtqueue_pairs <= max_virtqueue_pairs; RSS_CONFIG."""
        if cmd == NC.VIRTIO_NET_CTRL_MQ_RSS_CONFIG:
            return self._rss_config(data)
        if not self.negotiated(C.VIRTIO_NET_F_MQ) or cmd != NC.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET:
            return False
        if len(data) != NC.NET_CTRL_MQ.size:
            return False
        (pairs,) = NC.NET_CTRL_MQ.unpack(data)
        if not NC.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN <= pairs <= self.pairs_max:
            return False
        self.set_vq_pairs(pairs)
        return True

    def set_vq_pairs(self, pairs: int) -> None:
        # 5.1.9.5.6.2: no frame goes to a receive queue beyond the pairs in use once the command is
        # used, so frames still waiting for one of those go to receiveq1 instead.
        self.vq_pairs = pairs
        for q in self.rx_queues():
            if q >= 2 * pairs:
                waiting = self.pending_on(q)
                while waiting:
                    self.pending_on(0).append(waiting.popleft())

    def _ctrl_guest_offloads(self, cmd: int, data: bytes) -> bool:
        """5.1.9.5.9: le64 of guest offload bits; only offloads negotiated may be turned on."""
        if not self.negotiated(C.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) or cmd != NC.VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET:
            return False
        if len(data) != NC.GUEST_OFFLOADS.size:
            return False
        (offloads,) = NC.GUEST_OFFLOADS.unpack(data)
        allowed = sum(1 << b for b in NC.GUEST_OFFLOAD_BITS if self.negotiated(b))
        if offloads & ~allowed:
            return False
        self.guest_offloads = offloads
        return True

    def _ctrl_notf_coal(self, cmd: int, data: bytes) -> bool:
        """5.1.9.5.10: TX_SET / RX_SET (NOTF_COAL) set every transmit / receive queue; VQ_SET /
        VQ_GET (VQ_NOTF_COAL) one enabled data queue, ``reserved`` ignored; the last set wins."""
        if cmd in (NC.VIRTIO_NET_CTRL_NOTF_COAL_TX_SET, NC.VIRTIO_NET_CTRL_NOTF_COAL_RX_SET):
            if not self.negotiated(C.VIRTIO_NET_F_NOTF_COAL) or len(data) != NC.NET_CTRL_COAL.size:
                return False
            kind = "tx" if cmd == NC.VIRTIO_NET_CTRL_NOTF_COAL_TX_SET else "rx"
            self.coal_set[kind] = NC.NET_CTRL_COAL.unpack(data)
            for q in range(self.num_queues):
                if self.data_queue_kind(q) == kind:
                    self.coal[q] = self.coal_set[kind]
            return True
        if not self.negotiated(C.VIRTIO_NET_F_VQ_NOTF_COAL):
            return False
        if cmd == NC.VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET and len(data) == NC.NET_CTRL_COAL_VQ.size:
            index, _reserved, packets, usecs = NC.NET_CTRL_COAL_VQ.unpack(data)
            if not self.coal_queue_enabled(index):
                return False
            self.coal[index] = (packets, usecs)
            return True
        if cmd == NC.VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET and len(data) == NC.NET_CTRL_COAL_VQ_INDEX.size:
            index, _reserved = NC.NET_CTRL_COAL_VQ_INDEX.unpack(data)
            if not self.coal_queue_enabled(index):
                return False
            self.ctrl_result = NC.NET_CTRL_COAL.pack(*self.coal.get(index, (0, 0)))
            return True
        return False

    def coal_queue_enabled(self, index: int) -> bool:
        """An enabled transmit or receive queue (5.1.9.5.10: VQ_SET / VQ_GET name only those)."""
        return self.data_queue_kind(index) is not None and self.queues[index] is not None

    # -- device statistics (5.1.9.5.11) ----------------------------------------------------------------
    def stats_queue_kind(self, index: int) -> str | None:
        return "ctrl" if self.is_ctrl_queue(index) else self.data_queue_kind(index)

    def stats_valid(self, index: int, types: int) -> bool:
        """A virtio_net_ctrl_queue_stats entry the device can answer: a queue it has, only types it
        supports, each for that kind of queue and with its feature negotiated."""
        kind = self.stats_queue_kind(index)
        if kind is None or not types:
            return False
        for bit in range(64):
            if types >> bit & 1:
                t = NC.STATS_TYPES.get(bit)
                if t not in STATS_SUPPORTED or t.queue != kind:
                    return False
                if t.features and not any(self.negotiated(f) for f in t.features):
                    return False
        return True

    def stats_value(self, index: int, name: str) -> int:
        counters = self.queue_counters[index]
        if name.endswith(("_notifications", "_interrupts")):
            name = name.split("_", 1)[1]  # counted for every queue by device.py
        value = counters[name] + (name == "ok_num")  # ok_num includes the command being answered
        return value & STATS_WRAP

    def stats_reply(self, index: int, types: int) -> bytes:
        out = b""
        for bit in range(64):
            if types >> bit & 1:
                t = NC.STATS_TYPES[bit]
                out += NC.NET_STATS_REPLY_HDR.pack(bit, 0, index, 0, t.reply_size)
                out += b"".join(NC.STATS_COUNTER.pack(self.stats_value(index, c)) for c in t.counters)
        return out

    def _ctrl_stats(self, cmd: int, data: bytes) -> bool:
        """QUERY: the supported types; GET: one reply per queue and type asked for, all or nothing."""
        if not self.negotiated(C.VIRTIO_NET_F_DEVICE_STATS):
            return False
        if cmd == NC.VIRTIO_NET_CTRL_STATS_QUERY and not data:
            self.ctrl_result = NC.NET_STATS_CAPABILITIES.pack(sum(1 << t.bit for t in STATS_SUPPORTED))
            return True
        size = NC.NET_STATS_REQUEST.size
        if cmd != NC.VIRTIO_NET_CTRL_STATS_GET or not data or len(data) % size:
            return False
        entries = [NC.NET_STATS_REQUEST.unpack_from(data, i) for i in range(0, len(data), size)]
        if not all(self.stats_valid(index, types) for index, *_, types in entries):
            return False  # one bad entry fails the whole command
        self.ctrl_result = b"".join(self.stats_reply(index, types) for index, *_, types in entries)
        self.ctrl_result_cut = True
        return True

    # -- receive-side scaling (5.1.9.5.7) --------------------------------------------------------------
    def _rss_config(self, data: bytes) -> bool:
        """A struct virtio_net_rss_config the model can apply: a power-of-two table within
        rss_max_indirection_table_length of receive queues it has, supported hash types, a key
        within rss_max_key_size."""
        if not self.negotiated(C.VIRTIO_NET_F_RSS):
            return False
        parsed = R.parse_rss_config(data)
        if parsed is None:
            return False
        hash_types, table, unclassified, max_tx_vq, key = parsed
        n = len(table)
        if n & (n - 1) or n > RSS_MAX_INDIRECTION_TABLE_LENGTH or hash_types & ~RSS_HASH_TYPES:
            return False
        if len(key) > RSS_MAX_KEY_SIZE or not 1 <= max_tx_vq <= self.pairs_max:
            return False
        if any(self.data_queue_kind(q) != "rx" for q in [*table, unclassified]):
            return False
        self.rss = parsed
        return True

    def rss_destination(self, frame: bytes) -> int | None:
        """5.1.9.5.7.2: the receive queue RSS picks for ``frame``; None without an RSS configuration."""
        if self.rss is None:
            return None
        hash_types, table, unclassified, _, key = self.rss
        fields = R.hash_input(frame, hash_types)
        if fields is None:
            return unclassified
        return table[R.toeplitz(key, fields) & (len(table) - 1)]
