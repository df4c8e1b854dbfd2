"""Reference console device (VIRTIO 1.4, 5.3): one port that echoes what the driver writes.

Bytes the driver places in transmitq(port0) come back on receiveq(port0). Receive buffers are
held until there is data for them; data larger than one buffer is split across several.
"""

from __future__ import annotations

from virtio import constants as C
from virtio.buffers import DeviceChain

from .device import Device
from .device_queue import DeviceQueue

RX, TX = 0, 1
PENDING_MAX = 64 * 1024  # echoed bytes waiting for receive buffers; more are dropped
SIZES = ((80, 25), (132, 43))  # change_config() alternates between these (cols, rows)


class ConsoleDevice(Device):
    """Console model: receiveq (0) and transmitq (1) of port 0, VIRTIO_CONSOLE_F_SIZE offered.

    No MULTIPORT (so no control queues) and no EMERG_WRITE.
    """

    device_id = C.VIRTIO_ID_CONSOLE
    name = "console"
    num_queues = 2
    queue_names = ("receiveq", "transmitq")
    queue_size_max = 256
    features = 1 << C.VIRTIO_CONSOLE_F_SIZE

    def __init__(self, mode: str = "notify"):
        self.pending = bytearray()
        self.bytes_echoed = 0
        self.bytes_dropped = 0
        self._size_index = 0
        super().__init__(mode=mode)

    # -- configuration (5.3.4) ------------------------------------------------------------------
    def initial_config(self) -> bytes:
        cols, rows = SIZES[0]
        return self.layout.pack({"cols": cols, "rows": rows})

    def config_write(self, offset: int, data: bytes) -> None:
        # emerg_wr exists only with VIRTIO_CONSOLE_F_EMERG_WRITE, which this model does not offer:
        # a write there lands on no field and is ignored.
        return None

    def change_config(self) -> None:
        """A terminal resize (5.3.6 item 3): cols/rows change, with a config change notification."""
        with self.lock:
            self._size_index ^= 1
            cols, rows = SIZES[self._size_index]
            self.update_config(cols=cols, rows=rows)

    def on_reset(self) -> None:
        self.pending.clear()

    # -- data (5.3.6) -----------------------------------------------------------------------------
    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int | None:
        if qindex == RX:
            # Keep the buffer for echoed data; one with no writable part can never be filled.
            return None if chain.writable_len else 0
        data = queue.read_readable(chain)
        room = PENDING_MAX - len(self.pending)
        self.pending += data[:room]
        self.bytes_dropped += max(0, len(data) - room)
        return 0  # a transmit buffer is only read: used len 0

    def after_process(self, index: int) -> None:
        self._deliver()
        self.signal(RX)

    def _deliver(self) -> None:
        """Fill held receive buffers in order; each gets as much as it holds."""
        held = self.held.get(RX, {})
        q = self.queues[RX]
        while self.pending and held and q is not None:
            chain = next(iter(held.values()))
            n = q.write_writable(chain, bytes(self.pending[: chain.writable_len]))
            del self.pending[:n]
            self.bytes_echoed += n
            self.complete(RX, chain, n)
