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

Scenarios, each on both backends:

- idle child killed: the worker's pool child killed (-9) with nothing queued, then work arrives;
- busy child killed: the pool child killed in the middle of a batch;
- worker killed: the whole worker (-9) in the middle of a batch (runapp restarts it);
- web killed mid-upload: the web process (gunicorn's worker) killed (-9) while it writes a study's files;
  the client retries with the same Idempotency-Key, as an integration does;
- broker down: PostgreSQL + Redis: the Redis server killed (-9, no persistence: queued and unacknowledged
  messages are lost) and started again 20 s later; embedded: the file broker's folder made unwritable
  (`chattr +i`) for 20 s;
- database down: PostgreSQL + Redis: every connection to PostgreSQL cut and refused for 15 s (a TCP relay
  in front of the server, as in tests/e2e/test_faults.py); embedded: the SQLite database locked by another
  process for 40 s (longer than the 30 s every connection waits for a lock);
- storage unwritable: the media folders made unwritable (`chattr +i`: root ignores permission bits) for 20 s.

In the outage scenarios a client uploads studies through the API throughout (one Idempotency-Key per
study, retried on connection errors, 409 and 5xx); the fault starts once the first study is accepted, so
classification is in flight. Time to recover: from the damage (a kill) or the end of the outage to the last
outcome stored. Orphans are counted after the reconciling sweep had its grace period: files no row
points at, and Idempotency-Keys left "in progress".

    python bench/chaos.py                          # both backends, 10 tries per scenario
    python bench/chaos.py --backend embedded --tries 3
    python bench/chaos.py --backend services --tries 2 --scenario "broker down"

Needs root for `chattr` (the storage and embedded-broker faults) and `redis-server` on the PATH.

Longer than 400 lines on purpose: one table of seven faults on two backends, each fault a short function
beside the stack it breaks and the one counting pass they share; the stack itself is bench/stack.py.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import (
    _create_database,
    _drop_database,
    free_port,
    manage,
    pump_lines,
    table,
)
from bench.workload import ROOT, load_average, query, sample_images, seed_radiographs, send
from tests.e2e.harness import TcpProxy, private_redis

PER_TRY = 4  # radiographs queued per try; enough for several batches when a busy process is killed
BUSY_PER_TRY = 48
DEADLINE = 300.0  # seconds for a try to recover
UPLOAD_STUDIES = 6  # studies a client uploads during an outage, of UPLOAD_IMAGES radiographs each,
UPLOAD_IMAGES = 2  # one every UPLOAD_GAP seconds: the outage meets uploads as well as classification
UPLOAD_GAP = 4.0
MID_UPLOAD_IMAGES = 12  # one study, big enough that the web process is caught writing its files
OUTAGE = {"broker down": 20.0, "database down": 15.0, "storage unwritable": 20.0}
SQLITE_OUTAGE = 40.0  # longer than the 30 s each SQLite connection waits for a lock
STALE_KEY_SECONDS = 10  # API_IDEMPOTENCY_STALE_SECONDS: an in-progress key of a killed request is taken over
RECONCILE_INTERVAL = 10
RECONCILE_GRACE = 300  # the setting's minimum


class RunApp:
    """`manage.py runapp` on one backend, with what a scenario needs to find and kill its processes."""

    def __init__(self, backend: str, database: str) -> None:
        self.backend = backend
        self.scratch = Path(tempfile.mkdtemp(prefix="fracture-chaos-"))
        self.database = database
        self._resources = ExitStack()
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
            API_IDEMPOTENCY_STALE_SECONDS=str(STALE_KEY_SECONDS),
            RECONCILE_INTERVAL_SECONDS=str(RECONCILE_INTERVAL),
            RECONCILE_ORPHAN_GRACE_SECONDS=str(RECONCILE_GRACE),
            API_THROTTLE_USER="100000/minute",
            API_THROTTLE_SUBMIT="100000/minute",
            DICOM_PORT=str(free_port()),
        )
        self.broker_url = ""
        self.redis: Any = None
        self.db_proxy: TcpProxy | None = None
        app_env = dict(env)
        if backend == "services":
            direct = _create_database(self.database)
            # The application reaches PostgreSQL through a relay this script can cut; the script's own
            # queries and manage.py commands go straight to the server.
            self.db_proxy = TcpProxy("127.0.0.1", int(direct.rsplit(":", 1)[1].split("/")[0]))
            self.db_proxy.start()
            env["DATABASE_URL"] = direct
            app_env["DATABASE_URL"] = (
                f"{direct.rsplit('@', 1)[0]}@127.0.0.1:{self.db_proxy.port}/{self.database}"
            )
            # A Redis server of its own (stopping the shared one would disturb everybody else).
            self.broker_url, self.redis = self._resources.enter_context(private_redis())
            env["CELERY_BROKER_URL"] = app_env["CELERY_BROKER_URL"] = self.broker_url
            env["SECRET_KEY"] = app_env["SECRET_KEY"] = secrets.token_urlsafe(64)
        self.env = env  # for this script's own queries and commands
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
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
            env=app_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=pump_lines, args=(self.process.stdout, self.lines), daemon=True).start()
        self.token = ""

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

    def web_workers(self) -> list[int]:
        for pid in _children(self.process.pid):
            if "gunicorn" in _cmdline(pid):
                return _children(pid)
        return []

    def model_loaded(self) -> bool:
        return any(" loaded from " in line for line in self.lines)

    def sign_in(self) -> None:
        self.token = self.manage("create_api_token", "clinician").strip().splitlines()[-1]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._resources.close()
        if self.db_proxy is not None:
            self.db_proxy.cut()
        if self.backend == "services":
            _drop_database(self.database)
        _immutable(list(self.scratch.rglob("*")), on=False)
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


def _orphans(app: RunApp) -> set[str]:
    """Files no row points at, and Idempotency-Keys left in progress (as "key:<id>")."""
    media = app.scratch / "media"
    stored = {
        f"{folder}/{p.name}" for folder in ("radiographs", "heatmaps") for p in (media / folder).glob("*")
    }
    referenced = {row[0] for row in query(app, "SELECT image FROM radiology_radiograph")}
    referenced |= {
        row[0] for row in query(app, "SELECT heatmap FROM radiology_prediction WHERE heatmap != ''")
    }
    keys = query(app, "SELECT id FROM radiology_idempotencyrecord WHERE state = 'in_progress'")
    return (stored - referenced) | {f"key:{row[0]}" for row in keys}


def _immutable(paths: list[Path], *, on: bool) -> None:
    """chattr +i / -i on folders: nothing can be created or removed in them, even by root."""
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        subprocess.run(["chattr", "+i" if on else "-i", *folders], check=True, capture_output=True)


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

        client = redis.Redis.from_url(app.broker_url)
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
    if scenario in KILLS:
        (ids, damage), uploads_lost = _kill_try(app, scenario, index), 0
    else:
        ids, damage, uploads_lost = _upload_try(app, scenario, index)
    if ids:
        settled = _settle(app, scenario, index, ids)
        recovered_after = None if settled is None else max(0.0, settled - damage)
    else:
        recovered_after = None
    statuses = (
        dict(
            query(
                app,
                f"SELECT status, count(*) FROM radiology_radiograph WHERE id IN ({_ids(ids)}) "
                "GROUP BY status",
            )
        )
        if ids
        else {}
    )
    # Predicted, or not analysed with its reason (outside the model's intended use: the same answer with
    # or without a fault): an outcome. Failed: an outcome with a reason, but not a recovery.
    answered = int(statuses.get("predicted", 0)) + int(statuses.get("not_analysed", 0))
    failed = int(statuses.get("failed", 0))
    duplicated = (
        _count(
            app,
            "SELECT count(*) - count(DISTINCT radiograph_id || '/' || model_version) "
            f"FROM radiology_prediction WHERE radiograph_id IN ({_ids(ids)})",
        )
        if ids
        else 0
    )
    worker_back = app.worker_main() is not None and bool(app.pool_children())
    lost = len(ids) - answered - failed + uploads_lost
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


def _kill_try(app: RunApp, scenario: str, index: int) -> tuple[list[int], float]:
    """Queue radiographs, kill a worker process; the radiographs and the moment of the kill."""
    prefix = f"{scenario[:4]}{index}-{secrets.token_hex(3)}"
    images = sample_images(PER_TRY if scenario == "idle child killed" else BUSY_PER_TRY, seed=index)
    if scenario == "idle child killed":
        [child] = _wait(app.pool_children, 120, "the pool child")
        os.kill(child, signal.SIGKILL)
        damage = time.monotonic()
        return _queue(app, images, prefix), damage
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
    return ids, time.monotonic()


def _settle(app: RunApp, scenario: str, index: int, ids: list[int]) -> float | None:
    """Wait for every radiograph's outcome; when the last one came (monotonic), or None by the deadline."""
    try:
        _wait(lambda: _settled(app, ids), DEADLINE, "every radiograph")
        return time.monotonic()
    except RuntimeError:
        states = query(
            app, f"SELECT status, count(*) FROM radiology_radiograph WHERE id IN ({_ids(ids)}) GROUP BY 1"
        )
        print(
            f"{app.backend} {scenario} try {index}: not settled after {DEADLINE:.0f} s: {states}",
            file=sys.stderr,
        )
        print(_diagnosis(app, ids), file=sys.stderr)
        print("\n".join(app.lines[-150:]), file=sys.stderr, flush=True)
        return None


class Uploads:
    """A client uploading studies through the API as an integration does: one Idempotency-Key per study,
    the same request again after a connection error, a 409 (the key still in progress) or a 5xx."""

    def __init__(self, app: RunApp, prefix: str, studies: list[list[Path]], gap: float = 0.0) -> None:
        self.app = app
        self.gap = gap
        self.prefix = prefix
        self.studies = studies
        self.accepted: list[list[int]] = []  # radiograph ids of each study accepted (201)
        self.given_up: list[int] = []  # radiographs of studies never accepted by the deadline
        self.answers: list[str] = []
        self.first_accepted = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Uploads:
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(timeout=DEADLINE + 60)

    def ids(self) -> list[int]:
        return [pk for study in self.accepted for pk in study]

    def _run(self) -> None:
        for number, images in enumerate(self.studies):
            if number:
                time.sleep(self.gap)
            ids = self._upload(f"{self.prefix}-{number}", images)
            if ids is None:
                self.given_up.append(len(images))
            else:
                self.accepted.append(ids)
            self.first_accepted.set()

    def _upload(self, accession: str, images: list[Path]) -> list[int] | None:
        key = str(uuid.uuid4())
        fields = {
            "mrn": f"M-{accession}",
            "patient_name": "Chaos Test",
            "accession_number": accession,
            "body_region": "wrist",
        }
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            files = [
                ("files", (f"{n}{p.suffix}", p.read_bytes(), "image/jpeg")) for n, p in enumerate(images)
            ]
            try:
                response = requests.post(
                    f"{self.app.url}/api/v1/studies",
                    data=fields,
                    files=files,
                    headers={"Authorization": f"Token {self.app.token}", "Idempotency-Key": key},
                    timeout=120,
                )
            except requests.RequestException as exc:
                self.answers.append(type(exc).__name__)
                time.sleep(1)
                continue
            self.answers.append(str(response.status_code))
            if response.status_code == 201:
                return [int(r["id"]) for r in response.json()["study"]["radiographs"]]
            if response.status_code in (409, 429) or response.status_code >= 500:
                time.sleep(min(5.0, float(response.headers.get("Retry-After", "1") or 1)))
                continue
            print(f"upload {accession}: {response.status_code} {response.text[:300]}", file=sys.stderr)
            return None
        return None


def _upload_try(app: RunApp, scenario: str, index: int) -> tuple[list[int], float, int]:
    """Upload studies through the API while the fault strikes; the accepted radiographs, the end of the
    damage (monotonic) and how many radiographs were never accepted."""
    prefix = f"{scenario[:3]}{index}-{secrets.token_hex(3)}"
    if scenario == "web killed mid-upload":
        images = sample_images(MID_UPLOAD_IMAGES, seed=1000 + index)
        stored = app.scratch / "media" / "radiographs"
        before = set(stored.glob("*"))
        uploads = Uploads(app, prefix, [images]).start()
        # Kill while it writes: after the first 1-3 files of the study are on disk.
        written = 1 + index % 3
        _wait(
            lambda: len(set(stored.glob("*")) - before) >= written, 120, "the upload's files", interval=0.005
        )
        for pid in app.web_workers():
            os.kill(pid, signal.SIGKILL)
        damage = time.monotonic()
        uploads.join()
    else:
        studies = [
            sample_images(UPLOAD_IMAGES, seed=2000 + index * UPLOAD_STUDIES + n)
            for n in range(UPLOAD_STUDIES)
        ]
        uploads = Uploads(app, prefix, studies, gap=UPLOAD_GAP).start()
        uploads.first_accepted.wait(timeout=120)  # classification is in flight now
        restore = _break(app, scenario)
        try:
            time.sleep(
                SQLITE_OUTAGE
                if (scenario, app.backend) == ("database down", "embedded")
                else OUTAGE[scenario]
            )
        finally:
            restore()
        damage = time.monotonic()
        uploads.join()
    answers = sorted(set(uploads.answers))
    print(f"  {app.backend} {scenario} try {index}: client saw {answers}", flush=True)
    return uploads.ids(), damage, sum(uploads.given_up)


def _break(app: RunApp, scenario: str) -> Callable[[], None]:
    """Start the outage; returns what ends it."""
    if scenario == "broker down" and app.backend == "services":
        app.redis.stop()
        return app.redis.start
    if scenario == "database down" and app.backend == "services":
        assert app.db_proxy is not None
        app.db_proxy.cut()
        return app.db_proxy.restore
    if scenario == "database down":
        import sqlite3

        lock = sqlite3.connect(app.scratch / "db.sqlite3", timeout=60, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")

        def unlock() -> None:
            with suppress(sqlite3.Error):
                lock.execute("ROLLBACK")
            lock.close()

        return unlock
    if scenario == "broker down":
        folders = [app.scratch / "broker" / "queue", app.scratch / "broker" / "processed"]
    elif scenario == "storage unwritable":
        media = app.scratch / "media"
        folders = [media, media / "radiographs", media / "heatmaps"]
    else:
        raise ValueError(scenario)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    _immutable(folders, on=True)

    def writable() -> None:
        _immutable(folders, on=False)

    return writable


KILLS = ("idle child killed", "busy child killed", "worker killed")
SCENARIOS = (*KILLS, "web killed mid-upload", "broker down", "database down", "storage unwritable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("embedded", "services", "both"), default="both")
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--scenario", choices=SCENARIOS, action="append", help="only these (repeatable)")
    parser.add_argument("--database", default=f"fr_chaos_{os.getpid()}", help="PostgreSQL database (dropped)")
    parser.add_argument("--log", type=Path, help="write runapp's output of each backend to LOG.<backend>")
    args = parser.parse_args()
    backends = ("embedded", "services") if args.backend == "both" else (args.backend,)
    rows = []
    loads = [load_average()]
    for backend in backends:
        app = RunApp(backend, args.database)
        backend_rows = []
        try:
            _wait(app.model_loaded, 300, "the model")
            app.sign_in()
            for scenario in args.scenario or SCENARIOS:
                before = _orphans(app)
                results = [run_try(app, scenario, i) for i in range(args.tries)]
                times = [r["seconds"] for r in results if r["seconds"] is not None]
                backend_rows.append(
                    {
                        "scenario": scenario,
                        "backend": "embedded" if backend == "embedded" else "PostgreSQL + Redis",
                        "tries": len(results),
                        "recovered": sum(r["recovered"] for r in results),
                        "time to recover (s, median / max)": (
                            f"{statistics.median(times):.1f} / {max(times):.1f}" if times else "-"
                        ),
                        "lost": sum(r["lost"] for r in results),
                        "failed": sum(r["failed"] for r in results),
                        "duplicated": sum(r["duplicated"] for r in results),
                        "orphans": _orphans(app) - before,  # a set until the reconciling sweep had its time
                    }
                )
                loads.append(load_average())
                print(table([{**backend_rows[-1], "orphans": len(backend_rows[-1]["orphans"])}]), flush=True)
            _after_reconcile(app, backend_rows)
        finally:
            app.stop()
            if args.log:
                Path(f"{args.log}.{backend}").write_text("\n".join(app.lines))
        rows += backend_rows
    print(f"load (1 min) during the run: {', '.join(loads)}")
    print(table(rows))


def _after_reconcile(app: RunApp, rows: list[dict[str, Any]]) -> None:
    """Replace each row's orphan candidates by those still there once the reconciling sweep has run past
    its grace period: what a killed process leaves is removed by then, or it is an orphan."""
    candidates = set().union(*(row["orphans"] for row in rows))
    if candidates:
        wait = RECONCILE_GRACE + 3 * RECONCILE_INTERVAL
        print(
            f"{len(candidates)} orphan candidate(s); waiting {wait} s for the reconciling sweep", flush=True
        )
        time.sleep(wait)
    left = _orphans(app)
    for row in rows:
        row["orphans"] = len(row["orphans"] & left)


if __name__ == "__main__":
    main()
