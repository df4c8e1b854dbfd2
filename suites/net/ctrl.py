"""What the control-virtqueue suites share: a device started with the control features a test
needs, its control queue and a frame probe over its queues (VIRTIO 1.4, 5.1.9.5).

Over a transport whose device does not serve the control virtqueue itself (vhost-user: the
front-end emulates it, see targets/config_ops.py NET_CONTROL_QUEUE) the tests skip, saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

from fixtures.devices import need_capability
from virtio import constants as C
from virtio.net_control import ControlQueue, FrameProbe
from virtio.net_frames import FrameTags
from virtio.workloads import NetWorkload

OTHER_MAC = bytes.fromhex("02000000beef")  # locally administered, nobody's
MULTICAST_MAC = bytes.fromhex("01005e000001")  # IPv4 all-hosts group
BROADCAST = b"\xff" * 6


@dataclass
class NetCtrl:
    work: NetWorkload
    ctrl: ControlQueue
    probe: FrameProbe

    @property
    def mac(self) -> bytes:
        return self.work.mac

    def rx_queues(self):
        return self.probe.rx_queues

    def tx_queues(self):
        return [vq for vq in self.work.vqs if vq.name.startswith("transmitq")]

    def frames(self, *dests: bytes, witness: bytes | None = None) -> tuple[list[int], list[bytes]]:
        """Tagged frames to ``dests``, then a witness frame, to the device's own MAC unless a test
        whose modes drop that (NOUNI) names another address the device accepts."""
        seqs, frames = [], []
        for d in (*dests, witness or self.mac):
            s, f = self.probe.frame(d)
            seqs.append(s)
            frames.append(f)
        return seqs, frames

    def came_back(self, frames: list[bytes], witness: int, clause: str, tx=None) -> set[int]:
        """Tags of ``frames`` that came back (``witness``, the last, must)."""
        return set(self.probe.run(tx or self.work.tx, frames, witness, clause))


def start_ctrl(session, want: tuple[int, ...] = (), refuse: tuple[int, ...] = (C.VIRTIO_NET_F_MQ,)) -> NetCtrl:
    """A net device with CTRL_VQ and ``want`` negotiated, link up, its control queue ready."""
    need_capability(session.driver, "net-control-queue", "the transport's front-end serves the control virtqueue "
                    "(vhost-user: QEMU's virtio-net emulates it); the device behind it is not asked to")
    work = session.start(want=(C.VIRTIO_NET_F_CTRL_VQ, *want), refuse=refuse)
    work.await_link_up()
    ctrlq = next(vq for vq in work.vqs if vq.name == "controlq")
    rxqs = [vq for vq in work.vqs if vq.name.startswith("receiveq")]
    return NetCtrl(work, ControlQueue(ctrlq, session.timeout), FrameProbe(rxqs, session.timeout, FrameTags()))
