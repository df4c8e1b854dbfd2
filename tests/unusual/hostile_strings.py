"""Devices whose strings are HTML markup: a blk serial (GET_ID), console port names (PORT_NAME)
and an fs tag (config). Nothing in the spec restricts what those bytes say -- 5.2.6 the serial is
up to 20 bytes, NUL-padded when shorter; 5.3.6.2 a port name is the rest of the PORT_NAME
buffer; 5.11.4 the tag is UTF-8, NUL-padded -- so each device is correct and must come out
CONFORMANT, and its report must show the strings as text, never as live markup
(tests/test_report_escaping.py parses it)."""

from __future__ import annotations

from targets.model.blk import BlkDevice
from targets.model.console import ConsoleDevice, PortSpec
from targets.model.fs import FsDevice
from virtio import constants as C

from . import Unusual

# Each ends what the report might wrap it in (an element, a <script>, a comment, an attribute).
SERIAL = b"<img src=x onerror=1"  # exactly 20 bytes: no NUL terminator (5.2.6 allows it)
PORT_NAMES = {
    1: "</script><script>alert(1)</script>",
    2: "<!--",
    3: '"><a href="javascript:alert(1)">x</a>',  # the hot-plug port
}
TAG = b"</script><svg onload=alert(1)><!--"  # 34 of the tag's 36 bytes, then NUL padding


class BlkMarkupSerial(BlkDevice):
    name = "blk-markup-serial"

    def _do_get_id(self, sector: int, payload: bytes, data_len: int):
        self.stats["get_id"] += 1
        return C.VIRTIO_BLK_S_OK, SERIAL.ljust(C.VIRTIO_BLK_ID_BYTES, b"\0")


class ConsoleMarkupPortNames(ConsoleDevice):
    name = "console-markup-port-names"
    ports = (ConsoleDevice.ports[0], PortSpec(1, PORT_NAMES[1]), PortSpec(2, PORT_NAMES[2]))
    hotplug_port = PortSpec(3, PORT_NAMES[3])


class FsMarkupTag(FsDevice):
    name = "fs-markup-tag"
    tag = TAG


# The classes are the factories (a --target python: spec calls them with mode=...).
_M = "python:tests.unusual.hostile_strings"
DEVICES = [
    Unusual("blk-markup-serial", f"{_M}:BlkMarkupSerial", "answers GET_ID with a 20-byte serial of HTML markup (5.2.6: any bytes, NUL-padded only when shorter)"),
    Unusual("console-markup-port-names", f"{_M}:ConsoleMarkupPortNames", "names its ports with HTML markup and a comment opener (5.3.6.2: the name is the rest of the PORT_NAME buffer)"),
    Unusual("fs-markup-tag", f"{_M}:FsMarkupTag", "has a tag of HTML markup that closes a <script> (5.11.4: UTF-8, NUL-padded)"),
]
