"""Soak: `runner serve` under chaos for a set duration, measured by an independent subscriber.

What runs: a private mosquitto; `runner serve` as a subprocess; 50 virtual ESP32s
(runner.simulate) answering with JSON feedback, one of them always ERROR and one never
answering; a subscriber on '#' that timestamps (wall clock) every command.

Shows start every --show-interval seconds. Cron has no seconds, so the driver starts
them itself: a remote `{"command": "play"}` on runner/<room>/cmd, and every third one
the room's trigger (a button press), exactly as a show or a visitor would.

Chaos, spread over --duration: the broker killed (SIGKILL) and restarted; a device
losing power while the broker is down and returning later; devices dropping off the
network (their last will fires) and returning; bursts of 1,000 retained presence
messages; malformed payloads (binary, non-UTF-8, 1 MB, broken JSON, wrong types) on
every topic the service subscribes to; SIGHUP reloads.

Measured: scenes played; commands on time and late (arrival later than the planned
moment + LATE_TOLERANCE, or not planned at all); commands lost while the broker was
up (planned inside an up window, not delivered); the runner's reconnect time after
each broker return; its device registry (from its retained state) against the truth
(the virtual devices) after each flap and each burst; service restarts needed; RSS,
file descriptors and threads of the service at start and end.

    .venv/bin/python bench/soak.py --duration 300 [--json report.json]

Exit status 0 when late == 0, lost == 0, restarts == 0 and the registry was right.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner.history import open_for_reading, read_last_runs  # noqa: E402
from runner.player import MISFIRE_GRACE  # noqa: E402
from runner.simulate import DeviceFleet, VirtualDevice  # noqa: E402
from tests.brokers import Mosquitto, free_port  # noqa: E402

ROOM = "room1"
N_DEVICES = 50
ERROR_DEVICE = "esp32_d48"  # answers every command with ERROR
MUTE_DEVICE = "esp32_d49"  # never answers
VICTIMS = ("esp32_d40", "esp32_d41")  # lose power while the broker is down
DEVICE_LATENCY = (0.02, 0.2)
# The player drops a cue it could not fire within MISFIRE_GRACE; anything arriving later
# than that (plus the trip through the broker) was sent late.
TRANSIT = 0.25
LATE_TOLERANCE = MISFIRE_GRACE + TRANSIT
KILL_MARGIN = 0.3  # a command planned this close before a kill may die with the broker
SAFE = "SAFE"  # the safe-state payload; sent at shutdown, not part of any timeline
GHOSTS = 100  # distinct device ids in a presence burst
BURST = 1000  # presence messages per burst
SETTLE = 15.0  # seconds for the registry to match the truth before it counts as wrong
FLAP_SETTLE = 5.0  # after a flap: well before the victim's power returns
SAMPLE_EVERY = 2.0  # seconds between RSS / fd / thread samples
WARM_UP = 60.0  # seconds (at most a quarter of the run) before the first counted sample
MB = 1024 * 1024


def device_id(i: int) -> str:
    return f"esp32_d{i:02d}"


def device_topic(i: int) -> str:
    return f"{ROOM}/d{i:02d}"


# -- the room ------------------------------------------------------------------------

def scene_wave(name: str, devices: range) -> str:
    """Cues 0.2 s apart over the devices, pairs at one offset, 2.4 s long."""
    lines = [f"name: {name}", "mode: single", "actions:"]
    for n, i in enumerate(devices):
        at = round((n // 2) * 0.2, 3)
        lines.append(f"  - {{at: {at}, topic: {device_topic(i)}, message: \"W{n}\"}}")
    return "\n".join(lines) + "\n"


def scene_all_at_once() -> str:
    """Every device at one moment, then half of them again: bursts through one client."""
    lines = ["name: All at once", "mode: single", "duration: 2.5", "actions:"]
    lines += [f"  - {{at: 0.5, topic: {device_topic(i)}, message: \"ON\"}}"
              for i in range(N_DEVICES)]
    lines += [f"  - {{at: 1.5, topic: {device_topic(i)}, message: \"OFF\"}}"
              for i in range(0, N_DEVICES, 2)]
    return "\n".join(lines) + "\n"


SCENES = {
    "wave_a": scene_wave("Wave A", range(0, 25)),
    "wave_b": scene_wave("Wave B", range(25, 50)),
    "all_at_once": scene_all_at_once(),
}
TRIGGER_SCENE = "wave_a"


DASHBOARD_TOKEN = "soak-dashboard-token"


def write_room(root: Path, port: int, dashboard_port: int) -> Path:
    scenes = root / "scenes"
    scenes.mkdir(parents=True, exist_ok=True)
    for sid, text in SCENES.items():
        (scenes / f"{sid}.yaml").write_text(text)
    devices = "\n".join(f"  {device_id(i)}: [{device_topic(i)}]" for i in range(N_DEVICES))
    config = root / "runner.yaml"
    config.write_text(
        f"room: {ROOM}\n"
        f"broker: {{host: 127.0.0.1, port: {port}, connect_retries: 1, retry_delay: 0.2}}\n"
        "scenes_dir: scenes\n"
        "feedback: {timeout: 1.0}\n"
        # The retained state holds only the room's own devices: the presence bursts of
        # other ids are checked through the dashboard's paged /api/devices.
        f"dashboard: {{enabled: true, bind: 127.0.0.1, port: {dashboard_port}, "
        f"token: {DASHBOARD_TOKEN}}}\n"
        "triggers:\n"
        f"  - {{topic: {ROOM}/button, message: PRESSED, scene: {TRIGGER_SCENE}, "
        "min_interval: 0.5}\n"
        "safe_state:\n"
        f"  - {{topic: {device_topic(0)}, message: {SAFE}}}\n"
        f"devices:\n{devices}\n"
    )
    return config


# -- the independent subscriber -----------------------------------------------------

@dataclass
class Arrival:
    topic: str
    payload: str
    at: float  # wall clock


class Watcher:
    """Subscribes to '#'; keeps command arrivals, the runner's presence and its last state."""

    def __init__(self, broker: Mosquitto) -> None:
        self.lock = threading.Lock()
        self.commands: list[Arrival] = []
        self.presence: list[Arrival] = []
        self.state: dict[str, Any] = {}
        self.state_at = 0.0
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-watcher")
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]
        c.on_connect = lambda cl, *_a: cl.subscribe("#", qos=1)
        c.on_subscribe = lambda *_a: self.subscribed.set()
        c.on_disconnect = lambda *_a: self.subscribed.clear()
        c.on_message = self._on_message
        c.connect_async(broker.host, broker.port)
        c.loop_start()
        self.client = c

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        topic = msg.topic
        if topic == f"runner/{ROOM}/state":
            with contextlib.suppress(ValueError):
                doc = json.loads(msg.payload)
                with self.lock:
                    self.state, self.state_at = doc, now
            return
        if topic == f"runner/{ROOM}/status":
            with self.lock:
                self.presence.append(Arrival(topic, msg.payload.decode("utf-8", "replace"), now))
            return
        if topic.startswith(f"{ROOM}/d") and not msg.retain:
            with self.lock:
                self.commands.append(Arrival(topic, msg.payload.decode("utf-8", "replace"), now))

    def online_after(self, t: float) -> float | None:
        with self.lock:
            return next((a.at for a in self.presence if a.at >= t and a.payload == "online"),
                        None)

    def registry(self) -> dict[str, bool]:
        with self.lock:
            devices = self.state.get("devices") or {}
        return {d: bool(v.get("online")) for d, v in devices.items()}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- the service ------------------------------------------------------------------------

class Service:
    """`runner serve` as a subprocess, its log in a file; restarted (and counted) if it dies."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log_path = config.parent / "serve.log"
        self.restarts = 0
        self.deaths: list[str] = []
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen(
            [sys.executable, "-m", "runner", "serve", "--config", str(self.config)],
            cwd=self.config.parent, stdout=log, stderr=log, env=env)

    def check(self) -> None:
        code = self.proc.poll()
        if code is None:
            return
        self.deaths.append(f"exited {code} at {time.strftime('%H:%M:%S')}")
        self.restarts += 1
        self.proc = self._spawn()

    def sample(self) -> dict[str, float] | None:
        pid = self.proc.pid
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return None
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {"at": time.time(), "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
                "fds": fds, "threads": int(fields["Threads"])}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return -9

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# -- chaos ------------------------------------------------------------------------------

def junk_payloads(rng: random.Random, big: bool = True) -> list[bytes]:
    payloads = [
        bytes(rng.getrandbits(8) for _ in range(64)),
        b"\xff\xfe\xfd\x00",  # not UTF-8
        b"\xc3\x28",  # a broken two-byte sequence
        b'{"status": ',  # broken JSON
        b'{"command": "play", "scene": ["wave_a"]}',  # wrong type
        b'{"command": "play", "scene": "../../etc/passwd"}',
        b'{"command": "exec", "args": "rm -rf /"}',
        b'{"status": "OK", "topic": 5}',
        b"[1, 2, 3]",
        b"\x00" * 32,
        ("\U0001F4A5" * 40).encode(),
        b"",
    ]
    if big:
        payloads.append(rng.randbytes(MB))  # 1 MB
    return payloads


JUNK_TOPICS = (
    f"devices/{device_id(0)}/status",  # a real device's presence topic
    "devices/junk/status",
    f"{ROOM}/status",  # the room's feedback topic
    "other/status",
    f"runner/{ROOM}/cmd",
    f"{ROOM}/button",  # the trigger
)


@dataclass
class Flap:
    killed: float
    returned: float  # the broker accepts connections again
    reconnect: float | None = None  # seconds until the runner said `online` again
    registry_ok: bool = False
    registry_after: float | None = None  # seconds after the return until it matched
    mismatch: dict[str, Any] = field(default_factory=dict)


@dataclass
class Burst:
    at: float
    registry_ok: bool = False
    settled_after: float | None = None
    mismatch: int = 0


class Soak:
    """Runs everything for `duration` seconds and measures it."""

    def __init__(self, duration: float, workdir: Path, *, show_interval: float,
                 seed: int, log: Callable[[str], None], big_junk: bool = True) -> None:
        self.duration = duration
        self.big_junk = big_junk
        self.show_interval = show_interval
        self.rng = random.Random(seed)
        self.say = log
        self.workdir = workdir
        self.broker = Mosquitto(workdir / "broker")
        self.dashboard_port = free_port()
        self.config = write_room(workdir, self.broker.port, self.dashboard_port)
        self.stop_event = threading.Event()
        self.runner_up = threading.Event()  # the broker is up and the runner said `online`
        self.flaps: list[Flap] = []
        self.bursts: list[Burst] = []
        self.plays_requested = 0
        self.hups = 0
        self.drops = 0
        self.junk_sent = 0
        self.samples: list[dict[str, float]] = []
        self.down_windows: list[tuple[float, float]] = []  # (killed, runner back online)
        self.victims: dict[str, DeviceFleet | None] = {}
        self.lock = threading.Lock()

    # -- parts -------------------------------------------------------------------------

    def _device(self, i: int) -> VirtualDevice:
        did = device_id(i)
        return VirtualDevice(
            did, (device_topic(i),), self.broker.host, self.broker.port,
            latency=(1e6, 1e6) if did == MUTE_DEVICE else DEVICE_LATENCY,
            error_rate=1.0 if did == ERROR_DEVICE else 0.0, json_feedback=True,
            rng=random.Random(i))

    def _start_victim(self, did: str) -> None:
        fleet = DeviceFleet([self._device(int(did[-2:]))])
        fleet.start()
        self.victims[did] = fleet

    def truth(self) -> dict[str, bool]:
        online = set(self.fleet.online())
        for fleet in self.victims.values():
            if fleet is not None:
                online.update(fleet.online())
        return {device_id(i): device_id(i) in online for i in range(N_DEVICES)}

    def _registry_right(self) -> bool:
        return not _mismatch(self.watcher.registry(), self.truth())

    def all_devices(self) -> dict[str, bool]:
        """The whole registry, own devices and others, from the dashboard's /api/devices."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.dashboard_port}/api/devices?offset=0&limit=500",
            headers={"Authorization": f"Bearer {DASHBOARD_TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                doc = json.load(response)
        except (OSError, ValueError):
            return {}
        return {d["id"]: bool(d["online"]) for d in doc.get("devices", [])}

    def _publisher(self) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-driver")
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]
        c.connect_async(self.broker.host, self.broker.port)
        c.loop_start()
        return c

    # -- the run -----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.broker.start()
        self.watcher = Watcher(self.broker)
        if not self.watcher.subscribed.wait(10):
            raise SystemExit("soak: the watcher could not subscribe to the test broker")
        self.pub = self._publisher()
        main = [i for i in range(N_DEVICES) if device_id(i) not in VICTIMS]
        self.fleet = DeviceFleet([self._device(i) for i in main])
        self.fleet.start()
        for did in VICTIMS:
            self._start_victim(did)
        if not self.fleet.wait_online(30):
            raise SystemExit("soak: the virtual devices did not come online")
        self.service = Service(self.config)
        t_ready = time.time()
        if not self._wait(lambda: self.watcher.online_after(t_ready - 1) is not None, 30):
            raise SystemExit(f"soak: runner serve did not come online:\n{self.service.log}")
        self._wait(self._registry_right, SETTLE)
        self.runner_up.set()
        self.say(f"ready: {N_DEVICES} devices online, runner serve pid {self.service.proc.pid}")

        self.t0 = time.time()
        self.end = self.t0 + self.duration
        threads = [threading.Thread(target=fn, name=fn.__name__, daemon=True)
                   for fn in (self._shows, self._flaps, self._drops, self._junk,
                              self._bursts, self._hups, self._watchdog)]
        for t in threads:
            t.start()
        while time.time() < self.end and not self.stop_event.is_set():
            time.sleep(0.2)
        self.stop_event.set()
        for t in threads:
            t.join(60)
        # The last scene finishes before the service is stopped, so every cue had its moment.
        self._wait(lambda: not (self.watcher.state.get("scene")), 15)
        final_registry_ok = self._wait(self._registry_right, SETTLE)
        self.final_mismatch = _mismatch(self.watcher.registry(), self.truth())
        sample = self.service.sample()
        if sample:
            self.samples.append(sample)
        stopped_at = time.time()
        exit_code = self.service.stop()
        report = self._report(final_registry_ok, exit_code, stopped_at)
        self._teardown()
        return report

    def _teardown(self) -> None:
        self.fleet.stop()
        for fleet in self.victims.values():
            if fleet is not None:
                fleet.stop()
        self.pub.disconnect()
        self.pub.loop_stop()
        self.watcher.close()
        self.broker.kill()

    def _wait(self, cond: Callable[[], object], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.05)
        return bool(cond())

    def _every(self, interval: float, first: float, fn: Callable[[int], None],
               last: float | None = None) -> None:
        """fn(n) at t0 + first + n * interval (computed, not chained) until the end."""
        n = 0
        stop_at = self.end - (last if last is not None else 0.0)
        while True:
            at = self.t0 + first + n * interval
            if at >= stop_at or self.stop_event.wait(max(0.0, at - time.time())):
                return
            try:
                fn(n)
            except Exception as e:  # the driver reports its own faults, then goes on
                self.say(f"driver error in {fn.__name__}: {e!r}")
            n += 1

    # -- schedules ---------------------------------------------------------------------

    def _shows(self) -> None:
        order = ["wave_a", "wave_b", "all_at_once"]

        def start(n: int) -> None:
            if not self.runner_up.is_set():
                return  # nobody could send the command; a room without its broker
            self.plays_requested += 1
            if n % 3 == 2:
                self.pub.publish(f"{ROOM}/button", "PRESSED", qos=1)
            else:
                cmd = {"command": "play", "scene": order[n % len(order)]}
                self.pub.publish(f"runner/{ROOM}/cmd", json.dumps(cmd), qos=1)

        # The last start leaves a scene's length before the end.
        self._every(self.show_interval, 1.0, start, last=4.0)

    def _flap_times(self) -> list[float]:
        count = max(1, int(self.duration // 60))
        return [self.duration * (k + 0.4) / count for k in range(count)]

    def _flaps(self) -> None:
        for offset in self._flap_times():
            if self.stop_event.wait(max(0.0, self.t0 + offset - time.time())):
                return
            self._flap()

    def _flap(self) -> None:
        down = self.rng.uniform(2.0, 4.0)
        victim = self.rng.choice(VICTIMS)
        self.runner_up.clear()
        killed = time.time()
        self.broker.kill()
        self.say(f"broker killed; {victim} loses power while it is down; back in {down:.1f} s")
        fleet = self.victims.get(victim)
        self.victims[victim] = None
        if fleet is not None:
            fleet.stop(timeout=0.5)  # the broker is away: no `offline`, no will either
        time.sleep(down)
        self.broker.start()
        returned = time.time()
        flap = Flap(killed, returned)
        self.flaps.append(flap)
        self._wait(lambda: self.watcher.online_after(returned) is not None, 30)
        back = self.watcher.online_after(returned)
        if back is not None:
            flap.reconnect = back - returned
        self.down_windows.append((killed - KILL_MARGIN, back or returned + 30))
        if back is not None:
            self.runner_up.set()
        # While the victim is still dark, the registry must say so.
        ok = self._wait(self._registry_right, FLAP_SETTLE)
        flap.registry_ok = ok
        flap.registry_after = time.time() - returned
        if not ok:
            flap.mismatch = _mismatch(self.watcher.registry(), self.truth())
        self.say(f"broker back: runner online after {flap.reconnect}s, registry "
                 f"{'right' if ok else 'WRONG'} after {flap.registry_after:.1f}s")
        self._start_victim(victim)  # power returns

    def _drops(self) -> None:
        choices = [device_id(i) for i in range(N_DEVICES - 2) if device_id(i) not in VICTIMS]

        def drop(_n: int) -> None:
            if self.runner_up.is_set():
                self.fleet.drop(self.rng.choice(choices), self.rng.uniform(1.0, 3.0))
                self.drops += 1

        self._every(3.0, 2.0, drop)

    def _junk(self) -> None:
        def send(_n: int) -> None:
            if not self.runner_up.is_set():
                return
            for topic in JUNK_TOPICS:
                for payload in junk_payloads(self.rng, self.big_junk):
                    self.pub.publish(topic, payload, qos=0)
                    self.junk_sent += 1

        self._every(2.0, 1.5, send)

    def _bursts(self) -> None:
        interval = 60.0 if self.duration > 60 else self.duration
        self._every(interval, min(12.0, self.duration * 0.2) + 0.5, lambda _n: self._burst())

    def _burst(self) -> None:
        if not self.runner_up.is_set():
            return
        last: dict[str, str] = {}
        info = None
        for _ in range(BURST):
            ghost = f"ghost{self.rng.randrange(GHOSTS):03d}"
            word = self.rng.choice(("online", "offline"))
            last[ghost] = word
            info = self.pub.publish(f"devices/{ghost}/status", word, qos=1, retain=True)
        burst = Burst(time.time())
        self.bursts.append(burst)
        if info is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(10)

        def matches() -> bool:
            reg = self.all_devices()
            return all(reg.get(g) == (w == "online") for g, w in last.items())

        burst.registry_ok = self._wait(matches, SETTLE)
        burst.settled_after = time.time() - burst.at
        reg = self.all_devices()
        burst.mismatch = sum(reg.get(g) != (w == "online") for g, w in last.items())
        self.say(f"burst of {BURST} presence messages: registry "
                 f"{'right' if burst.registry_ok else 'WRONG'} after "
                 f"{burst.settled_after:.2f}s")

    def _hups(self) -> None:
        interval = 25.0 if self.duration > 60 else self.duration

        def hup(_n: int) -> None:
            self.service.proc.send_signal(signal.SIGHUP)
            self.hups += 1

        self._every(interval, min(15.0, self.duration * 0.75), hup)

    def _watchdog(self) -> None:
        def look(_n: int) -> None:
            self.service.check()
            sample = self.service.sample()
            if sample:
                self.samples.append(sample)

        self._every(SAMPLE_EVERY, 0.0, look)

    # -- the report --------------------------------------------------------------------

    def _in_up_window(self, t: float) -> bool:
        return self.t0 <= t and not any(a <= t <= b for a, b in self.down_windows)

    def _report(self, final_registry_ok: bool, exit_code: int,
                stopped_at: float) -> dict[str, Any]:
        conn = open_for_reading(self.workdir / "history.sqlite3")
        runs = read_last_runs(conn, 100_000) if conn is not None else []
        if conn is not None:
            conn.close()
        runs = [r for r in runs if r["started_at"] >= self.t0 - 1]
        with self.watcher.lock:
            arrivals = [a for a in self.watcher.commands if a.payload != SAFE]
        pool: dict[tuple[str, str], list[Arrival]] = {}
        for a in sorted(arrivals, key=lambda a: a.at):
            pool.setdefault((a.topic, a.payload), []).append(a)

        planned: list[tuple[float, dict[str, Any]]] = []
        cancelled = 0
        for run in runs:
            for rec in run["records"]:
                if rec["index"] < 0 or rec["route"] == "media":
                    continue
                if rec["delivery"] == "cancelled":
                    # The run stopped into its safe state (a required cue could not be
                    # sent while the broker was down): by design these never go out.
                    # Counted apart, or a later run's arrivals would be matched to them.
                    cancelled += 1
                    continue
                planned.append((run["started_at"] + rec["planned"], rec))
        planned.sort(key=lambda p: p[0])

        on_time = late = lost_up = not_sent_down = sent_down = 0
        lateness: list[float] = []
        for moment, rec in planned:
            candidates = pool.get((rec["topic"], rec["message"]), [])
            match = next((a for a in candidates if a.at >= moment - 0.5), None)
            if match is not None and match.at - moment > LATE_TOLERANCE + 5:
                match = None  # far away: belongs to a later run
            if match is not None:
                candidates.remove(match)
                delay = match.at - moment
                lateness.append(delay)
                if delay > LATE_TOLERANCE:
                    late += 1
                else:
                    on_time += 1
            elif self._in_up_window(moment):
                lost_up += 1
            elif rec["delivery"] == "sent":
                sent_down += 1  # handed to the broker as it died
            else:
                not_sent_down += 1
        unplanned = sum(len(v) for v in pool.values())  # arrived, but no cue planned it
        late += unplanned

        outcomes: dict[str, int] = {}
        feedback: dict[str, int] = {}
        for run in runs:
            outcomes[run["outcome"]] = outcomes.get(run["outcome"], 0) + 1
            for rec in run["records"]:
                feedback[rec["feedback"]] = feedback.get(rec["feedback"], 0) + 1
        reconnects = [f.reconnect for f in self.flaps if f.reconnect is not None]
        # The first sample after a warm-up: by then the first scene has run, so the history
        # file, the dashboard's sockets and the reload child's pipe are open; growth after
        # that is what counts.
        warm = self.t0 + min(WARM_UP, self.duration / 4)
        start = next((s for s in self.samples if s["at"] >= warm), None)
        end = self.samples[-1] if self.samples else None
        half = [s for s in self.samples if s["at"] >= self.t0 + self.duration / 2]
        slope = None
        if len(half) >= 3:
            fit = statistics.linear_regression([s["at"] for s in half],
                                               [s["rss_mb"] for s in half])
            slope = fit.slope * 60  # MB per minute
        log = self.service.log
        return {
            "duration_s": self.duration,
            "late_tolerance_s": LATE_TOLERANCE,
            "plays_requested": self.plays_requested,
            "starts_refused_busy": log.count("is still running (mode single)"),
            "scenes_played": len(runs),
            "outcomes": outcomes,
            "feedback": feedback,
            "commands_planned": len(planned),
            "commands_on_time": on_time,
            "commands_late": late,
            "commands_unplanned": unplanned,
            "commands_lost_while_up": lost_up,
            "commands_not_sent_broker_down": not_sent_down,
            "commands_cancelled_run_stopped": cancelled,
            "commands_lost_with_the_broker": sent_down,
            "lateness_ms": _quantiles([d * 1000 for d in lateness]),
            "broker_flaps": len(self.flaps),
            "reconnect_s": {"p50": statistics.median(reconnects) if reconnects else None,
                            "max": max(reconnects) if reconnects else None,
                            "each": [round(r, 3) for r in reconnects]},
            "registry_right_after_flaps": sum(f.registry_ok for f in self.flaps),
            "registry_mismatch": [f.mismatch for f in self.flaps if not f.registry_ok],
            "registry_right_at_end": final_registry_ok,
            "registry_mismatch_at_end": self.final_mismatch,
            "presence_bursts": len(self.bursts),
            "bursts_right": sum(b.registry_ok for b in self.bursts),
            "burst_settle_s": [round(b.settled_after or -1, 2) for b in self.bursts],
            "device_drops": self.drops,
            "junk_messages": self.junk_sent,
            "sighup_reloads": self.hups,
            "reloads_logged": log.count("Reloaded"),
            "service_restarts": self.service.restarts,
            "service_deaths": self.service.deaths,
            "service_exit": exit_code,
            "tracebacks_in_log": log.count("Traceback"),
            "rss_mb": _pair(start, end, "rss_mb"),
            "rss_mb_each_minute": _each_minute(self.samples, self.t0, "rss_mb"),
            "fds_each_minute": _each_minute(self.samples, self.t0, "fds"),
            "threads_each_minute": _each_minute(self.samples, self.t0, "threads"),
            "rss_slope_mb_per_min_second_half": None if slope is None else round(slope, 3),
            "fds": _pair(start, end, "fds"),
            "threads": _pair(start, end, "threads"),
            "stopped_at": stopped_at,
        }


def _mismatch(registry: dict[str, bool], truth: dict[str, bool]) -> dict[str, Any]:
    """Devices whose state in the runner differs from the truth (ghosts not counted)."""
    return {d: {"runner": registry.get(d), "truth": v} for d, v in truth.items()
            if registry.get(d) != v}


def _each_minute(samples: list[dict[str, float]], t0: float, key: str) -> list[float]:
    """One sample a minute from the start of the chaos, and the last one."""
    picked = [s for s in samples if s["at"] >= t0][::int(60 / SAMPLE_EVERY)]
    if samples and samples[-1] not in picked:
        picked.append(samples[-1])
    return [round(s[key], 1) for s in picked]


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"p50": round(statistics.median(ordered), 1), "p99": round(p99, 1),
            "max": round(ordered[-1], 1)}


def _pair(start: dict[str, float] | None, end: dict[str, float] | None,
          key: str) -> dict[str, float | None]:
    return {"start": None if start is None else round(start[key], 1),
            "end": None if end is None else round(end[key], 1)}


def passed(report: dict[str, Any]) -> bool:
    return bool(report["commands_late"] == 0 and report["commands_lost_while_up"] == 0
            and report["service_restarts"] == 0 and report["registry_right_at_end"]
            and report["registry_right_after_flaps"] == report["broker_flaps"]
            and report["bursts_right"] == report["presence_bursts"]
            and report["tracebacks_in_log"] == 0 and report["scenes_played"] > 0)


def markdown(report: dict[str, Any], command: str) -> str:
    r = report
    rows = [
        ("duration", f"{r['duration_s']:.0f} s"),
        ("scenes played (starts requested; refused as busy)",
         f"{r['scenes_played']} ({r['plays_requested']}; {r['starts_refused_busy']})"),
        ("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))),
        ("commands planned", r["commands_planned"]),
        ("commands on time", r["commands_on_time"]),
        (f"commands late (> planned + {r['late_tolerance_s']:.2f} s, or unplanned)",
         r["commands_late"]),
        ("commands lost while the broker was up", r["commands_lost_while_up"]),
        ("commands not sent, broker down (by design)", r["commands_not_sent_broker_down"]),
        ("commands cancelled: their run stopped into its safe state (by design)",
         r.get("commands_cancelled_run_stopped", 0)),
        ("commands handed over as the broker died", r["commands_lost_with_the_broker"]),
        ("lateness at the subscriber p50 / p99 / max",
         "{p50} / {p99} / {max} ms".format(**r["lateness_ms"])),
        ("broker kills", r["broker_flaps"]),
        ("runner reconnect after broker return p50 / max",
         f"{_s(r['reconnect_s']['p50'])} / {_s(r['reconnect_s']['max'])}"),
        ("registry right after each flap", f"{r['registry_right_after_flaps']} of "
         f"{r['broker_flaps']}"),
        ("registry right at the end", "yes" if r["registry_right_at_end"] else "NO"),
        ("presence bursts of 1,000 right", f"{r['bursts_right']} of {r['presence_bursts']} "
         f"(settled in {', '.join(f'{s} s' for s in r['burst_settle_s'])})"),
        ("device drops / junk messages / SIGHUP reloads",
         f"{r['device_drops']} / {r['junk_messages']} / {r['sighup_reloads']} "
         f"({r['reloads_logged']} logged)"),
        ("service restarts needed", r["service_restarts"]),
        ("tracebacks in the service log", r["tracebacks_in_log"]),
        ("RSS each minute", " / ".join(f"{v}" for v in r["rss_mb_each_minute"]) + " MB"),
        ("RSS trend, second half", f"{r['rss_slope_mb_per_min_second_half']} MB/min"),
        ("file descriptors each minute", " / ".join(f"{v:g}" for v in r["fds_each_minute"])),
        ("threads each minute", " / ".join(f"{v:g}" for v in r["threads_each_minute"])),
    ]
    lines = [f"`{command}`", "", "| measure | result |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=300.0, help="seconds of chaos")
    p.add_argument("--show-interval", type=float, default=4.0, help="seconds between starts")
    p.add_argument("--seed", type=int, default=8)
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    p.add_argument("--no-big-junk", action="store_true",
                   help="leave out the 1 MB payloads (to tell where memory goes)")
    args = p.parse_args(argv)
    if args.duration < 10:
        p.error("--duration must be at least 10 seconds")

    logging.getLogger("simulate").setLevel(logging.ERROR)  # 50 devices x every flap

    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="runner-soak-"))
    soak = Soak(args.duration, workdir, show_interval=args.show_interval, seed=args.seed,
                log=say, big_junk=not args.no_big_junk)
    try:
        report = soak.run()
    finally:
        if soak.broker.running:
            soak.broker.kill()
    report["workdir"] = str(workdir)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    command = f".venv/bin/python bench/soak.py --duration {args.duration:g}"
    if args.show_interval != 4.0:
        command += f" --show-interval {args.show_interval:g}"
    print(markdown(report, command))
    ok = passed(report)
    if not args.keep and ok:
        import shutil  # noqa: PLC0415
        shutil.rmtree(workdir, ignore_errors=True)
    elif not ok:
        say(f"FAILED; the service log and history are in {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
