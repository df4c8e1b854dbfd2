"""Net devices that change the frames they loop back, as forwarding back-ends do: DPDK testpmd's
macswap mode swaps the destination and source addresses, its mac mode rewrites them. What a
device forwards is not a virtio duty (5.1.6 says how frames travel through the queues, not what a
peer does to them); each declares it in ``net_forward`` (virtio/net_frames.py), and the suites
judge only the virtio duties and what was declared."""

from __future__ import annotations

from targets.model.net import NetDevice

from . import Unusual


class Rewrites:
    """Mixin over the net model: a frame accepted by the receive filter comes back changed."""

    def rewrite_accepted(self, frame: bytes) -> bytes:
        return self.rewrite(super().rewrite_accepted(frame))


class NetMacSwap(Rewrites, NetDevice):
    name = "net-macswap"
    net_forward = "macswap"

    @staticmethod
    def rewrite(frame: bytes) -> bytes:
        return frame[6:12] + frame[0:6] + frame[12:]


class NetRewritesSourceMac(Rewrites, NetDevice):
    name = "net-rewrites-source-mac"
    net_forward = "any"  # declares nothing: only the virtio duties are judged

    def rewrite(self, frame: bytes) -> bytes:
        return frame[0:6] + self.mac + frame[12:]


def net_macswap(mode: str = "notify"):
    return NetMacSwap(mode=mode)


def net_rewrites_source_mac(mode: str = "notify"):
    return NetRewritesSourceMac(mode=mode)


_M = "python:tests.unusual.net_forwarding"
DEVICES = [
    Unusual("net-macswap", f"{_M}:net_macswap", "loops frames back with MAC addresses swapped, as testpmd --forward-mode=macswap (declared net_forward = macswap)"),
    Unusual("net-rewrites-source-mac", f"{_M}:net_rewrites_source_mac", "loops frames back with its own MAC as the source (declared net_forward = any)"),
]
