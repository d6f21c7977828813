"""The run history: every scene run and its actions appended to a SQLite file beside the config.

One writer thread owns the write connection (sqlite connections belong to one thread)
and commits each start, action and end on its own, in WAL mode, so a crash loses at
most the action in flight and a slow SD card never holds up the player's thread.

The writer thread also keeps the file honest: before each write it checks
that the file at `path` is still the one it opened (a restore by `mv` or rsync replaces
it under the service) and reopens it when not; and it prunes runs older than
`keep_days`, a few hundred rows at a time between writes, at start and then hourly.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from runner.model import Config
from runner.records import FAILED_FEEDBACK, UNDELIVERED, ActionRecord, SceneRun

log = logging.getLogger("history")

HISTORY_NAME = "history.sqlite3"
FLUSH_TIMEOUT = 5.0  # how long close() waits for queued writes
READ_FLUSH_TIMEOUT = 1.0  # how long a reader waits for queued writes before reading anyway
FORGET_SLACK = 50  # what dropped records were saved as is forgotten once this many pile up
UNFINISHED = "interrupted"  # the outcome of a run the service never saw end (crash, power)
IN_MEMORY = ":memory:"  # sqlite's name for a database that lives only in this process
CHECK_INTERVAL = 1.0  # seconds between two tries to reopen a file that could not be opened
PRUNE_INTERVAL = 3600.0  # seconds between two prunes (the first runs at start)
PRUNE_BATCH = 500  # rows deleted per step of a prune; queued writes go between the steps
DAY = 86400.0

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
# ActionRecord.failed, asked of the JSON a record was saved as (values are constants).
_FAILED_FEEDBACK = tuple(f.value for f in FAILED_FEEDBACK)  # ('ERROR', 'TIMEOUT')
_UNDELIVERED = tuple(d.value for d in UNDELIVERED)  # ('failed', 'not sent')
FAILED_JSON = (
    f"(json_extract(record, '$.feedback') IN ({', '.join(map(repr, _FAILED_FEEDBACK))}) "
    f"OR json_extract(record, '$.delivery') IN ({', '.join(map(repr, _UNDELIVERED))}))")
FAILURES_LISTED = 20  # per run, when listing runs; `failure_count` has them all


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


def _identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at `path`, None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def is_failure(record: dict[str, Any]) -> bool:
    """`ActionRecord.failed` of a record read back as JSON."""
    return (record.get("feedback") in _FAILED_FEEDBACK
            or record.get("delivery") in _UNDELIVERED)


class RunHistory:
    """Appends runs to the database in a writer thread; reads from any thread.

    `keep_days`: runs that ended longer ago are pruned (None or 0: kept forever).
    `clock` is the wall clock pruning measures age by; `on_prune_step` is called on the
    writer thread after each committed step of a prune (tests watch the writer with it).
    """

    def __init__(self, path: Path, *, keep_days: float | None = None,
                 clock: Callable[[], float] = time.time,
                 prune_interval: float = PRUNE_INTERVAL, prune_batch: int = PRUNE_BATCH,
                 on_prune_step: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.keep_days = keep_days or None
        self._clock = clock
        self._prune_interval = prune_interval
        self._prune_batch = max(1, prune_batch)
        self._on_prune_step = on_prune_step
        self._in_memory = str(path) == IN_MEMORY
        if not self._in_memory:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(path)
        self._file = None if self._in_memory else _identity(path)  # `path` when opened
        self._checked = time.monotonic()
        self._reopen_failed = False  # in memory: the file could not be opened again
        self._reopened = False  # the writer starts a prune of the new file
        self._pruned = threading.Event()  # set after each prune ends
        if self.keep_days is None:
            self._pruned.set()
        self._lock = threading.Lock()  # guards the connection between writer and readers
        self._queue: queue.Queue[Callable[[sqlite3.Connection], object] | None] = queue.Queue()
        self._written: dict[str, dict[int, str]] = {}  # per run: seq -> the record's last JSON
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

    def record_action(self, run: SceneRun, rec: ActionRecord) -> None:
        """Write one record into its row, `rec.seq` (a later call updates that row).

        A record the player never placed (`seq` -1) is appended as a new row.
        """
        data = rec.to_json()
        text = json.dumps(data, ensure_ascii=False)
        failed = int(rec.failed)
        run_id, seq = run.run_id, rec.seq
        if seq < 0:
            self._put(lambda c: c.execute(
                "INSERT INTO actions (run_id, seq, record, failed) VALUES (?, (SELECT "
                "coalesce(max(seq), -1) + 1 FROM actions WHERE run_id = ?), ?, ?)",
                (run_id, run_id, text, failed)))
            return
        with self._written_lock:
            written = self._written.setdefault(run_id, {})
            written[seq] = text
            if len(written) > 2 * len(run.records) + FORGET_SLACK:
                # The player drops only finished records of an endless loop: never again.
                kept = {r.seq for r in list(run.records)}
                for old in [k for k in written if k not in kept]:
                    del written[old]
        self._put(lambda c: c.execute(
            "INSERT OR REPLACE INTO actions (run_id, seq, record, failed) VALUES (?, ?, ?, ?)",
            (run_id, seq, text, failed)))

    def record_changes(self, run: SceneRun) -> None:
        """Write every placed record of `run` that changed since it was last written."""
        for rec in list(run.records):
            if rec.seq < 0 or (rec.delivery is None and rec.actual is None):
                continue  # not happened (or not reported by the player) yet: nothing to keep
            text = json.dumps(rec.to_json(), ensure_ascii=False)
            with self._written_lock:
                changed = self._written.get(run.run_id, {}).get(rec.seq) != text
            if changed:
                self.record_action(run, rec)

    def record_end(self, run: SceneRun) -> None:
        self.record_changes(run)
        ended = run.ended_at if run.ended_at is not None else time.time()
        row = (ended, run.outcome.value, run.run_id)
        self._put(lambda c: c.execute(
            "UPDATE runs SET ended_at = ?, outcome = ? WHERE run_id = ?", row))
        with self._written_lock:
            self._written.pop(run.run_id, None)

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
        prune: Generator[int, None, None] | None = None
        next_prune = time.monotonic()  # the first prune runs at start
        while True:
            if prune is None and self.keep_days is not None and time.monotonic() >= next_prune:
                prune = self._prune_steps()
                next_prune = time.monotonic() + self._prune_interval
            try:
                if prune is not None:  # queued writes first, then the next step of the prune
                    first = self._queue.get_nowait()
                elif self.keep_days is not None:
                    first = self._queue.get(timeout=max(0.0, next_prune - time.monotonic()))
                else:
                    first = self._queue.get()
            except queue.Empty:
                if prune is not None and next(prune, None) is None:
                    prune = None
                continue
            if first is None:
                self._queue.task_done()
                return
            self._write(first)
            if self._reopened:  # the new file gets a prune of its own, now
                self._reopened = False
                if prune is not None:
                    prune.close()
                prune = None
                next_prune = time.monotonic()

    def _write(self, write: Callable[[sqlite3.Connection], object]) -> None:
        try:
            self._check_file()
            with self._lock:
                write(self._conn)
                self._conn.commit()
        except sqlite3.Error as exc:
            log.error("The run history %s could not be written (%s); the show goes on",
                      self.path, exc)
        finally:
            self._queue.task_done()

    # -- the file under the service ---------------------------------------------------

    def _check_file(self) -> None:
        """On the writer thread, before each write: reopen when `path` is gone or another file.

        One stat (about a microsecond, beside a commit's fsync of a millisecond or more),
        so that writes queued before a restore go to the restored file too. After a
        reopen that failed, it is tried again every CHECK_INTERVAL.
        """
        if self._in_memory:
            return
        now = time.monotonic()
        if self._reopen_failed and now - self._checked < CHECK_INTERVAL:
            return
        self._checked = now
        try:
            current = _identity(self.path)
        except OSError:
            return  # cannot tell (a folder without search permission): write on as before
        if current is not None and current == self._file:
            return
        self._reopen("was deleted" if current is None else "was replaced by another file")

    def _reopen(self, what: str) -> None:
        with self._lock:
            if not self._reopen_failed:
                try:
                    # The old file's WAL lies beside the new file under the same name: write
                    # it into the old file and empty it, or the new file's next reader would
                    # take the old pages for its own ("database disk image is malformed").
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                except sqlite3.Error as e:
                    log.error("The run history %s: the old file's log could not be emptied "
                              "(%s)", self.path, e)
                self._conn.close()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = _connect(self.path)
            except (OSError, sqlite3.Error) as e:
                if not self._reopen_failed:
                    self._conn = _connect(Path(IN_MEMORY))
                    self._file = None
                    self._reopen_failed = True
                    log.error("The run history %s %s while the service had it open, and it "
                              "cannot be opened again (%s): runs are kept in memory until it "
                              "can; check the folder and its permissions", self.path, what, e)
                return
            if self._reopen_failed:
                self._conn.close()  # the runs kept in memory meanwhile are not carried over
            self._conn = conn
            self._file = _identity(self.path)
            self._reopen_failed = False
            self._reopened = True
        log.warning("The run history %s %s while the service had it open (a restore by mv "
                    "or rsync?): reopened it; runs from now on are written to the new file",
                    self.path, what)

    # -- retention --------------------------------------------------------------------

    def _prune_steps(self) -> Generator[int, None, None]:
        """On the writer thread: delete runs that ended more than `keep_days` ago.

        A generator: each step deletes at most `prune_batch` rows and commits, and the
        writer runs the queued writes before it asks for the next step.
        """
        keep = self.keep_days
        if keep is None:
            return
        cutoff = self._clock() - keep * DAY
        self._pruned.clear()
        try:
            with self._lock:
                old = [r[0] for r in self._conn.execute(
                    "SELECT run_id FROM runs WHERE outcome != 'running' AND "
                    "coalesce(ended_at, started_at) < ? ORDER BY started_at", (cutoff,))]
            pruned = 0
            step = 0
            while pruned < len(old):
                budget = self._prune_batch
                with self._lock:
                    while pruned < len(old) and budget > 0:
                        run_id = old[pruned]
                        budget -= self._conn.execute(
                            "DELETE FROM actions WHERE run_id = ? AND seq IN (SELECT seq FROM "
                            "actions WHERE run_id = ? ORDER BY seq LIMIT ?)",
                            (run_id, run_id, budget)).rowcount
                        if budget > 0:  # fewer left than asked: the run has no actions left
                            self._conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
                            budget -= 1
                            pruned += 1
                    self._conn.commit()
                step += 1
                if self._on_prune_step is not None:
                    self._on_prune_step(step)
                yield step
            if pruned:
                log.info("The run history %s: pruned %d run(s) that ended more than %g days "
                         "ago (history.keep_days)", self.path, pruned, keep)
        except sqlite3.Error as exc:
            log.error("The run history %s could not be pruned (%s); the show goes on",
                      self.path, exc)
        finally:
            self._pruned.set()

    def wait_pruned(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait until a prune has ended and none is under way; False after `timeout`."""
        return self._pruned.wait(timeout)

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
