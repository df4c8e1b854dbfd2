"""VIRTIO 1.4, 2.10: shared memory regions, as the transport enumerates them."""

from __future__ import annotations

import pytest

from virtio.checks import require

pytestmark = pytest.mark.usefixtures("target_spec")

MAX_SHMID = 256  # region ids are 8 bits wide on the transports that have them (4.1.4.7)


@pytest.mark.clause("def.shm.regions")
def test_shared_memory_regions_well_formed(driver):
    regions = {}
    for shmid in range(MAX_SHMID):
        r = driver.ops.get_shm_region(shmid)
        if r is not None:
            regions[shmid] = r
    if not regions:
        pytest.skip("the device exposes no shared memory region")
    for shmid, r in regions.items():
        require(r.len > 0, "def.shm.regions", f"shared memory region {shmid} is empty", observed=f"addr {r.addr:#x} len {r.len}")
        again = driver.ops.get_shm_region(shmid)
        require((again.addr, again.len) == (r.addr, r.len), "def.shm.regions", f"region {shmid} moved between two reads", expected=f"{r.addr:#x}+{r.len:#x}", observed=f"{again.addr:#x}+{again.len:#x}")
    spans = sorted((r.addr, r.addr + r.len, i) for i, r in regions.items())
    for (a0, e0, i0), (a1, e1, i1) in zip(spans, spans[1:]):
        require(a1 >= e0, "def.shm.regions", f"regions {i0} and {i1} overlap", observed=f"[{a0:#x},{e0:#x}) and [{a1:#x},{e1:#x})")
