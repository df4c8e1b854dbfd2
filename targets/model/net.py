"""Reference network device (VIRTIO 1.4, 5.1): a loopback NIC with receive filtering.

Frames the driver transmits on transmitq1 come back on receiveq1 if the receive filter accepts
them; the control queue sets promiscuous / all-multicast mode, the MAC filter tables and the MAC.
"""

from __future__ import annotations

from collections import deque

from virtio import constants as C
from virtio.buffers import ChainError, DeviceChain
from virtio.messages import NET_CTRL_HDR, NET_HDR_SIZE, NetHdr

from .device import Device
from .device_queue import DeviceQueue

RX, TX, CTRL = 0, 1, 2
DEFAULT_MAC = bytes.fromhex("525400123456")
BROADCAST = b"\xff" * 6
ETH_HLEN = 14
PENDING_MAX = 256  # frames waiting for a receive buffer; more are dropped

# 5.1.3.1: features that need another feature (only the ones this model offers).
FEATURE_DEPENDS = {
    C.VIRTIO_NET_F_CTRL_RX: C.VIRTIO_NET_F_CTRL_VQ,
    C.VIRTIO_NET_F_CTRL_MAC_ADDR: C.VIRTIO_NET_F_CTRL_VQ,
}

STATS_FIELDS = (
    "tx_packets",
    "tx_errors",  # malformed transmit buffers (short header, runt frame, GSO not negotiated)
    "tx_link_down",  # frames transmitted while the link was down
    "rx_packets",
    "rx_filtered",  # dropped by the receive filter
    "rx_too_big",  # larger than the receive buffer at the head of the queue
    "rx_overflow",  # dropped because PENDING_MAX frames were already waiting
    "ctrl_ok",
    "ctrl_err",
)


def is_multicast(mac: bytes) -> bool:
    return bool(mac[0] & 1)  # the group bit; broadcast is a multicast address too


class NetDevice(Device):
    """Network device model: receiveq1 (0), transmitq1 (1), controlq (2); no offloads, no MQ.

    Judgement calls: frames transmitted while the link is down are dropped (no carrier); a
    receive buffer too small for the 12-byte header is returned at once with used len 0; the
    ack of a control command is its first writable byte (``ack`` precedes any
    command-specific-result in struct virtio_net_ctrl).
    """

    device_id = C.VIRTIO_ID_NET
    name = "net"
    num_queues = 3
    queue_names = ("receiveq1", "transmitq1", "controlq")
    queue_size_max = 256
    net_forward = "unchanged"  # frames come back bit for bit (virtio/net_frames.py)
    features = sum(
        1 << b
        for b in (
            C.VIRTIO_NET_F_MAC,
            C.VIRTIO_NET_F_STATUS,
            C.VIRTIO_NET_F_CTRL_VQ,
            C.VIRTIO_NET_F_CTRL_RX,
            C.VIRTIO_NET_F_CTRL_MAC_ADDR,
        )
    )

    def __init__(self, mode: str = "notify", mac: bytes | str = DEFAULT_MAC):
        if isinstance(mac, str):
            mac = bytes.fromhex(mac.replace(":", ""))
        if len(mac) != 6:
            raise ValueError(f"a MAC address is 6 bytes, got {len(mac)}")
        self.default_mac = bytes(mac)
        self.stats = dict.fromkeys(STATS_FIELDS, 0)
        self.pending: deque[bytes] = deque()
        super().__init__(mode=mode)

    # -- configuration (5.1.4) ----------------------------------------------------------------
    def initial_config(self) -> bytes:
        return self.layout.pack({"mac": self.default_mac, "status": C.VIRTIO_NET_S_LINK_UP})

    def accept_features(self, driver_features: int) -> bool:
        """Refuse FEATURES_OK for a subset that breaks a 5.1.3.1 dependency (it is not valid)."""
        if not super().accept_features(driver_features):
            return False
        return all(
            not driver_features >> f & 1 or driver_features >> dep & 1 for f, dep in FEATURE_DEPENDS.items()
        )

    def on_reset(self) -> None:
        # 5.1.9.5.2.1: the MAC filtering table is empty on reset; the other RX modes go off too,
        # the MAC set with ADDR_SET is forgotten and the link comes back up (change_config()
        # models a transient link flap, not a lasting state).
        self.promisc = False
        self.allmulti = False
        self.uni_table: set[bytes] = set()
        self.multi_table: set[bytes] = set()
        self.mac = self.default_mac
        self.pending.clear()
        with self.lock:
            old = bytes(self.config)
            self._set_field("mac", self.default_mac)
            self._set_field("status", C.VIRTIO_NET_S_LINK_UP)
            if bytes(self.config) != old:
                self.bump_generation()

    def _set_field(self, name: str, value) -> None:
        f = self.layout[name]
        self.config[f.offset : f.offset + f.size] = f.encode(value)

    def link_up(self) -> bool:
        return bool(self.config_value("status") & C.VIRTIO_NET_S_LINK_UP)

    def change_config(self) -> None:
        """A link flap: toggle VIRTIO_NET_S_LINK_UP (5.1.4), with a config change notification."""
        with self.lock:
            self.update_config(status=self.config_value("status") ^ C.VIRTIO_NET_S_LINK_UP)

    def negotiated(self, bit: int) -> bool:
        return bool(self.driver_features >> bit & 1)

    # -- queues ---------------------------------------------------------------------------------
    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int | None:
        if qindex == RX:
            return self._rx_buffer(chain)
        if qindex == TX:
            return self._tx(queue, chain)
        return self._ctrl(queue, chain)

    def after_process(self, index: int) -> None:
        # New frames (TX) or new receive buffers (RX): move what can go, then one RX notification.
        if index in (RX, TX):
            self._deliver()
            self.signal(RX)

    # -- receive (5.1.9.3, 5.1.9.4) ----------------------------------------------------------------
    def _rx_buffer(self, chain: DeviceChain) -> int | None:
        """Keep a receive buffer until a frame arrives; one too small for the header is useless."""
        if chain.writable_len < NET_HDR_SIZE:
            return 0  # judgement call: return it at once, empty, rather than clog the queue
        return None

    def accepts(self, dest: bytes) -> bool:
        """Receive filter (5.1.9.5.1, 5.1.9.5.2): promisc, broadcast, own MAC, tables, allmulti."""
        if self.promisc or dest == BROADCAST:
            return True
        if is_multicast(dest):
            return self.allmulti or dest in self.multi_table
        return dest == self.mac or dest in self.uni_table

    def receive(self, frame: bytes) -> bool:
        """A frame arrives from the wire (here: our own transmit path); queue it if accepted."""
        if not self.accepts(frame[:6]):
            self.stats["rx_filtered"] += 1
            return False
        if len(self.pending) >= PENDING_MAX:
            self.stats["rx_overflow"] += 1
            return False
        self.pending.append(frame)
        return True

    def _deliver(self) -> None:
        """Copy waiting frames into held receive buffers, in the order both arrived."""
        held = self.held.get(RX, {})
        q = self.queues[RX]
        while self.pending and held and q is not None:
            chain = next(iter(held.values()))
            frame = self.pending.popleft()
            if NET_HDR_SIZE + len(frame) > chain.writable_len:
                # Without MRG_RXBUF a frame must fit one buffer (5.1.9.3.2); the buffer stays.
                self.stats["rx_too_big"] += 1
                continue
            # No GUEST_CSUM, no GUEST_* GSO: flags 0, GSO_NONE; num_buffers 1 (5.1.9.4.1).
            hdr = NetHdr(flags=0, gso_type=C.VIRTIO_NET_HDR_GSO_NONE, num_buffers=1).pack()
            n = q.write_writable(chain, hdr + frame)
            self.complete(RX, chain, n)
            self.stats["rx_packets"] += 1

    # -- transmit (5.1.9.2) ------------------------------------------------------------------------
    def _tx(self, queue: DeviceQueue, chain: DeviceChain) -> int:
        """Take one frame; the buffer is used with len 0 since the device writes nothing."""
        raw = queue.read_readable(chain)
        if len(raw) < NET_HDR_SIZE + ETH_HLEN:
            self.stats["tx_errors"] += 1  # short header or runt frame: nothing to send
            return 0
        hdr = NetHdr.unpack(raw[:NET_HDR_SIZE])
        # Unknown flag bits are ignored (5.1.9.2.2); GSO without a HOST_* feature cannot be honoured.
        if hdr.gso_type != C.VIRTIO_NET_HDR_GSO_NONE:
            self.stats["tx_errors"] += 1
            return 0
        if not self.link_up():
            self.stats["tx_link_down"] += 1
            return 0
        self.stats["tx_packets"] += 1
        self.receive(raw[NET_HDR_SIZE:])
        return 0

    # -- control queue (5.1.9.5) -----------------------------------------------------------------
    def _ctrl(self, queue: DeviceQueue, chain: DeviceChain) -> int:
        """class, command, data (readable); ack is the first writable byte, before any result."""
        if chain.writable_len == 0:
            raise ChainError(f"control command at head {chain.head} has no device-writable ack byte")
        raw = queue.read_readable(chain)
        ok = False
        if len(raw) >= NET_CTRL_HDR.size:
            cls, cmd = NET_CTRL_HDR.unpack_from(raw)
            ok = self._command(cls, cmd, raw[NET_CTRL_HDR.size :])
        self.stats["ctrl_ok" if ok else "ctrl_err"] += 1
        return queue.write_writable(chain, bytes([C.VIRTIO_NET_OK if ok else C.VIRTIO_NET_ERR]))

    def _command(self, cls: int, cmd: int, data: bytes) -> bool:
        if cls == C.VIRTIO_NET_CTRL_RX and self.negotiated(C.VIRTIO_NET_F_CTRL_RX):
            return self._ctrl_rx(cmd, data)
        if cls == C.VIRTIO_NET_CTRL_MAC:
            if cmd == C.VIRTIO_NET_CTRL_MAC_TABLE_SET and self.negotiated(C.VIRTIO_NET_F_CTRL_RX):
                return self._mac_table_set(data)
            if cmd == C.VIRTIO_NET_CTRL_MAC_ADDR_SET and self.negotiated(C.VIRTIO_NET_F_CTRL_MAC_ADDR):
                return self._mac_addr_set(data)
        return False  # unknown class or command, or one whose feature was not negotiated

    def _ctrl_rx(self, cmd: int, data: bytes) -> bool:
        """PROMISC / ALLMULTI: one byte, 0 (off) or 1 (on); anything else is malformed."""
        if cmd not in (C.VIRTIO_NET_CTRL_RX_PROMISC, C.VIRTIO_NET_CTRL_RX_ALLMULTI):
            return False  # ALLUNI..NOBCAST need CTRL_RX_EXTRA, not offered
        if len(data) != 1 or data[0] not in (0, 1):
            return False
        if cmd == C.VIRTIO_NET_CTRL_RX_PROMISC:
            self.promisc = bool(data[0])
        else:
            self.allmulti = bool(data[0])
        return True

    def _mac_table_set(self, data: bytes) -> bool:
        """Two tables (unicast, multicast), each le32 entries + entries*6 bytes, exactly."""
        tables = []
        pos = 0
        for _ in range(2):
            if len(data) - pos < 4:
                return False
            entries = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
            if entries > (len(data) - pos) // 6:
                return False
            tables.append({bytes(data[pos + 6 * i : pos + 6 * i + 6]) for i in range(entries)})
            pos += 6 * entries
        if pos != len(data):
            return False
        # 5.1.9.5.2.1: the table is updated before the command is used.
        self.uni_table, self.multi_table = tables
        return True

    def _mac_addr_set(self, data: bytes) -> bool:
        if len(data) != 6:
            return False
        self.mac = bytes(data)
        if self.negotiated(C.VIRTIO_NET_F_MAC):
            # 5.1.9.5.2.1: config mac is updated before the command is used. The driver asked for
            # it, so the generation moves but no config change notification is sent.
            self._set_field("mac", self.mac)
            self.bump_generation()
        return True
