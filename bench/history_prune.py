"""The history writer: time to write N action rows (the baseline) beside time to prune them.

    .venv/bin/python bench/history_prune.py [--rows 20000] [--runs 20] [--dir DIR]

Writes `runs` ended runs of rows/runs actions each through `RunHistory` (each committed
on its own, as the service does), then opens the file with `keep_days` and a clock a
year ahead, so the start prune deletes them all; prints both times, the prune's steps
and its longest step (the longest a queued write could wait behind it), and what the
per-write file check (one os.stat) costs beside a write. `--dir` puts the file on the
disk you mean (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.history import DAY, HISTORY_NAME, PRUNE_BATCH, RunHistory
from runner.records import ActionRecord, Delivery, FeedbackStatus, Outcome, SceneRun


def write(db: Path, runs: int, per_run: int) -> float:
    history = RunHistory(db)
    t0 = time.perf_counter()
    for r in range(runs):
        run = SceneRun(run_id=f"run{r}", scene_id="loop", scene_name="Loop", trigger="manual",
                       started_at=time.time(), duration=5.0)
        history.record_start(run)
        for seq in range(per_run):
            rec = ActionRecord(index=seq % 5, round=seq // 5, planned=float(seq),
                               route="mqtt", topic="room1/spot1", message="ON",
                               actual=float(seq), delivery=Delivery.SENT,
                               feedback=FeedbackStatus.OK, seq=seq)
            history.record_action(run, rec)
        run.outcome, run.ended_at = Outcome.COMPLETED, time.time()
        history.record_end(run)
    if not history.flush(3600):
        raise SystemExit("the writes did not finish")
    elapsed = time.perf_counter() - t0
    history.close()
    return elapsed


def prune(db: Path, batch: int) -> tuple[float, int, float]:
    steps: list[float] = []
    t0 = time.perf_counter()
    history = RunHistory(db, keep_days=1, clock=lambda: time.time() + 365 * DAY,
                         prune_batch=batch, on_prune_step=lambda _n: steps.append(
                             time.perf_counter()))
    if not history.wait_pruned(3600):
        raise SystemExit("the prune did not finish")
    elapsed = time.perf_counter() - t0
    left = history.last_runs(5, records=False)
    history.close()
    if left:
        raise SystemExit(f"{len(left)} runs left after the prune")
    longest = max((b - a for a, b in zip([t0, *steps], steps, strict=False)), default=0.0)
    return elapsed, len(steps), longest


def stat_cost(db: Path, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        os.stat(db)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=PRUNE_BATCH)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        db = Path(tmp) / HISTORY_NAME
        per_run = max(1, args.rows // args.runs)
        rows = per_run * args.runs
        wrote = write(db, args.runs, per_run)
        size = db.stat().st_size
        pruned, steps, longest = prune(db, args.batch)
        stat = stat_cost(db, 100000)
        print(f"rows: {rows} actions in {args.runs} runs, file {size / 1e6:.1f} MB "
              f"({size / rows:.0f} B/action)")
        print(f"write (baseline): {wrote:.2f} s  ({wrote / rows * 1e6:.0f} us/row, each "
              "committed)")
        print(f"prune: {pruned:.2f} s  ({pruned / rows * 1e6:.0f} us/row) in {steps} steps "
              f"of {args.batch} rows, longest step {longest * 1e3:.1f} ms")
        print(f"file check per write: os.stat {stat * 1e6:.2f} us = "
              f"{stat / (wrote / rows) * 100:.2f} % of a write")


if __name__ == "__main__":
    main()
