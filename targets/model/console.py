"""Reference console device (VIRTIO 1.4, 5.3): ports that echo what the driver writes.

Bytes the driver places in transmitq(portN) come back on receiveq(portN). Receive buffers are
held until there is data for them; data larger than one buffer is split across several.

Features offered: VIRTIO_CONSOLE_F_SIZE (cols/rows, 5.3.4), VIRTIO_CONSOLE_F_MULTIPORT (the
control queues and ports 1.., 5.3.6.2) and VIRTIO_CONSOLE_F_EMERG_WRITE (emerg_wr, 5.3.5.1: the
low byte of a write is port 0's output, so it is echoed on receiveq(port0) like any other).
Without MULTIPORT negotiated only port 0's two queues exist (5.3.2).

The multiport control protocol (5.3.6.2): on the driver's DEVICE_READY the device announces its
ports with DEVICE_ADD; on the driver's PORT_READY for a port it sends CONSOLE_PORT for the console
port, PORT_NAME for a named one and PORT_OPEN 1 (the host side of every port is open). A
configuration change (change_config: a terminal resize) also plugs the hot-plug port in, or out
when it is in (DEVICE_ADD / DEVICE_REMOVE), and sends RESIZE for the console port: the
out-of-band events a real console back-end has.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from virtio import console as VC
from virtio import constants as C
from virtio.buffers import DeviceChain

from .device import Device
from .device_queue import DeviceQueue

PENDING_MAX = 64 * 1024  # echoed bytes waiting for receive buffers, per port; more are dropped
CONTROL_PENDING_MAX = 256  # control messages waiting for control receiveq buffers; more are dropped
SIZES = ((80, 25), (132, 43))  # change_config() alternates between these (cols, rows)
MAX_NR_PORTS = 4


@dataclass(frozen=True)
class PortSpec:
    """A port the model has: its id, name (None: no PORT_NAME) and whether it is a console port."""

    id: int
    name: str | None = None
    console: bool = False


class ConsoleDevice(Device):
    """Console model: port 0 (receiveq 0, transmitq 1) and, with MULTIPORT, the control queues
    (2, 3) and ports 1..max_nr_ports-1 (receiveq 2+2N, transmitq 3+2N)."""

    device_id = C.VIRTIO_ID_CONSOLE
    name = "console"
    max_nr_ports = MAX_NR_PORTS
    num_queues = VC.num_queues(MAX_NR_PORTS)
    queue_names = tuple(VC.queue_name(i) for i in range(num_queues))
    queue_size_max = 256
    features = (1 << C.VIRTIO_CONSOLE_F_SIZE) | (1 << C.VIRTIO_CONSOLE_F_MULTIPORT) | (1 << C.VIRTIO_CONSOLE_F_EMERG_WRITE)
    # The ports announced after DEVICE_READY, and the one a configuration change plugs in and out.
    ports = (PortSpec(0, console=True), PortSpec(1, "org.virtio-conformance.echo.1"), PortSpec(2, "org.virtio-conformance.echo.2"))
    hotplug_port = PortSpec(3, "org.virtio-conformance.hotplug")

    def __init__(self, mode: str = "notify"):
        self.pending: dict[int, bytearray] = {}
        self.control_out: deque[bytes] = deque()
        self.added: set[int] = set()
        self.ready = False
        self.bytes_echoed = 0
        self.bytes_dropped = 0
        self.emergency_bytes = bytearray()  # every byte written to emerg_wr, for inspection
        self._size_index = 0
        super().__init__(mode=mode)

    # -- configuration (5.3.4) ------------------------------------------------------------------
    def initial_config(self) -> bytes:
        cols, rows = SIZES[0]
        return self.layout.pack({"cols": cols, "rows": rows, "max_nr_ports": self.max_nr_ports})

    def config_write(self, offset: int, data: bytes) -> None:
        """emerg_wr (5.3.5.1): allowed at any time, whatever the status; the low byte is port 0's
        output. The field is not stored: it reads as 0. Every other field is read-only."""
        f = self.layout["emerg_wr"]
        if not self.offered_features() >> C.VIRTIO_CONSOLE_F_EMERG_WRITE & 1:
            return  # the field does not exist on this device
        if offset <= f.offset and f.offset + f.size <= offset + len(data):
            self.emergency_write(data[f.offset - offset])

    def emergency_write(self, byte: int) -> None:
        with self.lock:
            self.emergency_bytes.append(byte)
            self._output(0, bytes([byte]))
            if self.running():
                self._deliver(0)

    def change_config(self) -> None:
        """A terminal resize (5.3.6 item 3): cols/rows change, with a config change notification;
        with the multiport protocol running, also a RESIZE for the console port and a hot-plug."""
        with self.lock:
            self._size_index ^= 1
            cols, rows = SIZES[self._size_index]
            self.update_config(cols=cols, rows=rows)
            if self.ready:
                for p in self.ports:
                    if p.console and p.id in self.added:
                        self.send_control(VC.resize_message(p.id, cols, rows))
                self.hotplug()
                self._flush_control()

    def resumed(self) -> None:
        super().resumed()
        with self.lock:
            self._flush_control()

    def hotplug(self) -> None:
        """Plug the hot-plug port in, or out when it is in (5.3.6 item 4)."""
        port = self.hotplug_port.id
        if port in self.added:
            self.remove_port(port)
        else:
            self.add_port(port)

    def on_reset(self) -> None:
        self.pending.clear()
        self.control_out.clear()
        self.added = set()
        self.ready = False

    def multiport(self) -> bool:
        return bool(self.driver_features >> C.VIRTIO_CONSOLE_F_MULTIPORT & 1)

    def queue_max(self, index: int) -> int:
        # 5.3.2: only port 0's queues exist unless VIRTIO_CONSOLE_F_MULTIPORT is negotiated.
        if index >= 2 and not self.multiport():
            return 0
        return super().queue_max(index)

    # -- the multiport control protocol (5.3.6.2) ------------------------------------------------
    def spec_of(self, port: int) -> PortSpec | None:
        return next((p for p in (*self.ports, self.hotplug_port) if p.id == port), None)

    def send_control(self, msg: VC.ControlMessage) -> None:
        if len(self.control_out) < CONTROL_PENDING_MAX:
            self.control_out.append(msg.pack())

    def add_port(self, port: int) -> None:
        self.added.add(port)
        self.send_control(VC.ControlMessage(port, VC.VIRTIO_CONSOLE_DEVICE_ADD))

    def remove_port(self, port: int) -> None:
        self.added.discard(port)
        self.pending.pop(port, None)
        self.send_control(VC.ControlMessage(port, VC.VIRTIO_CONSOLE_DEVICE_REMOVE))

    def device_ready(self) -> None:
        """The driver is ready for control messages: announce every port."""
        self.ready = True
        for p in self.ports:
            self.add_port(p.id)

    def port_ready(self, port: int) -> None:
        """The driver set the port up: tell it what the port is."""
        spec = self.spec_of(port)
        if spec is None or port not in self.added:
            return  # not a port of ours: nothing to say about it
        if spec.console:
            self.send_control(VC.ControlMessage(port, VC.VIRTIO_CONSOLE_CONSOLE_PORT, 1))
        if spec.name is not None:
            self.send_control(VC.name_message(port, spec.name))
        self.send_control(VC.ControlMessage(port, VC.VIRTIO_CONSOLE_PORT_OPEN, 1))

    def control_message(self, msg: VC.ControlMessage) -> None:
        """A message from the driver on the control transmitq."""
        if msg.event == VC.VIRTIO_CONSOLE_DEVICE_READY:
            if msg.value == 1 and not self.ready:
                self.device_ready()
        elif msg.event == VC.VIRTIO_CONSOLE_PORT_READY:
            if msg.value == 1:
                self.port_ready(msg.id)
        # PORT_OPEN from the driver: the guest side opened or closed the port; the echo runs
        # either way. Anything else the driver has no business sending: ignored.

    def _flush_control(self) -> None:
        """Fill held control receiveq buffers with waiting messages, one message per buffer."""
        held = self.held.get(VC.CONTROL_RECEIVEQ, {})
        q = self.queues[VC.CONTROL_RECEIVEQ] if self.multiport() else None
        if q is None or self.suspended():
            return  # 3.4.1: no virtqueue access while suspended; resumed() sends them
        while self.control_out and held:
            chain = next(iter(held.values()))
            data = self.control_out[0]
            if chain.writable_len < len(data):
                # A buffer too small for the message: give it back empty rather than cut the message.
                self.complete(VC.CONTROL_RECEIVEQ, chain, 0)
                continue
            self.control_out.popleft()
            n = q.write_writable(chain, data)
            self.complete(VC.CONTROL_RECEIVEQ, chain, n)
        self.signal(VC.CONTROL_RECEIVEQ)

    # -- data (5.3.6) -----------------------------------------------------------------------------
    def _port_of(self, qindex: int) -> int | None:
        port = VC.queue_port(qindex)
        if port is None or (port > 0 and not self.multiport()):
            return None
        return port

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int | None:
        if qindex == VC.CONTROL_RECEIVEQ:
            return None if chain.writable_len else 0  # kept for a control message
        if qindex == VC.CONTROL_TRANSMITQ:
            data = queue.read_readable(chain)
            try:
                msg = VC.ControlMessage.unpack(data)
            except ValueError:
                return 0  # too short to be a control message: the driver's error, ignored
            self.control_message(msg)
            return 0
        port = self._port_of(qindex)
        if port is None:
            return 0  # a port queue without MULTIPORT cannot be set up (queue_max 0)
        if qindex == VC.port_receiveq(port):
            # Keep the buffer for echoed data; one with no writable part can never be filled.
            return None if chain.writable_len else 0
        self._output(port, queue.read_readable(chain))
        return 0  # a transmit buffer is only read: used len 0

    def _output(self, port: int, data: bytes) -> None:
        """What the driver sent on a port: looped back to the port's input."""
        pending = self.pending.setdefault(port, bytearray())
        room = PENDING_MAX - len(pending)
        pending += data[:room]
        self.bytes_dropped += max(0, len(data) - room)

    def after_process(self, index: int) -> None:
        port = VC.queue_port(index)
        if port is None:
            self._flush_control()
        else:
            self._deliver(port)

    def _deliver(self, port: int) -> None:
        """Fill held receive buffers of the port in order; each gets as much as it holds."""
        rx = VC.port_receiveq(port)
        held = self.held.get(rx, {})
        q = self.queues[rx] if rx < self.num_queues else None
        pending = self.pending.get(port)
        while pending and held and q is not None:
            chain = next(iter(held.values()))
            n = q.write_writable(chain, bytes(pending[: chain.writable_len]))
            del pending[:n]
            self.bytes_echoed += n
            self.complete(rx, chain, n)
        if q is not None:
            self.signal(rx)
