"""Latency: one radiograph uploaded on an idle system until its prediction can be seen, p50 and p95.

For each backend (PostgreSQL + Redis, and the embedded SQLite + file broker) the whole application runs
(bench/stack.py: gunicorn, one celery worker with the model loaded and warm, beat). One clinician uploads
one real radiograph through the web form at a time, waiting for each to finish; per upload:

- upload: the form POST and the study page it redirects to (what the browser waits for);
- stored: upload start -> the prediction committed (its row, polled every 20 ms from this process);
- visible: upload start -> the study page shows it: the page itself if the prediction was there when it
  rendered, else the first of the page's status polls (static/js/study-status.js schedule) after it.

    python bench/latency.py                                  # both backends, 30 uploads each
    python bench/latency.py --backend embedded --uploads 50 --model models/lite0-cam-v1
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import percentile, running_stack, table
from bench.workload import ROOT, epoch_seconds, load_average, model_path, query, sample_images

STATUS_JS = ROOT / "static" / "js" / "review.js"  # the study page's script, which polls its status


def poll_schedule() -> tuple[float, float]:
    """(first poll, interval) in seconds, read from the page's script so the figure follows it."""
    source = STATUS_JS.read_text()
    # The first poll while a radiograph is processing, then every POLL_BUSY.
    first = re.search(r"window\.setTimeout\(poll, processing\(\) \? (\d+) : POLL_IDLE\);", source)
    interval = re.search(r"const POLL_BUSY = (\d+);", source)
    if not first or not interval:
        raise RuntimeError(f"cannot read the polling schedule from {STATUS_JS}")
    return int(first.group(1)) / 1000, int(interval.group(1)) / 1000


def visible_after(page_loaded: float, stored: float, first: float, interval: float) -> float:
    """When the page shows a prediction stored at `stored` (seconds since the upload started)."""
    if stored <= page_loaded:
        return page_loaded  # rendered with the result already in it
    tick = page_loaded + first
    while tick < stored:
        tick += interval
    return tick


def upload_once(stack: Any, session: Any, image: Path, index: int) -> dict[str, float]:
    started_wall = time.time()
    started = time.perf_counter()
    response = stack.upload(
        session, prefix="LAT", index=index, filename=image.name, data=image.read_bytes(), timeout=60
    )
    page_loaded = time.perf_counter() - started
    match = re.search(r"/studies/(\d+)/", response.url)
    if response.status_code != 200 or not match:
        raise RuntimeError(f"upload {index} failed: {response.status_code} {response.url}")
    study = int(match.group(1))
    deadline = time.monotonic() + 60
    while True:
        rows = query(
            stack,
            "SELECT p.created_at FROM radiology_prediction p JOIN radiology_radiograph r "
            "ON r.id = p.radiograph_id WHERE r.study_id = ?",
            (study,),
        )
        if rows:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"no prediction for study {study} after 60 s")
        time.sleep(0.02)

    stored = epoch_seconds(rows[0][0]) - started_wall
    return {"upload": page_loaded, "stored": stored}


def measure(args: argparse.Namespace, backend: str, path: Path) -> dict[str, Any]:
    extra_env = {"CLASSIFIER_MODEL": str(path), "CLASSIFIER_CPU_THREADS": str(os.cpu_count() or 2)}
    images = sample_images(args.uploads + args.warmup, seed=1)
    first, interval = poll_schedule()
    samples: list[dict[str, float]] = []
    loads = []
    rng = random.Random(0)
    with running_stack(backend=backend, workers=1, extra_env=extra_env) as stack:
        session = stack.session()
        for index, image in enumerate(images):
            # An idle system (nothing else in flight); a random pause, so that uploads do not fall into
            # step with a polling interval.
            time.sleep(args.pause * rng.uniform(0.5, 1.5))
            loads.append(os.getloadavg()[0])
            sample = upload_once(stack, session, image, index)
            sample["visible"] = visible_after(sample["upload"], sample["stored"], first, interval)
            if index >= args.warmup:
                samples.append(sample)
    row: dict[str, Any] = {"backend": backend, "uploads": len(samples)}
    for name in ("upload", "stored", "visible"):
        values = [s[name] for s in samples]
        row[f"{name} p50 s"] = percentile(values, 50)
        row[f"{name} p95 s"] = percentile(values, 95)
    row["page polls"] = f"{first:g} s, then every {interval:g} s"
    row["load (1 min)"] = f"{statistics.median(loads):.1f}"
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backend", choices=["services", "embedded"], nargs="+", default=["services", "embedded"]
    )
    parser.add_argument("--uploads", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3, help="uploads first, not counted")
    parser.add_argument("--pause", type=float, default=1.0, help="mean seconds idle before each upload")
    parser.add_argument("--model", default="", help="model directory (default: shipped, else stand-in)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    path, description = model_path(args.model or None)
    print(f"model: {description}; machine: {os.cpu_count()} cores; load before: {load_average()}", flush=True)
    rows = [measure(args, backend, path) for backend in args.backend]
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
