"""Model governance at scale: the comparison and monitoring pages over 30,000 radiographs read by two
model versions (one active, one shadow), and verify_audit over a million audit events.

Runs in one process on its own database (a fresh SQLite file under a temporary folder, or the database
in DATABASE_URL, which it fills: use a benchmark database). Prints tables; asserts nothing.

    python bench/governance.py                      # 10,000 studies x 3 radiographs, 1,000,000 events
    python bench/governance.py --studies 2000 --events 100000 --requests 20
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the data a previous run left in DATABASE_URL's database"
    )
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="fr-bench-governance-"))
    os.environ.setdefault("FRACTURE_REVIEW_VAR_DIR", str(var))
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DJANGO_DEBUG"] = "0"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from radiology.governance.models import ModelVersion

    print(f"database: {connection.vendor} ({connection.settings_dict['NAME']})")
    call_command("migrate", verbosity=0)
    if not (args.reuse and ModelVersion.objects.filter(version="shadow-bench").exists()):
        fill(args.studies)
    measure(args)
    return 0


def fill(studies: int) -> None:
    import numpy as np
    from django.core.management import call_command
    from django.utils import timezone

    from radiology.governance.models import ModelVersion, ShadowPrediction
    from radiology.models import Prediction, Radiograph

    started = time.perf_counter()
    call_command("generate_scale_data", studies=studies, model_versions=2, verbosity=0)
    print(f"generate_scale_data: {studies} studies in {time.perf_counter() - started:.0f} s")

    # Two registered versions: the newest visible one active, a shadow reading every predicted radiograph.
    active_version = (
        Prediction.objects.order_by("-created_at").values_list("model_version", flat=True).first()
    )
    assert active_version is not None, "generate_scale_data made no predictions"
    now = timezone.now()
    ModelVersion.objects.create(
        version=active_version,
        artifact_path="-",
        artifact_sha256="0" * 64,
        card={},
        status="active",
        status_changed_at=now,
        activated_at=now,
    )
    ModelVersion.objects.create(
        version="shadow-bench",
        artifact_path="-",
        artifact_sha256="1" * 64,
        card={},
        status="shadow",
        status_changed_at=now,
    )
    rng = np.random.default_rng(0)
    rows = list(Prediction.objects.values_list("radiograph_id", "probability", "band"))
    shadow = []
    for radiograph_id, probability, band in rows:
        p = float(np.clip(probability + rng.normal(0, 0.08), 0.0, 1.0))
        shadow.append(
            ShadowPrediction(
                radiograph_id=radiograph_id,
                model_version="shadow-bench",
                probability=p,
                label="fractured" if p >= 0.5 else "not_fractured",
                band=band,
                threshold=0.5,
                threshold_sensitive=0.3,
                threshold_specific=0.7,
                inference_ms=10.0,
            )
        )
    ShadowPrediction.objects.bulk_create(shadow, batch_size=5000, ignore_conflicts=True)
    radiographs = Radiograph.objects.count()
    print(
        f"{radiographs} radiographs, {Prediction.objects.count()} visible predictions, "
        f"{ShadowPrediction.objects.count()} shadow predictions"
    )


def measure(args: argparse.Namespace) -> None:
    from django.db import connection
    from django.test import Client

    from radiology.governance.audit_chain import verify_chain
    from radiology.governance.monitoring import monitoring_refresh
    from radiology.models import AuditEvent, Radiograph
    from tests.factories import AdminFactory

    print(f"{Radiograph.objects.count()} radiographs")
    started = time.perf_counter()
    cells = monitoring_refresh()
    print(f"nightly monitoring summary: {cells} cells in {time.perf_counter() - started:.1f} s")

    client = Client()
    admin: Any = AdminFactory(username=f"bench.admin.{secrets.token_hex(3)}")  # factory_boy: a User
    client.force_login(admin)

    # The Models page never computes the comparison: it shows the one the worker stored and asks for a new
    # one when the evidence changed. Here the request is counted, and the worker's task is run in-process.
    from django.core.cache import cache

    from radiology import dispatch
    from worker.governance_tasks import refresh_comparisons

    requested: list[int] = []

    def count_the_request() -> bool:
        requested.append(1)
        return True

    dispatch.send_comparison_refresh = count_the_request
    cache.clear()  # this benchmark's own database: no comparison stored by an earlier run
    started = time.perf_counter()
    assert client.get("/audit/models/").status_code == 200
    print(f"models page before any comparison is stored: {(time.perf_counter() - started) * 1000:.0f} ms")
    started = time.perf_counter()
    computed = refresh_comparisons()
    print(
        f"refresh_comparisons (the worker's task, off-request): {computed} comparison(s) in "
        f"{time.perf_counter() - started:.1f} s; refresh requests sent by the page: {len(requested)}"
    )
    pages = [("models: comparison + gate", "/audit/models/")]
    pages += [
        (f"monitoring by {by}", f"/audit/monitoring/?by={by}")
        for by in ("body_region", "age_band", "sex", "site", "month")
    ]
    print("\n| page | first request (cold cache) ms | p50 ms | p95 ms | max ms | queries |")
    print("|---|---|---|---|---|---|")
    from django.db import reset_queries
    from django.test.utils import CaptureQueriesContext

    for name, path in pages:
        started = time.perf_counter()
        assert client.get(path).status_code == 200
        cold = (time.perf_counter() - started) * 1000
        times = []
        for _ in range(args.requests):
            reset_queries()
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        print(
            f"| {name} | {cold:.0f} | {statistics.median(times):.0f} | {percentile(times, 0.95):.0f} | "
            f"{max(times):.0f} | {len(queries)} |"
        )

    # The audit trail: N events appended through the chain, then verified.
    have = AuditEvent.objects.count()
    started = time.perf_counter()
    chunk = 10_000
    for start in range(0, max(0, args.events - have), chunk):
        n = min(chunk, args.events - have - start)
        AuditEvent.objects.bulk_create(
            [AuditEvent(action="export", details={"i": start + i, "what": "bench"}) for i in range(n)],
            batch_size=chunk,
        )
    total = AuditEvent.objects.count()
    print(
        f"\n{total} audit events "
        f"({time.perf_counter() - started:.0f} s to append {total - have} through the chain)"
    )
    started = time.perf_counter()
    report = verify_chain()
    seconds = time.perf_counter() - started
    print(
        f"verify_audit: {report.checked} events, ok={report.ok}, {seconds:.1f} s "
        f"({report.checked / seconds:,.0f} events/s)"
    )


if __name__ == "__main__":
    sys.exit(main())
