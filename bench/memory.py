"""Memory: the worker's resident memory with the model loaded, and over 10,000 predictions.

The real thing, not a loop in this process: the whole application (bench/stack.py) with one Celery
worker; 10,000 queued radiographs (a few hundred real radiographs uploaded through the upload service,
the rest new studies pointing at those stored files, so that seeding takes seconds), all sent at once.
While the worker drains them, the resident memory (VmRSS) of its main process and of its pool child
(where the model lives) is sampled. Prints RSS after every 1,000 predictions and the growth per 1,000
over the second half (after allocators and caches have warmed up).

    python bench/memory.py                                   # 10,000 predictions, ~7 min on 2 cores
    python bench/memory.py --predictions 2000 --model models/lite0-cam-v1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import running_stack, table
from bench.workload import load_average, model_path, query, sample_images, send


def rss_of(pid: int) -> float:
    """VmRSS of one process, MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def predicted(stack: Any) -> int:
    return int(query(stack, "SELECT count(*) FROM radiology_prediction")[0][0])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--predictions", type=int, default=10_000)
    parser.add_argument("--distinct-images", type=int, default=200, help="real radiographs uploaded")
    parser.add_argument("--every", type=int, default=1000, help="report RSS every this many predictions")
    parser.add_argument("--backend", choices=["services", "embedded"], default="services")
    parser.add_argument("--max-batch", type=int, default=0, help="CLASSIFIER_MAX_BATCH (default: setting)")
    parser.add_argument("--model", default="", help="model directory (default: shipped, else stand-in)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    path, description = model_path(args.model or None)
    print(f"model: {description}; machine: {os.cpu_count()} cores; load before: {load_average()}", flush=True)
    extra_env = {"CLASSIFIER_MODEL": str(path), "CLASSIFIER_CPU_THREADS": str(os.cpu_count() or 2)}
    if args.max_batch:
        extra_env["CLASSIFIER_MAX_BATCH"] = str(args.max_batch)
    samples: list[dict[str, Any]] = []
    with running_stack(backend=args.backend, workers=1, extra_env=extra_env) as stack:
        worker = stack.workers()[0].popen.pid
        child = children(worker)[0]
        listing = Path(stack.env["FRACTURE_REVIEW_VAR_DIR"]) / "memory-images.json"
        images = sample_images(min(args.distinct_images, args.predictions), seed=2)
        listing.write_text(json.dumps([str(p) for p in images]))
        time.sleep(2)  # the model is loaded and warmed (running_stack waited for it); let it settle
        loaded = {"predictions": 0, "child MiB": rss_of(child), "main MiB": rss_of(worker)}
        seeded = stack.manage(
            "seed_queued_studies",
            str(listing),
            "--prefix",
            "MEM",
            "--total",
            str(args.predictions),
            timeout=1800,
        )
        ids = json.loads(seeded.strip().splitlines()[-1])
        print(
            f"{len(ids)} radiographs queued; worker child {child}: {loaded['child MiB']:.0f} MiB", flush=True
        )
        samples.append({**loaded, "seconds": 0.0, "load": os.getloadavg()[0]})
        started = time.perf_counter()
        send(stack, ids)
        next_mark = args.every
        while True:
            time.sleep(1.0)
            done = predicted(stack)
            if child not in children(worker):
                raise RuntimeError(
                    "the worker's pool child was replaced: the figures would mix two processes"
                )
            if done >= next_mark or done >= len(ids):
                samples.append(
                    {
                        "predictions": done,
                        "child MiB": rss_of(child),
                        "main MiB": rss_of(worker),
                        "seconds": time.perf_counter() - started,
                        "load": os.getloadavg()[0],
                    }
                )
                print(f"  {done} predictions: child {samples[-1]['child MiB']:.0f} MiB", flush=True)
                while next_mark <= done:
                    next_mark += args.every
            if done >= len(ids):
                break
        failed = query(stack, "SELECT count(*) FROM radiology_radiograph WHERE status = 'failed'")[0][0]
    print()
    print(
        table(
            [
                {
                    "predictions": s["predictions"],
                    "worker child RSS MiB": s["child MiB"],
                    "worker main RSS MiB": s["main MiB"],
                    "elapsed s": s["seconds"],
                    "load (1 min)": f"{s['load']:.1f}",
                }
                for s in samples
            ]
        )
    )
    half = [s for s in samples if s["predictions"] >= samples[-1]["predictions"] / 2]
    if len(half) >= 2:
        growth = (half[-1]["child MiB"] - half[0]["child MiB"]) / (
            (half[-1]["predictions"] - half[0]["predictions"]) / 1000
        )
        print(
            f"\nchild growth over the second half: {growth:+.2f} MiB per 1,000 predictions; "
            f"first 1,000: {samples[1]['child MiB'] - samples[0]['child MiB']:+.0f} MiB; failed: {failed}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
