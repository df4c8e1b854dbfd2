"""FUSE wire layouts as virtio-fs carries them (VIRTIO 1.4, 5.11.6: requests and replies are FUSE
messages, Linux include/uapi/linux/fuse.h), and the virtio-fs configuration layout (5.11.4).

Defined once for the driver side (suites, workloads) and the model device (targets/model/fs.py).
FUSE messages travel inside buffers, not in ring fields, so struct packing is right here.
"""

from __future__ import annotations

import struct
from collections import namedtuple

from .config_layout import FS_CONFIG, FS_TAG_SIZE  # noqa: F401  (5.11.4, with the other config layouts)

TAG_SIZE = FS_TAG_SIZE

# -- protocol version and opcodes (fuse.h) --------------------------------------------------------------
FUSE_KERNEL_VERSION = 7
FUSE_KERNEL_MINOR_VERSION = 31
FUSE_ROOT_ID = 1

FUSE_LOOKUP = 1
FUSE_FORGET = 2
FUSE_GETATTR = 3
FUSE_OPEN = 14
FUSE_READ = 15
FUSE_WRITE = 16
FUSE_RELEASE = 18
FUSE_INIT = 26
FUSE_OPENDIR = 27
FUSE_READDIR = 28
FUSE_RELEASEDIR = 29
FUSE_INTERRUPT = 36
FUSE_DESTROY = 38
FUSE_BATCH_FORGET = 42
FUSE_UNUSED_OPCODE = 4000  # no FUSE opcode has this number: a device must answer ENOSYS

OPCODE_NAMES = {v: k for k, v in globals().items() if k.startswith("FUSE_") and k not in
                ("FUSE_KERNEL_VERSION", "FUSE_KERNEL_MINOR_VERSION", "FUSE_ROOT_ID")}
HIPRIO_OPCODES = frozenset({FUSE_INTERRUPT, FUSE_FORGET, FUSE_BATCH_FORGET})  # 5.11.6.2: no reply
NO_REPLY_OPCODES = frozenset({FUSE_FORGET, FUSE_BATCH_FORGET})

# fuse_dirent.type is DT_* of <dirent.h>, i.e. (st_mode & S_IFMT) >> 12
DT_DIR, DT_REG = 4, 8
S_IFDIR, S_IFREG = 0o040000, 0o100000


class Layout:
    """One fixed-size FUSE struct: ``pack(**fields)`` (missing fields 0) and ``unpack(data)``."""

    def __init__(self, name: str, fmt: str, fields: str):
        self.name = name
        self.struct = struct.Struct("<" + fmt)
        self.tuple = namedtuple(name, fields)
        self.size = self.struct.size

    def pack(self, **kw) -> bytes:
        return self.struct.pack(*(kw.get(f, 0) for f in self.tuple._fields))

    def unpack(self, data: bytes, offset: int = 0):
        return self.tuple._make(self.struct.unpack_from(data, offset))


fuse_in_header = Layout("fuse_in_header", "IIQQIIIHH", "len opcode unique nodeid uid gid pid total_extlen padding")
fuse_out_header = Layout("fuse_out_header", "IiQ", "len error unique")
fuse_init_in = Layout("fuse_init_in", "IIII", "major minor max_readahead flags")
fuse_init_out = Layout("fuse_init_out", "IIIIHHIIHHI28x",
                       "major minor max_readahead flags max_background congestion_threshold max_write time_gran max_pages map_alignment flags2")
fuse_attr = Layout("fuse_attr", "QQQQQQIIIIIIIIII",
                   "ino size blocks atime mtime ctime atimensec mtimensec ctimensec mode nlink uid gid rdev blksize flags")
fuse_entry_out = Layout("fuse_entry_out", "QQQQII", "nodeid generation entry_valid attr_valid entry_valid_nsec attr_valid_nsec")
fuse_attr_out = Layout("fuse_attr_out", "QII", "attr_valid attr_valid_nsec dummy")
fuse_getattr_in = Layout("fuse_getattr_in", "IIQ", "getattr_flags dummy fh")
fuse_open_in = Layout("fuse_open_in", "II", "flags open_flags")
fuse_open_out = Layout("fuse_open_out", "QII", "fh open_flags padding")
fuse_read_in = Layout("fuse_read_in", "QQIIQII", "fh offset size read_flags lock_owner flags padding")
fuse_write_in = Layout("fuse_write_in", "QQIIQII", "fh offset size write_flags lock_owner flags padding")
fuse_write_out = Layout("fuse_write_out", "II", "size padding")
fuse_release_in = Layout("fuse_release_in", "QIIQ", "fh flags release_flags lock_owner")
fuse_forget_in = Layout("fuse_forget_in", "Q", "nlookup")
fuse_dirent = Layout("fuse_dirent", "QQII", "ino off namelen type")  # then the name, padded to 8

ENTRY_OUT_SIZE = fuse_entry_out.size + fuse_attr.size  # fuse_entry_out ends with a fuse_attr
ATTR_OUT_SIZE = fuse_attr_out.size + fuse_attr.size
INIT_OUT_SIZE = fuse_init_out.size
SMALLEST_NOTIFY = fuse_out_header.size + 8  # header + fuse_notify_poll_wakeup_out, the smallest notify


def request(opcode: int, unique: int, nodeid: int = 0, body: bytes = b"") -> bytes:
    """A FUSE request: fuse_in_header (len covers the whole request) followed by ``body``."""
    return fuse_in_header.pack(len=fuse_in_header.size + len(body), opcode=opcode, unique=unique, nodeid=nodeid) + body


def reply(unique: int, error: int = 0, body: bytes = b"") -> bytes:
    """A FUSE reply: fuse_out_header with ``error`` (0 or a negative errno), then ``body``."""
    return fuse_out_header.pack(len=fuse_out_header.size + len(body), error=error, unique=unique) + body


def dirent(ino: int, off: int, name: bytes, type_: int) -> bytes:
    raw = fuse_dirent.pack(ino=ino, off=off, namelen=len(name), type=type_) + name
    return raw + bytes(-len(raw) % 8)


def parse_dirents(data: bytes) -> list[tuple[int, int, bytes, int]]:
    """(ino, off, name, type) of each fuse_dirent in a READDIR reply body; ValueError if malformed."""
    out, pos = [], 0
    while pos < len(data):
        if pos + fuse_dirent.size > len(data):
            raise ValueError(f"truncated fuse_dirent at byte {pos}")
        d = fuse_dirent.unpack(data, pos)
        end = pos + fuse_dirent.size + d.namelen
        if d.namelen == 0 or end > len(data):
            raise ValueError(f"fuse_dirent at byte {pos}: namelen {d.namelen} does not fit")
        out.append((d.ino, d.off, bytes(data[pos + fuse_dirent.size : end]), d.type))
        pos = end + (-end % 8)
    return out


def tag_text(raw: bytes) -> str:
    """The tag field as text: up to the first NUL, or all 36 bytes when none (5.11.4)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
