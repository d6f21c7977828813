"""Daily shows across every daylight-saving change of 2026: the real scheduler, driven step by
step through a whole transition day by an injected wall and monotonic clock, starts each
show exactly once per real occurrence and never spins."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from runner.model import Config, Show
from runner.shows import ShowScheduler, day_start, starts_between
from tests.conftest import run_runner
from tests.test_shows import ManualClocks

SHOWS = (
    Show(scene="daily", time="10:00"),
    Show(scene="hourly", cron="0 * * * *"),
    Show(scene="half", cron="*/30 * * * *"),
    Show(scene="night", time="02:30"),
    Show(scene="sunday", time="01:30", days=("sun",)),
    Show(scene="sunday_cron", cron="30 2 * * 0"),
    Show(scene="workdays", cron="0 10 * * 1-5"),
)
NAMES = tuple(s.scene for s in SHOWS)
TICK = 60.0
MAX_STEPS = 10_000  # a day of one-minute ticks and every start is ~1,600

# (zone, a transition day (a Sunday), starts per show in the order of SHOWS)
# A repeated wall time plays once unless the hour is a wildcard (then every real hour);
# a skipped one plays at the shifted time unless the hour is a wildcard (then not).
CASES = [
    ("Europe/Berlin", date(2026, 3, 29), (1, 23, 46, 1, 1, 1, 0)),  # 02:00 -> 03:00
    ("Europe/Berlin", date(2026, 10, 25), (1, 25, 50, 1, 1, 1, 0)),  # 03:00 -> 02:00
    ("America/New_York", date(2026, 3, 8), (1, 23, 46, 1, 1, 1, 0)),  # 02:00 -> 03:00
    ("America/New_York", date(2026, 11, 1), (1, 25, 50, 1, 1, 1, 0)),  # 02:00 -> 01:00
    ("Australia/Lord_Howe", date(2026, 4, 5), (1, 24, 49, 1, 1, 1, 0)),  # 02:00 -> 01:30
    ("Australia/Lord_Howe", date(2026, 10, 4), (1, 23, 47, 1, 1, 1, 0)),  # 02:00 -> 02:30
    ("Asia/Kolkata", date(2026, 10, 25), (1, 24, 48, 1, 1, 1, 0)),  # no change in 2026
    ("UTC", date(2026, 10, 25), (1, 24, 48, 1, 1, 1, 0)),
]


def run_day(zone: str, day: date) -> dict[str, list[datetime]]:
    """Every start the scheduler hands on over the local day `day`, by show."""
    tz = ZoneInfo(zone)
    begin, end = day_start(day, tz), day_start(day + timedelta(days=1), tz)
    clocks = ManualClocks((begin - timedelta(minutes=1)).astimezone(tz))
    fired: dict[str, list[datetime]] = {n: [] for n in NAMES}
    sched = ShowScheduler(SHOWS, lambda s, at: fired[s.scene].append(at), tz,
                          now=lambda: clocks.wall, monotonic=lambda: clocks.mono, tick=TICK)
    sched._plan_all(clocks.wall)
    for _ in range(MAX_STEPS):
        wait = sched.step()
        if clocks.wall.timestamp() >= end.timestamp():
            break
        clocks.advance(wait)
    else:
        pytest.fail(f"the show loop did not get through {day} in {zone} in {MAX_STEPS} steps "
                    f"(stuck at {clocks.wall.isoformat()}): it spins")
    return {n: [at for at in ats if begin.timestamp() <= at.timestamp() < end.timestamp()]
            for n, ats in fired.items()}


@pytest.mark.parametrize(("zone", "day", "counts"), CASES,
                         ids=[f"{z}-{d}" for z, d, _ in CASES])
def test_each_show_starts_once_per_real_occurrence_over_the_transition_day(
        zone: str, day: date, counts: tuple[int, ...]) -> None:
    fired = run_day(zone, day)
    assert {n: len(ats) for n, ats in fired.items()} == dict(zip(NAMES, counts, strict=True))
    for ats in fired.values():
        stamps = [at.timestamp() for at in ats]
        assert stamps == sorted(set(stamps))  # in order, no instant twice
    # The hourly and half-hourly shows start on every real hour / half hour of the day.
    hourly = [at.timestamp() for at in fired["hourly"]]
    # (Lord Howe's 30-minute change puts 1.5 real hours between two of them.)
    assert {b - a for a, b in pairwise(hourly)} <= {3600.0, 5400.0}
    half = [at.timestamp() for at in fired["half"]]
    assert {b - a for a, b in pairwise(half)} == {1800.0}
    # The command's listing names the same starts.
    listed = starts_between(Config(room="r", timezone=zone, shows=SHOWS), day, 1)
    assert sorted((s.scene, at.timestamp()) for s, at in listed) == sorted(
        (n, at.timestamp()) for n, ats in fired.items() for at in ats)


@pytest.mark.parametrize(("zone", "day", "offset"), [
    ("Europe/Berlin", date(2026, 10, 25), timedelta(hours=2)),
    ("America/New_York", date(2026, 11, 1), timedelta(hours=-4)),
    ("Australia/Lord_Howe", date(2026, 4, 5), timedelta(hours=11)),
])
def test_a_repeated_wall_time_plays_at_its_first_occurrence(
        zone: str, day: date, offset: timedelta) -> None:
    fired = run_day(zone, day)
    first_hour = {"Europe/Berlin": "night", "America/New_York": "sunday",
                  "Australia/Lord_Howe": "sunday"}[zone]
    [at] = fired[first_hour]
    assert at.utcoffset() == offset  # summer time: the first of the two
    assert at.strftime("%H:%M") in ("02:30", "01:30")


@pytest.mark.parametrize(("zone", "day", "wall"), [
    ("Europe/Berlin", date(2026, 3, 29), "2026-03-29T03:30:00+02:00"),
    ("America/New_York", date(2026, 3, 8), "2026-03-08T03:30:00-04:00"),
])
def test_a_skipped_wall_time_plays_once_at_the_shifted_time(
        zone: str, day: date, wall: str) -> None:
    fired = run_day(zone, day)
    assert [at.isoformat() for at in fired["night"]] == [wall]
    assert [at.isoformat() for at in fired["sunday_cron"]] == [wall]


def test_in_the_repeated_hour_the_next_start_is_strictly_later_and_never_now() -> None:
    # The reported spin: at 02:00:00 CET (the second 02:00), "just after now" read as a
    # wall time was 02:00 CEST, an hour earlier, and the hourly show was due again and again.
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 10, 25, 2, 0, tzinfo=berlin, fold=1)
    fired: list[datetime] = []
    sched = ShowScheduler((Show(scene="hourly", cron="0 * * * *"),),
                          lambda _s, at: fired.append(at), berlin,
                          now=lambda: now, monotonic=lambda: 0.0)
    sched._plan_all(datetime.fromtimestamp(now.timestamp() - 1, berlin))  # 01:59:59 CET
    waits = [sched.step() for _ in range(5)]
    assert fired == [now]
    assert fired[0].utcoffset() == timedelta(hours=1)
    assert all(w > 0 for w in waits)
    nxt = sched.next_starts()[0][1]
    assert nxt is not None and nxt.timestamp() - now.timestamp() == 3600.0


def _room(tmp_path: Path, shows: str) -> Path:
    (tmp_path / "scenes").mkdir()
    for name in ("night", "hourly"):
        (tmp_path / "scenes" / f"{name}.yaml").write_text(
            "name: N\nactions:\n  - {at: 0, topic: room1/light, message: \"ON\"}\n")
    (tmp_path / "runner.yaml").write_text(
        f"room: room1\nscenes_dir: scenes\ntimezone: Europe/Berlin\nshows:\n{shows}")
    return tmp_path / "runner.yaml"


def test_runner_shows_from_lists_the_fall_back_night_with_offsets_and_the_once_only_start(
        tmp_path: Path) -> None:
    config = _room(tmp_path, '  - {scene: night, time: "02:30"}\n'
                             '  - {scene: hourly, cron: "0 * * * *"}\n')
    result = run_runner("shows", "--config", str(config), "--from", "2026-10-25",
                        "--days", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "2026-10-25 to 2026-10-26 (Europe/Berlin)" in lines[0]
    night = [ln.split() for ln in lines if " night " in f" {ln} "]
    assert [row[:3] for row in night] == [
        ["2026-10-25T02:30:00+02:00", "UTC+02:00", "Sunday"],  # once, the first 02:30
        ["2026-10-26T02:30:00+01:00", "UTC+01:00", "Monday"],
    ]
    hourly = [ln.split()[:2] for ln in lines if " hourly " in f" {ln} "]
    assert len(hourly) == 25 + 24  # every real hour of both days
    assert ["2026-10-25T02:00:00+02:00", "UTC+02:00"] in hourly
    assert ["2026-10-25T02:00:00+01:00", "UTC+01:00"] in hourly
    stamps = [datetime.fromisoformat(ln.split()[0]).timestamp() for ln in lines[2:]]
    assert stamps == sorted(stamps)


def test_runner_shows_from_a_spring_forward_day_shows_the_shifted_start(tmp_path: Path) -> None:
    config = _room(tmp_path, '  - {scene: night, time: "02:30"}\n')
    result = run_runner("shows", "--config", str(config), "--from", "2026-03-29", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [row] = [ln.split() for ln in result.stdout.splitlines() if " night " in f" {ln} "]
    assert row[:2] == ["2026-03-29T03:30:00+02:00", "UTC+02:00"]


def test_runner_shows_from_a_date_that_is_not_one_is_a_usage_error(tmp_path: Path) -> None:
    config = _room(tmp_path, '  - {scene: night, time: "02:30"}\n')
    result = run_runner("shows", "--config", str(config), "--from", "25.10.2026", cwd=tmp_path)
    assert result.returncode == 2
    assert "YYYY-MM-DD" in result.stderr
