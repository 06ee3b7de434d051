"""What the performance benchmarks feed the application: the model, real radiographs, queued rows.

Shared by bench/inference.py, bench/latency.py and bench/memory.py; not imported by the application.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
DATASETS = ROOT.parent / "shared" / "datasets"
FIXTURES = ROOT / "tests" / "fixtures" / "images"


def load_average() -> str:
    """The 1-minute load average and the core count, e.g. "3.9/2": what else was running."""
    return f"{os.getloadavg()[0]:.1f}/{os.cpu_count()}"


def model_path(requested: str | None) -> tuple[Path, str]:
    """The model to measure and how to describe it: --model, else the shipped model in models/, else a
    full-size EfficientNet-Lite0 CAM model with random weights (as costly as the shipped one)."""
    if requested:
        return Path(requested), f"{requested}"
    from classifier.predict import default_model_path

    shipped = default_model_path()
    if shipped.exists():
        return shipped, f"shipped ({shipped.name})"
    stand_in = OUT / "untrained-lite0-224-flip"
    if not (stand_in / "model.keras").exists():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from classifier.testing import write_untrained_artifact

        write_untrained_artifact(stand_in)
    return stand_in, "untrained Lite0 stand-in (224 px, flip TTA)"


def model_card(path: Path) -> dict[str, Any]:
    card = path / "card.json" if path.is_dir() else path.parent / "card.json"
    return dict(json.loads(card.read_text()))


def sample_images(count: int, *, seed: int = 0) -> list[Path]:
    """Real radiographs: a fixed random sample from both datasets' test splits (FracAtlas: hospital
    JPEGs up to 2,000 px; the Kaggle set: small JPEGs), or the test fixtures when no dataset is here."""
    pool: list[Path] = []
    for name in ("fracatlas", "bone-fracture-xray"):
        test_split = DATASETS / name / "test"
        if test_split.is_dir():
            pool += sorted(p for p in test_split.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not pool:
        pool = sorted(p for p in FIXTURES.glob("*.jpg") if "truncated" not in p.name)
    rng = random.Random(seed)
    return [rng.choice(pool) for _ in range(count)] if len(pool) < count else rng.sample(pool, count)


def seed_radiographs(stack: Any, images: list[Path], *, prefix: str) -> list[int]:
    """Create one queued study per image in the stack's database and storage, without dispatching."""
    listing = Path(stack.env["FRACTURE_REVIEW_VAR_DIR"]) / f"{prefix}-images.json"
    listing.write_text(json.dumps([str(p) for p in images]))
    # One study per image through the normal upload service, held back from the workers.
    output = stack.manage("seed_queued_studies", str(listing), "--prefix", prefix)
    return list(json.loads(output.strip().splitlines()[-1]))


def send(stack: Any, ids: list[int]) -> float:
    """Send one classification message per radiograph; returns the wall-clock time of sending."""
    output = stack.manage("send_classification", "--ids-json", json.dumps(ids))
    return float(json.loads(output.strip().splitlines()[-1]))


def query(stack: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one read-only SQL statement against the stack's database, straight from this process (a
    `manage.py shell` costs a second of CPU, which would be taken from the workers being measured)."""
    url = stack.env.get("DATABASE_URL")
    if url:
        import psycopg

        with psycopg.connect(url, autocommit=True) as connection:
            # Without parameters no placeholders are parsed: a "%" in the SQL stays literal.
            cursor = connection.execute(sql.replace("?", "%s"), params) if params else connection.execute(sql)
            return list(cursor.fetchall()) if cursor.description else []
    import sqlite3

    database = Path(stack.env["FRACTURE_REVIEW_VAR_DIR"]) / "db.sqlite3"
    lite = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        return list(lite.execute(sql, params).fetchall())
    finally:
        lite.close()


def _in(ids: list[int]) -> str:
    return ",".join(str(int(pk)) for pk in ids)


def wait_for_predictions(
    stack: Any, ids: list[int], *, timeout: float = 1800, poll: float = 0.25
) -> dict[str, Any]:
    """Poll until none of the radiographs is queued or running; returns what was stored:
    {"failed": n, "stored": [(radiograph id, created_at as epoch seconds, inference_ms), ...]}."""
    deadline = time.monotonic() + timeout
    while True:
        pending = query(
            stack,
            f"SELECT count(*) FROM radiology_radiograph WHERE id IN ({_in(ids)}) "
            "AND status IN ('queued', 'running')",
        )[0][0]
        if pending == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{pending} radiographs still pending after {timeout} s")
        time.sleep(poll)
    failed = query(
        stack, f"SELECT count(*) FROM radiology_radiograph WHERE id IN ({_in(ids)}) AND status = 'failed'"
    )[0][0]
    rows = query(
        stack,
        f"SELECT radiograph_id, created_at, inference_ms FROM radiology_prediction "
        f"WHERE radiograph_id IN ({_in(ids)}) ORDER BY created_at",
    )
    return {"failed": failed, "stored": [(pk, epoch_seconds(created), ms) for pk, created, ms in rows]}


def epoch_seconds(value: Any) -> float:
    """A created_at column as epoch seconds (PostgreSQL gives datetimes, SQLite ISO text in UTC)."""
    import datetime as dt

    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
    return float(value.timestamp())
