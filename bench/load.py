"""Load: many concurrent uploads against the running application with real workers.

Every upload must be accepted or refused with a reason, every accepted radiograph predicted exactly
once, and no response may be a 5xx. Prints counts and latencies; exits non-zero if an invariant fails.

    python bench/load.py                      # full size: 500 uploads, 20 clients, 2 workers
    python bench/load.py --uploads 40 --clients 8    # the size CI runs (tests/e2e/test_load.py)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NotRequired, TypedDict

import cv2
import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import Stack, percentile, running_stack, table

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "images" / "kaggle_fractured_1.jpg"
BAD = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "bad" / "truncated_at_source.jpg"


class UploadOutcome(TypedDict):
    """One upload as the client saw it (status 0: the connection dropped before a response)."""

    index: int
    bad: bool
    status: int
    seconds: float
    accepted: bool
    refused: bool
    error: NotRequired[str]


def _image(index: int) -> bytes:
    base = cv2.imread(str(FIXTURE), cv2.IMREAD_GRAYSCALE)
    if base is None:
        raise FileNotFoundError(FIXTURE)
    base[:4, :16] = np.frombuffer(index.to_bytes(16, "big"), np.uint8)  # a distinct SHA-256 per upload
    return cv2.imencode(".png", base)[1].tobytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=500)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=["services", "embedded"], default="services")
    parser.add_argument("--bad-fraction", type=float, default=0.05, help="share of uploads that are corrupt")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for all predictions")
    parser.add_argument("--model", default="", help="model directory (default: the shipped model)")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON (for tests)")
    args = parser.parse_args()

    step = max(1, round(1 / args.bad_fraction)) if args.bad_fraction > 0 else 0
    plan = [(i, bool(step) and i % step == step - 1) for i in range(args.uploads)]
    payloads = {i: (BAD.read_bytes() if bad else _image(i)) for i, bad in plan}
    extra_env = {"CLASSIFIER_CPU_THREADS": str(max(1, 2 // args.workers))}
    if args.model:
        extra_env["CLASSIFIER_MODEL"] = args.model
    with running_stack(backend=args.backend, workers=args.workers, extra_env=extra_env) as stack:
        sessions = [stack.session() for _ in range(args.clients)]
        local = threading.local()
        counter = iter(range(10**9))
        lock = threading.Lock()

        def upload(item: tuple[int, bool]) -> UploadOutcome:
            index, bad = item
            if not hasattr(local, "session"):
                with lock:
                    local.session = sessions[next(counter) % len(sessions)]
            session = local.session
            started = time.perf_counter()
            try:
                name = f"r{index}.{'jpg' if bad else 'png'}"
                response = stack.upload(
                    session,
                    prefix="LOAD",
                    index=index,
                    filename=name,
                    data=payloads[index],
                    timeout=120,
                    allow_redirects=False,
                )
            except requests.ConnectionError as error:
                # Recorded, not raised: one dropped connection must not hide the other uploads' outcome.
                return {
                    "index": index,
                    "bad": bad,
                    "status": 0,
                    "seconds": time.perf_counter() - started,
                    "accepted": False,
                    "refused": False,
                    "error": repr(error),
                }
            elapsed = time.perf_counter() - started
            accepted = response.status_code == 302 and "/studies/" in response.headers.get("Location", "")
            # A refusal names the file and says why (the page lists "<file>: <reason>").
            refused_with_reason = response.status_code == 400 and f"r{index}." in response.text
            return {
                "index": index,
                "bad": bad,
                "status": response.status_code,
                "seconds": elapsed,
                "accepted": accepted,
                "refused": refused_with_reason and not accepted,
            }

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            results = list(pool.map(upload, plan))
        upload_wall = time.perf_counter() - started

        accepted = [r for r in results if r["accepted"]]
        refused = [r for r in results if r["refused"]]
        server_errors = [r for r in results if r["status"] >= 500]
        dropped = [r for r in results if r["status"] == 0]
        unexplained = [r for r in results if not r["accepted"] and not r["refused"] and r["status"] != 0]

        deadline = time.monotonic() + args.timeout
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            counts = json.loads(stack.manage("shell", "-c", _COUNT_SCRIPT).strip().splitlines()[-1])
            if counts["queued"] + counts["running"] == 0:
                break
            time.sleep(2)
        predict_wall = time.perf_counter() - started

    latencies = [r["seconds"] for r in results]
    summary = {
        "uploads": args.uploads,
        "clients": args.clients,
        "workers": args.workers,
        "backend": args.backend,
        "accepted": len(accepted),
        "refused with reason": len(refused),
        "5xx": len(server_errors),
        "dropped": len(dropped),
        "unexplained": len(unexplained),
        "upload p50 s": percentile(latencies, 50),
        "upload p95 s": percentile(latencies, 95),
        "upload p99 s": percentile(latencies, 99),
        "uploads/s": args.uploads / upload_wall,
        "all predicted after s": predict_wall,
    }
    print(table([summary]))
    print(table([counts]))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "counts": counts}, indent=2))
    failures = []
    if server_errors:
        failures.append(f"{len(server_errors)} responses were 5xx")
    if dropped:
        failures.append(f"{len(dropped)} uploads dropped without a response: {dropped[0]['error']}")
    if unexplained:
        failures.append(f"{len(unexplained)} uploads neither accepted nor refused with a reason")
    if counts.get("radiographs") != len(accepted):
        failures.append(
            f"{counts.get('radiographs')} radiographs stored for {len(accepted)} accepted uploads"
        )
    if counts.get("predicted") != len(accepted) or counts.get("predictions") != len(accepted):
        failures.append("not every accepted radiograph was predicted exactly once")
    if counts.get("max_predictions_per_radiograph", 0) > 1:
        failures.append("a radiograph was predicted twice")
    if any(r["bad"] and r["accepted"] for r in results):
        failures.append("a corrupt upload was accepted")
    for failure in failures:
        print("FAIL:", failure)
    if failures:
        _print_server_logs(stack)
    return 1 if failures else 0


_TROUBLE = re.compile(r"ERROR|CRITICAL|WARNING|Traceback|Booting worker|exiting|TIMEOUT|SIGKILL|signal", re.I)


def _print_server_logs(stack: Stack) -> None:
    """What each server process said that could explain a failure, then its last lines."""
    for process in stack.processes:
        lines = list(process.log)
        trouble = [line for line in lines if _TROUBLE.search(line)]
        print(f"--- {process.name}: exit {process.popen.poll()}, {len(lines)} lines, {len(trouble)} of note")
        print("\n".join(trouble[-60:]))
        print(f"--- {process.name}: last lines")
        print("\n".join(lines[-30:]))


_COUNT_SCRIPT = """
import json
from django.db.models import Count, Max
from radiology.models import Radiograph, Prediction
per = Prediction.objects.values('radiograph').annotate(n=Count('id')).aggregate(m=Max('n'))['m'] or 0
print(json.dumps({
    'radiographs': Radiograph.objects.count(),
    'queued': Radiograph.objects.filter(status='queued').count(),
    'running': Radiograph.objects.filter(status='running').count(),
    'predicted': Radiograph.objects.filter(status='predicted').count(),
    'failed': Radiograph.objects.filter(status='failed').count(),
    'predictions': Prediction.objects.count(),
    'max_predictions_per_radiograph': per,
}))
"""


if __name__ == "__main__":
    sys.exit(main())
