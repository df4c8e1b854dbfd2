"""VIRTIO 1.4, 5.4.6.2: the entropy device places one or more random bytes into each buffer, and
may use less than all of it.

The randomness test is a cheap sanity check -- no byte value throughout, no short repeating
cycle, no buffer a copy of another, no easy compression -- and no certification of randomness:
a device passing it may still supply poor entropy; one failing it supplies none worth the name.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from virtio.checks import require
from virtio.workloads import CLAUSE_USED_LEN, POISON, ring_clause, split_len

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("rng")]

CLAUSE = "dev.rng.device-operation.1"
SIZES = (1, 2, 7, 64, 511, 4096)  # writable bytes per buffer
SAMPLE = 16384  # bytes of entropy the randomness check looks at (at least)
SAMPLE_BUFFER = 512
MAX_PERIOD = 1024  # a cycle this short or shorter is caught
FILL = bytes([POISON]) * 8  # an 8-byte word still holding the fill: never written (random: 2^-64)
MAX_ROUNDS = 64  # batches of buffers asked for at most
MIN_DISTINCT = 128  # byte values 16 KiB of random bytes show (all 256, near certainly)
MAX_COMPRESSION = 0.9  # zlib output of random bytes is as long as its input


def _fill(vq, sizes, segments=1):
    chains = []
    for size in sizes:
        c = vq.add([], split_len(size, min(segments, size)), f"entropy {size}")
        for s in c.in_sgs:
            vq.mem.fill(s.addr, s.len, POISON)
        chains.append(c)
    return chains


@pytest.mark.clause(CLAUSE)
@pytest.mark.parametrize("segments", [1, 3], ids=["one-descriptor", "three-descriptors"])
def test_every_buffer_gets_at_least_one_byte(session, ring_layout, segments):
    """Each buffer comes back with a used len of 1 or more (and, checked by the queue for every
    used buffer, no more than its writable length: 2.7.8 / 2.8), whatever its size and split."""
    work = session.start()
    vq = work.vq
    need = sum(min(segments, s) for s in SIZES)
    sizes = SIZES if need <= vq.num else tuple(s for s in SIZES if s <= 64)
    chains = _fill(vq, sizes, segments)
    vq.kick()
    for c in chains:
        vq.wait_chain(c, session.timeout, awaited=f"entropy buffer of {c.writable} bytes ({segments} descriptors)")
        # With VIRTIO_F_IN_ORDER a batch reports only its last buffer's len (2.7.9): the others
        # were used whole.
        require(not c.len_reported or c.used_len >= 1, CLAUSE, "entropy buffer returned with no random byte in it",
                expected=f"used len 1..{c.writable}", observed=f"used len {c.used_len}", queue=vq.name)
        vq.release(c)


@pytest.mark.clause(CLAUSE, CLAUSE_USED_LEN)
def test_bytes_are_not_constant_or_a_short_cycle(session):
    """16 KiB of what the device reports as written, in the order the buffers were made
    available: not one byte value, no cycle of MAX_PERIOD bytes or less, no buffer equal to
    another, not compressible. A sanity check, not a randomness certification."""
    work = session.start()
    vq = work.vq
    parts: list[bytes] = []
    total = 0
    per = max(1, min(32, vq.num))
    for _ in range(MAX_ROUNDS):  # a device using little of each buffer gives a smaller sample
        if total >= SAMPLE:
            break
        chains = _fill(vq, [SAMPLE_BUFFER] * per)
        vq.kick()
        for c in chains:
            vq.wait_chain(c, session.timeout, awaited=f"entropy buffer of {SAMPLE_BUFFER} bytes")
            data = vq.read_in(c, c.used_len if c.len_reported else c.writable)
            vq.release(c)
            # Bytes claimed but never written are 2.7.8's failure, not the entropy's: judged first.
            untouched = [i for i in range(0, len(data) - 7, 8) if data[i : i + 8] == FILL]
            require(not untouched, ring_clause(vq, CLAUSE_USED_LEN), "used len covers bytes the device never wrote",
                    expected=f"all of the first {len(data)} bytes written", observed=f"bytes at {untouched[:4]} still hold the fill", queue=vq.name)
            parts.append(data)
            total += len(data)
    sample = np.frombuffer(b"".join(parts), dtype=np.uint8)
    if len(sample) < 4 * MAX_PERIOD:
        pytest.skip(f"{len(parts)} buffers of {SAMPLE_BUFFER} bytes brought {len(sample)} bytes: too few for the check")
    distinct = len(np.unique(sample))
    require(distinct >= MIN_DISTINCT, CLAUSE, f"{len(sample)} bytes of entropy show only {distinct} byte values",
            expected=f"at least {MIN_DISTINCT} of 256 values (no randomness certification)", observed=f"values {np.unique(sample)[:16].tolist()}...", queue=vq.name)
    for period in range(1, MAX_PERIOD + 1):
        same = not np.any(sample[period:] != sample[:-period])
        require(not same, CLAUSE, f"the entropy repeats with a period of {period} bytes",
                expected="no cycle of 1024 bytes or less (no randomness certification)",
                observed=f"{len(sample)} bytes, starting {sample[:16].tobytes().hex()}", queue=vq.name)
    whole = [p for p in parts if len(p) >= 16]
    dup = len(whole) - len(set(whole))
    require(not dup, CLAUSE, f"{dup} of {len(whole)} entropy buffers hold the same bytes as an earlier one",
            expected="every buffer's bytes different (no randomness certification)", observed=f"{dup} repeats", queue=vq.name)
    packed = len(zlib.compress(sample.tobytes(), 6))
    require(packed >= MAX_COMPRESSION * len(sample), CLAUSE, "the entropy compresses well: it has structure",
            expected=f"zlib output of at least {MAX_COMPRESSION:.0%} of the input", observed=f"{len(sample)} bytes -> {packed}", queue=vq.name)
