#!/usr/bin/env python3
"""Wall time of the full suites against every model target, serial and with pytest -n 2.

    python3 benchmarks/suite_walltime.py [--runs 3]

Prints each run and the median; the speedup is serial median / parallel median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def once(extra: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider", *extra],
                       cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"suite run failed ({' '.join(extra)}):\n{r.stdout[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    results = {}
    for label, extra in (("serial", ["-p", "no:xdist"]), ("-n 2", ["-n", "2"])):
        times = [once(extra) for _ in range(a.runs)]
        results[label] = statistics.median(times)
        print(f"{label:7} runs {', '.join(f'{t:.2f}s' for t in times)}  median {results[label]:.2f}s", flush=True)
    print(f"speedup at 2 workers: {results['serial'] / results['-n 2']:.2f}x")


if __name__ == "__main__":
    main()
