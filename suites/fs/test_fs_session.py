"""VIRTIO 1.4, 5.11.6: a FUSE session over the request and hiprio queues, checked against files the
test made in the device's shared directory (capability fs-shared-dir), and FUSE error replies
checked against the errno the same operation gives on the host side of that directory."""

from __future__ import annotations

import errno
import os

import pytest

from virtio import fuse as F
from virtio.checks import require

from .fuse_session import CLAUSE_FUSE, FuseSession, fresh_name, shared_dir

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("fs")]
CLAUSE_RW = "dev.fs.device-operation.device-operation-dax-window.3"


def _session(session) -> FuseSession:
    fs = FuseSession(session.start(), session.timeout)
    fs.init()
    return fs


@pytest.mark.clause(CLAUSE_FUSE)
def test_init_and_root_getattr(session):
    fs = _session(session)
    body = fs.ok(F.FUSE_GETATTR, F.FUSE_ROOT_ID, F.fuse_getattr_in.pack(), F.ATTR_OUT_SIZE, "of the root")
    attr = F.fuse_attr.unpack(body, F.fuse_attr_out.size)
    require(attr.mode & 0o170000 == F.S_IFDIR, CLAUSE_FUSE, "the root is not a directory", expected="S_IFDIR",
            observed=f"mode {attr.mode:#o}")


@pytest.mark.clause(CLAUSE_FUSE)
def test_lookup_getattr_match_created_file(session):
    share = shared_dir(session.driver)
    name, data = fresh_name("lookup"), os.urandom(1234)
    share.create_file(name, data)
    fs = _session(session)
    entry, attr = fs.lookup(F.FUSE_ROOT_ID, name)
    require(attr.size == len(data) and attr.mode & 0o170000 == F.S_IFREG, CLAUSE_FUSE, "LOOKUP attributes differ from the file made",
            expected=f"regular file of {len(data)} bytes", observed=f"mode {attr.mode:#o} size {attr.size}")
    body = fs.ok(F.FUSE_GETATTR, entry.nodeid, F.fuse_getattr_in.pack(), F.ATTR_OUT_SIZE, name)
    got = F.fuse_attr.unpack(body, F.fuse_attr_out.size)
    require((got.ino, got.size) == (attr.ino, attr.size), CLAUSE_FUSE, "GETATTR differs from LOOKUP of the same node",
            expected=f"ino {attr.ino} size {attr.size}", observed=f"ino {got.ino} size {got.size}")
    fs.forget(entry.nodeid, 1)
    fs.lookup(F.FUSE_ROOT_ID, name)  # still served after the FORGET


@pytest.mark.clause(CLAUSE_FUSE)
def test_readdir_lists_created_files(session):
    share = shared_dir(session.driver)
    d = fresh_name("dir")
    share.create_dir(d)
    names = {f"f{i}" for i in range(5)}
    for n in names:
        share.create_file(f"{d}/{n}", n.encode())
    fs = _session(session)
    entry, _ = fs.lookup(F.FUSE_ROOT_ID, d)
    fh = fs.open(F.FUSE_OPENDIR, entry.nodeid, os.O_RDONLY)
    seen, offset = [], 0
    for _ in range(64):  # bounded: each READDIR moves the offset on or ends the listing
        body = fs.ok(F.FUSE_READDIR, entry.nodeid, F.fuse_read_in.pack(fh=fh, offset=offset, size=4096))
        if not body:
            break
        try:
            ents = F.parse_dirents(body)
        except ValueError as e:
            require(False, CLAUSE_FUSE, "READDIR reply is not a list of fuse_dirent", observed=str(e))
        seen += [n.decode("utf-8", "replace") for _, _, n, _ in ents]
        require(ents[-1][1] > offset, CLAUSE_FUSE, "READDIR offsets do not move on", expected=f"> {offset}", observed=ents[-1][1])
        offset = ents[-1][1]
    fs.release(F.FUSE_RELEASEDIR, entry.nodeid, fh)
    listed = set(seen) - {".", ".."}
    require(listed == names, CLAUSE_FUSE, "READDIR does not list the files made", expected=sorted(names), observed=sorted(listed))


def _open_new_file(session, stem: str, data: bytes, flags: int):
    """A file made in the shared directory, then looked up and opened over FUSE."""
    share = shared_dir(session.driver)
    name = fresh_name(stem)
    share.create_file(name, data)
    fs = _session(session)
    entry, _ = fs.lookup(F.FUSE_ROOT_ID, name)
    return share, name, fs, entry, fs.open(F.FUSE_OPEN, entry.nodeid, flags)


@pytest.mark.clause(CLAUSE_RW)
def test_open_read_write_release(session):
    """FUSE_READ and FUSE_WRITE work (5.11.6.4: whether or not a DAX window exists): what READ
    gives is the file's data, and what WRITE wrote is in the file on the host side."""
    data = os.urandom(3000)
    share, name, fs, entry, fh = _open_new_file(session, "rw", data, os.O_RDWR)
    got = fs.read(entry.nodeid, fh, 0, len(data))
    require(got == data, CLAUSE_RW, "READ does not give the file's data", expected=f"{len(data)} bytes made by the test",
            observed=f"{len(got)} bytes, {'same' if got == data[: len(got)] else 'different'} prefix")
    new = os.urandom(100)
    body = fs.ok(F.FUSE_WRITE, entry.nodeid, F.fuse_write_in.pack(fh=fh, offset=500, size=len(new)) + new, F.fuse_write_out.size)
    written = F.fuse_write_out.unpack(body).size
    require(written == len(new), CLAUSE_RW, "WRITE did not take all bytes", expected=len(new), observed=written)
    again = fs.read(entry.nodeid, fh, 500, len(new))
    require(again == new, CLAUSE_RW, "READ after WRITE does not give the bytes written", expected=new[:16].hex(),
            observed=f"{len(again)} bytes: {again[:16].hex()}, the old data is {data[500:516].hex()}")
    fs.release(F.FUSE_RELEASE, entry.nodeid, fh)
    expect = data[:500] + new + data[600:]
    require(share.read_file(name) == expect, CLAUSE_RW, "the file on the host side lacks what WRITE wrote")


@pytest.mark.clause(CLAUSE_FUSE)
def test_read_reply_within_size(session):
    """A READ of ``size`` bytes answers with at most ``size`` bytes, however much room the driver
    gave (FUSE: read returns up to size bytes); here the reply buffer has room for the whole file."""
    data = os.urandom(2000)
    _, _, fs, entry, fh = _open_new_file(session, "rsize", data, os.O_RDONLY)
    got = fs.read(entry.nodeid, fh, 100, 10, room=F.fuse_out_header.size + len(data))
    fs.release(F.FUSE_RELEASE, entry.nodeid, fh)
    require(len(got) <= 10, CLAUSE_FUSE, "READ of 10 bytes at offset 100 answered with more than 10 bytes",
            expected="at most 10 bytes", observed=f"{len(got)} bytes ({'the file from offset 100 on' if got == data[100 : 100 + len(got)] else 'other data'})")


@pytest.mark.clause(CLAUSE_FUSE)
def test_unknown_opcode_gets_enosys(session):
    fs = _session(session)
    r = fs.send(F.FUSE_UNUSED_OPCODE, F.FUSE_ROOT_ID)
    require(r.error == errno.ENOSYS, CLAUSE_FUSE, "an opcode FUSE does not define is not answered ENOSYS",
            expected=f"-{errno.ENOSYS} (ENOSYS)", observed=f"-{r.error}")


@pytest.mark.clause(CLAUSE_FUSE)
def test_error_replies_match_host_errno(session):
    """LOOKUP of a missing name, OPENDIR of a file, OPEN O_RDWR of a directory: the FUSE error is
    the errno the host gives for the same operation on the same object."""
    share = shared_dir(session.driver)
    f, d = fresh_name("errf"), fresh_name("errd")
    share.create_file(f, b"x")
    share.create_dir(d)
    fs = _session(session)
    cases = [("lookup", fresh_name("missing"), None)]
    fe, _ = fs.lookup(F.FUSE_ROOT_ID, f)
    de, _ = fs.lookup(F.FUSE_ROOT_ID, d)
    cases += [("opendir", f, fe.nodeid), ("open-rdwr", d, de.nodeid)]
    for op, name, nodeid in cases:
        host = share.host_errno(op, name)
        if op == "lookup":
            r = fs.send(F.FUSE_LOOKUP, F.FUSE_ROOT_ID, name.encode() + b"\0")
        else:
            code = F.FUSE_OPENDIR if op == "opendir" else F.FUSE_OPEN
            r = fs.send(code, nodeid, F.fuse_open_in.pack(flags=os.O_RDONLY if op == "opendir" else os.O_RDWR))
            if r.error == 0 and len(r.body) >= F.fuse_open_out.size:
                fs.release(F.FUSE_RELEASEDIR if op == "opendir" else F.FUSE_RELEASE, nodeid, F.fuse_open_out.unpack(r.body).fh)
        require(r.error == host, CLAUSE_FUSE, f"{op} of {name!r}: FUSE error differs from the host's",
                expected=f"{errno.errorcode.get(host, host)} ({host})", observed=f"{errno.errorcode.get(r.error, r.error)} ({r.error})")
