"""What N virtual devices cost: threads, resident memory, time to all online, answer latency.

The `DeviceFleet` (one shared network thread) against the obvious alternative, one paho
client with its own `loop_start()` thread per device that answers at once, each in a
fresh process against a private mosquitto. The answer time is a command's round trip,
one at a time, with the fleet's latency set to 0; Nagle is off on the broker and the
probe (else each hop waits ~40 ms for a delayed ACK and hides what is measured).
Memory is VmRSS from /proc after the devices are up, minus the same process's VmRSS
before they started.

    .venv/bin/python bench/fleet_cost.py [--devices 200] [--commands 500]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from runner.simulate import DeviceFleet  # noqa: E402
from tests.brokers import Mosquitto  # noqa: E402


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _subscribe_then(topic: str, up: threading.Semaphore) -> Callable[..., None]:
    """on_connect of a baseline device: subscribe to its command topic, then count it up."""
    def on_connect(c: mqtt.Client, *_a: object) -> None:
        c.subscribe(topic, 1)
        up.release()
    return on_connect


def _answer_ok(c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
    # The baseline device: answers OK at once, from its own network thread.
    c.publish("room1/status", "OK", qos=1)


def _no_delay(_c: mqtt.Client, _u: object, sock: object) -> None:
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def measure(variant: str, port: int, devices: int, commands: int) -> None:
    """Runs in a child process; prints one tab-separated result line."""
    threads0, rss0 = threading.active_count(), rss_kb()
    t0 = time.monotonic()
    clients: list[mqtt.Client] = []
    fleet = None
    if variant == "fleet":
        fleet = DeviceFleet.from_map({f"d{i}": [f"room1/t{i}"] for i in range(devices)},
                                     "127.0.0.1", port, latency=(0.0, 0.0))
        fleet.start()
        assert fleet.wait_online(60)
    else:
        up = threading.Semaphore(0)
        for i in range(devices):
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"x{i}")
            c.will_set(f"devices/x{i}/status", "offline", qos=1, retain=True)
            c.on_connect = _subscribe_then(f"room1/t{i}", up)
            c.on_message = _answer_ok
            c.connect("127.0.0.1", port)
            c.loop_start()
            clients.append(c)
        for _ in range(devices):
            assert up.acquire(timeout=60)
    online_s = time.monotonic() - t0
    threads, rss = threading.active_count() - threads0, rss_kb() - rss0

    latencies: list[float] = []
    if commands:
        # One command at a time, round robin over the devices: the fleet's own overhead
        # per answer, not a queue under a burst.
        answered = threading.Event()
        probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe")
        probe.on_socket_open = _no_delay
        probe.on_message = lambda *_a: answered.set()
        subscribed = threading.Event()
        probe.on_subscribe = lambda *_a: subscribed.set()
        probe.connect("127.0.0.1", port)
        probe.subscribe("room1/status", 1)
        probe.loop_start()
        assert subscribed.wait(10)
        for n in range(commands):
            answered.clear()
            sent = time.monotonic()
            probe.publish(f"room1/t{n % devices}", "ON", qos=1)
            assert answered.wait(10), f"no answer to command {n}"
            latencies.append(time.monotonic() - sent)
        probe.disconnect()
        probe.loop_stop()
    if fleet is not None:
        fleet.stop()
    for c in clients:
        c.disconnect()
        c.loop_stop()
    p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
    p99 = (statistics.quantiles(latencies, n=100)[98] * 1000
           if len(latencies) > 1 else float("nan"))
    print(f"{variant}\t{devices}\t{threads}\t{rss / 1024:.1f}\t{online_s:.2f}\t"
          f"{p50:.1f}\t{p99:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child[0], int(args.child[1]), args.devices, args.commands)
        return
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp), extra_conf="set_tcp_nodelay true").start()
        try:
            print("| variant | devices | extra threads | extra RSS (MB) | all online (s) "
                  "| answer p50 (ms) | answer p99 (ms) |")
            print("|---|---|---|---|---|---|---|")
            for variant in ("fleet", "loop_start"):
                out = subprocess.run(
                    [sys.executable, __file__, "--devices", str(args.devices),
                     "--commands", str(args.commands), "--child", variant, str(broker.port)],
                    capture_output=True, text=True, check=True, timeout=300).stdout
                cells = out.strip().splitlines()[-1].split("\t")
                print("| " + " | ".join(cells) + " |")
        finally:
            broker.kill()


if __name__ == "__main__":
    main()
