"""Console mutants (VIRTIO 1.4, 5.3): the multiport control protocol (5.3.6.2.1), data on the
ports' queues, emergency write (5.3.5.1). Each breaks one duty of the clean console model."""

from __future__ import annotations

from targets.model.console import ConsoleDevice, PortSpec
from targets.model.device_queue import DeviceQueue
from virtio import console as VC
from virtio import constants as C
from virtio.buffers import DeviceChain

MARKUP_NAME = "<script>alert('port name')</script>"


class ConsoleReaddsReadyPort(ConsoleDevice):
    """Announces a port again (DEVICE_ADD) when the driver reports it ready.

    dev.console.device-operation.multiport-device-operation.1 (5.3.6.2.1): the device MUST NOT
    name a port which exists in a DEVICE_ADD message.
    """

    name = "console-readds-ready-port"
    clause = "dev.console.device-operation.multiport-device-operation.1"
    both_layouts = True

    def port_ready(self, port: int) -> None:
        super().port_ready(port)
        if port in self.added:
            self.send_control(VC.ControlMessage(port, VC.VIRTIO_CONSOLE_DEVICE_ADD))  # BUG: it exists


class ConsoleAddsPortAtMaxNrPorts(ConsoleDevice):
    """Announces one port more than max_nr_ports allows: port id max_nr_ports.

    dev.console.device-operation.multiport-device-operation.1 (5.3.6.2.1): the device MUST NOT
    name a port equal to or greater than max_nr_ports in a DEVICE_ADD message.
    """

    name = "console-adds-port-at-max-nr-ports"
    clause = "dev.console.device-operation.multiport-device-operation.1"
    both_layouts = True
    ports = (*ConsoleDevice.ports, PortSpec(ConsoleDevice.max_nr_ports, "org.virtio-conformance.one-too-many"))  # BUG


class ConsoleMarkupPortName(ConsoleDevice):
    """Names port 1 with HTML markup, and announces it again (DEVICE_ADD) after naming it.

    dev.console.device-operation.multiport-device-operation.1 (5.3.6.2.1): the device MUST NOT
    name a port which exists in a DEVICE_ADD message. The name (legal UTF-8) is there for the
    reports: the failure quotes it, and a report must show it as text, never as live markup.
    """

    name = "console-markup-port-name"
    clause = "dev.console.device-operation.multiport-device-operation.1"
    both_layouts = True
    ports = (ConsoleDevice.ports[0], PortSpec(1, MARKUP_NAME), *ConsoleDevice.ports[2:])

    def port_ready(self, port: int) -> None:
        super().port_ready(port)
        if port == 1 and port in self.added:
            self.send_control(VC.ControlMessage(port, VC.VIRTIO_CONSOLE_DEVICE_ADD))  # BUG: it exists


class ConsoleRemovesAbsentPort(ConsoleDevice):
    """Replugs the hot-plug port on each configuration change: DEVICE_REMOVE, then DEVICE_ADD,
    whether the port was in or not.

    dev.console.device-operation.multiport-device-operation.2 (5.3.6.2.1): the device MUST NOT
    name a port in DEVICE_REMOVE which no previous DEVICE_ADD created.
    """

    name = "console-removes-absent-port"
    clause = "dev.console.device-operation.multiport-device-operation.2"
    both_layouts = True

    def hotplug(self) -> None:
        port = self.hotplug_port.id
        self.remove_port(port)  # BUG: also when it was never added
        self.add_port(port)


class ConsolePortTransmitqHeld(ConsoleDevice):
    """Never returns buffers placed on the transmitq of ports other than port 0.

    def.basic.buffers-are-used (2.6): every buffer the driver makes available comes back used,
    in bounded time; transmitq(portN) of a multiport device is no exception.
    """

    name = "console-port-transmitq-held"
    clause = "def.basic.buffers-are-used"
    both_layouts = True

    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int | None:
        port = VC.queue_port(qindex)
        if port and qindex == VC.port_transmitq(port):
            return None  # BUG: held for ever
        return super().handle(qindex, queue, chain)


class ConsoleEmergWrNeedsReset(ConsoleDevice):
    """Takes a write of emerg_wr before DRIVER_OK as a driver error: sets DEVICE_NEEDS_RESET.

    dev.console.device-initialization.1 (5.3.5.1): the device MUST allow a write to emerg_wr,
    even on an unconfigured device.
    """

    name = "console-emerg-wr-needs-reset"
    clause = "dev.console.device-initialization.1"
    both_layouts = True

    def emergency_write(self, byte: int) -> None:
        if not self.status & C.DRIVER_OK:
            with self.lock:
                self.status |= C.DEVICE_NEEDS_RESET  # BUG: the write is allowed at any time
            return
        super().emergency_write(byte)


class ConsoleEmergWrNeedsFeature(ConsoleDevice):
    """Outputs an emerg_wr write only once the driver accepted VIRTIO_CONSOLE_F_EMERG_WRITE.

    dev.console.device-initialization.1 (5.3.5.1): the device MUST allow a write to emerg_wr,
    even on an unconfigured device; 5.3.4: the driver need not even acknowledge the feature.
    """

    name = "console-emerg-wr-needs-feature"
    clause = "dev.console.device-initialization.1"
    both_layouts = True

    def emergency_write(self, byte: int) -> None:
        if self.driver_features >> C.VIRTIO_CONSOLE_F_EMERG_WRITE & 1:
            super().emergency_write(byte)
        # BUG: else dropped


class ConsoleEmergWrSilent(ConsoleDevice):
    """Accepts emerg_wr writes and outputs nothing.

    dev.console.device-initialization.2 (5.3.5.1): the device SHOULD transmit the lower byte
    written to emerg_wr to an appropriate log or output method.
    """

    name = "console-emerg-wr-silent"
    clause = "dev.console.device-initialization.2"
    both_layouts = True

    def emergency_write(self, byte: int) -> None:
        pass  # BUG: the byte goes nowhere


class ConsoleEmergWrHighByte(ConsoleDevice):
    """Outputs the top byte of the 32-bit value written to emerg_wr instead of the low one.

    dev.console.device-initialization.2 (5.3.5.1): it is the lower byte written that the device
    SHOULD output.
    """

    name = "console-emerg-wr-high-byte"
    clause = "dev.console.device-initialization.2"
    both_layouts = True

    def config_write(self, offset: int, data: bytes) -> None:
        f = self.layout["emerg_wr"]
        if offset <= f.offset and f.offset + f.size <= offset + len(data):
            self.emergency_write(data[f.offset - offset + f.size - 1])  # BUG: the most significant byte
