"""virtio-console layouts (VIRTIO 1.4, 5.3): the virtqueue numbering of the ports (5.3.2), struct
virtio_console_control and its events, struct virtio_console_resize (5.3.6.2).

The configuration layout (struct virtio_console_config: cols, rows, max_nr_ports, emerg_wr, 5.3.4)
is with the other device types' in virtio/config_layout.py (CONSOLE_CONFIG). Control messages are
bytes in buffers, not shared ring fields, so ``struct`` is fine here. Used by the driver side
(suites/console) and by the model (targets/model/console.py) alike.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# -- 5.3.2 Virtqueues: receiveq(port0), transmitq(port0), control receiveq, control transmitq,
# then receiveq(portN), transmitq(portN) for N = 1, 2, ...; the control queues and the other
# ports' queues exist only with VIRTIO_CONSOLE_F_MULTIPORT.
CONTROL_RECEIVEQ = 2  # device -> driver control messages
CONTROL_TRANSMITQ = 3  # driver -> device control messages ("control sendq" in 5.3.6.2's prose)


def port_receiveq(port: int) -> int:
    """Index of receiveq(port) (5.3.2)."""
    return 0 if port == 0 else 2 + 2 * port


def port_transmitq(port: int) -> int:
    """Index of transmitq(port) (5.3.2)."""
    return port_receiveq(port) + 1


def queue_port(index: int) -> int | None:
    """The port whose receiveq or transmitq has this index; None for the control queues."""
    if index in (CONTROL_RECEIVEQ, CONTROL_TRANSMITQ):
        return None
    return 0 if index < 2 else (index - 2) // 2


def num_queues(max_nr_ports: int) -> int:
    """Queues of a multiport device with ``max_nr_ports`` ports: a pair per port plus the control pair."""
    return 2 * (max(1, max_nr_ports) + 1)


def queue_name(index: int) -> str:
    """The spec's name of queue ``index`` (5.3.2)."""
    if index == CONTROL_RECEIVEQ:
        return "control receiveq"
    if index == CONTROL_TRANSMITQ:
        return "control transmitq"
    port = queue_port(index)
    return f"{'receiveq' if index == port_receiveq(port) else 'transmitq'}(port{port})"


# -- 5.3.6.2 struct virtio_console_control: le32 id (port number); le16 event; le16 value --------
CONTROL = struct.Struct("<IHH")
CONTROL_SIZE = CONTROL.size
# struct virtio_console_resize: le16 cols; le16 rows (follows a VIRTIO_CONSOLE_RESIZE message)
RESIZE = struct.Struct("<HH")

VIRTIO_CONSOLE_DEVICE_READY = 0  # driver -> device; value 1 success, 0 failure; id unused
VIRTIO_CONSOLE_DEVICE_ADD = 1  # device -> driver: create port id; value unused
VIRTIO_CONSOLE_DEVICE_REMOVE = 2  # device -> driver: remove port id; value unused
VIRTIO_CONSOLE_PORT_READY = 3  # driver -> device, answers DEVICE_ADD; value 1 success, 0 failure
VIRTIO_CONSOLE_CONSOLE_PORT = 4  # device -> driver: port id is a console port
VIRTIO_CONSOLE_RESIZE = 5  # device -> driver: followed by struct virtio_console_resize
VIRTIO_CONSOLE_PORT_OPEN = 6  # both ways; value 0 closed, 1 open
VIRTIO_CONSOLE_PORT_NAME = 7  # device -> driver: followed by the port's UTF-8 name, no NUL

EVENTS = {
    VIRTIO_CONSOLE_DEVICE_READY: "DEVICE_READY",
    VIRTIO_CONSOLE_DEVICE_ADD: "DEVICE_ADD",
    VIRTIO_CONSOLE_DEVICE_REMOVE: "DEVICE_REMOVE",
    VIRTIO_CONSOLE_PORT_READY: "PORT_READY",
    VIRTIO_CONSOLE_CONSOLE_PORT: "CONSOLE_PORT",
    VIRTIO_CONSOLE_RESIZE: "RESIZE",
    VIRTIO_CONSOLE_PORT_OPEN: "PORT_OPEN",
    VIRTIO_CONSOLE_PORT_NAME: "PORT_NAME",
}
# Who sends which event (5.3.6.2): the driver only these, the device the rest (PORT_OPEN both).
DRIVER_EVENTS = frozenset({VIRTIO_CONSOLE_DEVICE_READY, VIRTIO_CONSOLE_PORT_READY, VIRTIO_CONSOLE_PORT_OPEN})
DEVICE_EVENTS = frozenset(EVENTS) - {VIRTIO_CONSOLE_DEVICE_READY, VIRTIO_CONSOLE_PORT_READY}


def event_name(event: int) -> str:
    return EVENTS.get(event, f"event {event}")


@dataclass(frozen=True)
class ControlMessage:
    """One struct virtio_console_control and the bytes that follow it in the same buffer (a
    RESIZE's struct virtio_console_resize, a PORT_NAME's name)."""

    id: int
    event: int
    value: int = 0
    payload: bytes = b""

    def pack(self) -> bytes:
        return CONTROL.pack(self.id, self.event, self.value) + self.payload

    @classmethod
    def unpack(cls, raw: bytes) -> ControlMessage:
        """Parse a control buffer; ValueError when it is shorter than struct virtio_console_control."""
        if len(raw) < CONTROL_SIZE:
            raise ValueError(f"{len(raw)} bytes, struct virtio_console_control has {CONTROL_SIZE}")
        return cls(*CONTROL.unpack_from(raw), payload=bytes(raw[CONTROL_SIZE:]))

    @property
    def name(self) -> str:
        return event_name(self.event)

    def resize(self) -> tuple[int, int] | None:
        """(cols, rows) of a RESIZE message, None if the payload is too short to hold them."""
        return RESIZE.unpack_from(self.payload) if len(self.payload) >= RESIZE.size else None

    def __str__(self) -> str:
        extra = f", {len(self.payload)} bytes after it" if self.payload else ""
        return f"{self.name}(id {self.id}, value {self.value}{extra})"


def resize_message(port: int, cols: int, rows: int) -> ControlMessage:
    return ControlMessage(port, VIRTIO_CONSOLE_RESIZE, 0, RESIZE.pack(cols, rows))


def name_message(port: int, name: str) -> ControlMessage:
    return ControlMessage(port, VIRTIO_CONSOLE_PORT_NAME, 0, name.encode("utf-8"))
