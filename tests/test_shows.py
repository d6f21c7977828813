"""Daily shows: crontab numbering, next starts, firing on time, skipping late, clock jumps."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from runner.model import Config, Show
from runner.shows import (
    ShowError,
    ShowScheduler,
    cron_trigger,
    crontab_days,
    next_starts,
)
from tests.conftest import run_runner, wait_until

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
SUNDAY_NOON = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # a Sunday


class FakeWallClock:
    """Wall time that follows the monotonic clock from a chosen moment, and can jump."""

    def __init__(self, start: datetime) -> None:
        self._start = start
        self._mono0 = time.monotonic()
        self._offset = timedelta()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._read()

    def _read(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._mono0) + self._offset

    def jump_to(self, moment: datetime) -> None:
        with self._lock:
            self._offset += moment - self._read()


@pytest.mark.parametrize(("field", "days"), [
    ("0", "sun"), ("7", "sun"), ("1", "mon"), ("6", "sat"),
    ("1-5", "mon,tue,wed,thu,fri"), ("0-2", "mon,tue,sun"), ("5-7", "fri,sat,sun"),
    ("*/2", "tue,thu,sat,sun"), ("1-5/2", "mon,wed,fri"), ("sat,sun", "sat,sun"),
    ("MON-fri", "mon,tue,wed,thu,fri"), ("0-7", "*"), ("*", "*"),
])
def test_crontab_day_numbers_mean_what_cron_means(field: str, days: str) -> None:
    assert crontab_days(field) == days


@pytest.mark.parametrize(("field", "weekday"), [("1", 0), ("0", 6), ("7", 6), ("5", 4)])
def test_cron_weekday_fires_on_that_day(field: str, weekday: int) -> None:
    fire = cron_trigger(f"0 10 * * {field}", UTC).get_next_fire_time(None, SUNDAY_NOON)
    assert fire.weekday() == weekday
    assert (fire.hour, fire.minute) == (10, 0)


def test_day_of_month_and_weekday_together_match_either_as_in_cron() -> None:
    # Friday 4 Dec comes before the 13th: cron fires on either.
    fire = cron_trigger("0 10 13 * 5", UTC).get_next_fire_time(None, SUNDAY_NOON)
    assert fire.date().isoformat() == "2026-12-04"


@pytest.mark.parametrize(("expr", "words"), [
    ("0 10 * * 8", "not 0-7 or a day name"),
    ("0 10 * *", "five"),
    ("61 * * * *", "61"),
    ("0 10 * * 3-1", "backwards"),
])
def test_bad_cron_is_a_sentence(expr: str, words: str) -> None:
    with pytest.raises(ShowError, match=words):
        cron_trigger(expr, UTC)


def test_next_starts_cron_and_time_with_days_in_the_config_timezone() -> None:
    config = Config(room="room1", timezone="Europe/Berlin", shows=(
        Show(scene="intro", cron="0 10 * * 1"),
        Show(scene="closing", time="17:45", days=("sat", "sun")),
        Show(scene="daily", time="08:30"),
    ))
    starts = dict((s.scene, at) for s, at in next_starts(config, now=SUNDAY_NOON))
    assert starts["intro"] == datetime(2026, 11, 30, 10, 0, tzinfo=BERLIN)
    assert starts["intro"].strftime("%A") == "Monday"
    assert starts["closing"] == datetime(2026, 11, 29, 17, 45, tzinfo=BERLIN)
    assert starts["daily"] == datetime(2026, 11, 30, 8, 30, tzinfo=BERLIN)


def _scheduler(shows: tuple[Show, ...], clock: FakeWallClock, *, grace: float = 60.0,
               tick: float = 0.05) -> tuple[ShowScheduler, list[tuple[str, datetime]]]:
    fired: list[tuple[str, datetime]] = []
    sched = ShowScheduler(shows, lambda s, at: fired.append((s.scene, at)), UTC, now=clock,
                          tick=tick, grace=grace)
    return sched, fired


def test_a_show_due_in_two_seconds_starts_once_on_time() -> None:
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 58, tzinfo=UTC))
    sched, fired = _scheduler((Show(scene="intro", cron="0 10 * * 1"),), clock)
    sched.start()
    try:
        wait_until(lambda: fired, timeout=6, what="the 10:00 show")
        at_fire = clock()
        assert fired == [("intro", datetime(2026, 11, 30, 10, 0, tzinfo=UTC))]
        assert timedelta(0) <= at_fire - fired[0][1] < timedelta(seconds=1.5)
        nxt = sched.next_starts()[0][1]
        assert nxt == datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    finally:
        sched.stop()


def test_a_show_missed_by_more_than_the_grace_is_skipped_with_a_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shows")
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 0, tzinfo=UTC))
    sched, fired = _scheduler((Show(scene="intro", time="10:00"),), clock, grace=60)
    sched.start()
    try:
        clock.jump_to(datetime(2026, 11, 30, 10, 5, 0, tzinfo=UTC))  # the Pi set its clock
        wait_until(lambda: "skipped" in caplog.text, timeout=5, what="the skip line")
        assert "missed by 300 s" in caplog.text
        assert "jumped" in caplog.text
        assert fired == []
        assert sched.next_starts()[0][1] == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    finally:
        sched.stop()


def test_a_show_a_little_late_within_the_grace_still_starts() -> None:
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 0, tzinfo=UTC))
    sched, fired = _scheduler((Show(scene="intro", time="10:00"),), clock, grace=60)
    sched.start()
    try:
        clock.jump_to(datetime(2026, 11, 30, 10, 0, 20, tzinfo=UTC))
        wait_until(lambda: fired, timeout=5, what="the late-but-in-grace show")
        assert fired == [("intro", datetime(2026, 11, 30, 10, 0, tzinfo=UTC))]
    finally:
        sched.stop()


def test_the_clock_jumping_back_re_plans_the_shows() -> None:
    # Booted with a clock a day ahead: 10:00 today looked past, so tomorrow was planned.
    clock = FakeWallClock(datetime(2026, 12, 1, 10, 30, 0, tzinfo=UTC))
    sched, fired = _scheduler((Show(scene="intro", time="10:00"),), clock)
    sched.start()
    try:
        assert sched.next_starts()[0][1] == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
        clock.jump_to(datetime(2026, 11, 30, 9, 59, 58, tzinfo=UTC))  # time synchronised
        wait_until(lambda: fired, timeout=6, what="the re-planned show")
        assert fired == [("intro", datetime(2026, 11, 30, 10, 0, tzinfo=UTC))]
    finally:
        sched.stop()


def test_runner_shows_prints_scene_iso_time_and_weekday(tmp_path: Path) -> None:
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "intro.yaml").write_text(
        "name: Intro\nactions:\n  - {at: 0, topic: room1/light, message: \"ON\"}\n")
    (tmp_path / "runner.yaml").write_text(
        "room: room1\n"
        "scenes_dir: scenes\n"
        "shows:\n"
        "  - {scene: intro, cron: \"0 10 * * 1\"}\n"
    )
    result = run_runner("shows", "--config", str(tmp_path / "runner.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if "intro" in ln)
    assert "Monday" in line
    stamp = next(w for w in line.split() if "T10:00:00" in w)
    assert datetime.fromisoformat(stamp).weekday() == 0


def test_runner_shows_without_shows_says_so(tmp_path: Path) -> None:
    (tmp_path / "scenes").mkdir()
    (tmp_path / "runner.yaml").write_text("room: room1\nscenes_dir: scenes\n")
    result = run_runner("shows", "--config", str(tmp_path / "runner.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no shows" in result.stdout.lower()


class ManualClocks:
    """A wall clock and a monotonic clock the test sets by hand."""

    def __init__(self, wall: datetime) -> None:
        self.wall = wall
        self.mono = 1000.0

    def advance(self, seconds: float, *, wall_extra: float = 0.0) -> None:
        utc = self.wall.astimezone(UTC) + timedelta(seconds=seconds + wall_extra)
        self.wall = utc.astimezone(self.wall.tzinfo)
        self.mono += seconds


def test_daylight_saving_change_is_not_a_clock_jump_but_a_real_jump_is(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shows")
    # 25 Oct 2026, 03:00 CEST: clocks in Berlin go back to 02:00 CET.
    clocks = ManualClocks(datetime(2026, 10, 25, 2, 59, 59, tzinfo=BERLIN))
    fired: list[datetime] = []
    sched = ShowScheduler((Show(scene="intro", time="10:00"),),
                          lambda _s, at: fired.append(at), BERLIN,
                          now=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    sched.start()
    sched.stop()  # steps are driven by hand below
    sched.step()
    clocks.advance(2)  # the wall now reads 02:00:01 (CET): two real seconds later
    assert clocks.wall.hour == 2 and clocks.wall.utcoffset() == timedelta(hours=1)
    sched.step()
    assert "jumped" not in caplog.text
    clocks.advance(1, wall_extra=7 * 3600 + 59 * 60 + 57)  # NTP: a jump to 09:59:59
    sched.step()
    assert clocks.wall.time().isoformat() == "09:59:59"
    assert "jumped by +28797 s" in caplog.text
    assert fired == []
    clocks.advance(1)
    sched.step()
    assert fired == [datetime(2026, 10, 25, 10, 0, tzinfo=BERLIN)]


def test_a_clock_reading_exactly_the_starting_second_starts_the_show_once() -> None:
    # APScheduler's next fire time counts `now` itself: planned again from exactly
    # 10:00:00.000000, the show would be due at 10:00 once more and start twice.
    moment = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    fired: list[tuple[str, datetime]] = []
    sched = ShowScheduler((Show(scene="intro", time="10:00"),),
                          lambda show, at: fired.append((show.scene, at)), UTC,
                          now=lambda: moment, monotonic=lambda: 0.0)
    sched._plan_all(moment - timedelta(seconds=1))
    sched.step()
    sched.step()
    assert fired == [("intro", moment)]
    assert sched.next_starts()[0][1] == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def test_the_clock_going_back_after_a_show_does_not_play_that_show_again(
        caplog: pytest.LogCaptureFixture) -> None:
    # NTP pulls back a clock that ran ahead: the 10:00 show was already played at what
    # the clock called 10:00, and must not be played a second time at the real 10:00.
    caplog.set_level(logging.WARNING, logger="shows")
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 59, tzinfo=UTC))
    sched, fired = _scheduler((Show(scene="intro", time="10:00"),), clock)
    sched.start()
    try:
        wait_until(lambda: fired, timeout=6, what="the 10:00 show")
        clock.jump_to(datetime(2026, 11, 30, 9, 59, 50, tzinfo=UTC))
        wait_until(lambda: "jumped" in caplog.text, timeout=6, what="the jump noticed")
        assert sched.next_starts()[0][1] == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
        assert fired == [("intro", datetime(2026, 11, 30, 10, 0, tzinfo=UTC))]
    finally:
        sched.stop()
