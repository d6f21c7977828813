"""Benchmark: broker accepting connections again -> runner back online and re-subscribed.

A private mosquitto is killed and restarted N times, down for a varying time (the same
sequence for both). Two runner clients sit on it at once: the current fixed retry period
(`broker.reconnect_delay`) and the baseline, the old backoff (0.1 s doubling to 5 s).
An independent subscriber connects as soon as the port accepts and times the arrival of
each runner's `online` presence, which the runner publishes on every connection right
after renewing its subscriptions (the broker handles them in order, so `online` means
re-subscribed). The broker runs without persistence: the `online` seen is always new.

    .venv/bin/python bench/reconnect.py [--restarts 10] [--delay 0.1]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runner.mqtt.client import MQTTClient
from tests.brokers import Mosquitto, wait_for_port

WAIT = 30.0


class Watcher:
    """Records when `online` arrives on each presence topic, on a fresh connection."""

    def __init__(self, broker: Mosquitto, topics: list[str]) -> None:
        self.broker = broker
        self.topics = topics
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.client: mqtt.Client | None = None

    def connect(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{time.time_ns()}")
        up = threading.Event()

        def on_connect(c: mqtt.Client, *_a: object) -> None:
            for t in self.topics:
                c.subscribe(t, qos=1)
            up.set()

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            if msg.payload == b"online":
                with self.lock:
                    self.seen.setdefault(msg.topic, time.monotonic())

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        if not up.wait(WAIT):
            raise SystemExit("watcher could not connect")
        self.client = client

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--delay", type=float, default=0.1, help="the fixed retry period")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp)).start()
        clients = {
            f"fixed {args.delay:g} s": MQTTClient(
                broker.host, broker.port, "bench-fixed", presence_topic="bench/fixed/status",
                reconnect_delay=args.delay, connect_retries=1),
            "baseline: backoff 0.1 s doubling to 5 s": MQTTClient(
                broker.host, broker.port, "bench-backoff",
                presence_topic="bench/backoff/status", reconnect_delay=None,
                max_backoff=5.0, connect_retries=1),
        }
        for c in clients.values():
            c.subscribe("bench/in/#")
            if not c.connect():
                raise SystemExit("could not connect")
        times: dict[str, list[float]] = {name: [] for name in clients}
        topics = {name: c._presence_topic or "" for name, c in clients.items()}
        try:
            for i in range(args.restarts):
                broker.kill()
                down = rng.uniform(0.3, 4.0)
                time.sleep(down)  # the outage itself, not a settle-wait
                assert broker.proc is None
                broker.proc = subprocess.Popen([broker.binary, "-c", str(broker.conf)],
                                               stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)
                # Our own poll: 2 ms steps, so the moment of accepting is sharp.
                deadline = time.monotonic() + WAIT
                while not wait_for_port(broker.host, broker.port, timeout=0.002):
                    if time.monotonic() > deadline:
                        raise SystemExit("broker did not come back")
                accepted = time.monotonic()
                watcher = Watcher(broker, list(topics.values()))
                watcher.connect()
                end = time.monotonic() + WAIT
                while time.monotonic() < end and len(watcher.seen) < len(topics):
                    time.sleep(0.005)
                watcher.close()
                for name, topic in topics.items():
                    if topic not in watcher.seen:
                        raise SystemExit(f"{name}: not back within {WAIT}s")
                    times[name].append(watcher.seen[topic] - accepted)
                print(f"restart {i + 1}: down {down:.2f} s; " + ", ".join(
                    f"{name.split(':')[0]} {times[name][-1]:.3f} s" for name in clients),
                    flush=True)
        finally:
            for c in clients.values():
                c.disconnect()
            broker.kill()
    print(f"\n{args.restarts} restarts; broker accepting -> runner online and re-subscribed")
    print(f"{'client':44} {'p50 s':>7} {'max s':>7}")
    for name, ts in times.items():
        print(f"{name:44} {statistics.median(ts):7.3f} {max(ts):7.3f}")


if __name__ == "__main__":
    main()
