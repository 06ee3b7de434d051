"""Shadow mode's cost to the active version: upload -> visible latency and the worker's active throughput,
with and without a shadow version reading 100 % of new radiographs.

One PostgreSQL + Redis stack (bench/stack.py: gunicorn, one celery worker on the inference queue with the
active model, beat) plus the shadow worker (its own process on the shadow queue at the lowest CPU priority,
as ``manage.py runapp`` starts it). The shadow version is registered once; each round switches it on (status
shadow) or off (status retired) and waits for the workers to see the change. Rounds alternate off, on, off,
on, ... so that whatever else loads the machine falls on both conditions alike. Per round:

- throughput: N queued radiographs sent at once; active predictions stored per second (first message sent
  -> last prediction stored);
- latency: K uploads through the web form, one at a time with a random pause, timed as bench/latency.py
  does (upload start -> the study page shows the prediction);
- then the shadow backlog is drained before the next round starts, so no round inherits another's work.

    python bench/shadow.py                             # 4 rounds, 60 radiographs and 15 uploads each
    python bench/shadow.py --normal-priority           # the shadow worker at normal priority (comparison)
    python bench/shadow.py --backlog                   # the shadow busy with a backlog in each active burst
    BENCH_REDIS_URL=redis://127.0.0.1:6379/5 python bench/shadow.py --database fr_h15_shadow --rounds 4

Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.latency import poll_schedule, upload_once, visible_after
from bench.stack import percentile, running_stack, table
from bench.workload import (
    ROOT,
    _in,
    load_average,
    model_path,
    query,
    sample_images,
    seed_radiographs,
    send,
    wait_for_predictions,
)

SHADOW_MODEL = ROOT / "models" / "lite0-cam-v1"
# worker.governance_tasks.ACTIVE_RECHECK_SECONDS (importing it would need Django set up in this process).
ACTIVE_RECHECK_SECONDS = 10.0
SHADOW_TASK = "worker.governance_tasks.shadow_predict"  # radiology.dispatch.SHADOW_TASK


def priority(pid: int) -> str:
    """The CPU priority a process runs at (the shadow worker's: nice 19, SCHED_IDLE)."""
    policies = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_IDLE: "SCHED_IDLE", os.SCHED_BATCH: "SCHED_BATCH"}
    policy = policies.get(os.sched_getscheduler(pid), str(os.sched_getscheduler(pid)))
    return f"pid {pid}, nice {os.getpriority(os.PRIO_PROCESS, pid)}, {policy}"


def set_shadow(stack: Any, version: str, on: bool) -> None:
    """Switch the shadow version on or off straight in the registry, then wait until every worker's
    cached view of the registry has expired (they re-read it at most every ACTIVE_RECHECK_SECONDS)."""
    query(
        stack,
        "UPDATE radiology_modelversion SET status = %s WHERE version = %s",
        ("shadow" if on else "retired", version),
    )
    time.sleep(ACTIVE_RECHECK_SECONDS + 1)


def shadow_answered(stack: Any, version: str, ids: list[int]) -> int:
    """How many of ``ids`` the shadow version has answered (a prediction or a refusal)."""
    if not ids:
        return 0
    return int(
        query(
            stack,
            f"SELECT (SELECT count(*) FROM radiology_shadowprediction WHERE model_version = %s "
            f"AND radiograph_id IN ({_in(ids)})) + (SELECT count(*) FROM radiology_guardrailrefusal "
            f"WHERE model_version = %s AND radiograph_id IN ({_in(ids)}))",
            (version, version),
        )[0][0]
    )


def drain_shadow(stack: Any, version: str, ids: list[int], timeout: float = 900) -> dict[str, Any]:
    """Wait until the shadow version has answered for every radiograph the active version predicted (one
    it did not analyse is never sent to the shadow queue). Returns how many the shadow had answered when
    the wait began, how many in the end, of how many, and how long the wait took."""
    predicted = query(
        stack, f"SELECT DISTINCT radiograph_id FROM radiology_prediction WHERE radiograph_id IN ({_in(ids)})"
    )
    ids = [int(row[0]) for row in predicted]
    started = time.monotonic()
    before = done = shadow_answered(stack, version, ids)
    while done < len(ids) and time.monotonic() - started < timeout:
        time.sleep(0.5)
        done = shadow_answered(stack, version, ids)
    return {"before": before, "answered": done, "predicted": len(ids), "seconds": time.monotonic() - started}


def uploaded_ids(stack: Any, prefix: str) -> list[int]:
    rows = query(
        stack,
        "SELECT r.id FROM radiology_radiograph r JOIN radiology_study s ON s.id = r.study_id "
        "WHERE s.accession_number LIKE %s",
        (f"{prefix}%",),
    )
    return [int(r[0]) for r in rows]


def queue_shadow_work(stack: Any, ids: list[int], batch: int = 8) -> None:
    """Put shadow work for ``ids`` on the shadow queue, as the active worker does after each batch."""
    from celery import Celery

    app = Celery("bench", broker=stack.env["CELERY_BROKER_URL"])
    try:
        for start in range(0, len(ids), batch):
            app.send_task(SHADOW_TASK, args=[ids[start : start + batch]], queue="shadow")
    finally:
        app.close()


def one_round(
    stack: Any, args: argparse.Namespace, index: int, on: bool, version: str, backlog: list[int]
) -> dict[str, Any]:
    set_shadow(stack, version, on)
    load_before = os.getloadavg()[0]
    # Throughput: N radiographs at once.
    images = sample_images(args.radiographs, seed=100 + index)
    ids = seed_radiographs(stack, images, prefix=f"R{index}")
    if on and backlog:
        # The worst case for the active worker: the shadow has a backlog to work through (here the previous
        # round's radiographs, which it did not read) while the active burst runs.
        queue_shadow_work(stack, backlog)
    sent_at = send(stack, ids)
    result = wait_for_predictions(stack, ids)
    stored = result["stored"]
    last = max(created for _, created, _ in stored) if stored else float("nan")
    throughput = len(stored) / (last - sent_at) if stored else 0.0
    # Latency: K uploads, one at a time, the page's polling schedule applied.
    first, interval = poll_schedule()
    session = stack.session()
    rng = random.Random(index)
    visible = []
    not_analysed = 0
    for k, image in enumerate(sample_images(args.uploads, seed=200 + index)):
        time.sleep(args.pause * rng.uniform(0.5, 1.5))
        try:
            sample = upload_once(stack, session, image, index * 1000 + k)
        except RuntimeError:
            # An image the guardrails refuse (not analysed, with a reason) has no prediction to wait for.
            accession = f"LAT-ACC-{index * 1000 + k:05d}"
            status = query(
                stack,
                "SELECT r.status FROM radiology_radiograph r JOIN radiology_study s ON s.id = r.study_id "
                "WHERE s.accession_number = %s",
                (accession,),
            )
            if status and all(row[0] == "not_analysed" for row in status):
                not_analysed += 1
                continue
            print(f"{accession}: {status}; the worker's log:\n{stack.workers()[0].output()[-4000:]}")
            raise
        visible.append(visible_after(sample["upload"], sample["stored"], first, interval))
    load_after = os.getloadavg()[0]
    drained = {"before": 0, "answered": 0, "predicted": 0, "seconds": 0.0}
    round_ids = ids + uploaded_ids(stack, f"LAT-ACC-{index:02d}")
    if on:
        drained = drain_shadow(stack, version, round_ids + backlog)
    return {
        "round": index + 1,
        "shadow": "on" if on else "off",
        "active /s": throughput,
        "failed": result["failed"],
        "visible p50 s": percentile(visible, 50),
        "visible p95 s": percentile(visible, 95),
        "uploads": len(visible),
        "not analysed": not_analysed,
        "load 1 min (start, end)": f"{load_before:.1f}, {load_after:.1f}",
        "shadow done at round end": f"{drained['before']}/{drained['predicted']}" if on else "-",
        "shadow caught up after s": drained["seconds"],
        "shadow coverage": f"{drained['answered']}/{drained['predicted']}" if on else "-",
        "_answered": drained["answered"],
        "_predicted": drained["predicted"],
        "_ids": round_ids,
    }


def shown(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4, help="alternating off / on, starting off")
    parser.add_argument("--radiographs", type=int, default=60, help="sent at once per round (throughput)")
    parser.add_argument("--uploads", type=int, default=15, help="sequential uploads per round (latency)")
    parser.add_argument("--pause", type=float, default=1.0, help="mean seconds idle before each upload")
    parser.add_argument("--model", default="", help="active model (default: the shipped one)")
    parser.add_argument("--shadow-model", default=str(SHADOW_MODEL))
    parser.add_argument(
        "--warm-up-timeout", type=float, default=1800, help="seconds for the shadow's first answer"
    )
    parser.add_argument(
        "--normal-priority",
        action="store_true",
        help="start the shadow worker at normal CPU priority (how it ran before; for comparison)",
    )
    parser.add_argument(
        "--backlog",
        action="store_true",
        help="in each round with the shadow on, first queue shadow work for the previous round's radiographs",
    )
    parser.add_argument("--database", default=None, help="PostgreSQL database name (default fr_bench_<pid>)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    path, description = model_path(args.model or None)
    cores = os.cpu_count() or 2
    print(
        f"active: {description}; shadow: {args.shadow_model}; {cores} cores; load {load_average()}",
        flush=True,
    )
    extra_env = {"CLASSIFIER_MODEL": str(path), "CLASSIFIER_CPU_THREADS": str(cores)}
    rows: list[dict[str, Any]] = []
    with running_stack(
        backend="services",
        workers=1,
        extra_env=extra_env,
        database=args.database,
        shadow_worker=True,
        shadow_lowest_priority=not args.normal_priority,
    ) as stack:
        registered = stack.manage("register_model", args.shadow_model, "--status", "shadow")
        version = str(
            query(stack, "SELECT version FROM radiology_modelversion WHERE status = 'shadow'")[0][0]
        )
        print(registered.strip().splitlines()[-1], flush=True)
        shadow = next(p for p in stack.processes if p.name == "shadow")
        print(f"shadow worker: {priority(shadow.popen.pid)}", flush=True)
        # Warm-up, not counted: the shadow worker loads its model on its first message.
        set_shadow(stack, version, True)
        warm = seed_radiographs(stack, sample_images(2, seed=99), prefix="W")
        send(stack, warm)
        wait_for_predictions(stack, warm)
        warmed = drain_shadow(stack, version, warm, timeout=args.warm_up_timeout)
        if warmed["answered"] < warmed["predicted"]:
            print(
                f"the shadow worker did not answer the warm-up in {args.warm_up_timeout:.0f} s: at the "
                f"lowest priority it runs only on idle CPU, and this machine had none ({load_average()}). "
                f"Its log:\n{shadow.output()[-3000:]}",
                flush=True,
            )
            return 1
        print(f"shadow warmed up in {warmed['seconds']:.0f} s", flush=True)
        for index in range(args.rounds):
            on = index % 2 == 1
            backlog = rows[-1]["_ids"] if on and args.backlog and rows else []
            row = one_round(stack, args, index, on, version, backlog)
            print(table([shown(row)]), flush=True)
            rows.append(row)
            if row["_answered"] < row["_predicted"]:
                print(f"the shadow did not catch up; its log:\n{shadow.output()[-3000:]}", flush=True)
    print("\nAll rounds:")
    print(table([shown(row) for row in rows]))
    summary = []
    for state in ("off", "on"):
        chosen = [r for r in rows if r["shadow"] == state]
        if chosen:
            summary.append(
                {
                    "shadow": state,
                    "rounds": len(chosen),
                    "active /s (mean)": statistics.mean(r["active /s"] for r in chosen),
                    "visible p95 s (worst round)": max(r["visible p95 s"] for r in chosen),
                    "visible p50 s (median of rounds)": statistics.median(r["visible p50 s"] for r in chosen),
                }
            )
    print(table(summary))
    if len(summary) == 2:
        ratio = summary[1]["active /s (mean)"] / summary[0]["active /s (mean)"]
        print(f"active throughput with the shadow on / off: {ratio:.2f}")
        answered = sum(r["_answered"] for r in rows if r["shadow"] == "on")
        predicted = sum(r["_predicted"] for r in rows if r["shadow"] == "on")
        print(
            f"shadow coverage after the backlog drained: {answered} of {predicted} radiographs the active "
            f"version predicted in the rounds with the shadow on (with --backlog, and in the rounds before "
            f"them) ({100 * answered / max(predicted, 1):.1f} %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
