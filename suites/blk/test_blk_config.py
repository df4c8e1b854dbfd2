"""virtio-blk configuration and identity duties (VIRTIO 1.4, 5.2.4, 5.2.5.2, 5.2.6.2).

The padding bytes of struct virtio_blk_config, and the lifetime figures of GET_LIFETIME: both are
values the device fills in, checked against what the chapter defines.
"""

from __future__ import annotations

import pytest

from fixtures.devices import need
from virtio import blk as B
from virtio import constants as C
from virtio.checks import require
from virtio.messages import BLK_LIFETIME, blk_outhdr

pytestmark = pytest.mark.device_types("blk")

CLAUSE_PADDING_ZERO = "dev.blk.device-initialization.3"
CLAUSE_LIFETIME_DEFINED = "dev.blk.device-operation.14"


@pytest.mark.clause(CLAUSE_PADDING_ZERO)
def test_padding_reads_zero(driver):
    """5.2.5.2: unused0 and unused1 are initialized to 0. A padding byte is judged only where the
    device's config space holds it: a field the offered features make present lies beyond it."""
    offered = driver.device_features()
    pads = [f for f in driver.layout.padding_present(offered) if f.name in ("unused0", "unused1")]
    if not pads:
        pytest.skip("no field the device offers lies beyond unused0 or unused1: the padding is not in its config space")
    for f in pads:
        raw = driver.ops.get(f.offset, f.size)
        require(raw == bytes(f.size), CLAUSE_PADDING_ZERO, f"config padding {f.name} (offset {f.offset}, {f.size} byte(s))",
                expected=bytes(f.size).hex(" "), observed=bytes(raw).hex(" "))


@pytest.mark.clause(CLAUSE_LIFETIME_DEFINED)
def test_get_lifetime_has_no_reserved_value(session):
    """5.2.6.2: with VIRTIO_BLK_F_LIFETIME the figures of GET_LIFETIME hold no reserved value:
    pre_eol_info 0-3, each lifetime estimate 0-11 (5.2.6)."""
    need(session.driver, C.VIRTIO_BLK_F_LIFETIME)
    work = session.start(want=(C.VIRTIO_BLK_F_LIFETIME,))
    c = work.vq.add([blk_outhdr(C.VIRTIO_BLK_T_GET_LIFETIME)], [BLK_LIFETIME.size, 1], "GET_LIFETIME")
    work.vq.kick()
    work.vq.wait_used(1, session.timeout, awaited="GET_LIFETIME")
    got = work.vq.read_in(c, c.writable)
    if got[-1] != C.VIRTIO_BLK_S_OK:
        pytest.skip(f"GET_LIFETIME completed with {B.status_name(got[-1])}; its figures cannot be judged")
    pre_eol, est_a, est_b = BLK_LIFETIME.unpack(got[: BLK_LIFETIME.size])
    require(pre_eol in B.PRE_EOL_INFO_NAMES, CLAUSE_LIFETIME_DEFINED, "GET_LIFETIME pre_eol_info",
            expected=f"one of {sorted(B.PRE_EOL_INFO_NAMES)}", observed=pre_eol)
    for name, value in (("device_lifetime_est_typ_a", est_a), ("device_lifetime_est_typ_b", est_b)):
        require(value <= B.LIFETIME_EST_MAX, CLAUSE_LIFETIME_DEFINED, f"GET_LIFETIME {name}",
                expected=f"0..{B.LIFETIME_EST_MAX}", observed=value)
