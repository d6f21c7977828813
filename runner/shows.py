"""Daily shows: crontab lines and times of day turned into planned starts, fired on time or skipped.

APScheduler's CronTrigger matches the fields, on wall times only: it runs in UTC, a zone
without daylight saving, and this module turns each matching wall time into absolute
instants in the show's zone (zoneinfo, respecting `fold`). A wall time that occurs twice
(the hour repeated when the clocks go back) plays once, at its first occurrence, unless
the hour field is a wildcard (`*`, `*/2`): then, as in cron, every real hour plays. A wall
time that does not exist (the hour skipped when the clocks go forward) plays once at the
shifted time (02:30 becomes 03:30), or, for a wildcard hour, not at all, as in cron.
"The next start after t" is always strictly after t as an instant, so the loop cannot
come back to a start it has handed on. The crontab's day-of-week numbering (0 and 7 =
Sunday) is translated into APScheduler's (0 = Monday).

The loop is this module's own, so that a show is never played late: at its moment it
either starts within the grace period or is skipped with a log line, and a wall clock
that jumps (a Pi without a real-time clock sets its time after boot) re-plans every show.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from datetime import time as wall_time

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from runner.clock import timezone_for as timezone_for  # noqa: PLC0414 - re-exported
from runner.clock import timezone_name as timezone_name  # noqa: PLC0414 - re-exported
from runner.errors import ShowError as ShowError  # noqa: PLC0414 - re-exported
from runner.model import Config, Show

log = logging.getLogger("shows")

GRACE_SECONDS = 60.0  # a show later than this (reboot, clock jump, busy room) is skipped
TICK_SECONDS = 1.0  # how often the loop looks at the clock: bounds the reaction to a jump
CLOCK_JUMP_SECONDS = 5.0  # wall vs monotonic disagreement that counts as a clock jump
JUST_AFTER = timedelta(microseconds=1)  # the clock's resolution
# Further than any daylight-saving change moves a wall time: offset changes this close
# to an instant are taken into account when looking for the next start.
MAX_SHIFT = timedelta(hours=3)

# Crontab numbering: 0 (and 7) is Sunday. APScheduler numbers from Monday, so days
# are handed to it by name, which both read the same way.
CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _day_number(token: str, expr: str) -> int:
    name = token.strip().lower()
    if name.isdigit():
        n = int(name)
        if 0 <= n <= 7:
            return n
    elif name[:3] in CRON_DAYS and (len(name) == 3 or _full_day(name)):
        return CRON_DAYS.index(name[:3])
    raise ShowError(
        f"cron {expr!r}: day of week {token!r} is not 0-7 or a day name "
        "(0 and 7 = Sunday, 1 = Monday, or sun, mon, tue, ...)"
    )


def _full_day(name: str) -> bool:
    return any(w.lower() == name for w in WEEKDAY_NAMES)


def crontab_days(field: str, expr: str = "") -> str:
    """Translate a crontab day-of-week field (0/7 = Sunday) into APScheduler's day names.

    Numbers, names, ranges, lists and steps are expanded to the set of days they mean,
    so "0-2", "5-7", "*/2" and "mon-fri" all come out right whatever the numbering.
    """
    if field.strip() in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ShowError(f"cron {expr!r}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _day_number(a, expr), _day_number(b, expr)
            if last == 0 and first > 0:
                last = 7  # "5-0" is not valid crontab, but "5-7" (Fri..Sun) is
            if first > last:
                raise ShowError(
                    f"cron {expr!r}: day range {base!r} runs backwards; "
                    "write it as a list, for example sat,sun,mon"
                )
        else:
            first = _day_number(base, expr)
            last = 7 if step_text else first  # "1/2" means from Monday on, every other day
        days.update(d % 7 for d in range(first, last + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(CRON_DAYS[d] for d in _monday_first(days))


def _monday_first(days: Iterable[int]) -> list[int]:
    return sorted(days, key=lambda d: (d + 6) % 7)


def cron_trigger(expr: str, tz: tzinfo) -> BaseTrigger:
    """A trigger for a standard five-field crontab line (minute hour day month weekday).

    As in cron, when both day of month and day of week are restricted, either matches.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ShowError(
            f"cron {expr!r} has {len(fields)} fields; a crontab line has five: "
            "minute hour day-of-month month day-of-week, for example \"0 10 * * 1\""
        )
    minute, hour, day, month, dow = fields
    weekday = crontab_days(dow, expr)
    try:
        if day != "*" and weekday != "*":
            return OrTrigger([
                CronTrigger(minute=minute, hour=hour, day=day, month=month, timezone=tz),
                CronTrigger(minute=minute, hour=hour, month=month, day_of_week=weekday,
                            timezone=tz),
            ])
        return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                           day_of_week=weekday, timezone=tz)
    except ValueError as exc:
        raise ShowError(f"cron {expr!r}: {exc}") from None


@dataclass(frozen=True)
class Schedule:
    """When a show starts: its wall times (`walls`, matched as if in UTC) read in `tz`.

    `every_hour`: the hour field is a wildcard, so a repeated hour plays again and a
    skipped one is not made up for (cron's rule for wildcard jobs).
    """

    walls: BaseTrigger
    tz: tzinfo
    every_hour: bool = False


def show_trigger(show: Show, tz: tzinfo) -> Schedule:
    """The schedule of one show: its `cron`, or its `time` on its `days` (every day if none)."""
    if show.cron:
        hour_field = show.cron.split()[1] if len(show.cron.split()) > 1 else ""
        return Schedule(cron_trigger(show.cron, timezone.utc), tz,
                        every_hour=hour_field.startswith("*"))
    if not show.time:
        raise ShowError(f"show of scene {show.scene!r} has neither cron nor time; add one")
    try:
        hour, minute = (int(p) for p in show.time.split(":"))
        if not (0 <= hour <= 23 and 0 <= minute <= 59):
            raise ValueError
    except ValueError:
        raise ShowError(
            f"show of scene {show.scene!r}: time {show.time!r} is not HH:MM, for example \"17:45\""
        ) from None
    weekday = crontab_days(",".join(show.days), show.time) if show.days else "*"
    return Schedule(CronTrigger(hour=hour, minute=minute, day_of_week=weekday,
                                timezone=timezone.utc), tz)


def describe(show: Show) -> str:
    """How the show was written, for log lines: the cron line, or the time and days."""
    if show.cron:
        return f"cron {show.cron!r}"
    days = ",".join(show.days) if show.days else "every day"
    return f"{show.time} {days}"


def _instants(wall: datetime, schedule: Schedule) -> list[float]:
    """The epoch seconds at which the naive wall time `wall` plays in the schedule's zone."""
    first = wall.replace(tzinfo=schedule.tz, fold=0).timestamp()
    second = wall.replace(tzinfo=schedule.tz, fold=1).timestamp()
    if first == second:
        return [first]
    if first < second:  # repeated: the clocks went back over it
        return [first, second] if schedule.every_hour else [first]
    # Skipped: fold=0 reads it with the offset before the change, i.e. shifted forward.
    return [] if schedule.every_hour else [first]


def _offset_spread(tz: tzinfo, t: float) -> timedelta:
    """How far the zone's UTC offset moves within MAX_SHIFT of the instant `t` (0 mostly)."""
    step = 1800.0
    reach = int(MAX_SHIFT.total_seconds() // step)
    offsets = [datetime.fromtimestamp(t + k * step, tz).utcoffset() or timedelta()
               for k in range(-reach, reach + 1)]
    return max(offsets) - min(offsets)


def next_start(schedule: Schedule, after: datetime, *, inclusive: bool = False
               ) -> datetime | None:
    """The first start strictly after the instant `after` (at or after it if `inclusive`).

    Computed on instants: matching wall times are turned into instants and the earliest
    one past `after` wins. Near a change of the zone's offset, wall times and instants do
    not come in the same order (the repeated hour, the shifted ones), so there the wall
    times are looked at from the size of the change before `after`'s own to as far past
    the winner's.
    """
    t = after.timestamp()
    tz = schedule.tz
    wall = after.astimezone(tz).replace(tzinfo=None)
    back = _offset_spread(tz, t)
    cursor = (wall - back).replace(tzinfo=timezone.utc)
    best: float | None = None
    last_wall = wall  # past it, no wall time can give an earlier instant than `best`
    while True:
        fire: datetime | None = schedule.walls.get_next_fire_time(None, cursor)
        if fire is None:
            break
        candidate = fire.replace(tzinfo=None)
        if best is not None and candidate > last_wall:
            break
        for u in _instants(candidate, schedule):
            if (u >= t if inclusive else u > t) and (best is None or u < best):
                best = u
                last_wall = candidate + _offset_spread(tz, u)
        cursor = fire + JUST_AFTER  # in UTC: no fold to lose
    return None if best is None else datetime.fromtimestamp(best, tz)


def next_starts(config: Config, now: datetime | None = None
                ) -> list[tuple[Show, datetime | None]]:
    """The next start of every configured show (None when a show never fires again)."""
    tz = timezone_for(config)
    moment = now if now else datetime.now(tz)
    return [(show, next_start(show_trigger(show, tz), moment, inclusive=True))
            for show in config.shows]


def day_start(day: date, tz: tzinfo) -> datetime:
    """The first instant of the local date `day` (after a skipped midnight, the shifted one)."""
    return datetime.fromtimestamp(
        datetime.combine(day, wall_time(0), tzinfo=tz).timestamp(), tz)


def starts_between(config: Config, first_day: date, days: int
                   ) -> list[tuple[Show, datetime]]:
    """Every start of every show on `days` local dates from `first_day`, soonest first."""
    tz = timezone_for(config)
    begin = day_start(first_day, tz)
    end = day_start(first_day + timedelta(days=days), tz).timestamp()
    found: list[tuple[Show, datetime]] = []
    for show in config.shows:
        schedule = show_trigger(show, tz)
        at = next_start(schedule, begin, inclusive=True)
        while at is not None and at.timestamp() < end:
            found.append((show, at))
            at = next_start(schedule, at)
    return sorted(found, key=lambda s: s[1].timestamp())


@dataclass
class _Planned:
    show: Show
    schedule: Schedule
    at: datetime | None
    started: datetime | None = None  # the last start handed on: never handed on twice


class ShowScheduler:
    """Starts each show at its moment through `on_due(show, planned)`, or skips it when late.

    Times are compared as epoch seconds: two aware datetimes in one zone subtract as if
    naive, which would be an hour off across a daylight-saving change.

    `now` (aware wall clock) and `monotonic` are injected so tests can move time; the
    loop looks at the clock every `tick` seconds and re-plans when the two disagree.
    `wait(seconds)` is how the loop waits between looks (default: on its stop event), so
    a test can count the loop's turns and move its clock by what the loop asked for.
    """

    def __init__(
        self,
        shows: Sequence[Show],
        on_due: Callable[[Show, datetime], None],
        tz: tzinfo,
        *,
        now: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        grace: float = GRACE_SECONDS,
        tick: float = TICK_SECONDS,
        jump_tolerance: float = CLOCK_JUMP_SECONDS,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        self._tz = tz
        self._now = now or (lambda: datetime.now(tz))
        self._monotonic = monotonic
        self._on_due = on_due
        self._grace = grace
        self._tick = tick
        self._jump_tolerance = jump_tolerance
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wait: Callable[[float], object] = wait or self._stop.wait
        self._thread: threading.Thread | None = None
        self._plans: list[_Planned] = []
        for show in shows:
            try:
                self._plans.append(_Planned(show, show_trigger(show, tz), None))
            except ShowError as exc:
                log.error("%s: %s; this show is left out", show.where or "shows", exc)
        self._last_wall: datetime | None = None
        self._last_mono = 0.0

    def start(self) -> None:
        if self._thread is not None:
            return  # one loop per scheduler
        self._plan_all(self._now(), announce=True)
        self._thread = threading.Thread(target=self._loop, name="shows", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def next_starts(self) -> list[tuple[Show, datetime | None]]:
        with self._lock:
            return [(p.show, p.at) for p in self._plans]

    def _plan_all(self, now: datetime, announce: bool = False) -> None:
        with self._lock:
            for p in self._plans:
                # After the clock went back, a start already played is not played again.
                if p.started is None or p.started.timestamp() < now.timestamp():
                    p.at = next_start(p.schedule, now, inclusive=True)
                else:
                    p.at = next_start(p.schedule, p.started)
                if announce or log.isEnabledFor(logging.DEBUG):
                    log.log(logging.INFO if announce else logging.DEBUG,
                            "Show %s (%s): next start %s", p.show.scene, describe(p.show),
                            _when(p.at))
        self._last_wall, self._last_mono = now, self._monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.step()
            except Exception:  # a bug here must not end the daily shows for months
                log.exception("show scheduler step failed; going on")
                wait = self._tick
            self._wait(wait)

    def step(self) -> float:
        """Look at the clock once: re-plan after a jump, start or skip due shows.

        Returns how long to wait before the next look (at most one tick).
        """
        now = self._now()
        mono = self._monotonic()
        if self._last_wall is not None:
            drift = (now.timestamp() - self._last_wall.timestamp()) - (mono - self._last_mono)
            if abs(drift) > self._jump_tolerance:
                log.warning("The wall clock jumped by %+.0f s; re-planning the shows", drift)
                if drift < 0:
                    # Backwards: starts planned from the wrong time may lie too far ahead.
                    self._plan_all(now)
        self._last_wall, self._last_mono = now, mono
        due: list[tuple[Show, datetime]] = []
        with self._lock:
            for p in self._plans:
                if p.at is None or p.at.timestamp() > now.timestamp():
                    continue
                late = now.timestamp() - p.at.timestamp()
                if late <= self._grace:
                    due.append((p.show, p.at))
                    p.started = p.at
                else:
                    log.warning(
                        "Show %s skipped: planned for %s, missed by %.0f s (more than the "
                        "%.0f s grace); it is never played late",
                        p.show.scene, _when(p.at), late, self._grace,
                    )
                # From now, not from p.at: after a long jump, every missed start is passed
                # over. Strictly after now (an instant, never a wall time: in the repeated
                # hour "now + 1 µs" as a wall time is an hour earlier), so strictly after
                # the start just handed on.
                p.at = next_start(p.schedule, now)
            upcoming = [p.at.timestamp() for p in self._plans if p.at is not None]
        for show, planned in due:
            log.info("Show %s due (planned %s, %s)", show.scene, _when(planned), describe(show))
            try:
                self._on_due(show, planned)
            except Exception:
                log.exception("starting show %s failed", show.scene)
        if not upcoming:
            return self._tick
        until = min(upcoming) - self._now().timestamp()
        return max(0.0, min(self._tick, until))


def _when(at: datetime | None) -> str:
    if at is None:
        return "never"
    return f"{at.isoformat(timespec='seconds')} ({WEEKDAY_NAMES[at.weekday()]})"
