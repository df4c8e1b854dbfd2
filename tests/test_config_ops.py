"""The config-ops seam: the 18 members exist, a base transport declares each unsupported (never a
silent success), and the model transport implements them."""

from __future__ import annotations

import threading

import pytest

from targets.config_ops import CONFIG_OPS, ConfigOps, ShmRegion
from targets.registry import open_target, parse_target
from virtio import constants as C
from virtio.driver import VirtioDriver, VqInfo
from virtio.errors import UnsupportedOp

ARGS = {
    "get": (0, 1), "set": (0, b"\0"), "set_status": (1,), "find_vqs": ([],), "finalize_features": (0,),
    "set_vq_affinity": (None, None), "get_vq_affinity": (None,), "get_shm_region": (0,),
    "disable_vq_and_reset": (None,), "enable_vq_after_reset": (None,),
}


def test_eighteen_ops_named_as_in_linux():
    assert len(CONFIG_OPS) == 18 and len(set(CONFIG_OPS)) == 18


@pytest.mark.parametrize("op", CONFIG_OPS)
def test_base_transport_declares_every_op_unsupported(op):
    with pytest.raises(UnsupportedOp) as e:
        getattr(ConfigOps(), op)(*ARGS.get(op, ()))
    assert e.value.op in (op, "get_extended_features")


@pytest.fixture
def blk():
    ops = open_target(parse_target("model:blk"))
    yield ops
    ops.close()


def test_model_transport_ops(blk):
    d = VirtioDriver(blk)
    d.reset()
    assert blk.get_status() == 0
    ext = blk.get_extended_features()
    assert blk.get_features() == ext & ((1 << 64) - 1) and ext >> C.VIRTIO_F_VERSION_1 & 1
    assert blk.get(0, 8) == d.config_snapshot(["capacity"])["capacity"].to_bytes(8, "little")
    g = blk.generation()
    blk.trigger_config_change()
    assert blk.generation() != g
    d.negotiate(d.wanted_features(refuse=1 << C.VIRTIO_F_RING_RESET))
    vqs = blk.find_vqs([VqInfo("requestq", size=64)])
    assert vqs[0].num == 64
    blk.set_vq_affinity(vqs[0], {1})
    assert blk.get_vq_affinity(vqs[0]) == {1}
    blk.synchronize_cbs()
    assert blk.bus_name() == "model:blk"
    assert blk.get_shm_region(0) == ShmRegion(0x80_0000_0000, 4096) and blk.get_shm_region(1) is None
    with pytest.raises(UnsupportedOp, match="RING_RESET"):
        blk.disable_vq_and_reset(vqs[0])
    blk.del_vqs()
    assert blk.vqs == []


def test_synchronize_cbs_waits_for_a_running_callback():
    """After synchronize_cbs returns, a callback that was running has finished (Linux semantics)."""
    ops = open_target(parse_target("model:rng,mode=threaded"))
    try:
        d = VirtioDriver(ops)
        done = []
        entered = threading.Event()

        def callback(vq):
            entered.set()
            done.append(vq.get_buf())

        d.negotiate(d.wanted_features())
        vqs = d.find_vqs([VqInfo("requestq", callback)])
        d.driver_ok()
        vqs[0].add([], [16])
        vqs[0].kick()
        assert entered.wait(5)
        ops.synchronize_cbs()
        assert done
    finally:
        ops.close()


def test_generation_loop_never_returns_a_torn_config():
    """A device thread resizes the console while the driver reads cols and rows: every snapshot the
    generation loop (2.5.1) returns is one of the two real sizes, never half of each."""
    ops = open_target(parse_target("model:console"))
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            ops.trigger_config_change()

    t = threading.Thread(target=churn)
    try:
        d = VirtioDriver(ops)
        d.reset()
        t.start()
        seen = {tuple(d.config_snapshot(["cols", "rows"], attempts=10_000).values()) for _ in range(3000)}
    finally:
        stop.set()
        t.join()
        ops.close()
    assert seen <= {(80, 25), (132, 43)}, seen
