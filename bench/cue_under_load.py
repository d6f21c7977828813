"""Cue lateness under load: `runner serve` plays a scene of cues 50 ms apart while a reload
or hostile traffic hits it; an independent subscriber measures each cue's arrival.

Scenarios (each a fresh private mosquitto and a fresh `runner serve`):
  baseline  quiet
  reload    a 20,000-action scene appears and SIGHUP comes 3 s into the scene
  flood     10,000 junk payloads (binary, broken JSON, 64 KiB topics) + 5,000 fake ids
  big       1 MB payloads on a subscribed topic, 10 a second, for the whole scene

Lateness of cue i = (arrival_i - arrival_0) - (offset_i - offset_0): relative to the
first cue (the subscriber's clock only). The runner's own view: the largest "fired N ms
late" line it logged (it logs only cues over 50 ms late).

    .venv/bin/python bench/cue_under_load.py [--cues 300] [--runner-src DIR]

--runner-src runs `python -m runner` from another checkout (e.g. a `git worktree` of the
commit before a fix) for before/after numbers from the same machine and run.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.brokers import Mosquitto  # noqa: E402

SPACING = 0.05
CUE_TOPIC = "room1/cue"


def write_room(root: Path, port: int, cues: int) -> Path:
    (root / "scenes").mkdir(parents=True, exist_ok=True)
    lines = ["name: Cues", "actions:"]
    lines += [f"  - {{at: {i * SPACING:.2f}, topic: {CUE_TOPIC}, message: c{i}, "
              "feedback: none, qos: 0}" for i in range(cues)]
    (root / "scenes" / "cues.yaml").write_text("\n".join(lines) + "\n")
    path = root / "runner.yaml"
    path.write_text(f"room: room1\nbroker: {{host: 127.0.0.1, port: {port}}}\n"
                    "scenes_dir: scenes\nmedia_dir: .\ntimezone: UTC\n"
                    "dashboard: {enabled: false}\n")
    return path


def big_scene(actions: int) -> str:
    lines = ["name: Big", "actions:"]
    lines += [f"  - {{at: {i * 0.01:.2f}, topic: room1/light, message: L{i}, feedback: none}}"
              for i in range(actions)]
    return "\n".join(lines) + "\n"


def client(broker: Mosquitto, name: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def wait(pred: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def junk(pub: mqtt.Client, stop: threading.Event, duration: float) -> None:
    kinds = [b"\x00\xff\xfe binary", b'{"status": "OK", "topic": ', b"\xc3\x28 bad utf8"]
    long_topic = "devices/" + "x" * 65_000 + "/status"
    total, fakes = 10_000, 5_000
    step = duration / (total + fakes)
    for i in range(total + fakes):
        if stop.is_set():
            return
        if i % 3 == 0 and i < total:
            pub.publish(long_topic, b"online", qos=0)
        elif i < total:
            pub.publish(f"room1/dev{i % 50}/status", kinds[i % len(kinds)], qos=0)
        else:
            pub.publish(f"devices/fake{i}/status", b"online", qos=0)
        time.sleep(step)


def big(pub: mqtt.Client, stop: threading.Event) -> None:
    payload = b"j" * 1_000_000
    while not stop.wait(0.1):
        pub.publish("devices/big/status", payload, qos=0)


def scenario(name: str, cues: int, runner_src: Path | None) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "broker").start()
        config = write_room(root, broker.port, cues)
        env = dict(os.environ)
        if runner_src is not None:
            env["PYTHONPATH"] = str(runner_src)
        log = root / "serve.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "runner", "serve", "--config",
                                     str(config)], cwd=runner_src or REPO, env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
        arrivals: dict[int, float] = {}
        online = threading.Event()

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            if msg.topic == CUE_TOPIC:
                arrivals[int(msg.payload[1:])] = time.monotonic()
            elif msg.payload == b"online":
                online.set()

        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")
        sub.on_message = on_message
        sub.on_connect = lambda c, *a: c.subscribe([(CUE_TOPIC, 0), ("runner/room1/status", 1)])
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        pub = client(broker, "bench-pub")
        try:
            if not online.wait(30):
                raise SystemExit(f"runner serve did not come online: {log.read_text()}")
            time.sleep(1.0)  # subscriptions after `online`: let them settle
            if name == "reload":
                (root / "scenes" / "big.yaml").write_text(big_scene(20_000))
            stop = threading.Event()
            duration = cues * SPACING
            load: threading.Thread | None = None
            if name == "flood":
                load = threading.Thread(target=junk, args=(pub, stop, duration), daemon=True)
            elif name == "big":
                load = threading.Thread(target=big, args=(pub, stop), daemon=True)
            pub.publish("runner/room1/cmd", '{"command": "play", "scene": "cues"}', qos=1)
            wait(lambda: 0 in arrivals, 10, "the first cue")
            if load is not None:
                load.start()
            if name == "reload":
                time.sleep(3.0)
                proc.send_signal(signal.SIGHUP)
            wait(lambda: len(arrivals) >= cues or time.monotonic() - arrivals[0] > duration + 5,
                 duration + 10, "the cues")
            stop.set()
            if load is not None:
                load.join(5)
        finally:
            pub.disconnect()
            sub.disconnect()
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            broker.stop()
        text = log.read_text()
        own = [float(m) for m in re.findall(r"fired (\d+) ms late", text)]
        t0 = arrivals[0]
        late = [(arrivals[i] - t0 - i * SPACING) * 1000 for i in sorted(arrivals)]
        lost = cues - len(arrivals)
        if lost:
            print(f"  {name}: {lost} cue(s) never arrived", file=sys.stderr)
        return late, max(own, default=0.0)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cues", type=int, default=300)
    parser.add_argument("--runner-src", type=Path, default=None)
    parser.add_argument("--only", nargs="*", default=["baseline", "reload", "flood", "big"])
    args = parser.parse_args(argv)
    print(f"{'scenario':10} {'cues':>5} {'max ms':>8} {'p99 ms':>8} {'runner max ms':>14}")
    for name in args.only:
        late, own = scenario(name, args.cues, args.runner_src)
        print(f"{name:10} {len(late):5d} {max(late):8.1f} {pct(late, 99):8.1f} {own:14.0f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
