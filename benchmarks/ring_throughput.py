#!/usr/bin/env python3
"""Ring throughput against the model devices: descriptors per second and batch latency (p50, p99).

    python3 benchmarks/ring_throughput.py [--seconds 0.5] [--repeat 5] [--json out.json] \\
        [--layout split] [--device rng] [--mode notify] [--batch 64] [--cpu 0]

Rows: split and packed layouts (packed only when virtio/packed_queue.py is there), notify-driven and
threaded model, batch sizes 1, 16, 64, 256; rng through the batch API (add_batch /
wait_used_batch), blk through the per-buffer API (add / wait_used) as a second row set. Every used
elem is validated either way (id in flight and not repeated, len within the buffer, used idx step).
A batch is: make ``batch`` buffers available, kick, wait until all are used; its latency is that
round trip. Buffers are allocated once and reused, as a driver's buffer pool would be.

Notify-driven rows run pinned to one CPU (``os.sched_setaffinity``): the device runs inside the
kick, so that is the single-core figure. Threaded rows run on every CPU the process may use.
Each row is measured ``--repeat`` times and the fastest run is reported (all runs' rates are in
the JSON): on a shared VM even a plain numpy loop runs ~1.8x slower in phases lasting tens of ms.
``--json`` writes the figures; ``pytest --throughput-json`` puts them into the HTML report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np

from targets.registry import open_target, parse_target
from virtio import constants as C
from virtio.buffers import Sg, SgArray
from virtio.driver import VirtioDriver, VqInfo
from virtio.workloads import workload_for

SCHEMA = "virtio-conformance/throughput/1"
BATCHES = (1, 16, 64, 256)
GOAL = 2_000_000  # descriptors/s, split ring, batch 64, notify-driven model, one core


def packed_available() -> str | None:
    """None if the packed driver queue can be benchmarked, else why not."""
    try:
        from virtio.packed_queue import PackedVirtqueue  # noqa: F401
    except ImportError as e:
        return f"virtio/packed_queue.py not importable ({e})"
    return None


def bring_up(device: str, mode: str, layout: str):
    ops = open_target(parse_target(f"model:{device},mode={mode}"))
    try:
        d = VirtioDriver(ops)
        f = d.wanted_features()
        if layout == "packed":
            if not d.device_features() >> C.VIRTIO_F_RING_PACKED & 1:
                raise RuntimeError(f"model:{device} does not offer VIRTIO_F_RING_PACKED")
            f |= 1 << C.VIRTIO_F_RING_PACKED
        else:
            f &= ~(1 << C.VIRTIO_F_RING_PACKED)
        if not d.negotiate(f):
            raise RuntimeError(f"model:{device} refused features {f:#x}")
        vqs = d.find_vqs([VqInfo(n) for n in d.default_vq_names()])
        d.driver_ok()
        return ops, d, vqs
    except Exception:
        ops.close()
        raise


def measure(layout: str, device: str, mode: str, batch: int, seconds: float, warmup: float) -> dict:
    ops, d, vqs = bring_up(device, mode, layout)
    try:
        work = workload_for(d, vqs, 5.0)
        vq = work.vq
        if mode == "notify":
            vq.disable_cb()  # the device answers inside the kick: nothing to be interrupted for
        # threaded: interrupts stay on, so a waiting driver is woken by the device's notification
        use_batch = device == "rng"
        if use_batch:
            # rng: one 8-byte device-writable descriptor per buffer, each buffer its own memory.
            ndesc = 1
            batch = min(batch, vq.num)
            base = vq.mem.alloc(8 * batch, 8)
            bufs = (SgArray(base + 8 * np.arange(batch, dtype=np.uint64), 8),)

            def one_batch() -> None:
                vq.add_batch((), bufs, batch)
                vq.kick()
                vq.wait_used_batch(batch, 5.0)  # validates every used elem
        else:
            out, in_ = work.light_buffers()
            ndesc = len(out) + len(in_)
            batch = min(batch, vq.num // ndesc)
            assert all(isinstance(s, Sg) for s in out + in_)

            def one_batch() -> None:
                for _ in range(batch):
                    vq.add(out, in_)
                vq.kick()
                vq.wait_used(batch, 5.0)  # get_buf validates every used elem

        pc = time.perf_counter
        end = pc() + warmup
        while pc() < end:
            one_batch()
        lat = []
        c0 = time.process_time()
        t0 = pc()
        end = t0 + seconds
        while True:
            s = pc()
            one_batch()
            e = pc()
            lat.append(e - s)
            if e >= end:
                break
        elapsed = e - t0
        cpu = time.process_time() - c0
        buffers = batch * len(lat)
        p50, p99 = np.percentile(np.array(lat) * 1e6, [50, 99])
        return {
            "layout": layout,
            "mode": mode,
            "device": device,
            "batch": batch,
            "descs_per_s": round(buffers * ndesc / elapsed, 1),
            "p50_us": round(float(p50), 2),
            "p99_us": round(float(p99), 2),
            "api": "batch" if use_batch else "per-buffer",
            "buffers_per_s": round(buffers / elapsed, 1),
            "descs_per_buffer": ndesc,
            "descs_per_cpu_s": round(buffers * ndesc / cpu, 1) if cpu > 0 else None,
        }
    finally:
        ops.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="measured time per run (default 0.5)")
    ap.add_argument("--warmup", type=float, default=0.2, help="unmeasured time per row first (default 0.2)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per row; the fastest is reported (default 5)")
    ap.add_argument("--layout", action="append", choices=("split", "packed"), help="default both (packed if present)")
    ap.add_argument("--device", action="append", choices=("rng", "blk"), help="default rng and blk")
    ap.add_argument("--mode", action="append", choices=("notify", "threaded"), help="default both")
    ap.add_argument("--batch", type=int, action="append", help=f"default {' '.join(map(str, BATCHES))}")
    ap.add_argument("--cpu", type=int, help="CPU the notify-driven rows are pinned to (default: the first this process may use)")
    ap.add_argument("--json", metavar="PATH", help="write the figures here (for pytest --throughput-json)")
    a = ap.parse_args()

    notes = []
    layouts = a.layout or ["split", "packed"]
    if "packed" in layouts and (why := packed_available()):
        layouts = [x for x in layouts if x != "packed"]
        notes.append(f"packed rows skipped: {why}")
    all_cpus = sorted(os.sched_getaffinity(0))
    if a.cpu is None:
        a.cpu = all_cpus[0]  # e.g. the CPU `taskset -c N` gave
    if a.cpu not in all_cpus:
        sys.exit(f"--cpu {a.cpu} is not one this process may run on ({all_cpus})")
    print(f"notify rows: pinned to CPU {a.cpu} (os.sched_setaffinity; the model device runs inside the kick)")
    print(f"threaded rows: CPUs {all_cpus} (the model device is a second thread)")
    print("every used elem validated: rng through add_batch/wait_used_batch, blk through add/wait_used")
    print(f"each row: fastest of {max(1, a.repeat)} runs of {a.seconds:g} s (the JSON keeps every run's rate)")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs "
          "(descs/cpu-s: per second of this process's CPU time, less sensitive to other load)")
    print(f"{'layout':7} {'mode':9} {'device':6} {'api':10} {'batch':>5} {'desc/buf':>8} {'buffers/s':>11} {'descs/s':>11} "
          f"{'p50 us':>9} {'p99 us':>9} {'descs/cpu-s':>12}")
    rows = []
    for layout in layouts:
        for device in a.device or ["rng", "blk"]:
            for mode in a.mode or ["notify", "threaded"]:
                os.sched_setaffinity(0, {a.cpu} if mode == "notify" else set(all_cpus))
                for batch in a.batch or BATCHES:
                    try:
                        runs = [measure(layout, device, mode, batch, a.seconds, a.warmup) for _ in range(max(1, a.repeat))]
                        r = max(runs, key=lambda x: x["descs_per_s"])
                        r["runs_descs_per_s"] = [x["descs_per_s"] for x in runs]
                    except Exception as e:  # a layout still being built must not hide the others
                        notes.append(f"{layout} {device} {mode} batch {batch}: {type(e).__name__}: {e}")
                        print(f"{layout:7} {mode:9} {device:6} {'-':10} {batch:5d}   failed: {type(e).__name__}: {e}", flush=True)
                        continue
                    if r["batch"] != batch and not any(f"{layout} {device}: batch {batch} capped" in n for n in notes):
                        notes.append(f"{layout} {device}: batch {batch} capped to {r['batch']} "
                                     "(queue size / descriptors per buffer)")
                    rows.append(r)
                    print(f"{r['layout']:7} {r['mode']:9} {r['device']:6} {r['api']:10} {r['batch']:5d} "
                          f"{r['descs_per_buffer']:8d} {r['buffers_per_s']:11,.0f} {r['descs_per_s']:11,.0f} "
                          f"{r['p50_us']:9.1f} {r['p99_us']:9.1f} {r['descs_per_cpu_s'] or 0:12,.0f}", flush=True)
    os.sched_setaffinity(0, set(all_cpus))
    goal_key = ("split", "notify", "rng", 64)
    goal_row = next((r for r in rows if (r["layout"], r["mode"], r["device"], r["batch"]) == goal_key), None)
    if goal_row is not None:
        verdict = "met" if goal_row["descs_per_s"] >= GOAL else "NOT met"
        notes.append(f"goal {GOAL:,} descs/s (split, batch 64, notify-driven, one core): "
                     f"{goal_row['descs_per_s']:,.0f} -> {verdict}")
    for n in notes:
        print("note:", n)
    if a.json:
        setup = {
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "notify_cpu": a.cpu,
            "threaded_cpus": all_cpus,
            "seconds_per_run": a.seconds,
            "runs_per_row": max(1, a.repeat),
            "reported_run": "fastest",
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
            "cpus_online": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "notes": notes,
        }
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump({"schema": SCHEMA, "setup": setup, "rows": rows}, fh, indent=2)
            fh.write("\n")
        print(f"figures written: {a.json}")


if __name__ == "__main__":
    main()
