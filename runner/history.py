"""The run history: every scene run and its actions appended to a SQLite file beside the config.

One writer thread owns the write connection (sqlite connections belong to one thread)
and commits each start, action and end on its own, in WAL mode, so a crash loses at
most the action in flight and a slow SD card never holds up the player's thread.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.model import Config
from runner.records import ActionRecord, SceneRun

log = logging.getLogger("player")

HISTORY_NAME = "history.sqlite3"
FLUSH_TIMEOUT = 5.0  # how long close() waits for queued writes
READ_FLUSH_TIMEOUT = 1.0  # how long a reader waits for queued writes before reading anyway
FORGET_SLACK = 50  # places of dropped records are forgotten once this many pile up
UNFINISHED = "interrupted"  # the outcome of a run the service never saw end (crash, power)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    scene TEXT NOT NULL,
    name TEXT NOT NULL,
    trigger TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    duration REAL,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS actions (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    seq INTEGER NOT NULL,  -- the record's place in the run, in the order it was made
    record TEXT NOT NULL,
    failed INTEGER NOT NULL DEFAULT 0,  -- feedback ERROR/TIMEOUT, or not delivered
    PRIMARY KEY (run_id, seq)
);
"""
# A run that loops all day has many thousands of actions and few failures: listing runs
# reads only these through the index, never every action.
FAILED_INDEX = "CREATE INDEX IF NOT EXISTS actions_failed ON actions (run_id, seq) WHERE failed"
FAILED_JSON = ("(json_extract(record, '$.feedback') IN ('ERROR', 'TIMEOUT') "
               "OR json_extract(record, '$.delivery') IN ('failed', 'not sent'))")
FAILURES_LISTED = 20  # per run, when listing runs; `failure_count` has them all


@dataclass
class _Places:
    """The rows given to one run's records so far: `id(record)` -> (record, row)."""

    rows: dict[int, tuple[ActionRecord, int]] = field(default_factory=dict)
    next: int = 0


def default_path(config: Config) -> Path:
    """Where the history lives: `history_file`, else beside the config, else per user.

    Without a config file the history goes to $XDG_STATE_HOME/runner (by default
    ~/.local/state/runner), so that it does not depend on the current directory.
    """
    if config.history_file is not None:
        return config.history_file
    if config.source is not None:
        return config.source.resolve().parent / HISTORY_NAME
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "runner" / HISTORY_NAME


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed action survives a power cut too, not only a crash of the process.
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    if "failed" not in _columns(conn, "actions"):  # a history from before the column
        conn.execute("ALTER TABLE actions ADD COLUMN failed INTEGER NOT NULL DEFAULT 0")
        conn.execute(f"UPDATE actions SET failed = 1 WHERE {FAILED_JSON}")  # noqa: S608 - constant
    conn.execute(FAILED_INDEX)
    conn.commit()
    return conn


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def is_failure(record: dict[str, Any]) -> bool:
    """Feedback ERROR or TIMEOUT, or a command that was not delivered."""
    return (record.get("feedback") in ("ERROR", "TIMEOUT")
            or record.get("delivery") in ("failed", "not sent"))


class RunHistory:
    """Appends runs to the database in a writer thread; reads from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(path)
        self._lock = threading.Lock()  # guards the connection between writer and readers
        self._queue: queue.Queue[Callable[[sqlite3.Connection], object] | None] = queue.Queue()
        self._written: dict[tuple[str, int], str] = {}  # what each record was last saved as
        self._places: dict[str, _Places] = {}  # per run: each record's row, by identity
        self._written_lock = threading.Lock()  # player and feedback threads both report
        self._thread = threading.Thread(target=self._write_loop, name="history", daemon=True)
        self._thread.start()

    # -- writes (queued) --------------------------------------------------------------

    def record_start(self, run: SceneRun) -> None:
        row = (run.run_id, run.scene_id, run.scene_name, run.trigger, run.started_at,
               run.duration, run.outcome.value)
        self._put(lambda c: c.execute(
            "INSERT OR REPLACE INTO runs (run_id, scene, name, trigger, started_at, duration,"
            " outcome) VALUES (?, ?, ?, ?, ?, ?, ?)", row))

    def place(self, run: SceneRun, rec: ActionRecord) -> int:
        """The record's row number in its run: the same for every update of that record.

        Not its index in `run.records`: the player drops the old rounds of an endless
        loop from that list, which shifts the indices, and the history keeps them all.
        """
        with self._written_lock:
            places = self._places.setdefault(run.run_id, _Places())
            known = places.rows.get(id(rec))
            if known is not None and known[0] is rec:
                return known[1]
            seq = places.next
            places.next += 1
            places.rows[id(rec)] = (rec, seq)
            if len(places.rows) > 2 * len(run.records) + FORGET_SLACK:
                self._forget_dropped(run, places)
            return seq

    def _forget_dropped(self, run: SceneRun, places: _Places) -> None:
        # The player drops only finished records, so they are never reported again.
        kept = {id(r) for r in list(run.records)}
        for key in [k for k in places.rows if k not in kept]:
            _rec, seq = places.rows.pop(key)
            self._written.pop((run.run_id, seq), None)

    def record_action(self, run_id: str, rec: ActionRecord, seq: int | None = None) -> None:
        """Write one record; `seq` is `place(run, rec)` (a later call updates that row).

        Without `seq` the record is appended as a new row.
        """
        data = rec.to_json()
        text = json.dumps(data, ensure_ascii=False)
        failed = int(is_failure(data))
        if seq is None:
            self._put(lambda c: c.execute(
                "INSERT INTO actions (run_id, seq, record, failed) VALUES (?, (SELECT "
                "coalesce(max(seq), -1) + 1 FROM actions WHERE run_id = ?), ?, ?)",
                (run_id, run_id, text, failed)))
            return
        with self._written_lock:
            self._written[(run_id, seq)] = text
        self._put(lambda c: c.execute(
            "INSERT OR REPLACE INTO actions (run_id, seq, record, failed) VALUES (?, ?, ?, ?)",
            (run_id, seq, text, failed)))

    def record_changes(self, run: SceneRun) -> None:
        """Write every record of `run` that changed since it was last written."""
        for rec in list(run.records):
            if rec.delivery is None and rec.actual is None:
                continue  # not happened yet: nothing to keep
            seq = self.place(run, rec)
            text = json.dumps(rec.to_json(), ensure_ascii=False)
            with self._written_lock:
                changed = self._written.get((run.run_id, seq)) != text
            if changed:
                self.record_action(run.run_id, rec, seq)

    def record_end(self, run: SceneRun) -> None:
        self.record_changes(run)
        ended = run.ended_at if run.ended_at is not None else time.time()
        row = (ended, run.outcome.value, run.run_id)
        self._put(lambda c: c.execute(
            "UPDATE runs SET ended_at = ?, outcome = ? WHERE run_id = ?", row))
        with self._written_lock:
            for key in [k for k in self._written if k[0] == run.run_id]:
                del self._written[key]
            self._places.pop(run.run_id, None)

    def close_unfinished(self) -> int:
        """Mark runs left 'running' by a crash or power cut; call once when the service starts."""
        return len(self.close_unfinished_runs())

    def close_unfinished_runs(self) -> list[str]:
        """As `close_unfinished`; the scene ids of those runs, oldest first."""
        with self._lock:
            scenes = [r[0] for r in self._conn.execute(
                "SELECT scene FROM runs WHERE outcome = 'running' ORDER BY started_at")]
            self._conn.execute(
                "UPDATE runs SET outcome = ? WHERE outcome = 'running'", (UNFINISHED,))
            self._conn.commit()
            return scenes

    def _put(self, write: Callable[[sqlite3.Connection], object]) -> None:
        self._queue.put(write)

    def _write_loop(self) -> None:
        while True:
            write = self._queue.get()
            try:
                if write is None:
                    return
                with self._lock:
                    write(self._conn)
                    self._conn.commit()
            except sqlite3.Error as exc:
                log.error("The run history %s could not be written (%s); the show goes on",
                          self.path, exc)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait until every queued write is committed; False after `timeout`."""
        done = threading.Event()
        self._queue.put(lambda _c: done.set())
        return done.wait(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self.flush()
            self._queue.put(None)
            self._thread.join(FLUSH_TIMEOUT)
        with self._lock:
            self._conn.close()

    # -- reads ------------------------------------------------------------------------

    def last_runs(self, n: int = 20, *, records: bool = True) -> list[dict[str, Any]]:
        """The last `n` runs, newest first, each with its failures.

        `records=False`: without the action records, the first `FAILURES_LISTED`
        failures and a `failure_count` (cheap however long a run looped).
        """
        self.flush(READ_FLUSH_TIMEOUT)
        with self._lock:
            return read_last_runs(self._conn, n, records=records)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        self.flush(READ_FLUSH_TIMEOUT)
        with self._lock:
            return read_run(self._conn, run_id)


def _run_dict(row: sqlite3.Row, records: list[dict[str, Any]]) -> dict[str, Any]:
    run = dict(row)
    run["records"] = records
    run["failures"] = [r for r in records if is_failure(r)]
    run["failure_count"] = len(run["failures"])
    return run


def _run_summary(conn: sqlite3.Connection, row: sqlite3.Row, failed: str) -> dict[str, Any]:
    # `failed` is one of two constant SQL conditions, never text from outside.
    run = dict(row)
    run["failures"] = [json.loads(r[0]) for r in conn.execute(
        f"SELECT record FROM actions WHERE run_id = ? AND {failed} ORDER BY seq LIMIT ?",  # noqa: S608
        (row["run_id"], FAILURES_LISTED))]
    run["failure_count"] = conn.execute(
        f"SELECT count(*) FROM actions WHERE run_id = ? AND {failed}",  # noqa: S608
        (row["run_id"],)).fetchone()[0]
    return run


def _records(conn: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT record FROM actions WHERE run_id = ? ORDER BY seq", (run_id,))
    return [json.loads(r[0]) for r in rows]


def read_last_runs(conn: sqlite3.Connection, n: int = 20, *,
                   records: bool = True) -> list[dict[str, Any]]:
    """The last `n` runs; `records=False` as in `RunHistory.last_runs`."""
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?", (n,)).fetchall()
        if records:
            return [_run_dict(r, _records(conn, r["run_id"])) for r in rows]
        # A read-only reader of a history from before the column asks the JSON instead.
        failed = "failed" if "failed" in _columns(conn, "actions") else FAILED_JSON
        return [_run_summary(conn, r, failed) for r in rows]
    finally:
        conn.row_factory = None


def read_run(conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else _run_dict(row, _records(conn, run_id))
    finally:
        conn.row_factory = None


def open_for_reading(path: Path) -> sqlite3.Connection | None:
    """A connection for `runner history`, None when no history was written yet."""
    if not path.exists():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
