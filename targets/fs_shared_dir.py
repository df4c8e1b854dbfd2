"""The directory a virtio-fs device shares (VIRTIO 1.4, 5.11), as the suites reach it from the
host side: make files there, and ask what errno the host gives for an operation, so a FUSE reply
can be checked against files the test made (capability ``fs-shared-dir``, targets/config_ops.py).

``SharedDir`` is the interface; ``HostSharedDir`` is a real directory (a back-end's source
directory from the inventory); the model device's in-memory tree implements the same methods.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# Operations whose host errno the suites compare with a FUSE error reply (host call in brackets):
# lookup (lstat), opendir (open O_DIRECTORY), open-rdwr (open O_RDWR).
HOST_OPS = ("lookup", "opendir", "open-rdwr")


class SharedDir:
    """Interface: names are paths relative to the shared directory's root, '/'-separated."""

    description = "shared directory"

    def create_file(self, name: str, data: bytes) -> None:
        raise NotImplementedError

    def create_dir(self, name: str) -> None:
        raise NotImplementedError

    def read_file(self, name: str) -> bytes:
        raise NotImplementedError

    def host_errno(self, op: str, name: str) -> int:
        """The errno ``op`` (one of HOST_OPS) gives on ``name`` on the host side, 0 for success."""
        raise NotImplementedError


class HostSharedDir(SharedDir):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.description = f"shared directory {self.root}"

    def _path(self, name: str) -> Path:
        p = (self.root / name).resolve()
        if self.root.resolve() not in (p, *p.parents):
            raise ValueError(f"{name!r} leaves the shared directory")
        return p

    def create_file(self, name: str, data: bytes) -> None:
        self._path(name).write_bytes(data)

    def create_dir(self, name: str) -> None:
        self._path(name).mkdir(exist_ok=True)

    def read_file(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def host_errno(self, op: str, name: str) -> int:
        path = self._path(name)
        try:
            if op == "lookup":
                os.lstat(path)
                return 0
            flags = {"opendir": os.O_RDONLY | os.O_DIRECTORY, "open-rdwr": os.O_RDWR}[op]
            os.close(os.open(path, flags))
            return 0
        except KeyError:
            raise ValueError(f"unknown operation {op!r}; known: {', '.join(HOST_OPS)}") from None
        except OSError as e:
            return e.errno or errno.EIO
