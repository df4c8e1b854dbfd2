"""VIRTIO 1.4, 5.3.5.1: emergency write (VIRTIO_CONSOLE_F_EMERG_WRITE).

A write of emerg_wr is allowed at any time, even before the device is set up or the feature
accepted, and its low byte should go to the console's output. A driver sees that output only
where the console loops its output back to port 0's input, as the models do (and the console
workload expects): each test first checks that ordinary output comes back, and skips, saying so,
where it does not.
"""

from __future__ import annotations

import os

import pytest

from fixtures.devices import need
from virtio import constants as C
from virtio.checks import control, poll, require
from virtio.driver import VqInfo

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("console")]

CLAUSE_ALLOWED = "dev.console.device-initialization.1"
CLAUSE_OUTPUT = "dev.console.device-initialization.2"
HIGH = 0x5A_C3_96_00  # the upper bytes of each value written: not output, only the low byte is
RX_BUFFER = 256
BROKEN = C.DEVICE_NEEDS_RESET | C.FAILED


def _write(d, byte: int) -> None:
    f = d.layout["emerg_wr"]
    d.ops.set(f.offset, (HIGH | byte).to_bytes(f.size, "little"))


class Port0:
    """Port 0's queues of a running console: output sent, input collected (bounded)."""

    def __init__(self, d, vqs, timeout):
        self.rx, self.tx, self.timeout = vqs[0], vqs[1], timeout
        self.got = bytearray()
        for _ in range(min(4, self.rx.num)):
            self.rx.add([], [RX_BUFFER], "input")
        self.rx.kick()

    def take(self) -> bytes:
        while (c := self.rx.get_buf()) is not None:
            self.got += self.rx.read_in(c)
            self.rx.release(c)
            self.rx.add([], [RX_BUFFER], "input")
            self.rx.kick()
        return bytes(self.got)

    def send(self, data: bytes) -> None:
        c = self.tx.add([data], [], "output")
        self.tx.kick()
        self.tx.wait_chain(c, self.timeout, awaited=f"transmitq(port0) buffer of {len(data)} bytes")
        self.tx.release(c)

    def wait_for(self, data: bytes, timeout: float | None = None) -> bool:
        return bool(poll(lambda: data in self.take(), self.timeout if timeout is None else timeout))

    def loops_back(self) -> None:
        """Skip unless what port 0 outputs comes back on its input (the only way to see output)."""
        probe = b"loopback probe " + os.urandom(8).hex().encode()
        self.send(probe)
        if not self.wait_for(probe):
            pytest.skip(f"the console does not loop port 0's output back to its input within {self.timeout:g}s: "
                        "its emergency output cannot be seen by a driver")
        self.got.clear()


def _init(d, features: int, timeout: float) -> Port0:
    """3.1.1 steps 4-8 after ACKNOWLEDGE and DRIVER (no reset: what was written so far stays)."""
    d.ops.finalize_features(features)
    st = d.add_status(C.FEATURES_OK)
    require(st & C.FEATURES_OK, CLAUSE_ALLOWED, "FEATURES_OK did not stick after emerg_wr writes before it",
            expected="FEATURES_OK set", observed=C.status_names(st))
    d.negotiated = features
    vqs = d.find_vqs([VqInfo("receiveq"), VqInfo("transmitq")])
    d.driver_ok()
    return Port0(d, vqs, timeout)


@pytest.mark.clause(CLAUSE_OUTPUT)
def test_emergency_write_outputs_the_low_byte(session):
    """On a running console, each emerg_wr write outputs its low byte, and only that byte."""
    need(session.driver, C.VIRTIO_CONSOLE_F_EMERG_WRITE)
    d = session.driver
    work = session.start(want=(C.VIRTIO_CONSOLE_F_EMERG_WRITE,))
    port = Port0(d, work.vqs, session.timeout)
    port.loops_back()
    for byte in b"!\n":
        _write(d, byte)
        port.wait_for(bytes([byte]))
        got = port.take()
        require(got == bytes([byte]), CLAUSE_OUTPUT, "an emerg_wr write did not show up as port 0's output",
                expected=f"the low byte {byte:#04x} of {HIGH | byte:#010x}", observed=f"input {got.hex() or 'none'} within {session.timeout:g}s")
        port.got.clear()


@pytest.mark.clause(CLAUSE_ALLOWED)
def test_emergency_write_allowed_before_setup(session):
    """emerg_wr written at every step of initialization -- after reset, after ACKNOWLEDGE, after
    DRIVER -- is allowed: the device neither fails nor asks for a reset, and then starts; with
    the feature not accepted, a write still outputs its byte (5.3.4: no need to acknowledge the
    feature). Bytes written before DRIVER_OK may be lost (no input buffer to take them).

    Control: the same write on a running device that accepted the feature shows as output (else
    the failure is 5.3.5.1's SHOULD, not this MUST)."""
    d = session.driver
    need(d, C.VIRTIO_CONSOLE_F_EMERG_WRITE)
    with control(CLAUSE_OUTPUT, "emerg_wr written on a running device that accepted the feature", variant=(CLAUSE_ALLOWED,)):
        work = session.start(want=(C.VIRTIO_CONSOLE_F_EMERG_WRITE,))
        port = Port0(d, work.vqs, session.timeout)
        port.loops_back()
        _write(d, ord("x"))
        require(port.wait_for(b"x"), CLAUSE_OUTPUT, "an emerg_wr write did not show up as port 0's output",
                expected="the byte 0x78 on receiveq(port0)", observed=f"input {port.take().hex() or 'none'} within {session.timeout:g}s")
    d.reset()
    features = d.wanted_features(refuse=(1 << C.VIRTIO_CONSOLE_F_EMERG_WRITE) | (1 << C.VIRTIO_F_RING_PACKED))
    steps = []

    def write_at(step: str, byte: int) -> None:
        _write(d, byte)
        st = d.status()
        steps.append(f"{step}: status {C.status_names(st)}")
        require(not st & BROKEN, CLAUSE_ALLOWED, f"an emerg_wr write {step} made the device fail or ask for a reset",
                expected="no DEVICE_NEEDS_RESET or FAILED", observed="; ".join(steps))

    write_at("right after reset (status 0)", ord("a"))
    d.add_status(C.ACKNOWLEDGE)
    write_at("after ACKNOWLEDGE", ord("b"))
    d.add_status(C.DRIVER)
    write_at("after DRIVER", ord("c"))
    port = _init(d, features, session.timeout)
    st = d.status()
    require(st & C.DRIVER_OK and not st & BROKEN, CLAUSE_ALLOWED, "the device did not start after emerg_wr writes during initialization",
            expected="DRIVER_OK set, no DEVICE_NEEDS_RESET or FAILED", observed=f"{C.status_names(st)} ({'; '.join(steps)})")
    port.loops_back()  # takes (and drops) what was output before DRIVER_OK, if the device kept it
    write_at("while running, the feature not accepted", ord("d"))
    require(port.wait_for(b"d"), CLAUSE_ALLOWED, "an emerg_wr write, the feature not accepted, did not show as output "
            "(it does with the feature accepted)",
            expected="the byte 0x64 on receiveq(port0)", observed=f"input {port.take().hex() or 'none'} within {session.timeout:g}s")
