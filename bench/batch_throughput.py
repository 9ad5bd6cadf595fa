"""Items per second of a batch: 1 local worker process against 2 local workers and 2 Ray actors, in the same run.

    python bench/batch_throughput.py [--items 12] [--repeats 3] [--no-ray] [--inline]

The workload is CPU-bound: the shipped protect-image workflow as shipped (50 PGD steps against the encoder, two
20-step edits, metrics) over generated 32x32 images, one torch thread per worker. Every pool is started and
warmed up first (the pack loaded and the models cached in each worker: start-up is not what is measured), then
the timed batches alternate between the pools, --repeats times, each on fresh images into a fresh folder.
Prints items/s (min, median, max) per pool and the ratio of medians against 1 worker; on 2 free cores, 2 workers
should reach >= 1.7x. Ray runs a local instance (ray.init(num_cpus=2)), skipped when Ray is not installed.

On Linux it also prints, per pool, the workers' CPU seconds per item (the same for 1 and 2 workers when running
in parallel costs nothing extra) and how many cores the machine's other processes kept busy meanwhile (from
/proc): on a shared machine the ratio can only reach (cores left to the workers) / 1.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from graph.run import load_pack  # noqa: E402

load_pack()
from comfyui_genart.graph.batch import BatchPool, prepare_batch, worker_config  # noqa: E402

WORKFLOW = REPO / "workflows" / "protect-image.json"


def images(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "RGB").save(folder / f"im{i:03d}.png")


def cpu_seconds(pids: set[int]) -> float | None:
    """User + system CPU seconds of these processes so far (Linux /proc; None elsewhere or if one is gone)."""
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of proc(5))
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float | None:
    """CPU seconds every core of the machine has been busy (not idle or waiting on I/O) since boot."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=12, help="items per timed batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per pool, alternating")
    parser.add_argument("--no-ray", action="store_true", help="leave Ray out")
    parser.add_argument("--inline", action="store_true", help="also time this process running the items itself")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = Path(tempfile.mkdtemp(prefix="genart-batch-bench-"))
    pools: dict[str, BatchPool] = {}
    try:
        config = worker_config(input_dir=work / "input", output_dir=work / "output", temp_dir=work / "temp",
                               models_dirs=[REPO / "models"], threads=1)
        kinds = [("1 worker", "processes", 1), ("2 workers", "processes", 2)]
        if args.inline:
            kinds.insert(0, ("inline", "inline", None))
        if not args.no_ray:
            if importlib.util.find_spec("ray") is None:
                print("ray is not installed: the Ray pool is left out (pip install 'comfyui-genart[ray]')")
            else:
                kinds.append(("2 Ray actors", "ray", 2))
        batch_number = 0

        def batch(count: int) -> object:
            nonlocal batch_number
            batch_number += 1
            images(work / "input" / f"b{batch_number}", count, batch_number)
            return prepare_batch(WORKFLOW, for_each=[f"1.image=b{batch_number}/*.png"], config=config,
                                 name=f"b{batch_number}")

        started = time.perf_counter()
        for label, kind, workers in kinds:
            pools[label] = BatchPool(config, kind, workers, "local")  # type: ignore[arg-type]
            pools[label].start()
        for pool in pools.values():  # every worker up and its models cached
            pool.wait_ready()
            pool.run(batch(2 * (pool.backend.size or 1)))
        print(f"pools started and warmed up in {time.perf_counter() - started:.1f} s; timing {args.items} items "
              f"x {args.repeats} per pool")
        rates: dict[str, list[float]] = {label: [] for label in pools}
        cpu_per_item: dict[str, list[float]] = {label: [] for label in pools}
        # Cores busy with other processes during a batch (for the Ray pool, Ray's own daemons among them).
        others: dict[str, list[float]] = {label: [] for label in pools}
        for _ in range(args.repeats):
            for label, pool in pools.items():
                work_batch = batch(args.items)
                workers = {pid for pid in pool.pids.values() if pid}  # this process's own pid when inline
                ours = workers | {os.getpid()}
                snapshot = (cpu_seconds(workers), cpu_seconds(ours), machine_busy(), time.perf_counter())
                result = pool.run(work_batch)
                assert result.done == args.items, f"{label}: {result.failed} item(s) failed"
                rates[label].append(args.items / result.seconds)
                end = (cpu_seconds(workers), cpu_seconds(ours), machine_busy(), time.perf_counter())
                if None not in (*snapshot, *end):  # the same processes throughout, on Linux
                    used = [b - a for a, b in zip(snapshot, end, strict=True)]  # type: ignore[operator]
                    cpu_per_item[label].append(used[0] / args.items)
                    others[label].append((used[2] - used[1]) / used[3])
        base = statistics.median(rates["1 worker"])
        for label, values in rates.items():
            median = statistics.median(values)
            cpu = (f"   worker CPU s/item {statistics.median(cpu_per_item[label]):5.2f}, other processes "
                   f"{statistics.median(others[label]):4.2f} cores") if cpu_per_item[label] else ""
            print(f"{label:13s} items/s: min {min(values):6.2f}  median {median:6.2f}  max {max(values):6.2f}   "
                  f"ratio vs 1 worker {median / base:5.2f}x{cpu}")
        print(f"{os.cpu_count()} cores; load average over the last minute {os.getloadavg()[0]:.2f}")
    finally:
        for pool in pools.values():
            pool.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
