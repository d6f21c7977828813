"""The run history: appended as it happens, survives a restart and a crash; `runner history`."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from runner.history import FAILURES_LISTED, HISTORY_NAME, RunHistory, default_path
from runner.model import Config
from runner.records import ActionRecord, Delivery, FeedbackStatus, Outcome, SceneRun
from tests.brokers import Mosquitto
from tests.conftest import Recorder, run_runner, wait_until


def _run(run_id: str = "r1", scene: str = "intro", trigger: str = "show:0 14 * * *",
         started: float | None = None) -> SceneRun:
    run = SceneRun(run_id=run_id, scene_id=scene, scene_name="Intro", trigger=trigger,
                   started_at=started if started is not None else time.time(), duration=5.0)
    run.records = [
        ActionRecord(index=0, round=1, planned=0.0, topic="room1/light", message="ON",
                     route="mqtt", seq=0),
        ActionRecord(index=1, round=1, planned=1.0, topic="room1/steam", message="ON",
                     route="mqtt", seq=1),
    ]
    return run


def test_a_run_and_its_actions_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / HISTORY_NAME
    history = RunHistory(db)
    run = _run()
    history.record_start(run)
    run.records[0].actual, run.records[0].delivery = 0.002, Delivery.SENT
    run.records[0].feedback, run.records[0].feedback_latency = FeedbackStatus.OK, 0.05
    history.record_action(run, run.records[0])
    run.records[1].actual, run.records[1].delivery = 1.001, Delivery.SENT
    run.records[1].feedback = FeedbackStatus.TIMEOUT
    history.record_changes(run)
    run.outcome, run.ended_at = Outcome.FEEDBACK_FAILED, run.started_at + 5
    history.record_end(run)
    history.close()

    reopened = RunHistory(db)  # the service restarted
    try:
        [got] = reopened.last_runs()
        assert (got["run_id"], got["scene"], got["trigger"], got["outcome"]) == (
            "r1", "intro", "show:0 14 * * *", "feedback failed")
        assert [r["topic"] for r in got["records"]] == ["room1/light", "room1/steam"]
        assert [f["topic"] for f in got["failures"]] == ["room1/steam"]
        assert reopened.get_run("r1") is not None
        assert reopened.get_run("nope") is None
    finally:
        reopened.close()


def test_a_crash_keeps_what_was_written_and_marks_the_run_interrupted(tmp_path: Path) -> None:
    db = tmp_path / HISTORY_NAME
    history = RunHistory(db)
    run = _run()
    history.record_start(run)
    run.records[0].actual, run.records[0].delivery = 0.001, Delivery.SENT
    history.record_changes(run)
    assert history.flush()
    # No record_end and no close: a reader in another connection sees it all committed.
    with sqlite3.connect(db) as other:
        assert other.execute("SELECT outcome FROM runs").fetchall() == [("running",)]
        assert other.execute("SELECT count(*) FROM actions").fetchone() == (1,)
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    after_crash = RunHistory(db)
    try:
        assert after_crash.close_unfinished() == 1
        [got] = after_crash.last_runs()
        assert got["outcome"] == "interrupted"
        assert got["records"][0]["delivery"] == "sent"
    finally:
        after_crash.close()
        history.close()


def test_writes_from_many_threads_all_land(tmp_path: Path) -> None:
    history = RunHistory(tmp_path / HISTORY_NAME)

    def one(i: int) -> None:
        run = _run(run_id=f"r{i}", started=1000.0 + i)
        history.record_start(run)
        for rec in run.records:
            rec.actual, rec.delivery = rec.planned, Delivery.SENT
            history.record_action(run, rec)
        run.outcome, run.ended_at = Outcome.COMPLETED, 1005.0 + i
        history.record_end(run)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    try:
        runs = history.last_runs(n=50)
        assert [r["run_id"] for r in runs] == [f"r{i}" for i in reversed(range(8))]
        assert all(r["outcome"] == "completed" and len(r["records"]) == 2 for r in runs)
    finally:
        history.close()


def test_history_lives_beside_the_config_or_per_user(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_path(Config(room="r", source=tmp_path / "runner.yaml")) == (
        tmp_path.resolve() / HISTORY_NAME)
    chosen = tmp_path / "elsewhere.db"
    assert default_path(Config(room="r", history_file=chosen)) == chosen
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_path(Config(room="r")) == tmp_path / "state" / "runner" / HISTORY_NAME


def test_runner_history_prints_the_last_runs(tmp_path: Path) -> None:
    (tmp_path / "scenes").mkdir()
    (tmp_path / "runner.yaml").write_text("room: room1\nscenes_dir: scenes\n")
    history = RunHistory(tmp_path / HISTORY_NAME)
    run = _run(run_id="a", started=time.time() - 60)
    history.record_start(run)
    run.records[1].actual, run.records[1].delivery = 1.0, Delivery.SENT
    run.records[1].feedback = FeedbackStatus.TIMEOUT
    run.outcome, run.ended_at = Outcome.FEEDBACK_FAILED, run.started_at + 5
    history.record_end(run)
    other = _run(run_id="b", scene="closing", trigger="cmd")
    history.record_start(other)
    history.close()

    result = run_runner("history", "--config", str(tmp_path / "runner.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("closing") < out.index("intro")  # newest first
    assert "show:0 14 * * *" in out and "feedback failed" in out
    assert "room1/steam" in out and "TIMEOUT" in out  # the failure is named
    assert "running" in out


def test_runner_history_without_a_database_says_so(tmp_path: Path) -> None:
    (tmp_path / "runner.yaml").write_text("room: room1\n")
    result = run_runner("history", "--config", str(tmp_path / "runner.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no runs" in result.stdout.lower()
    assert not (tmp_path / HISTORY_NAME).exists()


def test_runner_history_prints_times_in_the_rooms_timezone(tmp_path: Path) -> None:
    # Staff ask about "the 14:00 show": the room's clock, as the shows and the dashboard
    # use it, whatever zone the machine itself is set to.
    (tmp_path / "runner.yaml").write_text("room: room1\ntimezone: Asia/Tokyo\n")
    history = RunHistory(tmp_path / HISTORY_NAME)
    history.record_start(_run(started=1795928400.0))  # 2026-11-29 14:00 in Tokyo, 05:00 UTC
    history.close()
    result = run_runner("history", "--config", str(tmp_path / "runner.yaml"), cwd=tmp_path,
                        env={"TZ": "UTC"})
    assert result.returncode == 0, result.stderr
    assert "2026-11-29 14:00:00" in result.stdout, result.stdout
    assert "Asia/Tokyo" in result.stdout


LOOPING = """\
name: Loop
duration: 0.1
loop: true
actions:
  - {at: 0, topic: room1/light, message: "ON", feedback: none}
  - {at: 0.05, topic: room1/light, message: "OFF", feedback: none}
"""


def test_a_scene_looping_past_the_players_kept_rounds_keeps_every_action_in_the_history(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder) -> None:
    # The player keeps only the recent rounds of an endless loop in memory; the history
    # must still have every action once, not later rounds written over earlier ones.
    from runner.configfile import load_config  # noqa: PLC0415 - paho only for this test
    from runner.player import KEEP_ROUNDS  # noqa: PLC0415
    from runner.service import RoomService  # noqa: PLC0415

    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "loop.yaml").write_text(LOOPING)
    config = tmp_path / "runner.yaml"
    config.write_text(f"room: room1\nbroker: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
                      "scenes_dir: scenes\ndashboard: {enabled: false}\n")
    room = RoomService(load_config(config), dummy_media=True)
    room.start()
    try:
        run = room.play("loop", "manual")
        assert run is not None
        rounds = KEEP_ROUNDS + 10
        recorder.wait_for("room1/light", "OFF", count=rounds, timeout=30)
        room.stop()
        wait_until(lambda: room.player.current_run is None, what="loop stopped")
        saved = room.history.get_run(run.run_id)
    finally:
        room.shutdown()
    assert saved is not None
    timeline = [(r["round"], r["index"]) for r in saved["records"] if r["index"] >= 0
                and r["delivery"] == "sent"]
    assert len(timeline) == len(set(timeline)), "a record was written twice"
    assert {(n, i) for n in range(rounds) for i in (0, 1)} <= set(timeline)


def test_listing_runs_reads_only_the_failures_of_a_long_loop(tmp_path: Path) -> None:
    # The dashboard lists the last runs at every snapshot: a scene looping all day must
    # not be read action by action each time, only its few failures, through an index.
    history = RunHistory(tmp_path / HISTORY_NAME)
    run = _run(run_id="loop")
    run.records = []
    history.record_start(run)
    for seq in range(3000):
        rec = ActionRecord(index=seq % 5, round=seq // 5, planned=float(seq), route="mqtt",
                           topic="room1/spot1", message="ON", actual=float(seq),
                           delivery=Delivery.SENT, feedback=FeedbackStatus.OK, seq=seq)
        if seq % 100 == 7:
            rec.feedback = FeedbackStatus.TIMEOUT
        history.record_action(run, rec)
    try:
        assert history.flush(60), "3000 writes not committed"
        [listed] = history.last_runs(records=False)
        assert "records" not in listed
        assert listed["failure_count"] == 30
        assert len(listed["failures"]) == FAILURES_LISTED
        assert all(f["feedback"] == "TIMEOUT" for f in listed["failures"])
        with history._lock:  # the query the listing runs goes through the partial index
            plan = " ".join(str(r) for r in history._conn.execute(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM actions WHERE run_id = ? AND failed",
                ("loop",)))
        assert "actions_failed" in plan, plan
        [full] = history.last_runs()  # with records, as before
        assert len(full["records"]) == 3000 and full["failure_count"] == 30
    finally:
        history.close()


def test_a_history_from_before_the_failed_column_is_upgraded(tmp_path: Path) -> None:
    db = tmp_path / HISTORY_NAME
    old = sqlite3.connect(db)
    old.executescript(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, scene TEXT NOT NULL, name TEXT NOT NULL,"
        " trigger TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL, duration REAL,"
        " outcome TEXT NOT NULL);"
        "CREATE TABLE actions (run_id TEXT NOT NULL, seq INTEGER NOT NULL,"
        " record TEXT NOT NULL, PRIMARY KEY (run_id, seq));"
        "INSERT INTO runs VALUES ('r0', 'intro', 'Intro', 'cmd', 1.0, 2.0, 1.0, 'completed');"
        "INSERT INTO actions VALUES ('r0', 0, '{\"topic\": \"room1/a\", \"feedback\": \"OK\"}');"
        "INSERT INTO actions VALUES ('r0', 1,"
        " '{\"topic\": \"room1/b\", \"feedback\": \"ERROR\"}');")
    old.commit()
    old.close()
    history = RunHistory(db)
    try:
        [listed] = history.last_runs(records=False)
        assert listed["failure_count"] == 1 and listed["failures"][0]["topic"] == "room1/b"
    finally:
        history.close()
