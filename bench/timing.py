"""Cue timing: `runner play` against two baselines, timed by one independent subscriber.

A 500-action scene (25 bursts of 20 actions at one offset, 0.1 s apart) is played by
the real `runner play` command against a private mosquitto. The same subscriber then
times two baselines publishing the same pattern with paho from this process: bare
APScheduler date jobs, and a plain sleep-until loop (the practical limit). Lateness of a
message = its arrival at the subscriber minus its planned moment. Also reports the
runner process's CPU time and peak memory (whole process, start-up included).

    .venv/bin/python bench/timing.py [--repeat 3] [--bursts 25] [--burst 20] [--gap 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
from apscheduler.schedulers.background import BackgroundScheduler
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.brokers import Mosquitto  # noqa: E402

START_LEAD = 0.3  # baselines: seconds from scheduling to the first burst


class Subscriber:
    """Timestamps (wall clock) every message under bench/#."""

    def __init__(self, broker: Mosquitto) -> None:
        self.arrivals: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")
        ready = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe("bench/#", 1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not ready.wait(5):
            raise SystemExit("the bench subscriber could not subscribe")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        with self.lock:
            self.arrivals[(msg.topic, msg.payload.decode())] = now

    def wait_for(self, keys: list[tuple[str, str]], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(k in self.arrivals for k in keys):
                    return
            time.sleep(0.05)
        with self.lock:
            missing = [k for k in keys if k not in self.arrivals]
        raise SystemExit(f"{len(missing)} message(s) never arrived, e.g. {missing[:3]}")

    def lateness(self, planned: dict[tuple[str, str], float]) -> list[float]:
        with self.lock:
            return [self.arrivals[k] - t for k, t in planned.items()]


def pattern(prefix: str, run: int, bursts: int, burst: int, gap: float,
            ) -> list[tuple[float, str, str]]:
    """(offset, topic, payload) for every message, burst by burst."""
    return [(b * gap, f"{prefix}/d{i}", f"r{run}-c{b * burst + i}")
            for b in range(bursts) for i in range(burst)]


def publisher(broker: Mosquitto, name: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


Planned = dict[tuple[str, str], float]


def run_sleep_loop(broker: Mosquitto, msgs: list[tuple[float, str, str]]
                   ) -> tuple[Planned, list[float]]:
    c = publisher(broker, "bench-sleep")
    time.sleep(0.2)  # connected and idle before the first burst
    start_wall = time.time() + START_LEAD
    start = time.monotonic() + START_LEAD
    at_publish: list[float] = []
    for offset, topic, payload in msgs:
        remaining = start + offset - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        at_publish.append(time.monotonic() - start - offset)
        c.publish(topic, payload, qos=1)
    time.sleep(0.3)
    c.loop_stop()
    c.disconnect()
    return {(t, p): start_wall + o for o, t, p in msgs}, at_publish


def run_apscheduler(broker: Mosquitto, msgs: list[tuple[float, str, str]]
                    ) -> tuple[Planned, list[float]]:
    c = publisher(broker, "bench-aps")
    sched = BackgroundScheduler(timezone=timezone.utc)
    sched.start()
    time.sleep(0.2)
    start_wall = time.time() + START_LEAD
    groups: dict[float, list[tuple[str, str]]] = {}
    for o, t, p in msgs:
        groups.setdefault(o, []).append((t, p))

    at_publish: list[float] = []

    def fire(o: float, items: list[tuple[str, str]]) -> None:
        for t, p in items:
            at_publish.append(time.time() - start_wall - o)
            c.publish(t, p, qos=1)

    for o, items in groups.items():
        sched.add_job(fire, "date", args=[o, items], misfire_grace_time=None,
                      run_date=datetime.fromtimestamp(start_wall + o, tz=timezone.utc))
    time.sleep(START_LEAD + max(groups) + 0.5)
    sched.shutdown()
    c.loop_stop()
    c.disconnect()
    return {(t, p): start_wall + o for o, t, p in msgs}, at_publish


def run_runner(broker: Mosquitto, msgs: list[tuple[float, str, str]], workdir: Path,
               ) -> tuple[Planned, list[float], float, int]:
    """Plays the scene with `runner play`; planned moments, CPU seconds, peak RSS (KiB)."""
    (workdir / "scenes").mkdir(parents=True, exist_ok=True)
    lines = ["name: Timing benchmark", "room: bench", "actions:"]
    lines += [f'  - {{at: {o!r}, topic: {t}, message: "{p}", feedback: none}}'
              for o, t, p in msgs]
    (workdir / "scenes" / "bench.yaml").write_text("\n".join(lines) + "\n")
    (workdir / "runner.yaml").write_text(
        f"room: bench\nbroker: {{host: {broker.host}, port: {broker.port}}}\n"
        "scenes_dir: scenes\nmedia_dir: .\n")
    report = workdir / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "play", "bench", "-q", "--config",
         str(workdir / "runner.yaml"), "--report", str(report)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"runner play exited {proc.returncode}: {err}")
    data = json.loads(report.read_text())
    start = float(data["started_at"])
    planned = {(r["topic"], r["message"]): start + float(r["planned"])
               for r in data["records"]}
    at_publish = [float(r["lateness"]) for r in data["records"]]
    return planned, at_publish, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def row(name: str, late: list[float], at_publish: list[float]) -> str:
    ms = [x * 1000 for x in late]
    pub = [x * 1000 for x in at_publish]
    return (f"| {name} | {len(ms)} | {statistics.median(ms):.2f} | {pct(ms, 99):.2f} | "
            f"{max(ms):.2f} | {statistics.median(pub):.3f} | {pct(pub, 99):.2f} | "
            f"{max(pub):.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bursts", type=int, default=25)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--gap", type=float, default=0.1)
    ap.add_argument("--detail", action="store_true", help="worst lateness per burst")
    args = ap.parse_args()
    names = ("runner play", "bare APScheduler", "sleep-until loop")
    late: dict[str, list[float]] = {n: [] for n in names}
    published: dict[str, list[float]] = {n: [] for n in names}
    cpu: list[float] = []
    rss: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "broker").start()
        sub = Subscriber(broker)
        try:
            for k in range(args.repeat):
                shape = (args.bursts, args.burst, args.gap)
                msgs = pattern("bench/runner", k, *shape)
                planned, pub, cpu_s, peak = run_runner(broker, msgs, Path(tmp) / f"room{k}")
                sub.wait_for(list(planned))
                late["runner play"] += sub.lateness(planned)
                published["runner play"] += pub
                cpu.append(cpu_s)
                rss.append(peak)
                for name, fn, prefix in (("bare APScheduler", run_apscheduler, "bench/aps"),
                                         ("sleep-until loop", run_sleep_loop, "bench/sleep")):
                    planned, pub = fn(broker, pattern(prefix, k, *shape))
                    sub.wait_for(list(planned))
                    late[name] += sub.lateness(planned)
                    published[name] += pub
        finally:
            sub.client.loop_stop()
            broker.kill()
    n = args.bursts * args.burst
    print(f"{n} actions ({args.bursts} bursts of {args.burst}, {args.gap}s apart), "
          f"{args.repeat} run(s) each; lateness in ms at the subscriber's arrival, and "
          "at the publish call:\n")
    print("| publisher | messages | arrival p50 | arrival p99 | arrival max "
          "| publish p50 | publish p99 | publish max |")
    print("|---|---|---|---|---|---|---|---|")
    for name, values in late.items():
        print(row(name, values, published[name]))
    if args.detail:
        for name, values in late.items():
            worst = [max(values[i:i + args.burst]) * 1000
                     for i in range(0, len(values), args.burst)]
            print(f"{name}: worst per burst (ms): " + " ".join(f"{w:.1f}" for w in worst))
    print("\nfirst message of each burst, at the publish call (the scheduler's own precision):")
    for name, values in published.items():
        firsts = [x * 1000 for x in values[::args.burst]]
        print(f"  {name}: p50 {statistics.median(firsts):.3f} ms, "
              f"p99 {pct(firsts, 99):.2f} ms, max {max(firsts):.2f} ms")
    p99 = {name: pct(v, 99) for name, v in late.items()}
    print(f"\nrunner p99 / sleep-loop p99 = {p99['runner play'] / p99['sleep-until loop']:.2f}; "
          f"runner p99 / APScheduler p99 = {p99['runner play'] / p99['bare APScheduler']:.2f}")
    print(f"runner play process: CPU {statistics.median(cpu):.2f} s (median of {len(cpu)}; "
          f"start-up and imports included), peak RSS {max(rss) / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
