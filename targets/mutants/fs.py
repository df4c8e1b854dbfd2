"""virtio-fs mutants (VIRTIO 1.4, 5.11): the fs model with one duty broken."""

from __future__ import annotations

import errno

from targets.model.fs import HIPRIO, FsDevice
from virtio import fuse as F


class FsNoRequestQueues(FsDevice):
    """num_request_queues reads 0 (5.11.4.2: it must be 1 or more)."""

    name = "fs-no-request-queues"
    clause = "dev.fs.device-configuration-layout.1"
    num_request_queues = 0  # BUG


class FsTinyNotifyBuf(FsDevice):
    """Offers VIRTIO_FS_F_NOTIFICATION with a notify_buf_size of 4 bytes, too small for any FUSE
    notify message (5.11.4.2)."""

    name = "fs-tiny-notify-buf"
    clause = "dev.fs.device-configuration-layout.2"
    notification = True
    notify_buf_size = 4  # BUG


class FsTagNotPadded(FsDevice):
    """The tag's bytes after its NUL are not NUL (5.11.4: shorter tags are NUL-padded)."""

    name = "fs-tag-not-padded"
    clause = "def.fs.tag"
    tag = b"model-fs\0" + b"\xaa" * 27  # BUG


class FsMarkupTag(FsDevice):
    """A tag made of HTML markup, left unpadded after its NUL (def.fs.tag): the report must show
    the device-supplied tag escaped, never as live markup."""

    name = "fs-markup-tag"
    clause = "def.fs.tag"
    tag = b"<script>alert(1)</script>\0<b>x</b>"  # BUG (the junk after the NUL breaks the padding)


class FsHiprioPaused(FsDevice):
    """Leaves hiprio alone while the request queue has buffers available (5.11.6.2.1: request
    queue activity must not pause hiprio)."""

    name = "fs-hiprio-paused"
    clause = "dev.fs.device-operation.device-operation-high-priority-queue.1"

    def process_queue(self, index: int) -> None:
        rq = self.queues[-1]
        if index == HIPRIO and rq is not None and rq.has_avail():
            return  # BUG
        super().process_queue(index)


class FsReadGivesZeros(FsDevice):
    """FUSE_READ answers zeros instead of the file's data (5.11.6.4.1: READ must work)."""

    name = "fs-read-zeros"
    clause = "dev.fs.device-operation.device-operation-dax-window.3"

    def dispatch(self, h, body, room):
        err, out = super().dispatch(h, body, room)
        if h.opcode == F.FUSE_READ and not err:
            out = bytes(len(out))  # BUG
        return err, out


class FsUnknownOpcodeOk(FsDevice):
    """Answers an opcode FUSE does not define with success instead of ENOSYS."""

    name = "fs-unknown-opcode-ok"
    clause = "def.fs.fuse-requests"

    def dispatch(self, h, body, room):
        err, out = super().dispatch(h, body, room)
        return (0, b"") if err == errno.ENOSYS else (err, out)  # BUG


class FsLookupEio(FsDevice):
    """A LOOKUP of a missing name fails with EIO where the host says ENOENT."""

    name = "fs-lookup-eio"
    clause = "def.fs.fuse-requests"

    def dispatch(self, h, body, room):
        err, out = super().dispatch(h, body, room)
        return (errno.EIO, out) if h.opcode == F.FUSE_LOOKUP and err == errno.ENOENT else (err, out)  # BUG
