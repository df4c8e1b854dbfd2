"""Reference virtio-fs device (VIRTIO 1.4, 5.11) serving FUSE from an in-memory tree.

Queue 0 is hiprio, then the notification queue when VIRTIO_FS_F_NOTIFICATION is negotiated (a
subclass with ``notification = True`` offers it; its buffers are held, this model emits no notify
messages), then the one request queue (5.11.2). Requests served: INIT, LOOKUP, FORGET (hiprio, no reply), GETATTR,
OPENDIR/READDIR/RELEASEDIR, OPEN/READ/WRITE/RELEASE; any other opcode gets ENOSYS, any request
before INIT gets EIO, as libfuse answers. The tree is also the target's shared directory
(targets/fs_shared_dir.py), so a suite can make files the device then serves.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from targets.fs_shared_dir import HOST_OPS, SharedDir
from virtio import constants as C
from virtio import fuse as F
from virtio.buffers import DeviceChain

from .device import Device
from .device_queue import DeviceQueue

HIPRIO, REQUEST = 0, 1
TAG = b"model-fs"
MAX_WRITE = 1 << 20


@dataclass
class Node:
    ino: int
    is_dir: bool
    data: bytearray = field(default_factory=bytearray)
    children: dict = field(default_factory=dict)  # name (bytes) -> ino
    nlookup: int = 0


class MemoryTree(SharedDir):
    """The model's file tree; ``SharedDir`` methods give the suites the host's view of it."""

    description = "the model's in-memory tree"

    def __init__(self):
        self.nodes = {F.FUSE_ROOT_ID: Node(F.FUSE_ROOT_ID, True)}
        self.next_ino = F.FUSE_ROOT_ID + 1

    def walk(self, name: str) -> Node | None:
        node = self.nodes[F.FUSE_ROOT_ID]
        for part in [p for p in name.split("/") if p]:
            if not node.is_dir or part.encode() not in node.children:
                return None
            node = self.nodes[node.children[part.encode()]]
        return node

    def add(self, name: str, is_dir: bool, data: bytes = b"") -> Node:
        parent_name, _, leaf = name.rstrip("/").rpartition("/")
        parent = self.walk(parent_name)
        if parent is None or not parent.is_dir:
            raise FileNotFoundError(name)
        ino = parent.children.get(leaf.encode())
        if ino is None:
            ino, self.next_ino = self.next_ino, self.next_ino + 1
            self.nodes[ino] = Node(ino, is_dir)
            parent.children[leaf.encode()] = ino
        node = self.nodes[ino]
        node.data[:] = data
        return node

    def create_file(self, name: str, data: bytes) -> None:
        self.add(name, False, data)

    def create_dir(self, name: str) -> None:
        self.add(name, True)

    def read_file(self, name: str) -> bytes:
        node = self.walk(name)
        if node is None or node.is_dir:
            raise FileNotFoundError(name)
        return bytes(node.data)

    def host_errno(self, op: str, name: str) -> int:
        if op not in HOST_OPS:
            raise ValueError(f"unknown operation {op!r}; known: {', '.join(HOST_OPS)}")
        node = self.walk(name)
        if node is None:
            return errno.ENOENT
        if op == "opendir" and not node.is_dir:
            return errno.ENOTDIR
        if op == "open-rdwr" and node.is_dir:
            return errno.EISDIR
        return 0


class FsDevice(Device):
    """virtio-fs model: hiprio + one request queue, config tag ``model-fs``."""

    device_id = C.VIRTIO_ID_FS
    name = "fs"
    num_queues = 2
    queue_names = ("hiprio", "requestq")
    queue_size_max = 256
    features = 0
    num_request_queues = 1
    tag = TAG
    notification = False  # offer VIRTIO_FS_F_NOTIFICATION (with notify_buf_size)
    notify_buf_size = 4096

    def __init__(self, mode: str = "notify"):
        self.shared_dir = MemoryTree()
        if self.notification:
            self.features = self.features | 1 << C.VIRTIO_FS_F_NOTIFICATION
            self.num_queues = 3
        super().__init__(mode=mode)

    def initial_config(self) -> bytes:
        values = {"tag": self.tag.ljust(F.TAG_SIZE, b"\0")[: F.TAG_SIZE], "num_request_queues": self.num_request_queues}
        if self.notification:
            values["notify_buf_size"] = self.notify_buf_size
        return F.FS_CONFIG.pack(values)

    def is_notification_queue(self, qindex: int) -> bool:
        return qindex == 1 and bool(self.driver_features >> C.VIRTIO_FS_F_NOTIFICATION & 1)

    def config_write(self, offset: int, data: bytes) -> None:
        return None  # 5.11.4: every field is read-only

    def on_reset(self) -> None:
        self.initialized = False  # FUSE_INIT seen in this session
        self.handles: dict[int, int] = {}  # fh -> ino
        self.next_fh = 1
        self.forgets = 0

    # -- FUSE --------------------------------------------------------------------------------------
    def handle(self, qindex: int, queue: DeviceQueue, chain: DeviceChain) -> int | None:
        if self.is_notification_queue(qindex):
            return None  # kept for a notify message this model never sends
        req = queue.read_readable(chain)
        if len(req) < F.fuse_in_header.size:
            return 0  # no header to answer to: nothing can be written that names the request
        h = F.fuse_in_header.unpack(req)
        body = req[F.fuse_in_header.size : h.len] if h.len <= len(req) else req[F.fuse_in_header.size :]
        if h.opcode in F.NO_REPLY_OPCODES:
            self.forget(h, body)
            return 0  # FORGET has no reply (5.11.6.2)
        if qindex == HIPRIO:
            return 0  # FUSE_INTERRUPT: nothing here is ever interruptible
        error, out = self.dispatch(h, body, chain.writable_len - F.fuse_out_header.size)
        return queue.write_writable(chain, F.reply(h.unique, -error if error else 0, b"" if error else out))

    def forget(self, h, body: bytes) -> None:
        node = self.shared_dir.nodes.get(h.nodeid)
        if node is not None and len(body) >= F.fuse_forget_in.size:
            node.nlookup = max(0, node.nlookup - F.fuse_forget_in.unpack(body).nlookup)
        self.forgets += 1

    def attr(self, node: Node) -> bytes:
        mode = (F.S_IFDIR | 0o755) if node.is_dir else (F.S_IFREG | 0o644)
        size = 4096 if node.is_dir else len(node.data)
        return F.fuse_attr.pack(ino=node.ino, size=size, blocks=(size + 511) // 512, mode=mode,
                                nlink=2 if node.is_dir else 1, blksize=4096)

    def dispatch(self, h, body: bytes, room: int) -> tuple[int, bytes]:
        """(errno, reply body) for one request."""
        op = h.opcode
        if op == F.FUSE_INIT:
            if len(body) < F.fuse_init_in.size:
                return errno.EINVAL, b""
            i = F.fuse_init_in.unpack(body)
            if i.major != F.FUSE_KERNEL_VERSION:
                return errno.EPROTO, b""
            self.initialized = True
            return 0, F.fuse_init_out.pack(major=F.FUSE_KERNEL_VERSION, minor=min(i.minor, F.FUSE_KERNEL_MINOR_VERSION),
                                           max_readahead=i.max_readahead, max_write=MAX_WRITE, time_gran=1, max_pages=256)
        if not self.initialized:
            return errno.EIO, b""
        nodes = self.shared_dir.nodes
        node = nodes.get(h.nodeid)
        if op == F.FUSE_LOOKUP:
            if node is None or not node.is_dir:
                return errno.ENOTDIR if node else errno.ENOENT, b""
            child = node.children.get(body.split(b"\0", 1)[0])
            if child is None:
                return errno.ENOENT, b""
            nodes[child].nlookup += 1
            return 0, F.fuse_entry_out.pack(nodeid=child, generation=1) + self.attr(nodes[child])
        if op in (F.FUSE_GETATTR, F.FUSE_OPENDIR, F.FUSE_OPEN, F.FUSE_READDIR, F.FUSE_READ, F.FUSE_WRITE) and node is None:
            return errno.ENOENT, b""
        if op == F.FUSE_GETATTR:
            return 0, F.fuse_attr_out.pack(attr_valid=1) + self.attr(node)
        if op in (F.FUSE_OPENDIR, F.FUSE_OPEN):
            flags = F.fuse_open_in.unpack(body).flags if len(body) >= F.fuse_open_in.size else 0
            if op == F.FUSE_OPENDIR and not node.is_dir:
                return errno.ENOTDIR, b""
            if op == F.FUSE_OPEN and node.is_dir and flags & os.O_ACCMODE != os.O_RDONLY:
                return errno.EISDIR, b""
            fh, self.next_fh = self.next_fh, self.next_fh + 1
            self.handles[fh] = node.ino
            return 0, F.fuse_open_out.pack(fh=fh)
        if op in (F.FUSE_RELEASE, F.FUSE_RELEASEDIR):
            fh = F.fuse_release_in.unpack(body).fh if len(body) >= F.fuse_release_in.size else 0
            return (0, b"") if self.handles.pop(fh, None) is not None else (errno.EBADF, b"")
        if op == F.FUSE_READDIR:
            r = F.fuse_read_in.unpack(body)
            if self.handles.get(r.fh) != node.ino or not node.is_dir:
                return errno.EBADF, b""
            entries = [(b".", node.ino, F.DT_DIR), (b"..", node.ino, F.DT_DIR)]
            entries += [(n, i, F.DT_DIR if nodes[i].is_dir else F.DT_REG) for n, i in node.children.items()]
            out = b""
            for k, (name, ino, t) in enumerate(entries[r.offset :], start=r.offset + 1):
                d = F.dirent(ino, k, name, t)
                if len(out) + len(d) > min(r.size, room):
                    break
                out += d
            return 0, out
        if op == F.FUSE_READ:
            r = F.fuse_read_in.unpack(body)
            if self.handles.get(r.fh) != node.ino or node.is_dir:
                return errno.EBADF, b""
            return 0, bytes(node.data[r.offset : r.offset + min(r.size, room)])
        if op == F.FUSE_WRITE:
            w = F.fuse_write_in.unpack(body)
            if self.handles.get(w.fh) != node.ino or node.is_dir:
                return errno.EBADF, b""
            data = body[F.fuse_write_in.size : F.fuse_write_in.size + w.size]
            end = w.offset + len(data)
            if len(node.data) < end:
                node.data.extend(bytes(end - len(node.data)))
            node.data[w.offset : end] = data
            return 0, F.fuse_write_out.pack(size=len(data))
        return errno.ENOSYS, b""
