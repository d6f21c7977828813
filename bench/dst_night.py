"""Show starts over a daylight-saving night: the real ShowScheduler, stepped by a simulated
wall and monotonic clock from local midnight to midnight of a transition day.

Each step the clock moves on by the wait the scheduler asked for, but at least --step-cost
seconds (what one turn of the real loop costs: a loop that asks for no wait at all still
moves time on a little, as it does on the Pi). Counts the starts per show and the steps.

    .venv/bin/python bench/dst_night.py [--zone Europe/Berlin] [--day 2026-10-25]
                                       [--runner-src DIR]

--runner-src imports `runner` from another checkout (e.g. `git archive main runner | tar -x
-C /tmp/old`) for before/after numbers from the same run.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

SHOWS = (("daily 10:00", {"time": "10:00"}), ("02:30", {"time": "02:30"}),
         ("hourly", {"cron": "0 * * * *"}), ("*/30", {"cron": "*/30 * * * *"}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zone", default="Europe/Berlin")
    ap.add_argument("--day", default="2026-10-25")
    ap.add_argument("--step-cost", type=float, default=0.00035, metavar="S")
    ap.add_argument("--max-steps", type=int, default=2_000_000)
    ap.add_argument("--runner-src", metavar="DIR")
    args = ap.parse_args()
    if args.runner_src:
        sys.path.insert(0, args.runner_src)
    from runner.model import Show  # noqa: PLC0415
    from runner.shows import ShowScheduler  # noqa: PLC0415

    tz = ZoneInfo(args.zone)
    day = date.fromisoformat(args.day)
    begin = datetime.combine(day, datetime.min.time(), tzinfo=tz).timestamp()
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=tz).timestamp()
    clock = {"t": begin - 60.0}
    shows = tuple(Show(scene=name, **kw) for name, kw in SHOWS)  # type: ignore[arg-type]
    starts: dict[str, list[float]] = {name: [] for name, _ in SHOWS}

    def wall() -> datetime:
        return datetime.fromtimestamp(clock["t"], timezone.utc).astimezone(tz)

    def on_due(show: Show, at: datetime) -> None:
        starts[show.scene].append(at.timestamp())

    sched = ShowScheduler(shows, on_due, tz, now=wall, monotonic=lambda: clock["t"])
    sched._plan_all(wall())
    steps = 0
    while clock["t"] < end and steps < args.max_steps:
        wait = sched.step()
        clock["t"] += max(wait, args.step_cost)
        steps += 1
    print(f"{args.zone} {day}: {steps} steps, simulated to {wall().isoformat()}"
          f"{' (step cap hit)' if steps >= args.max_steps else ''}")
    for name, got in starts.items():
        inside = [t for t in got if begin <= t < end]
        print(f"  {name:12s} {len(inside):6d} starts, {len(set(inside)):3d} distinct instants")
    return 0


if __name__ == "__main__":
    sys.exit(main())
