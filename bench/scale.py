"""Queue at scale: the review queue, the review page and the API lists over 10,000 studies in PostgreSQL.

Fills a benchmark database once (manage.py generate_scale_data: 10,000 studies, 30,000 radiographs,
predictions by three model versions, reviews), then, against gunicorn over real HTTP with a signed-in
clinician, times each page sequentially (p50, p95, max) and counts its SQL queries (Django test client
in a `manage.py shell` on the same database, which also gives the Python CPU time per request: unlike
wall-clock time, it does not depend on what else the machine is running). --explain prints EXPLAIN
ANALYZE of each page's slowest query.

    python bench/scale.py                         # creates fr_bench_scale on first use, then reuses it
    python bench/scale.py --requests 50 --explain
    python bench/scale.py --recreate --studies 20000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import PG_ADMIN_URL, _create_database, percentile, running_stack, table
from bench.workload import load_average, query

DATABASE = "fr_bench_scale"


def pages(stack: Any) -> list[tuple[str, str]]:
    """(name, path) of every page measured, with real ids, names and dates from the database."""
    awaiting = query(
        stack,
        "SELECT id FROM radiology_study WHERE state = 'awaiting_review' "
        "ORDER BY max_probability DESC, created_at LIMIT 1 OFFSET 200",
    )[0][0]
    reviewed = query(
        stack,
        "SELECT s.id FROM radiology_study s WHERE state = 'reviewed' AND radiograph_count >= 3 "
        "ORDER BY reviewed_at DESC LIMIT 1 OFFSET 1000",
    )[0][0]
    mrn, accession = query(
        stack,
        "SELECT p.mrn, s.accession_number FROM radiology_study s JOIN radiology_patient p "
        "ON p.id = s.patient_id ORDER BY s.id LIMIT 1 OFFSET 5000",
    )[0]
    studies = query(stack, "SELECT count(*) FROM radiology_study")[0][0]
    radiographs = query(stack, "SELECT count(*) FROM radiology_radiograph")[0][0]
    deep_queue = max(1, studies // 25 // 2)
    return [
        ("queue: awaiting review", "/queue/"),
        ("queue: processing", "/queue/?state=processing"),
        ("queue: reviewed", "/queue/?state=reviewed"),
        ("queue: failed", "/queue/?state=failed"),
        ("queue: all", "/queue/?state=all"),
        ("queue: all, wrist", "/queue/?state=all&body_region=wrist"),
        ("queue: reviewed, last 30 days", "/queue/?state=reviewed&date_from=" + _days_ago(30)),
        ("queue: search MRN", f"/queue/?state=all&q={mrn.lower()}"),
        ("queue: search accession", f"/queue/?state=all&q={accession}"),
        (f"queue: all, page {deep_queue}", f"/queue/?state=all&page={deep_queue}"),
        ("queue: live rows (25)", "/queue/rows/?ids=" + _ids(stack, 25)),
        ("review page (awaiting)", f"/studies/{awaiting}/"),
        ("review page (reviewed, 3 images)", f"/studies/{reviewed}/"),
        ("study status JSON", f"/studies/{awaiting}/status/"),
        ("API studies", "/api/v1/studies"),
        ("API studies awaiting", "/api/v1/studies?state=awaiting_review"),
        ("API studies verdict=fractured", "/api/v1/studies?verdict=fractured"),
        ("API studies search", f"/api/v1/studies?search={accession}"),
        (f"API studies page {studies // 50 // 2}", f"/api/v1/studies?page={max(1, studies // 50 // 2)}"),
        ("API radiographs", "/api/v1/radiographs"),
        ("API radiographs verdict+reviewed", "/api/v1/radiographs?verdict=fractured&reviewed=false"),
        (
            f"API radiographs page {radiographs // 50 // 2}",
            f"/api/v1/radiographs?page={max(1, radiographs // 50 // 2)}",
        ),
    ]


def _days_ago(days: int) -> str:
    import datetime as dt

    return (dt.date.today() - dt.timedelta(days=days)).isoformat()


def _ids(stack: Any, count: int) -> str:
    rows = query(stack, f"SELECT id FROM radiology_study ORDER BY created_at DESC LIMIT {int(count)}")
    return ",".join(str(row[0]) for row in rows)


# Runs inside `manage.py shell`: each page through Django's test client, counting its queries, then
# timing the Python CPU it costs the server (CPU time does not depend on what else the machine runs).
_COUNT_SCRIPT = """
import json, statistics, time
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
client = Client(SERVER_NAME="127.0.0.1")
client.force_login(get_user_model().objects.get(username="clinician"))
result = {{}}
for name, path in json.loads({pages!r}):
    client.get(path)  # warm (session, caches)
    with CaptureQueriesContext(connection) as captured:
        status = client.get(path).status_code
    queries = list(captured.captured_queries)  # (the next request clears the log)
    slowest = max(queries, key=lambda q: float(q["time"]), default={{"sql": "", "time": 0}})
    cpu = []
    for _ in range({repeats}):
        started = time.process_time()
        client.get(path)
        cpu.append(time.process_time() - started)
    result[name] = {{
        "cpu_ms": statistics.median(cpu) * 1000,
        "status": status,
        "queries": len(queries),
        "sql_ms": sum(float(q["time"]) for q in queries) * 1000,
        "slowest_sql": slowest["sql"],
        "slowest_ms": float(slowest["time"]) * 1000,
    }}
print(json.dumps(result))
"""


def count_queries(stack: Any, measured: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    output = stack.manage("shell", "-c", _COUNT_SCRIPT.format(pages=json.dumps(measured), repeats=10))
    return dict(json.loads(output.strip().splitlines()[-1]))


def time_pages(stack: Any, measured: list[tuple[str, str]], requests_per_page: int) -> dict[str, list[float]]:
    session = stack.session()
    timings: dict[str, list[float]] = {name: [] for name, _ in measured}
    for _, path in measured:
        for _ in range(3):  # warm: gunicorn workers, connections, template caches
            session.get(stack.base_url + path, timeout=60)
    # Round-robin rather than page after page, so that a burst of load elsewhere spreads over all pages.
    for _ in range(requests_per_page):
        for name, path in measured:
            started = time.perf_counter()
            response = session.get(stack.base_url + path, timeout=60)
            timings[name].append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {response.status_code}")
    return timings


def explain(stack: Any, sql: str) -> str:
    rows = query(stack, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql)
    return "\n".join(row[0] for row in rows)


def ensure_data(args: argparse.Namespace) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
    if exists and not args.recreate:
        return
    _create_database(DATABASE)
    with running_stack(database=DATABASE, keep_database=True, start_workers=False) as stack:
        started = time.perf_counter()
        print(
            stack.manage(
                "generate_scale_data",
                "--studies",
                str(args.studies),
                "--radiographs-per-study",
                str(args.radiographs_per_study),
            ).strip()
        )
        print(f"(generate_scale_data took {time.perf_counter() - started:.1f} s including Django start)")
        query(stack, "VACUUM ANALYZE")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--radiographs-per-study", type=int, default=3)
    parser.add_argument("--recreate", action="store_true", help="generate the data again")
    parser.add_argument("--requests", type=int, default=60, help="timed requests per page")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE each page's slowest query")
    parser.add_argument("--goal-ms", type=float, default=150.0)
    args = parser.parse_args()

    ensure_data(args)
    with running_stack(
        database=DATABASE, keep_database=True, start_workers=False, web_workers=args.web_workers
    ) as stack:
        counts = query(
            stack,
            "SELECT (SELECT count(*) FROM radiology_study), (SELECT count(*) FROM radiology_radiograph), "
            "(SELECT count(*) FROM radiology_prediction), (SELECT count(*) FROM radiology_review)",
        )[0]
        print(
            "data: {:,} studies, {:,} radiographs, {:,} predictions, {:,} reviews".format(*counts),
            f"| machine: {os.cpu_count()} cores, load {load_average()}",
            flush=True,
        )
        measured = pages(stack)
        queries = count_queries(stack, measured)
        loads = [os.getloadavg()[0]]
        timings = time_pages(stack, measured, args.requests)
        loads.append(os.getloadavg()[0])
        rows = []
        for name, _ in measured:
            values = timings[name]
            p95 = percentile(values, 95) * 1000
            rows.append(
                {
                    "page": name,
                    "p50 ms": percentile(values, 50) * 1000,
                    "p95 ms": p95,
                    "max ms": max(values) * 1000,
                    "server CPU ms": queries[name]["cpu_ms"],
                    "queries": queries[name]["queries"],
                    "SQL ms": queries[name]["sql_ms"],
                    "slowest query ms": queries[name]["slowest_ms"],
                    "goal": "ok" if p95 < args.goal_ms else "MISSED",
                }
            )
        print(table(rows))
        print(f"\n{args.requests} requests per page, one at a time; load {statistics.mean(loads):.1f}")
        if args.explain:
            for name, _ in measured:
                sql = queries[name]["slowest_sql"]
                if sql.lstrip().upper().startswith("SELECT"):
                    print(f"\n### {name}: slowest query ({queries[name]['slowest_ms']:.1f} ms)\n")
                    print(sql[:600] + (" ..." if len(sql) > 600 else ""))
                    print("\n" + explain(stack, sql))
    return 0


if __name__ == "__main__":
    sys.exit(main())
