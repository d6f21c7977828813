"""Benchmark: presence messages per second into the registry through the broker, against a
raw paho subscriber in the same run; nothing may be lost.

Each run subscribes to a burst of N presence messages and times SUBSCRIBE -> the N-th one
handled: the burst is N retained `devices/<id>/status = online` (what fills the registry at
start), or N live messages published by another client while both subscribers listen.

    .venv/bin/python bench/presence.py [--devices 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runner.mqtt.client import MQTTClient
from runner.mqtt.feedback import FeedbackTracker
from runner.mqtt.handler import MessageHandler
from runner.mqtt.registry import DeviceInfo, DeviceRegistry
from tests.brokers import Mosquitto

WAIT = 60.0
FILTER = "devices/+/status"


def paho_client(broker: Mosquitto, client_id: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    up = threading.Event()
    client.on_connect = lambda *a: up.set()
    client.connect(broker.host, broker.port)
    sock = client.socket()
    if isinstance(sock, socket.socket):
        # As our client does: otherwise each PUBACK may wait on a delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_start()
    if not up.wait(10):
        raise SystemExit(f"could not connect to {broker.address}")
    return client


def publish_presence(broker: Mosquitto, n: int, prefix: str, retain: bool) -> None:
    pub = paho_client(broker, f"bench-pub-{prefix}")
    infos = [pub.publish(f"devices/{prefix}{i}/status", "online", qos=1, retain=retain)
             for i in range(n)]
    for info in infos:
        info.wait_for_publish(WAIT)
    pub.disconnect()
    pub.loop_stop()


class Counter:
    """Counts until `n`, then records when; set by whichever thread sees the n-th."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.finished_at = 0.0
        self.cpu_at = 0.0

    def hit(self) -> None:
        with self.lock:
            self.count += 1
            if self.count == self.n:
                self.finished_at = time.perf_counter()
                self.cpu_at = time.process_time()
                self.done.set()


def raw_subscriber(broker: Mosquitto, counter: Counter, prefix: str) -> mqtt.Client:
    client = paho_client(broker, f"bench-raw-{prefix}")

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.startswith(f"devices/{prefix}"):
            counter.hit()

    client.on_message = on_message
    return client


def runner_subscriber(broker: Mosquitto, counter: Counter,
                      prefix: str) -> tuple[MQTTClient, DeviceRegistry, FeedbackTracker]:
    registry = DeviceRegistry()
    tracker = FeedbackTracker()
    handler = MessageHandler(registry, tracker)

    def on_device(info: DeviceInfo) -> None:
        if info.id.startswith(prefix):
            counter.hit()

    registry.add_listener(on_device)
    client = MQTTClient(broker.host, broker.port, f"bench-runner-{prefix}", connect_retries=1)
    client.set_handlers(on_message=handler.handle_message)
    if not client.connect():
        raise SystemExit(f"could not connect to {broker.address}")
    return client, registry, tracker


def retained_round(broker: Mosquitto, n: int, which: str, prefix: str) -> tuple[float, float]:
    """Subscribe to N retained presence messages: wall seconds until the N-th is handled,
    and this process's CPU seconds meanwhile (the main thread only waits)."""
    counter = Counter(n)
    if which == "raw":
        raw = raw_subscriber(broker, counter, prefix)
        t0, c0 = time.perf_counter(), time.process_time()
        raw.subscribe(FILTER, qos=1)
        ok = counter.done.wait(WAIT)
        raw.disconnect()
        raw.loop_stop()
    else:
        client, registry, tracker = runner_subscriber(broker, counter, prefix)
        t0, c0 = time.perf_counter(), time.process_time()
        client.subscribe(FILTER)
        ok = counter.done.wait(WAIT)
        in_registry = sum(d.startswith(prefix) for d in registry.get_connected_devices())
        client.disconnect()
        tracker.close()
        if in_registry != n:
            raise SystemExit(f"lost presence: {in_registry} of {n} in the registry")
    if not ok:
        raise SystemExit(f"{which}: only {counter.count} of {n} arrived")
    return counter.finished_at - t0, counter.cpu_at - c0


def live_round(broker: Mosquitto, n: int, prefix: str) -> tuple[float, float]:
    """Both subscribers listen while N presence messages are published at full speed."""
    raw_c, our_c = Counter(n), Counter(n)
    burst = prefix + "L"
    raw = raw_subscriber(broker, raw_c, burst)
    sub = threading.Event()
    raw.on_subscribe = lambda *a: sub.set()
    raw.subscribe(FILTER, qos=1)
    client, registry, tracker = runner_subscriber(broker, our_c, burst)
    client.subscribe(FILTER)
    if not sub.wait(10):
        raise SystemExit("raw subscriber could not subscribe")
    # Our subscription is live once our own message comes back through it.
    probe = Counter(1)
    registry.add_listener(lambda info: probe.hit() if info.id == f"{prefix}probe" else None)
    while not probe.done.wait(0.05):
        client.publish(f"devices/{prefix}probe/status", "online", qos=0)
    t0 = time.perf_counter()
    publish_presence(broker, n, burst, retain=False)
    ok = raw_c.done.wait(WAIT) and our_c.done.wait(WAIT)
    in_registry = sum(d.startswith(burst) for d in registry.get_connected_devices())
    raw.disconnect()
    raw.loop_stop()
    client.disconnect()
    tracker.close()
    if not ok or in_registry != n:
        raise SystemExit(f"lost: raw {raw_c.count}, ours {our_c.count} / registry "
                         f"{in_registry} of {n}")
    return raw_c.finished_at - t0, our_c.finished_at - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.devices
    # A line per new device is what staff see; here it would time the terminal.
    logging.basicConfig(level=logging.ERROR)
    raw_t: list[float] = []
    our_t: list[float] = []
    raw_cpu: list[float] = []
    our_cpu: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        conf = "set_tcp_nodelay true\nmax_queued_messages 0"  # the whole burst queued
        broker = Mosquitto(Path(tmp), extra_conf=conf).start()
        try:
            publish_presence(broker, n, "r", retain=True)
            for i in range(args.rounds):
                # Interleaved, and in turns first, so both see the same machine load.
                for which in (("raw", "runner") if i % 2 == 0 else ("runner", "raw")):
                    took, cpu = retained_round(broker, n, which, "r")
                    (raw_t if which == "raw" else our_t).append(took)
                    (raw_cpu if which == "raw" else our_cpu).append(cpu)
                print(f"  round {i + 1}: raw {n / raw_t[-1]:8.0f}/s   "
                      f"runner {n / our_t[-1]:8.0f}/s", flush=True)
            live_raw, live_ours = live_round(broker, n, "v")
        finally:
            broker.kill()
    raw_rate = n / statistics.median(raw_t)
    our_rate = n / statistics.median(our_t)
    ratio = our_rate / raw_rate
    print(f"presence into the registry, {n} devices, median of {args.rounds} rounds")
    print(f"  retained burst  raw paho subscriber       {raw_rate:8.0f} msg/s")
    print(f"  retained burst  client+handler+registry   {our_rate:8.0f} msg/s   "
          f"{ratio:.2f}x   goal >= 0.8x   {'PASS' if ratio >= 0.8 else 'FAIL'}")
    raw_per_cpu = n / statistics.median(raw_cpu)
    our_per_cpu = n / statistics.median(our_cpu)
    print(f"  retained burst  per CPU second: raw {raw_per_cpu:8.0f}   ours {our_per_cpu:8.0f}"
          f"   {our_per_cpu / raw_per_cpu:.2f}x  (the work, without the machine's other load)")
    print(f"  live stream     raw paho subscriber       {n / live_raw:8.0f} msg/s")
    print(f"  live stream     client+handler+registry   {n / live_ours:8.0f} msg/s   "
          f"{live_raw / live_ours:.2f}x")
    print(f"  lost: none ({n} of {n} in the registry every round)")
    return 0 if ratio >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
