"""The history file under the service: replaced or deleted → reopened; old runs pruned."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from runner.history import DAY, HISTORY_NAME, RunHistory
from runner.records import ActionRecord, Delivery, Outcome, SceneRun
from tests.brokers import Mosquitto
from tests.conftest import run_runner, wait_until

NOW = 2_000_000_000.0  # the injected wall clock


def _run(run_id: str, *, started: float, actions: int = 2, scene: str = "intro") -> SceneRun:
    run = SceneRun(run_id=run_id, scene_id=scene, scene_name=scene.title(), trigger="manual",
                   started_at=started, duration=5.0)
    run.records = [ActionRecord(index=i, round=1, planned=float(i), topic="room1/light",
                                message="ON", route="mqtt", actual=float(i),
                                delivery=Delivery.SENT, seq=i) for i in range(actions)]
    return run


def _record(history: RunHistory, run: SceneRun, *, ended: float | None = None) -> None:
    history.record_start(run)
    history.record_changes(run)
    if ended is not None:
        run.outcome, run.ended_at = Outcome.COMPLETED, ended
        history.record_end(run)


def _run_ids(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT run_id FROM runs")}
    finally:
        conn.close()


def _action_count(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM actions").fetchone()[0])
    finally:
        conn.close()


def _other_history(path: Path, run_id: str) -> None:
    """A history file written elsewhere (the backup that is restored), closed."""
    other = RunHistory(path)
    _record(other, _run(run_id, started=time.time() - 30), ended=time.time() - 25)
    other.close()


def _config(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "scenes").mkdir(exist_ok=True)
    (tmp_path / "scenes" / "intro.yaml").write_text(
        "actions:\n  - {at: 0, topic: room1/light, message: 'ON', feedback: none}\n")
    config = tmp_path / "runner.yaml"
    config.write_text(f"room: room1\nscenes_dir: scenes\n{extra}")
    return config


# -- a file replaced or deleted under the history -----------------------------------------


def test_a_history_file_replaced_under_it_is_reopened_and_the_next_run_lands_in_the_new_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / HISTORY_NAME
    history = RunHistory(db)
    try:
        _record(history, _run("before", started=time.time() - 60), ended=time.time() - 50)
        assert history.flush()
        _other_history(tmp_path / "backup.sqlite3", "restored")
        os.replace(tmp_path / "backup.sqlite3", db)  # the restore, as `mv` does it

        with caplog.at_level(logging.WARNING, logger="history"):
            _record(history, _run("after", started=time.time()), ended=time.time())
            assert history.flush()
        assert {r["run_id"] for r in history.last_runs()} == {"restored", "after"}
    finally:
        history.close()
    assert _run_ids(db) == {"restored", "after"}  # read by another connection, after close
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("replaced by another file" in w and "reopened" in w for w in warnings), warnings
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_writes_queued_before_the_reopen_go_to_the_new_file(tmp_path: Path) -> None:
    db = tmp_path / HISTORY_NAME
    gate = threading.Event()
    history = RunHistory(db)
    try:
        assert history.flush()
        history._put(lambda _c: gate.wait(5))  # the writer is busy while the file is replaced
        run = _run("queued", started=time.time(), actions=50)
        _record(history, run, ended=time.time())  # queued, not yet written
        _other_history(tmp_path / "backup.sqlite3", "restored")
        os.replace(tmp_path / "backup.sqlite3", db)
        gate.set()
        assert history.flush()
    finally:
        history.close()
    assert _run_ids(db) == {"restored", "queued"}
    assert _action_count(db) == 2 + 50


def test_a_deleted_history_file_is_created_again_with_the_next_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / HISTORY_NAME
    history = RunHistory(db)
    try:
        _record(history, _run("gone", started=time.time() - 60), ended=time.time() - 50)
        assert history.flush()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        assert not db.exists()
        with caplog.at_level(logging.WARNING, logger="history"):
            _record(history, _run("next", started=time.time()), ended=time.time())
            assert history.flush()
    finally:
        history.close()
    assert db.exists()
    assert _run_ids(db) == {"next"}
    assert any("was deleted" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


def test_a_deleted_history_file_with_its_log_left_beside_it_is_created_clean(
        tmp_path: Path) -> None:
    # `rm history.sqlite3` leaves -wal behind: the new file must not take its pages.
    db = tmp_path / HISTORY_NAME
    history = RunHistory(db)
    try:
        for i in range(20):
            _record(history, _run(f"old{i}", started=time.time() - 60), ended=time.time())
        assert history.flush()
        db.unlink()
        _record(history, _run("next", started=time.time()), ended=time.time())
        assert history.flush()
    finally:
        history.close()
    assert _run_ids(db) == {"next"}


def test_runner_history_reads_a_replaced_file_after_the_next_run(tmp_path: Path) -> None:
    config = _config(tmp_path)
    db = tmp_path / HISTORY_NAME
    history = RunHistory(db)
    try:
        for i in range(30):  # enough that the old file's log holds many pages
            _record(history, _run(f"old{i}", started=time.time() - 100 + i, actions=20,
                                  scene="closing"), ended=time.time())
        assert history.flush()
        _other_history(tmp_path / "backup.sqlite3", "restored")
        os.replace(tmp_path / "backup.sqlite3", db)
        _record(history, _run("after", started=time.time(), scene="finale"),
                ended=time.time())
        assert history.flush()
        # read while the service still has the history open, as an operator would
        result = run_runner("history", "--config", str(config), cwd=tmp_path)
    finally:
        history.close()
    assert result.returncode == 0, result.stderr
    assert "malformed" not in result.stderr
    assert "Finale" in result.stdout or "finale" in result.stdout
    assert "closing" not in result.stdout  # the old file's runs stayed in the old file


# -- retention -------------------------------------------------------------------------


def _seed(db: Path) -> None:
    """Runs that ended 200, 100 and 10 days before NOW, one still running from long ago."""
    seed = RunHistory(db)
    for run_id, days in (("d200", 200), ("d100", 100), ("d10", 10)):
        ended = NOW - days * DAY
        _record(seed, _run(run_id, started=ended - 60, actions=3), ended=ended)
    _record(seed, _run("running", started=NOW - 300 * DAY, actions=3))
    seed.close()


def test_retention_prunes_only_runs_that_ended_before_keep_days(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / HISTORY_NAME
    _seed(db)
    with caplog.at_level(logging.INFO, logger="history"):
        history = RunHistory(db, keep_days=90, clock=lambda: NOW, prune_batch=2)
        try:
            assert history.wait_pruned()
            assert {r["run_id"] for r in history.last_runs()} == {"d10", "running"}
        finally:
            history.close()
    assert _action_count(db) == 6  # the pruned runs' actions went with them
    assert any("pruned 2 run(s)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("keep", [None, 0])
def test_keep_days_0_or_none_keeps_every_run(tmp_path: Path, keep: float | None) -> None:
    db = tmp_path / HISTORY_NAME
    _seed(db)
    history = RunHistory(db, keep_days=keep, clock=lambda: NOW)
    try:
        assert history.wait_pruned()
        assert history.flush()
    finally:
        history.close()
    assert _run_ids(db) == {"d200", "d100", "d10", "running"}


def test_a_prune_runs_on_the_writer_between_writes_not_on_the_callers_thread(
        tmp_path: Path) -> None:
    db = tmp_path / HISTORY_NAME
    seed = RunHistory(db)
    for i in range(5):
        ended = NOW - 200 * DAY
        _record(seed, _run(f"old{i}", started=ended - 60, actions=100), ended=ended)
    seed.close()

    first_step = threading.Event()
    release = threading.Event()
    steps: list[int] = []
    seen_between: list[bool] = []

    def on_step(n: int) -> None:
        steps.append(n)
        assert threading.current_thread().name == "history"
        if n == 1:
            first_step.set()
            release.wait(5)
        elif n == 2:  # the write queued during step 1 was committed before this step
            seen_between.append("new" in _run_ids(db))

    history = RunHistory(db, keep_days=30, clock=lambda: NOW, prune_batch=50,
                         on_prune_step=on_step)
    try:
        assert first_step.wait(5), "no prune started"
        _record(history, _run("new", started=NOW), ended=NOW)  # returns while the prune waits
        assert not history.wait_pruned(0)  # the prune is still under way
        release.set()
        assert history.wait_pruned()
        assert history.flush()
    finally:
        release.set()
        history.close()
    assert seen_between == [True]
    assert len(steps) >= 10  # 500 action rows in steps of 50
    assert _run_ids(db) == {"new"}


# -- in the service, from the config ------------------------------------------------------


def test_the_service_prunes_by_the_configs_keep_days_and_reopens_a_restored_file(
        tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    from runner.configfile import load_config  # noqa: PLC0415 - paho only for this test
    from runner.service import RoomService  # noqa: PLC0415

    config = _config(tmp_path, f"broker: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
                               "dashboard: {enabled: false}\nhistory: {keep_days: 30}\n")
    db = tmp_path / HISTORY_NAME
    seed = RunHistory(db)
    _record(seed, _run("ancient", started=time.time() - 400 * DAY),
            ended=time.time() - 400 * DAY)
    _record(seed, _run("recent", started=time.time() - 2 * DAY), ended=time.time() - 2 * DAY)
    seed.close()

    loaded = load_config(config)
    assert loaded.history_keep_days == 30
    room = RoomService(loaded, dummy_media=True)
    room.start()
    try:
        assert room.history.wait_pruned()
        assert {r["run_id"] for r in room.history.last_runs()} == {"recent"}
        _other_history(tmp_path / "backup.sqlite3", "restored")
        os.replace(tmp_path / "backup.sqlite3", db)
        with caplog.at_level(logging.WARNING, logger="history"):
            run = room.play("intro", "manual")
            assert run is not None
            wait_until(lambda: room.player.current_run is None, what="intro ended")
            wait_until(lambda: any(r["run_id"] == run.run_id and r["outcome"] != "running"
                                   for r in room.history.last_runs()), what="run written")
    finally:
        room.shutdown()
    assert _run_ids(db) == {"restored", run.run_id}
    assert any("replaced by another file" in r.getMessage() for r in caplog.records)
    result = run_runner("history", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "manual" in result.stdout


def test_keep_days_is_schema_checked_with_a_hint(tmp_path: Path) -> None:
    from runner.configfile import check_config, load_config  # noqa: PLC0415

    assert load_config(_config(tmp_path)).history_keep_days == 90  # the default
    for text, expected in (("history: {keep_days: null}\n", None),
                           ("history: {keep_days: 0}\n", None),
                           ("history: {keep_days: 7.5}\n", 7.5)):
        assert load_config(_config(tmp_path, text)).history_keep_days == expected
    _config_, diagnostics = check_config(_config(tmp_path, "history: {keep_dayz: 30}\n"))
    assert _config_ is None
    assert any(d.line == 3 and "did you mean 'keep_days'?" in d.message for d in diagnostics)
    _config_, diagnostics = check_config(_config(tmp_path, "history: {keep_days: -1}\n"))
    assert _config_ is None
    assert any(d.line == 3 and "must be at least 0" in d.message for d in diagnostics)
