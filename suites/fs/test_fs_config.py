"""VIRTIO 1.4, 5.11.4: the virtio-fs configuration layout (tag, num_request_queues, notify_buf_size)."""

from __future__ import annotations

import pytest

from fixtures.devices import need
from virtio import constants as C
from virtio import fuse as F
from virtio.checks import require

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("fs")]


@pytest.mark.clause("def.fs.tag")
def test_tag_is_nul_padded_utf8(driver):
    """The 36-byte tag: UTF-8 text; once a NUL appears every byte after it is NUL too."""
    raw = driver.config_field("tag")
    text, nul, pad = raw.partition(b"\0")
    require(not pad.strip(b"\0"), "def.fs.tag", "tag has bytes after its NUL padding began", expected="NUL bytes to the end",
            observed=raw.hex(" "))
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as e:
        require(False, "def.fs.tag", "tag is not UTF-8", observed=f"{e}: {raw.hex(' ')}")


@pytest.mark.clause("dev.fs.device-configuration-layout.1")
def test_num_request_queues_at_least_one(driver):
    n = driver.config_field("num_request_queues")
    require(n >= 1, "dev.fs.device-configuration-layout.1", "num_request_queues below 1", expected=">= 1", observed=n)


@pytest.mark.clause("dev.fs.device-configuration-layout.2")
def test_notify_buf_size_holds_a_notify_message(driver):
    """A notify message is a fuse_out_header plus its body; the smallest body (poll wakeup) is 8
    bytes, so a smaller notify_buf_size holds none of the messages the device could emit."""
    need(driver, C.VIRTIO_FS_F_NOTIFICATION)
    n = driver.config_field("notify_buf_size")
    require(n >= F.SMALLEST_NOTIFY, "dev.fs.device-configuration-layout.2", "notify_buf_size too small for any FUSE notify message",
            expected=f">= {F.SMALLEST_NOTIFY}", observed=n)
