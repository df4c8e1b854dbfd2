"""Devices that write fewer bytes than a buffer holds, with an honest used len: 2.7.8.2 / 2.8 (len
is the number of bytes written, at most the buffer) and 5.4.6.2 ("the device MAY use less than
the whole buffer"; at least one byte, 5.4.6.1 / 5.4.6.2)."""

from __future__ import annotations

import os

from targets.model.rng import RngDevice

from . import Unusual


class RngHalf(RngDevice):
    """Fills half of each entropy buffer (at least one byte) and reports exactly that."""

    name = "rng-short-reads"

    def handle(self, qindex, queue, chain):
        want = max(1, chain.writable_len // 2) if chain.writable_len else 0
        n = queue.write_writable(chain, os.urandom(want))
        self.bytes_supplied += n
        return n


class RngOneByte(RngDevice):
    """Gives one byte of entropy per buffer, whatever its size."""

    name = "rng-one-byte"

    def handle(self, qindex, queue, chain):
        n = queue.write_writable(chain, os.urandom(1 if chain.writable_len else 0))
        self.bytes_supplied += n
        return n


def rng_half(mode: str = "notify"):
    return RngHalf(mode=mode)


def rng_one_byte(mode: str = "notify"):
    return RngOneByte(mode=mode)


_M = "python:tests.unusual.short_writes"
DEVICES = [
    Unusual("rng-short-reads", f"{_M}:rng_half", "fills half of each buffer, used len says so (5.4.6.2, 2.7.8.2)"),
    Unusual("rng-one-byte", f"{_M}:rng_one_byte", "gives one byte per buffer whatever its size (5.4.6.2)"),
]
