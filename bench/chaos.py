"""Chaos: kill the application's processes the way an unlucky operator or the OOM killer does, and count.

The application runs as `make run` runs it (`manage.py runapp`: web, worker, beat under the supervisor),
on each backend (the embedded SQLite + file broker, and PostgreSQL + Redis). Each try of a scenario queues
a few real radiographs, does the damage, and waits for every radiograph to be predicted; then it counts:

- recovered: every radiograph predicted exactly once, the worker alive again, within the deadline;
- time to recover: from the damage to the last prediction stored (a killed worker reloads the model);
- lost: radiographs with no outcome by the deadline (an outcome: predicted, or "not analysed" with its
  reason when outside the model's intended use); failed: marked FAILED (with a reason, but not recovered);
  duplicated: extra predictions of one radiograph by one model version;
- orphans: stored files no row points at.

Scenarios: idle pool child killed (-9) with nothing queued, then work arrives; busy pool child killed in
the middle of a batch; the whole worker killed (-9) in the middle of a batch (runapp restarts it).
Broker and database outages, storage refusals and a web process killed mid-upload are covered by the
test suite (tests/e2e/test_faults.py, tests/api/test_hostile_requests.py, tests/radiology/test_reconcile.py),
not here.

    python bench/chaos.py                          # both backends, 10 tries per scenario
    python bench/chaos.py --backend embedded --tries 3
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import (
    REDIS_URL,
    _create_database,
    _drop_database,
    _purge_redis,
    free_port,
    manage,
    pump_lines,
    table,
)
from bench.workload import ROOT, query, sample_images, seed_radiographs, send

PER_TRY = 4  # radiographs queued per try; enough for several batches when a busy process is killed
BUSY_PER_TRY = 48
DEADLINE = 300.0  # seconds for a try to recover


class RunApp:
    """`manage.py runapp` on one backend, with what a scenario needs to find and kill its processes."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.scratch = Path(tempfile.mkdtemp(prefix="fracture-chaos-"))
        self.database = f"fr_chaos_{os.getpid()}"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "SECRET_KEY", "DJANGO_DEBUG"}
        }
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            FRACTURE_REVIEW_VAR_DIR=str(self.scratch),
            AXES_ENABLED="0",
            PYTHONUNBUFFERED="1",
            TF_CPP_MIN_LOG_LEVEL="2",
            # Fast recovery, as in tests/e2e/test_faults.py: a lost claim is re-sent after 10 s.
            CLASSIFY_RUNNING_TIMEOUT_SECONDS="10",
            CLASSIFY_RESEND_AFTER_SECONDS="30",
            SWEEP_INTERVAL_SECONDS="2",
            CLASSIFY_MAX_ATTEMPTS="5",
        )
        if backend == "services":
            env["DATABASE_URL"] = _create_database(self.database)
            env["CELERY_BROKER_URL"] = REDIS_URL
            env["SECRET_KEY"] = secrets.token_urlsafe(64)
            _purge_redis(REDIS_URL)
        self.env = env
        self.port = free_port()
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "runapp",
                "--port",
                str(self.port),
                "--web-workers",
                "1",
                "--no-dicom",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=pump_lines, args=(self.process.stdout, self.lines), daemon=True).start()

    def manage(self, *args: str, timeout: float = 600) -> str:
        return manage(self.env, *args, timeout=timeout)

    def worker_main(self) -> int | None:
        for pid in _children(self.process.pid):
            if " worker -Q " in _cmdline(pid):
                return pid
        return None

    def pool_children(self) -> list[int]:
        main = self.worker_main()
        return _children(main) if main else []

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if self.backend == "services":
            _drop_database(self.database)
        shutil.rmtree(self.scratch, ignore_errors=True)


def _children(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return [p for p in pids if _alive(p)]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def _ids(ids: list[int]) -> str:
    return ",".join(str(int(pk)) for pk in ids)


def _count(app: RunApp, sql: str) -> int:
    return int(query(app, sql)[0][0])


def _settled(app: RunApp, ids: list[int]) -> bool:
    return (
        _count(
            app,
            f"SELECT count(*) FROM radiology_radiograph WHERE id IN ({_ids(ids)}) "
            "AND status IN ('queued', 'running')",
        )
        == 0
    )


def _orphans(app: RunApp) -> int:
    media = app.scratch / "media"
    stored = {
        f"{folder}/{p.name}" for folder in ("radiographs", "heatmaps") for p in (media / folder).glob("*")
    }
    referenced = {row[0] for row in query(app, "SELECT image FROM radiology_radiograph")}
    referenced |= {
        row[0] for row in query(app, "SELECT heatmap FROM radiology_prediction WHERE heatmap != ''")
    }
    return len(stored - referenced)


def _diagnosis(app: RunApp, ids: list[int]) -> str:
    """What a try that does not settle leaves behind: its rows' claim state, the broker's queues and the
    messages a worker took and never acknowledged (Redis keeps those until the visibility timeout)."""
    rows = query(
        app,
        "SELECT status, attempts, dispatched_at IS NULL, claimed_at IS NULL, count(*) "
        f"FROM radiology_radiograph WHERE id IN ({_ids(ids)}) GROUP BY 1, 2, 3, 4",
    )
    lines = [f"rows (status, attempts, never sent, unclaimed, count): {rows}"]
    if app.backend == "services":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        queues = {name: client.llen(name) for name in ("inference", "maintenance")}
        lines.append(f"redis queues: {queues}; unacknowledged messages: {client.hlen('unacked')}")
    worker = app.worker_main()
    lines.append(f"worker main: {worker}; pool children: {app.pool_children()}")
    if worker:
        os.kill(worker, signal.SIGUSR1)  # Celery's main process logs every thread's stack on SIGUSR1
        time.sleep(2)
    return "\n".join(lines)


def _queue(app: RunApp, images: list[Path], prefix: str) -> list[int]:
    ids = seed_radiographs(app, images, prefix=prefix)
    send(app, ids)
    return ids


def run_try(app: RunApp, scenario: str, index: int) -> dict[str, Any]:
    prefix = f"{scenario[:4]}{index}-{secrets.token_hex(3)}"
    images = sample_images(PER_TRY if scenario == "idle child killed" else BUSY_PER_TRY, seed=index)
    if scenario == "idle child killed":
        [child] = _wait(app.pool_children, 120, "the pool child")
        os.kill(child, signal.SIGKILL)
        damage = time.monotonic()
        ids = _queue(app, images, prefix)
    else:
        ids = _queue(app, images, prefix)
        _wait(
            lambda: _count(
                app,
                f"SELECT count(*) FROM radiology_radiograph WHERE id IN ({_ids(ids)}) AND status = 'running'",
            ),
            120,
            "a running radiograph",
            interval=0.02,  # a batch is done in a second or two: catch it in the middle
        )
        target = app.pool_children()[0] if scenario == "busy child killed" else app.worker_main()
        assert target is not None
        os.kill(target, signal.SIGKILL)
        damage = time.monotonic()
    try:
        _wait(lambda: _settled(app, ids), DEADLINE, "every radiograph")
        recovered_after = time.monotonic() - damage
    except RuntimeError:
        recovered_after = None
        states = query(
            app, f"SELECT status, count(*) FROM radiology_radiograph WHERE id IN ({_ids(ids)}) GROUP BY 1"
        )
        print(
            f"{app.backend} {scenario} try {index}: not settled after {DEADLINE:.0f} s: {states}",
            file=sys.stderr,
        )
        print(_diagnosis(app, ids), file=sys.stderr)
        print("\n".join(app.lines[-150:]), file=sys.stderr, flush=True)
    statuses = dict(
        query(
            app,
            f"SELECT status, count(*) FROM radiology_radiograph WHERE id IN ({_ids(ids)}) GROUP BY status",
        )
    )
    # Predicted, or not analysed with its reason (outside the model's intended use: the same answer with
    # or without a fault): an outcome. Failed: an outcome with a reason, but not a recovery.
    answered = int(statuses.get("predicted", 0)) + int(statuses.get("not_analysed", 0))
    failed = int(statuses.get("failed", 0))
    duplicated = _count(
        app,
        f"SELECT count(*) - count(DISTINCT radiograph_id || '/' || model_version) FROM radiology_prediction "
        f"WHERE radiograph_id IN ({_ids(ids)})",
    )
    worker_back = app.worker_main() is not None and bool(app.pool_children())
    lost = len(ids) - answered - failed
    return {
        "recovered": recovered_after is not None
        and lost == 0
        and failed == 0
        and duplicated == 0
        and worker_back,
        "seconds": recovered_after,
        "lost": lost,
        "failed": failed,
        "duplicated": duplicated,
    }


SCENARIOS = ("idle child killed", "busy child killed", "worker killed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("embedded", "services", "both"), default="both")
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--scenario", choices=SCENARIOS, action="append", help="only these (repeatable)")
    args = parser.parse_args()
    backends = ("embedded", "services") if args.backend == "both" else (args.backend,)
    rows = []
    for backend in backends:
        app = RunApp(backend)
        try:
            _wait(lambda app=app: any(" loaded from " in line for line in app.lines), 300, "the model")
            for scenario in args.scenario or SCENARIOS:
                results = [run_try(app, scenario, i) for i in range(args.tries)]
                times = [r["seconds"] for r in results if r["seconds"] is not None]
                rows.append(
                    {
                        "backend": backend,
                        "scenario": scenario,
                        "tries": len(results),
                        "recovered": sum(r["recovered"] for r in results),
                        "time to recover (s, median / max)": (
                            f"{sorted(times)[len(times) // 2]:.1f} / {max(times):.1f}" if times else "-"
                        ),
                        "lost": sum(r["lost"] for r in results),
                        "failed": sum(r["failed"] for r in results),
                        "duplicated": sum(r["duplicated"] for r in results),
                        "orphans": _orphans(app),
                    }
                )
                print(table(rows[-1:]), flush=True)
        finally:
            app.stop()
    print(table(rows))


if __name__ == "__main__":
    main()
