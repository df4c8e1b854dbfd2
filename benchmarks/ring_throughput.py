#!/usr/bin/env python3
"""Split-ring throughput against the model devices: descriptors per second, batch 1 and 64.

    python3 benchmarks/ring_throughput.py [--seconds 2] [--device rng] [--mode notify]

Every used elem is validated by the driver side (id in flight, len within the buffer, idx step),
as in the suites; buffers are allocated once and reused, as a driver's buffer pool would be.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from targets.registry import open_target, parse_target  # noqa: E402
from virtio.driver import VirtioDriver  # noqa: E402
from virtio.workloads import workload_for  # noqa: E402


def measure(device: str, mode: str, batch: int, seconds: float) -> dict:
    ops = open_target(parse_target(f"model:{device},mode={mode}"))
    try:
        d = VirtioDriver(ops)
        vqs = d.initialize()
        work = workload_for(d, vqs, 5.0)
        vq = work.vq
        vq.disable_cb()
        out, in_ = work.light_buffers()
        ndesc = len(out) + len(in_)
        batch = min(batch, vq.num // ndesc)
        done = 0
        lat = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            s = time.perf_counter()
            for _ in range(batch):
                vq.add(out, in_)
            vq.kick()
            vq.wait_used(batch, 5.0)
            lat.append(time.perf_counter() - s)
            done += batch
        elapsed = time.perf_counter() - t0
        lat.sort()
        return {
            "device": device, "mode": mode, "batch": batch, "buffers": done, "descs_per_buffer": ndesc,
            "buffers_per_s": done / elapsed, "descs_per_s": done * ndesc / elapsed,
            "batch_p50_us": lat[len(lat) // 2] * 1e6, "batch_p99_us": lat[int(len(lat) * 0.99)] * 1e6,
        }
    finally:
        ops.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--device", action="append", help="model device(s); default rng and blk")
    ap.add_argument("--mode", action="append", help="notify and/or threaded; default both")
    ap.add_argument("--batch", type=int, action="append", help="default 1 and 64")
    a = ap.parse_args()
    print(f"{'device':8} {'mode':9} {'batch':>5} {'desc/buf':>8} {'buffers/s':>11} {'descs/s':>11} {'p50 us':>9} {'p99 us':>9}")
    for device in a.device or ["rng", "blk"]:
        for mode in a.mode or ["notify", "threaded"]:
            for batch in a.batch or [1, 64]:
                r = measure(device, mode, batch, a.seconds)
                print(f"{r['device']:8} {r['mode']:9} {r['batch']:5d} {r['descs_per_buffer']:8d} {r['buffers_per_s']:11,.0f} "
                      f"{r['descs_per_s']:11,.0f} {r['batch_p50_us']:9.1f} {r['batch_p99_us']:9.1f}", flush=True)


if __name__ == "__main__":
    main()
