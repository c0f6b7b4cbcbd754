"""Native thread pools (BLAS) around execute(): what a cold run costs with NumPy loaded.

Run by hand (not in the test suite)::

    python benchmarks/bench_native.py              # 5 fresh processes per case
    python benchmarks/bench_native.py --repeat 9

Each timing runs in a fresh interpreter (``python -c``), as a user's script would: a cold pool, a
cold store connection, NumPy imported or not. Cases:

- ``10 µs, no NumPy`` / ``10 µs, NumPy loaded``: ``execute_planned(busy, [1e-5] * 100_000)`` on
  processes. With NumPy loaded, OpenBLAS's helper threads used to spin in the parent (capped and
  restored around each fork) or in each new worker (capped after the fork): the parent's CPU
  during the call and the workers' busy time show it.
- ``numpy-blas``: 300 × 250² matmuls (``benchmarks/suite_workloads.matmul``), planned on threads:
  the run's wall time shows whether OpenBLAS's helper, left spinning by the dry run's uncapped
  calls, shared the cores with the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

FINE = """
import json, time, sys
if {numpy}:
    import numpy
import psutil
from amorsize.api import execute_planned
from amorsize.workloads import busy
me = psutil.Process()
data = [0.00001] * 100_000
time.sleep(0.3)
cpu = me.cpu_times(); started = time.perf_counter()
results, report, plan = execute_planned(busy, data)
wall = time.perf_counter() - started; after = me.cpu_times()
print(json.dumps({{"wall": wall, "parent_cpu": after.user + after.system - cpu.user - cpu.system,
                  "busy": report.busy_seconds, "plan": f"{{plan.executor}} x {{plan.n_jobs}}"}}))
"""

BLAS = """
import json, time, sys
sys.path.insert(0, {here!r})
import numpy
from suite_workloads import matmul
from amorsize.api import execute_planned
time.sleep(0.3)
started = time.perf_counter()
results, report, plan = execute_planned(matmul, list(range(300)))
wall = time.perf_counter() - started
print(json.dumps({{"wall": wall, "run": report.wall_seconds, "predicted": report.predicted_seconds,
                  "plan": f"{{plan.executor}} x {{plan.n_jobs}}"}}))
"""


def fresh(script: str) -> dict[str, object]:
    """Run ``script`` in a new interpreter; return the JSON line it prints."""
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per case (default 5)")
    args = parser.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"command: python benchmarks/bench_native.py --repeat {args.repeat}  (medians; load {load})")
    print()
    print("| case | wall | parent CPU | workers busy | plan |")
    print("|---|---|---|---|---|")
    for label, numpy in (("10 µs, no NumPy", False), ("10 µs, NumPy loaded", True)):
        runs = [fresh(FINE.format(numpy=numpy)) for _ in range(args.repeat)]
        print(
            f"| {label} | {statistics.median(float(r['wall']) for r in runs):.3f}s "
            f"| {statistics.median(float(r['parent_cpu']) for r in runs):.3f}s "
            f"| {statistics.median(float(r['busy']) for r in runs):.3f}s | {runs[0]['plan']} |"
        )
    print()
    print("| case | wall | run | predicted run | plans |")
    print("|---|---|---|---|---|")
    runs = [fresh(BLAS.format(here=HERE)) for _ in range(args.repeat)]
    plans = ", ".join(sorted({str(r["plan"]) for r in runs}))
    print(
        f"| numpy-blas | {statistics.median(float(r['wall']) for r in runs):.3f}s "
        f"| {statistics.median(float(r['run']) for r in runs):.3f}s "
        f"| {statistics.median(float(r['predicted']) for r in runs):.3f}s | {plans} |"
    )


if __name__ == "__main__":
    main()
