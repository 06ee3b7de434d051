"""Inference floor: the model's raw batched forward pass against the worker's end-to-end throughput.

In one run: the forward pass alone, in this process (``Predictor.forward``, the compiled call the
worker makes), at batch 1, 8 and 32; then real Celery workers (bench/stack.py) turning stored image
bytes into stored predictions with heatmaps, with 1 and then 2 worker processes. The machine is shared,
so each round is paired with the forward pass alone at the worker's batch size, timed right before and
right after it: the ratio is taken per round. Prints Markdown tables: throughputs, the ratio, and where
the workers' time went (from the per-batch timing line each worker logs).

    python bench/inference.py                          # shipped model, or the untrained stand-in
    python bench/inference.py --model models/lite0-cam-v1 --workers 1 2 --images 256 --rounds 3
    python bench/inference.py --backend embedded --workers 1
    python bench/inference.py --workers 1 --max-batch 32 --py-spy bench/out/flame   # (pip install py-spy)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import running_stack, table
from bench.workload import (
    load_average,
    model_card,
    model_path,
    sample_images,
    seed_radiographs,
    send,
    wait_for_predictions,
)

# The worker's per-batch line (worker/tasks.py): "classified 8 radiograph(s) in 412 ms: read 3, ..."
BATCH_LINE = re.compile(r"classified (\d+) radiograph\(s\) in ([\d.]+) ms: (.*)$")


class RawForward:
    """The model's forward pass alone, in this process (Predictor.forward: the compiled call the worker
    makes) on prepared inputs: images per second, median over calls."""

    def __init__(self, path: Path) -> None:
        from classifier.predict import Predictor

        self.predictor = Predictor.load(path, warmup=True)

    def measure(self, batch_sizes: list[int], *, seconds: float) -> dict[int, float]:
        import numpy as np

        size = self.predictor.input_spec.size
        rng = np.random.default_rng(0)
        result = {}
        for batch_size in batch_sizes:
            batch = rng.random((batch_size, size, size, 1), dtype=np.float32)
            self.predictor.forward(batch)  # not timed
            times: list[float] = []
            deadline = time.perf_counter() + seconds
            while len(times) < 3 or time.perf_counter() < deadline:
                started = time.perf_counter()
                self.predictor.forward(batch)
                times.append(time.perf_counter() - started)
            result[batch_size] = batch_size / statistics.median(times)
        return result


def multiply_adds(path: Path) -> tuple[float, int]:
    """Multiply-adds of one image's forward pass (all its test-time-augmentation views), and the views."""
    import keras

    from classifier.layers import TTA_VIEWS
    from classifier.predict import Predictor

    predictor = Predictor.load(path)
    views = len(TTA_VIEWS[str(predictor.card["architecture"].get("tta", "none"))])

    def count(model: keras.Model) -> float:
        total = 0.0
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                total += count(layer)
            elif isinstance(layer, keras.layers.DepthwiseConv2D):
                _, h, w, c = layer.output.shape
                total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
            elif isinstance(layer, keras.layers.Conv2D):
                _, h, w, c = layer.output.shape
                total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1]
            elif isinstance(layer, keras.layers.Dense):
                total += layer.input.shape[-1] * layer.units
        return total

    core = [layer for layer in predictor.model.layers if isinstance(layer, keras.Model)]
    per_view = sum(count(c) for c in core) if core else count(predictor.model)
    return per_view * views, views


def worker_phases(logs: list[str]) -> dict[str, float]:
    """Sum of each phase (ms) over the batches the workers logged, plus the image count."""
    totals: dict[str, float] = {"images": 0.0, "batches": 0.0, "total": 0.0}
    for line in logs:
        match = BATCH_LINE.search(line)
        if not match:
            continue
        totals["images"] += int(match.group(1))
        totals["batches"] += 1
        totals["total"] += float(match.group(2))
        for part in match.group(3).split(","):
            name, _, value = part.strip().rpartition(" ")
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def _rounded(values: dict[int, float]) -> dict[int, float]:
    return {k: round(v, 1) for k, v in values.items()}


def configured_max_batch() -> int:
    """CLASSIFIER_MAX_BATCH as the application reads it (environment, else the settings default)."""
    code = "from django.conf import settings; print(settings.CLASSIFIER_MAX_BATCH)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.test_settings"}
    output = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(output.strip().splitlines()[-1])


def profile_workers(stack: Any, folder: Path, workers: int) -> list[subprocess.Popen[bytes]]:
    """py-spy (pip install py-spy) on each worker's pool child, writing a flame graph per child."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    folder.mkdir(parents=True, exist_ok=True)
    profilers = []
    for process in stack.workers():
        pid = process.popen.pid
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out = folder / f"{workers}-workers-{process.name}-{child}.svg"
            profilers.append(
                subprocess.Popen([spy, "record", "-p", child, "-o", str(out), "-r", "50", "--nonblocking"])
            )
    time.sleep(1)  # attached before the messages go out
    return profilers


@dataclass
class Round:
    throughput: float  # worker images/s
    raw: float  # forward pass alone at the worker's batch size, just before and after (mean)
    load: float

    @property
    def ratio(self) -> float:
        return self.throughput / self.raw


def end_to_end(
    args: argparse.Namespace, path: Path, workers: int, images: list[Path], raw: RawForward, max_batch: int
) -> tuple[list[Round], dict[str, float], int]:
    threads = max(1, (os.cpu_count() or 2) // workers)
    extra_env = {"CLASSIFIER_MODEL": str(path), "CLASSIFIER_CPU_THREADS": str(threads)}
    if args.max_batch:
        extra_env["CLASSIFIER_MAX_BATCH"] = str(args.max_batch)
    rounds: list[Round] = []
    failed = 0
    with running_stack(backend=args.backend, workers=workers, extra_env=extra_env) as stack:
        # A warm-up round (not counted): every worker process sees full batches first.
        warm = seed_radiographs(stack, images[: 64 * workers], prefix=f"warm{workers}")
        send(stack, warm)
        wait_for_predictions(stack, warm)
        for process in stack.workers():
            process.log.clear()
        for index in range(args.rounds):
            ids = seed_radiographs(stack, images, prefix=f"w{workers}r{index}")
            # The machine is shared: the forward pass alone is timed right before and right after each
            # round (the workers idle meanwhile), and the round is compared with those two.
            raw_before = raw.measure([max_batch], seconds=args.pair_seconds)[max_batch]
            load = os.getloadavg()[0]
            profilers = profile_workers(stack, args.py_spy, workers) if args.py_spy and index == 0 else []
            sent = send(stack, ids)
            result = wait_for_predictions(stack, ids)
            for profiler in profilers:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl+C
                profiler.wait(timeout=60)
            raw_after = raw.measure([max_batch], seconds=args.pair_seconds)[max_batch]
            stored = result["stored"]
            failed += result["failed"]
            elapsed = max(row[1] for row in stored) - sent
            rounds.append(Round(len(stored) / elapsed, (raw_before + raw_after) / 2, load))
            print(
                f"  {workers} worker(s), round {index + 1}: {len(stored)} predictions in {elapsed:.1f} s "
                f"= {rounds[-1].throughput:.1f} images/s; forward pass alone {raw_before:.1f} / "
                f"{raw_after:.1f} images/s before / after (load {load_average()})",
                flush=True,
            )
        phases = worker_phases([line for p in stack.workers() for line in p.log])
    return rounds, phases, failed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="", help="model directory (default: shipped, else stand-in)")
    parser.add_argument("--backend", choices=["services", "embedded"], default="services")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes to try")
    parser.add_argument("--images", type=int, default=256, help="radiographs per measured round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch", type=int, default=0, help="CLASSIFIER_MAX_BATCH (default: setting)")
    parser.add_argument("--raw-seconds", type=float, default=6.0, help="timing per raw batch size")
    parser.add_argument(
        "--pair-seconds", type=float, default=3.0, help="forward-pass timing before and after each round"
    )
    parser.add_argument(
        "--py-spy", type=Path, default=None, metavar="DIR", help="profile the workers' first round into DIR"
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    path, description = model_path(args.model or None)
    card = model_card(path)
    images = sample_images(args.images)
    macs, views = multiply_adds(path)
    print(
        f"model: {description}, input {card['input']['size']} px, TTA {card['architecture'].get('tta')}: "
        f"{macs / 1e9:.2f} G multiply-adds per image ({views} view(s))"
    )
    print(f"machine: {os.cpu_count()} cores; load before: {load_average()}", flush=True)

    max_batch = args.max_batch or configured_max_batch()
    raw = RawForward(path)
    raw_before = raw.measure(args.batch_sizes, seconds=args.raw_seconds)
    print(f"forward pass alone (start): {_rounded(raw_before)} images/s (load {load_average()})", flush=True)
    runs = {}
    for workers in args.workers:
        runs[workers] = end_to_end(args, path, workers, images, raw, max_batch)
    raw_after = raw.measure(args.batch_sizes, seconds=args.raw_seconds)
    print(f"forward pass alone (end): {_rounded(raw_after)} images/s (load {load_average()})\n", flush=True)

    print("Forward pass alone (Predictor.forward, compiled), at the start and at the end of the run:")
    print(
        table(
            [
                {
                    "batch": b,
                    "images/s (start)": raw_before[b],
                    "images/s (end)": raw_after[b],
                    "ms/image": 2000 / (raw_before[b] + raw_after[b]),
                }
                for b in args.batch_sizes
            ]
        )
    )
    print()
    print(
        f"Worker end to end (stored image -> stored prediction with heatmap), batches of up to {max_batch}:"
    )
    rows = []
    for workers, (rounds, _, failed) in runs.items():
        ratios = [r.ratio for r in rounds]
        rows.append(
            {
                "workers": workers,
                "backend": args.backend,
                "max batch": max_batch,
                "rounds × images": f"{len(rounds)} × {args.images}",
                "images/s (median)": statistics.median(r.throughput for r in rounds),
                "images/s (min–max)": f"{min(r.throughput for r in rounds):.1f}–"
                f"{max(r.throughput for r in rounds):.1f}",
                f"forward alone, batch {max_batch}": statistics.median(r.raw for r in rounds),
                "worker / forward (median)": f"{100 * statistics.median(ratios):.0f} %",
                "(min–max)": f"{100 * min(ratios):.0f}–{100 * max(ratios):.0f} %",
                "failed": failed,
                "load (1 min)": f"{statistics.median(r.load for r in rounds):.1f}",
            }
        )
    print(table(rows))
    print()
    phase_rows = []
    for workers, (_, phases, _) in runs.items():
        if not phases.get("images"):
            continue
        n = phases["images"]
        row: dict[str, Any] = {"workers": workers, "mean batch": n / phases["batches"]}
        for name, value in phases.items():
            if name not in ("images", "batches"):
                row[f"{name} ms/image"] = value / n
        phase_rows.append(row)
    if phase_rows:
        print("Worker time per image, from the workers' per-batch log lines:")
        print(table(phase_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
