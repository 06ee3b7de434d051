"""The shipped model on this machine: one radiograph's cost to the worker, and radiographs per second.

Real radiographs from the test fixtures, through ``Predictor.predict`` exactly as the worker calls it
(letterbox, the serving graph with its test-time augmentation, calibration, bands, boxes, heatmap), at
batch 1 (latency, median and p95 over repeated calls) and at batch 8 / 32 (throughput), after a warm-up.
Also the model file's size, its load time and the process's peak memory. Prints a Markdown table.

    python bench/model.py                       # the shipped model
    python bench/model.py --model models/lite0-cam-v1 --seconds 20
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "images"


def main(argv: list[str] | None = None) -> int:
    import os

    from classifier.decoding import decode_grayscale
    from classifier.predict import Predictor, default_model_path

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--seconds", type=float, default=10.0, help="time spent per batch size")
    args = parser.parse_args(argv)

    images = [
        decode_grayscale(p.read_bytes()) for p in sorted(FIXTURES.glob("*.jpg")) if "truncated" not in p.name
    ]
    started = time.perf_counter()
    predictor = Predictor.load(args.model, warmup=True)
    load_seconds = time.perf_counter() - started
    rows = []
    for batch_size in (1, 8, 32):
        batch = [images[i % len(images)] for i in range(batch_size)]
        predictor.predict(batch)  # trace this shape
        times: list[float] = []
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline or len(times) < 3:
            t0 = time.perf_counter()
            predictor.predict(batch)
            times.append(time.perf_counter() - t0)
        per_call = statistics.median(times)
        p95 = sorted(times)[int(0.95 * (len(times) - 1))]
        rows.append((batch_size, per_call * 1000, p95 * 1000, batch_size / per_call, len(times)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size_mb = (Path(args.model) / "model.keras").stat().st_size / 1e6
    print(
        f"model {predictor.version} ({size_mb:.1f} MB file, loaded and warmed in {load_seconds:.1f} s), "
        f"input {predictor.input_spec.size} px, TTA {predictor.card['architecture'].get('tta')}, "
        f"{os.cpu_count()} CPU cores, peak RSS {peak_mb:.0f} MB"
    )
    print()
    print("| batch | ms per call (median) | p95 | radiographs / s | calls |")
    print("|---|---|---|---|---|")
    for batch_size, median_ms, p95_ms, rate, calls in rows:
        print(f"| {batch_size} | {median_ms:.0f} | {p95_ms:.0f} | {rate:.1f} | {calls} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
