"""Queue at scale: the review queue, search, the review page, the API lists and the audit dashboard over
a large PostgreSQL database (the goal: 1,000,000 radiographs in 333,334 studies, p95 < 150 ms each).

Fills a benchmark database once (manage.py generate_scale_data: studies with 3 radiographs each,
predictions by three model versions, reviews), then, against gunicorn over real HTTP with a signed-in
clinician, times each page sequentially (p50, p95, max) and counts its SQL queries (Django test client
in a `manage.py shell` on the same database, which also gives the Python CPU time per request: unlike
wall-clock time, it does not depend on what else the machine is running). --explain prints EXPLAIN
ANALYZE of each page's slowest query.

    python bench/scale.py                         # creates fr_bench_scale on first use, then reuses it
    python bench/scale.py --requests 50 --explain
    python bench/scale.py --recreate --studies 20000
    python bench/scale.py --database fr_scale --studies 333334   # 1,000,000 radiographs (about 15 min)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
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
    mrn, accession, name = query(
        stack,
        "SELECT p.mrn, s.accession_number, p.name FROM radiology_study s JOIN radiology_patient p "
        "ON p.id = s.patient_id ORDER BY s.id LIMIT 1 OFFSET 5000",
    )[0]
    # A name prefix that matches a handful of patients (the queue shows at most NAME_SEARCH_LIMIT).
    name_prefix = name.split()[-1][:-1]
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
        ("queue: search name prefix", f"/queue/?state=all&q={name_prefix}"),
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
        ("API studies reviewed, wrist", "/api/v1/studies?state=reviewed&body_region=wrist"),
        ("API radiographs", "/api/v1/radiographs"),
        ("API radiographs band=fracture", "/api/v1/radiographs?band=fracture"),
        ("API radiographs status=failed", "/api/v1/radiographs?status=failed"),
        ("API radiographs verdict+reviewed", "/api/v1/radiographs?verdict=fractured&reviewed=false"),
        (
            f"API radiographs page {radiographs // 50 // 2}",
            f"/api/v1/radiographs?page={max(1, radiographs // 50 // 2)}",
        ),
        # The API has no list of predictions: each radiograph's current one, and the list by verdict.
        ("API prediction of a radiograph", f"/api/v1/radiographs/{_radiograph(stack)}/prediction"),
        ("audit dashboard (admin)", ADMIN + "/audit/"),
        ("audit dashboard, last 30 days (admin)", ADMIN + "/audit/?date_from=" + _days_ago(30)),
    ]


# Pages measured signed in as the demo admin (the audit dashboard is for admins) carry this prefix.
ADMIN = "admin:"


def _radiograph(stack: Any) -> int:
    return int(
        query(
            stack,
            "SELECT id FROM radiology_radiograph WHERE status = 'predicted' ORDER BY id LIMIT 1 OFFSET 500",
        )[0][0]
    )


def _user_and_path(path: str) -> tuple[str, str]:
    return ("admin", path[len(ADMIN) :]) if path.startswith(ADMIN) else ("clinician", path)


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
clients = {{}}
for username in ("clinician", "admin"):
    clients[username] = Client(SERVER_NAME="127.0.0.1")
    clients[username].force_login(get_user_model().objects.get(username=username))
result = {{}}
for name, path in json.loads({pages!r}):
    username, path = ("admin", path[len("admin:"):]) if path.startswith("admin:") else ("clinician", path)
    client = clients[username]
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
    sessions = {username: stack.session(username) for username in ("clinician", "admin")}
    timings: dict[str, list[float]] = {name: [] for name, _ in measured}
    for _, user_path in measured:
        username, path = _user_and_path(user_path)
        sessions[username].get(stack.base_url + path, timeout=300)  # warm: workers, connections, caches
    # Round-robin rather than page after page, so that a burst of load elsewhere spreads over all pages.
    for _ in range(requests_per_page):
        for name, user_path in measured:
            if len(timings[name]) >= 3 and statistics.median(timings[name]) > 2.0:
                continue  # seconds a request: three tell the story, more would take the whole run
            username, path = _user_and_path(user_path)
            session = sessions[username]
            started = time.perf_counter()
            response = session.get(stack.base_url + path, timeout=300)
            timings[name].append(time.perf_counter() - started)
            if len(timings[name]) == 1:
                print(f"  {name}: {1000 * timings[name][0]:.0f} ms", flush=True)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {response.status_code}")
    return timings


def explain(stack: Any, sql: str) -> str:
    rows = query(stack, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql)
    return "\n".join(row[0] for row in rows)


def ensure_data(args: argparse.Namespace) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (args.database,)
        ).fetchone()
    if exists and not args.recreate:
        return
    _create_database(args.database)
    with running_stack(database=args.database, keep_database=True, start_workers=False) as stack:
        started = time.perf_counter()
        print(
            stack.manage(
                "generate_scale_data",
                "--studies",
                str(args.studies),
                "--radiographs-per-study",
                str(args.radiographs_per_study),
                timeout=3 * 3600,  # 1,000,000 radiographs: 6 min on a quiet machine, over 10 on a busy one
            ).strip()
        )
        print(f"(generate_scale_data took {time.perf_counter() - started:.1f} s including Django start)")
        query(stack, "VACUUM ANALYZE")


def _demo_passwords(stack: Any) -> None:
    """The demo accounts get their password printed only when created: on a kept database, set new ones."""
    for username in ("clinician", "admin"):
        if username not in stack.passwords:
            password = secrets.token_urlsafe(16)
            stack.manage(
                "shell",
                "-c",
                "from django.contrib.auth import get_user_model; "
                f"u = get_user_model().objects.get(username={username!r}); "
                f"u.set_password({password!r}); u.save(update_fields=['password'])",
            )
            stack.passwords[username] = password


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--radiographs-per-study", type=int, default=3)
    parser.add_argument("--recreate", action="store_true", help="generate the data again")
    parser.add_argument("--database", default=DATABASE, help="benchmark database (made on first use)")
    parser.add_argument("--requests", type=int, default=60, help="timed requests per page")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--skip", default="", help="leave out the pages whose name matches this regex")
    parser.add_argument("--queries", action="store_true", help="also count each page's SQL and CPU time")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE each page's slowest query")
    parser.add_argument("--goal-ms", type=float, default=150.0)
    args = parser.parse_args()

    ensure_data(args)
    with running_stack(
        database=args.database, keep_database=True, start_workers=False, web_workers=args.web_workers
    ) as stack:
        _demo_passwords(stack)
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
        measured = [(n, p) for n, p in pages(stack) if not (args.skip and re.search(args.skip, n))]
        queries = count_queries(stack, measured) if args.queries else {}
        loads = [os.getloadavg()[0]]
        timings = time_pages(stack, measured, args.requests)
        loads.append(os.getloadavg()[0])
        rows = []
        for name, _ in measured:
            values = timings[name]
            p95 = percentile(values, 95) * 1000
            row: dict[str, Any] = {
                "page": name,
                "p50 ms": percentile(values, 50) * 1000,
                "p95 ms": p95,
                "max ms": max(values) * 1000,
            }
            if name in queries:
                row["server CPU ms"] = queries[name]["cpu_ms"]
                row["queries"] = queries[name]["queries"]
                row["SQL ms"] = queries[name]["sql_ms"]
                row["slowest query ms"] = queries[name]["slowest_ms"]
            row["goal"] = "ok" if p95 < args.goal_ms else "MISSED"
            rows.append(row)
        print(table(rows))
        print(
            f"\n{args.requests} requests per page, one at a time, over HTTP to gunicorn ({args.web_workers} "
            f"workers); machine: {os.cpu_count()} cores shared with other sessions, mean load "
            f"{statistics.mean(loads):.1f}"
        )
        if args.explain and queries:
            for name, _ in measured:
                sql = queries[name]["slowest_sql"]
                if sql.lstrip().upper().startswith("SELECT"):
                    print(f"\n### {name}: slowest query ({queries[name]['slowest_ms']:.1f} ms)\n")
                    print(sql[:600] + (" ..." if len(sql) > 600 else ""))
                    print("\n" + explain(stack, sql))
    return 0


if __name__ == "__main__":
    sys.exit(main())
