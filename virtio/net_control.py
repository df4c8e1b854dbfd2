"""Driver side of the virtio-net control virtqueue, and the frames that show what it changed
(VIRTIO 1.4, 5.1.9.5).

``ControlQueue`` sends one struct virtio_net_ctrl (virtio/net_ctrl.py) and returns its ack after a
bounded wait; the ack byte is device-written and validated. ``FrameProbe`` sends tagged frames
(virtio/net_frames.py) on a transmit queue with receive buffers on every receive queue and reports
which came back and where, so a receive filter or the receive steering is judged by the frames.

Judgement call (a filter's "drop" has no completion to wait for): a frame counts as dropped when a
frame the device must accept, sent after it on the same transmit queue, came back and it did not;
the device loops frames back in the order they were sent here as every loopback NIC does, and a
frame that arrives later still is seen by the next probe and ignored there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .checks import poll, require
from .errors import DeviceTimeout
from .messages import NET_HDR_SIZE, NetHdr
from .net_ctrl import ACK_SIZE, ack_name, ctrl_command
from .net_frames import ETH_HLEN, VLAN_TPID, FrameTags
from .virtqueue import Virtqueue

RX_BUFFER = NET_HDR_SIZE + 1514 + 4  # 5.1.6.3.1: room for a full frame, plus an 802.1Q tag


def vlan_tagged(frame: bytes, vid: int, pcp: int = 0) -> bytes:
    """``frame`` with an IEEE 802.1Q tag after the addresses."""
    return frame[:12] + VLAN_TPID + (pcp << 13 | vid).to_bytes(2, "big") + frame[12:]


class CtrlReply(NamedTuple):
    ack: int
    result: bytes  # the command-specific-result buffer as the device left it (empty unless VIRTIO_NET_OK)
    used_len: int | None


class ControlQueue:
    """controlq of a net device: one command at a time, each answered by its ack (5.1.9.5)."""

    def __init__(self, vq: Virtqueue, timeout: float):
        self.vq = vq
        self.timeout = timeout

    def command(self, cls: int, cmd: int, data: bytes, clause: str, what: str) -> int:
        """Send class/command/data, wait (bounded) for the buffer, return the ack byte. A used len
        that does not cover the ack, or an ack that is neither VIRTIO_NET_OK nor VIRTIO_NET_ERR, is a
        violation of ``clause`` (the duty the command is sent to check)."""
        return self.command_with_result(cls, cmd, data, 0, clause, what).ack

    def command_with_result(self, cls: int, cmd: int, data: bytes, result_len: int, clause: str,
                            what: str, *, exact: bool = True) -> CtrlReply:
        """``command`` for one with a command-specific-result of up to ``result_len`` bytes after
        the ack (5.1.9.5): the result is empty unless the ack is VIRTIO_NET_OK; then, with ``exact``,
        the used len must cover all ``result_len`` bytes (without, the caller judges how much of the
        buffer the device says it wrote: ``used_len``, None where the device reports none)."""
        chain = self.vq.add([ctrl_command(cls, cmd, data)], [ACK_SIZE + result_len], "ctrl")
        self.vq.kick()
        c = self.vq.wait_chain(chain, self.timeout, awaited=f"{what} (control command class {cls} command {cmd}) on controlq")
        try:
            reported = getattr(c, "len_reported", True)
            if reported:
                require(c.used_len >= 1, clause, f"{what}: used len of the control command does not cover its ack",
                        expected=">= 1", observed=c.used_len, queue=self.vq.name)
            ack = self.vq.read_in(c, 1)[0]
            require(ack in (0, 1), clause, f"{what}: ack is neither VIRTIO_NET_OK nor VIRTIO_NET_ERR",
                    expected="0 or 1", observed=ack, queue=self.vq.name)
            result = b""
            if ack == 0 and result_len:
                if reported and exact:
                    require(c.used_len >= ACK_SIZE + result_len, clause, f"{what}: used len does not cover the result",
                            expected=f">= {ACK_SIZE + result_len} (ack and result)", observed=c.used_len, queue=self.vq.name)
                result = bytes(self.vq.read_in(c, ACK_SIZE + result_len)[ACK_SIZE:])
        finally:
            self.vq.release(c)
        return CtrlReply(ack, result, c.used_len if reported else None)

    def expect_ok(self, cls: int, cmd: int, data: bytes, clause: str, what: str) -> None:
        ack = self.command(cls, cmd, data, clause, what)
        require(ack == 0, clause, f"{what}: the device refused the command", expected="VIRTIO_NET_OK",
                observed=ack_name(ack), queue=self.vq.name)


@dataclass
class Arrival:
    rxq: str  # the receive queue it came back on
    frame: bytes


@dataclass
class FrameProbe:
    """Tagged frames out on a transmit queue, what came back on the receive queues."""

    rx_queues: list[Virtqueue]
    timeout: float
    tags: FrameTags = field(default_factory=FrameTags)
    seq: int = 0
    arrived: dict[int, Arrival] = field(default_factory=dict)
    _posted: dict[str, int] = field(default_factory=dict)

    def frame(self, dst: bytes, length: int = 64) -> tuple[int, bytes]:
        self.seq += 1
        return self.seq, self.tags.frame(dst, self.seq, max(length, ETH_HLEN + 20))

    def post(self, count: int) -> None:
        """``count`` receive buffers on every receive queue, so a frame may land on any of them."""
        for vq in self.rx_queues:
            room = vq.num - self._posted.get(vq.name, 0)
            for _ in range(min(count, room)):
                vq.add([], [RX_BUFFER], "rx")
                self._posted[vq.name] = self._posted.get(vq.name, 0) + 1
            vq.kick()

    def send(self, tx: Virtqueue, frames: list[bytes]) -> None:
        chains = [tx.add([NetHdr().pack() + f], [], "tx") for f in frames]
        tx.kick()
        for i, chain in enumerate(chains):
            c = tx.wait_chain(chain, self.timeout, awaited=f"frame {i + 1} of {len(frames)} on {tx.name} to be used")
            tx.release(c)

    def _take(self) -> bool:
        """Take every used receive buffer there is; False when none was there."""
        took = False
        for vq in self.rx_queues:
            while (c := vq.get_buf()) is not None:
                took = True
                self._posted[vq.name] -= 1
                got = vq.read_in(c, c.used_len if getattr(c, "len_reported", True) else c.writable)[NET_HDR_SIZE:]
                seq = self.tags.seq_of(got)
                if seq is not None:
                    self.arrived[seq] = Arrival(vq.name, got)
                vq.release(c)
        return took

    def forget(self, vq: Virtqueue) -> None:
        """``vq`` was reset: the buffers posted on it are the driver's again (2.6.1)."""
        self._posted[vq.name] = 0

    def arrivals(self, seqs: list[int], timeout: float) -> dict[int, Arrival]:
        """Wait (bounded) for every one of ``seqs``; what arrived of them by then."""
        def all_in() -> bool:
            self._take()
            return all(s in self.arrived for s in seqs)

        poll(all_in, timeout)
        return {s: self.arrived[s] for s in seqs if s in self.arrived}

    def run(self, tx: Virtqueue, frames: list[bytes], witness: int, clause: str) -> dict[int, Arrival]:
        """Send ``frames`` on ``tx`` (the last of them, tag ``witness``, one the device must
        accept); wait (bounded) for the witness, whose loss is charged to ``clause``; return what
        arrived, by tag."""
        self.post(len(frames) + 1)
        self.send(tx, frames)

        def witnessed() -> bool:
            self._take()
            return witness in self.arrived

        if not poll(witnessed, self.timeout):
            raise DeviceTimeout(clause, f"frame {witness}, which the device must accept, to come back on "
                                f"{', '.join(q.name for q in self.rx_queues)}", timeout=self.timeout, queue=tx.name)
        self._take()
        return self.arrived
