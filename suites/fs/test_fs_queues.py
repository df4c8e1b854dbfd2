"""VIRTIO 1.4, 5.11.6.2: the hiprio queue is served whatever the request queues are doing."""

from __future__ import annotations

import pytest

from virtio import fuse as F
from virtio.checks import require
from virtio.errors import DeviceTimeout

from .fuse_session import FuseSession

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("fs")]
CLAUSE_HIPRIO = "dev.fs.device-operation.device-operation-high-priority-queue.1"


@pytest.mark.clause(CLAUSE_HIPRIO)
def test_hiprio_served_while_request_queue_busy(session):
    """Requests wait on the request queue (made available, published, not yet kicked); a FORGET on
    hiprio must still be used. Then the request queue is kicked and every request must come back.
    (A device polling its rings may answer the requests first: that is allowed too.)"""
    fs = FuseSession(session.start(), session.timeout)
    fs.init()
    rq = fs.requestq
    pending = []
    for _ in range(min(8, rq.num)):
        fs.unique += 2
        pending.append(rq.add([F.request(F.FUSE_GETATTR, fs.unique, F.FUSE_ROOT_ID, F.fuse_getattr_in.pack())],
                              [F.fuse_out_header.size + F.ATTR_OUT_SIZE], "getattr"))
    rq.publish()  # visible to the device, but no notification yet
    c = fs.hiprio.add([F.request(F.FUSE_FORGET, fs.unique + 1, F.FUSE_ROOT_ID, F.fuse_forget_in.pack(nlookup=0))], [], "forget")
    fs.hiprio.kick()
    try:
        fs.hiprio.release(fs.hiprio.wait_chain(c, session.timeout, awaited="a FORGET on hiprio while requests wait on the request queue"))
    except DeviceTimeout as e:
        require(False, CLAUSE_HIPRIO, "hiprio buffer not used while request queue buffers were available",
                expected="the FORGET used", observed=str(e), queue=fs.hiprio.name)
    rq.kick()
    for p in pending:
        rq.release(rq.wait_chain(p, session.timeout, awaited="GETATTR requests queued behind the hiprio test"))
