"""The driver side of the multiport console (VIRTIO 1.4, 5.3.6.2), as Linux's virtio_console does
it, for the console suites; and the check of every control message against 5.3.6.2.1.

``MultiportConsole`` negotiates VIRTIO_CONSOLE_F_MULTIPORT, sets up the control queues and a
queue pair for each port the device may have (max_nr_ports; each queue no larger than the device
allows, and no more ports than it has queues for), sends DEVICE_READY and answers each DEVICE_ADD
with PORT_READY, and each CONSOLE_PORT with PORT_OPEN 1 (5.3.6.2.2). ``PortTable`` follows the
ports the device created and removed and fails a message that breaks 5.3.6.2.1; what the device
says about a port (its name, as sent, console or not, open or not) is kept for the messages, so
device-supplied names reach the report (escaped there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fixtures.devices import need
from virtio import console as VC
from virtio import constants as C
from virtio.checks import POLL_INTERVAL, poll, require
from virtio.driver import VqInfo
from virtio.errors import NotApplicable, ordinal

CLAUSE_ADD = "dev.console.device-operation.multiport-device-operation.1"
CLAUSE_REMOVE = "dev.console.device-operation.multiport-device-operation.2"

CONTROL_BUFFER = 4096  # bytes per control receiveq buffer (Linux: a page), room for a long name
CONTROL_BUFFERS = 16  # control receiveq buffers kept available (fewer if the queue is smaller)
PORTS_MAX = 32  # queue pairs set up for at most this many ports; a port above answers PORT_READY 0
QUEUE_SIZE = 64  # descriptors per queue (fewer where the device allows fewer)
DATA_BUFFERS = 4  # receive buffers made available on a port's receiveq when the port is set up
DATA_BUFFER = 256
QUIET = 0.02  # seconds without a new control message: the device has said what it had to say


@dataclass
class Port:
    added_by: int  # the control message (1-based) that created it
    name: bytes | None = None  # as sent, undecoded
    console: bool = False
    open: bool | None = None
    size: tuple[int, int] | None = None
    readied: bool = False  # the driver answered its DEVICE_ADD with PORT_READY
    opened: bool = False  # the driver sent PORT_OPEN 1 for it


def _pow2_at_most(n: int) -> int:
    return 1 << (n.bit_length() - 1) if n > 0 else 0


class PortTable:
    """The ports as the device's control messages made them, checked against 5.3.6.2.1."""

    def __init__(self, max_nr_ports: int):
        self.max_nr_ports = max_nr_ports
        self.ports: dict[int, Port] = {}
        self.removed: dict[int, int] = {}  # port id -> the message that removed it last
        self.names: dict[int, bytes] = {}  # every name a port was given, also of ports since removed
        self.log: list[VC.ControlMessage] = []
        self.unparsed = 0  # buffers too short for struct virtio_console_control (not a 5.3.6.2.1 duty)

    def describe(self, port: int) -> str:
        name = self.names.get(port)
        return f"port {port}" + (f" named {name.decode('utf-8', 'replace')!r}" if name is not None else "")

    def history(self, last: int = 12) -> str:
        start = max(0, len(self.log) - last)
        return "; ".join(f"{i + 1}: {self._text(m)}" for i, m in enumerate(self.log[start:], start))

    def _text(self, m: VC.ControlMessage) -> str:
        if m.event == VC.VIRTIO_CONSOLE_PORT_NAME:
            return f"PORT_NAME(id {m.id}, {m.payload.decode('utf-8', 'replace')!r})"
        return str(m)

    def take(self, msg: VC.ControlMessage) -> None:
        self.log.append(msg)
        n = len(self.log)
        port = self.ports.get(msg.id)
        if msg.event == VC.VIRTIO_CONSOLE_DEVICE_ADD:
            require(msg.id < self.max_nr_ports, CLAUSE_ADD,
                    f"DEVICE_ADD ({ordinal(n)} control message) names {self.describe(msg.id)}, not below max_nr_ports",
                    expected=f"a port id below {self.max_nr_ports}", observed=f"id {msg.id}; messages: {self.history()}")
            require(port is None, CLAUSE_ADD,
                    f"DEVICE_ADD ({ordinal(n)} control message) for {self.describe(msg.id)}, which exists: "
                    f"the {ordinal(port.added_by if port else 0)} message created it and none removed it since",
                    expected="a port that does not exist", observed=f"messages: {self.history()}")
            self.ports[msg.id] = Port(added_by=n)
        elif msg.event == VC.VIRTIO_CONSOLE_DEVICE_REMOVE:
            gone = self.removed.get(msg.id)
            why = (f"the {ordinal(gone)} message removed it and no DEVICE_ADD created it again" if gone
                   else "no DEVICE_ADD created it")
            require(port is not None, CLAUSE_REMOVE,
                    f"DEVICE_REMOVE ({ordinal(n)} control message) for {self.describe(msg.id)}, which does not exist: {why}",
                    expected="a port an earlier DEVICE_ADD created", observed=f"messages: {self.history()}")
            del self.ports[msg.id]
            self.removed[msg.id] = n
        elif port is None:
            return  # about a port that does not exist: Linux ignores it; no duty of 5.3.6.2.1
        elif msg.event == VC.VIRTIO_CONSOLE_PORT_NAME:
            port.name = self.names[msg.id] = msg.payload
        elif msg.event == VC.VIRTIO_CONSOLE_CONSOLE_PORT:
            port.console = True
        elif msg.event == VC.VIRTIO_CONSOLE_PORT_OPEN:
            port.open = bool(msg.value)
        elif msg.event == VC.VIRTIO_CONSOLE_RESIZE:
            port.size = msg.resize()

    def events(self, event: int) -> list[VC.ControlMessage]:
        return [m for m in self.log if m.event == event]


class MultiportConsole:
    """A console device initialized with VIRTIO_CONSOLE_F_MULTIPORT, its control queues running."""

    def __init__(self, session, *, want: tuple[int, ...] = ()):
        d = self.driver = session.driver
        self.timeout = session.timeout
        want = (C.VIRTIO_CONSOLE_F_MULTIPORT, *want)
        refuse = 0
        if session.layout == "packed":
            want += (C.VIRTIO_F_RING_PACKED,)
        elif session.layout == "split":
            refuse = 1 << C.VIRTIO_F_RING_PACKED
        need(d, *want)
        features = d.wanted_features(refuse=refuse)
        for b in want:
            features |= 1 << b
        d.negotiate(features)
        self.max_nr_ports = d.config_field("max_nr_ports")
        if self.max_nr_ports == 0:
            raise NotApplicable("the device offers VIRTIO_CONSOLE_F_MULTIPORT with max_nr_ports 0: it has no port to set up")
        sizes = {}
        for i in range(VC.num_queues(min(self.max_nr_ports, PORTS_MAX))):
            size = _pow2_at_most(min(QUEUE_SIZE, d.ops.vq_num_max(i)))
            if size == 0:
                if i < 4:
                    raise NotApplicable(f"the device has no {VC.queue_name(i)} (queue {i}) though VIRTIO_CONSOLE_F_MULTIPORT is negotiated")
                break  # fewer queues than max_nr_ports says: set up the ports it has queues for
            sizes[i] = size
        self.nports = (len(sizes) - 2) // 2
        vqs = d.find_vqs([VqInfo(VC.queue_name(i), size=s) for i, s in sizes.items()])
        d.driver_ok()
        self.vqs = vqs
        self.c_rx, self.c_tx = vqs[VC.CONTROL_RECEIVEQ], vqs[VC.CONTROL_TRANSMITQ]
        self.table = PortTable(self.max_nr_ports)
        for _ in range(min(CONTROL_BUFFERS, self.c_rx.num)):
            self.c_rx.add([], [CONTROL_BUFFER], "control")
        self.c_rx.kick()

    # -- control messages ---------------------------------------------------------------------------
    def send(self, port: int, event: int, value: int = 0) -> None:
        """One driver message on the control transmitq, waited for (bounded) until used."""
        msg = VC.ControlMessage(port, event, value)
        c = self.c_tx.add([msg.pack()], [], "control")
        self.c_tx.kick()
        self.c_tx.wait_chain(c, self.timeout, awaited=f"the control transmitq buffer carrying {msg}")
        self.c_tx.release(c)

    def pump(self) -> int:
        """Take every control message the device has returned, check it, and make its buffer
        available again; the number taken."""
        n = 0
        while (c := self.c_rx.get_buf()) is not None:
            raw = self.c_rx.read_in(c)
            self.c_rx.release(c)
            self.c_rx.add([], [CONTROL_BUFFER], "control")
            n += 1
            try:
                msg = VC.ControlMessage.unpack(raw)
            except ValueError:
                self.table.unparsed += 1
                continue
            self.table.take(msg)
        if n:
            self.c_rx.kick()
        return n

    def settle(self) -> None:
        """Take messages until none came for QUIET seconds (at most the device timeout in all)."""
        deadline = time.monotonic() + self.timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            if self.pump():
                last = time.monotonic()
            elif time.monotonic() - last >= QUIET:
                return
            time.sleep(POLL_INTERVAL)

    # -- the protocol -------------------------------------------------------------------------------
    def start(self) -> None:
        """DEVICE_READY, then each announced port set up (5.3.5 item 3)."""
        self.send(0, VC.VIRTIO_CONSOLE_DEVICE_READY, 1)
        if not poll(lambda: (self.pump(), self.table.ports)[1], self.timeout):
            raise NotApplicable(f"the device announced no port (DEVICE_ADD) within {self.timeout:g}s of DEVICE_READY")
        self.settle()
        self.ready_ports()

    def ready_ports(self) -> None:
        """PORT_READY for every port not yet answered: 1 where its queues are set up (its
        receiveq filled first, as Linux does), else 0; then PORT_OPEN 1 for each console port."""
        for port_id, port in sorted(self.table.ports.items()):
            if port.readied:
                continue
            port.readied = True
            ok = port_id < self.nports
            if ok:
                rx = self.vqs[VC.port_receiveq(port_id)]
                for _ in range(min(DATA_BUFFERS, rx.num)):
                    rx.add([], [DATA_BUFFER], f"port {port_id} input")
                rx.kick()
            self.send(port_id, VC.VIRTIO_CONSOLE_PORT_READY, int(ok))
        self.settle()
        opened = False
        for port_id, port in sorted(self.table.ports.items()):
            if port.console and not port.opened and port_id < self.nports:
                self.send(port_id, VC.VIRTIO_CONSOLE_PORT_OPEN, 1)  # 5.3.6.2.2: the driver's answer
                port.opened = opened = True
        if opened:
            self.settle()

    def usable_ports(self) -> list[int]:
        """Ports that exist and whose queues are set up."""
        return [p for p in sorted(self.table.ports) if p < self.nports]
