"""Daily shows: crontab lines and times of day turned into planned starts, fired on time or skipped.

APScheduler's CronTrigger computes the fire times; this module only translates the
crontab's day-of-week numbering (0 and 7 = Sunday) into APScheduler's (0 = Monday),
and runs its own small loop so that a show is never played late: at its moment it
either starts within the grace period or is skipped with a log line, and a wall clock
that jumps (a Pi without a real-time clock sets its time after boot) re-plans every show.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tzlocal
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from runner.model import Config, Show

log = logging.getLogger("shows")

GRACE_SECONDS = 60.0  # a show later than this (reboot, clock jump, busy room) is skipped
TICK_SECONDS = 1.0  # how often the loop looks at the clock: bounds the reaction to a jump
CLOCK_JUMP_SECONDS = 5.0  # wall vs monotonic disagreement that counts as a clock jump
JUST_AFTER = timedelta(microseconds=1)  # the clock's resolution

# Crontab numbering: 0 (and 7) is Sunday. APScheduler numbers from Monday, so days
# are handed to it by name, which both read the same way.
CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class ShowError(ValueError):
    """A show's cron, time or days cannot be read; the text says which and how to fix it."""


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


def show_trigger(show: Show, tz: tzinfo) -> BaseTrigger:
    """The trigger of one show: its `cron`, or its `time` on its `days` (every day if none)."""
    if show.cron:
        return cron_trigger(show.cron, tz)
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
    return CronTrigger(hour=hour, minute=minute, day_of_week=weekday, timezone=tz)


def describe(show: Show) -> str:
    """How the show was written, for log lines: the cron line, or the time and days."""
    if show.cron:
        return f"cron {show.cron!r}"
    days = ",".join(show.days) if show.days else "every day"
    return f"{show.time} {days}"


def timezone_for(config: Config) -> tzinfo:
    """The config's timezone, or the system's when it names none."""
    if config.timezone:
        try:
            return ZoneInfo(config.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ShowError(
                f"timezone {config.timezone!r} is unknown; use a name like \"Europe/Berlin\""
            ) from None
    zone: tzinfo = tzlocal.get_localzone()
    return zone


def timezone_name(tz: tzinfo | None) -> str:
    """How a person reads the zone: its IANA name where known ("Europe/Berlin")."""
    if tz is None:
        return "local time"
    return str(getattr(tz, "key", None) or tz.tzname(datetime.now(tz)) or "local time")


def next_start(trigger: BaseTrigger, after: datetime) -> datetime | None:
    fire: datetime | None = trigger.get_next_fire_time(None, after)
    return fire


def next_starts(config: Config, now: datetime | None = None
                ) -> list[tuple[Show, datetime | None]]:
    """The next start of every configured show (None when a show never fires again)."""
    tz = timezone_for(config)
    moment = now.astimezone(tz) if now else datetime.now(tz)
    return [(show, next_start(show_trigger(show, tz), moment)) for show in config.shows]


@dataclass
class _Planned:
    show: Show
    trigger: BaseTrigger
    at: datetime | None
    started: datetime | None = None  # the last start handed on: never handed on twice


class ShowScheduler:
    """Starts each show at its moment through `on_due(show, planned)`, or skips it when late.

    Times are compared as epoch seconds: two aware datetimes in one zone subtract as if
    naive, which would be an hour off across a daylight-saving change.

    `now` (aware wall clock) and `monotonic` are injected so tests can move time; the
    loop looks at the clock every `tick` seconds and re-plans when the two disagree.
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
                after = now if p.started is None else max(now, p.started + JUST_AFTER)
                p.at = next_start(p.trigger, after)
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
            self._stop.wait(wait)

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
                # over. Strictly after now: a fire time equal to `now` counts as next.
                p.at = next_start(p.trigger, now + JUST_AFTER)
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
