"""A FUSE session over a virtio-fs device's queues (VIRTIO 1.4, 5.11.6), as the fs suites drive it.

Requests go on the request queue, FORGET on hiprio (5.11.6.2); every reply is validated before
use (a reply is untrusted: a malformed one is a violation of def.fs.fuse-requests, never a crash).
"""

from __future__ import annotations

import os
import uuid

from fixtures.devices import need_capability
from virtio import fuse as F
from virtio.checks import require

CLAUSE_FUSE = "def.fs.fuse-requests"
REPLY_ROOM = 4096 + F.fuse_out_header.size  # room for any reply these suites ask for


class Reply:
    def __init__(self, error: int, body: bytes):
        self.error = error  # 0 or a positive errno
        self.body = body


class FuseSession:
    def __init__(self, work, timeout: float):
        self.work = work
        self.hiprio = work.vqs[0]
        self.requestq = work.vqs[-1]
        self.timeout = timeout
        self.unique = 0

    def send(self, opcode: int, nodeid: int = 0, body: bytes = b"", room: int = REPLY_ROOM, vq=None) -> Reply:
        """One request and its reply; the reply header is checked to name it and fit what was written."""
        vq = vq or self.requestq
        self.unique += 2
        unique = self.unique
        name = F.OPCODE_NAMES.get(opcode, f"opcode {opcode}")
        c = vq.add([F.request(opcode, unique, nodeid, body)], [room], name)
        vq.kick()
        c = vq.wait_chain(c, self.timeout, awaited=f"the reply to {name} on {vq.name}")
        used = c.used_len if c.len_reported else room
        data = vq.read_in(c, min(used, room))
        vq.release(c)
        require(len(data) >= F.fuse_out_header.size, CLAUSE_FUSE, f"{name}: reply shorter than a fuse_out_header",
                expected=f">= {F.fuse_out_header.size} bytes", observed=f"used len {used}", queue=vq.name)
        h = F.fuse_out_header.unpack(data)
        require(h.unique == unique, CLAUSE_FUSE, f"{name}: reply names another request", expected=f"unique {unique}",
                observed=f"unique {h.unique}", queue=vq.name)
        require(F.fuse_out_header.size <= h.len <= len(data), CLAUSE_FUSE, f"{name}: fuse_out_header.len does not match the bytes written",
                expected=f"{F.fuse_out_header.size}..{len(data)}", observed=h.len, queue=vq.name)
        require(-4095 <= h.error <= 0, CLAUSE_FUSE, f"{name}: fuse_out_header.error is not 0 or a negative errno",
                observed=h.error, queue=vq.name)
        body = data[F.fuse_out_header.size : h.len]
        require(h.error == 0 or not body, CLAUSE_FUSE, f"{name}: an error reply carries a body", expected="header only",
                observed=f"{len(body)} body bytes", queue=vq.name)
        return Reply(-h.error, body)

    def ok(self, opcode: int, nodeid: int = 0, body: bytes = b"", size: int = 0, what: str = "", room: int = REPLY_ROOM) -> bytes:
        """A request that must succeed, with a body of at least ``size`` bytes."""
        r = self.send(opcode, nodeid, body, room)
        name = F.OPCODE_NAMES.get(opcode, str(opcode))
        require(r.error == 0, CLAUSE_FUSE, f"{name} {what} failed", expected="error 0",
                observed=f"{os.strerror(r.error)} ({r.error})", queue=self.requestq.name)
        require(len(r.body) >= size, CLAUSE_FUSE, f"{name} {what}: reply body too short", expected=f">= {size} bytes",
                observed=len(r.body), queue=self.requestq.name)
        return r.body

    def init(self):
        body = self.ok(F.FUSE_INIT, 0, F.fuse_init_in.pack(major=F.FUSE_KERNEL_VERSION, minor=F.FUSE_KERNEL_MINOR_VERSION,
                                                             max_readahead=1 << 17), 8, "of a fresh session")
        out = F.fuse_init_out.unpack(body.ljust(F.fuse_init_out.size, b"\0"))
        require(out.major == F.FUSE_KERNEL_VERSION, CLAUSE_FUSE, "FUSE_INIT reply names another major version",
                expected=F.FUSE_KERNEL_VERSION, observed=out.major, queue=self.requestq.name)
        return out

    def read(self, nodeid: int, fh: int, offset: int, size: int, room: int | None = None) -> bytes:
        """FUSE_READ with a reply buffer of header + ``size`` bytes, as Linux sizes it (``room``: other)."""
        return self.ok(F.FUSE_READ, nodeid, F.fuse_read_in.pack(fh=fh, offset=offset, size=size),
                       room=room or F.fuse_out_header.size + size)

    def lookup(self, parent: int, name: str):
        """(entry, attr) of ``name`` in ``parent``."""
        body = self.ok(F.FUSE_LOOKUP, parent, name.encode() + b"\0", F.ENTRY_OUT_SIZE, repr(name))
        return F.fuse_entry_out.unpack(body), F.fuse_attr.unpack(body, F.fuse_entry_out.size)

    def open(self, opcode: int, nodeid: int, flags: int) -> int:
        return F.fuse_open_out.unpack(self.ok(opcode, nodeid, F.fuse_open_in.pack(flags=flags), F.fuse_open_out.size)).fh

    def release(self, opcode: int, nodeid: int, fh: int) -> None:
        self.ok(opcode, nodeid, F.fuse_release_in.pack(fh=fh))

    def forget(self, nodeid: int, nlookup: int) -> None:
        """FORGET on hiprio: a readable-only buffer, no reply (5.11.6.2); it must still be used."""
        c = self.hiprio.add([F.request(F.FUSE_FORGET, self.unique + 1, nodeid, F.fuse_forget_in.pack(nlookup=nlookup))], [], "forget")
        self.hiprio.kick()
        self.hiprio.release(self.hiprio.wait_chain(c, self.timeout, awaited="the FORGET buffer on hiprio to be used"))


def shared_dir(driver):
    """The target's shared directory (targets/fs_shared_dir.py), or skip saying why it is absent."""
    need_capability(driver, "fs-shared-dir", "the target declares no shared directory: files cannot be made for the device to serve")
    return driver.ops.shared_dir


def fresh_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
