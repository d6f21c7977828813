"""Benchmark: command -> confirmed feedback through client + handler + tracker, against a raw
paho round trip on the same private mosquitto in the same run.

    .venv/bin/python bench/feedback_roundtrip.py [--rounds 500]
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
from runner.mqtt.registry import DeviceRegistry
from runner.records import Delivery, FeedbackResult, FeedbackStatus
from tests.brokers import Mosquitto

COMMAND = "bench/light"  # ours: the answer comes on bench/status
# The baselines answer on a topic our client is not subscribed to, so it sees none of it.
RAW_FEEDBACK = "raw/answers/status"
WAIT = 5.0


def connected_paho(broker: Mosquitto, client_id: str, *, nodelay: bool = True) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    up = threading.Event()
    client.on_connect = lambda *a: up.set()
    client.connect(broker.host, broker.port)
    sock = client.socket()
    if nodelay and isinstance(sock, socket.socket):
        # What our client does: without it a round trip waits on delayed ACKs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_start()
    if not up.wait(WAIT):
        raise SystemExit(f"could not connect to {broker.address}")
    return client


def subscribe_and_wait(client: mqtt.Client, topic: str) -> None:
    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    client.subscribe(topic, qos=1)
    if not done.wait(WAIT):
        raise SystemExit(f"could not subscribe to {topic}")


def start_device(broker: Mosquitto, command: str, answer_topic: str) -> mqtt.Client:
    """An ESP32 stand-in that answers every command with OK at once; one per path."""
    device = connected_paho(broker, f"bench-device-{command}")
    def answer(c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        c.publish(answer_topic, "OK", qos=1)

    device.on_message = answer
    subscribe_and_wait(device, command)
    return device


class RawRoundTrip:
    """The baseline: plain paho publish, wait for the device's OK on the status topic."""

    def __init__(self, broker: Mosquitto, *, nodelay: bool) -> None:
        self.answered = threading.Event()
        self.command = f"raw{int(nodelay)}/light"
        self.feedback = f"{RAW_FEEDBACK}/{int(nodelay)}"
        self.device = start_device(broker, self.command, self.feedback)
        self.client = connected_paho(broker, f"bench-raw-{nodelay}", nodelay=nodelay)
        self.client.on_message = lambda *a: self.answered.set()
        subscribe_and_wait(self.client, self.feedback)

    def once(self) -> float:
        self.answered.clear()
        t0 = time.perf_counter()
        self.client.publish(self.command, "ON", qos=1)
        if not self.answered.wait(WAIT):
            raise SystemExit("raw round trip: no answer")
        return time.perf_counter() - t0

    def close(self) -> None:
        for client in (self.client, self.device):
            client.disconnect()
            client.loop_stop()


class RunnerRoundTrip:
    """Ours: MQTTClient.publish, tracker.track_published_message, result via the handler."""

    def __init__(self, broker: Mosquitto) -> None:
        self.device = start_device(broker, COMMAND, "bench/status")
        self.tracker = FeedbackTracker(timeout=WAIT)
        self.handler = MessageHandler(DeviceRegistry(), self.tracker)
        self.client = MQTTClient(broker.host, broker.port, "bench-runner", connect_retries=1)
        self.client.set_handlers(on_message=self.handler.handle_message)
        for topic_filter in self.handler.topic_filters():
            self.client.subscribe(topic_filter)
        if not self.client.connect():
            raise SystemExit(f"could not connect to {broker.address}")
        self.tracker.enable_feedback_tracking()
        self.done = threading.Event()
        self.result: FeedbackResult | None = None
        self.once()  # the first answer proves the subscriptions are live

    def _on_result(self, result: FeedbackResult) -> None:
        self.result = result
        self.done.set()

    def once(self) -> float:
        self.done.clear()
        t0 = time.perf_counter()
        if self.client.publish(COMMAND, "ON") is not Delivery.SENT:
            raise SystemExit("runner: not sent")
        self.tracker.track_published_message(COMMAND, "ON", on_result=self._on_result)
        if not self.done.wait(WAIT) or self.result is None:
            raise SystemExit("runner round trip: no result")
        if self.result.status is not FeedbackStatus.OK:
            raise SystemExit(f"runner round trip: {self.result.status}")
        return time.perf_counter() - t0

    def close(self) -> None:
        self.client.disconnect()
        self.tracker.close()
        self.device.disconnect()
        self.device.loop_stop()


def describe(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[int(len(ms) * 0.9)]
    return (f"median {statistics.median(ms):6.3f} ms   mean {statistics.fmean(ms):6.3f} ms"
            f"   p90 {p90:6.3f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--broker-nagle", action="store_true",
                        help="leave mosquitto's set_tcp_nodelay at its default (false)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the ✅ line per command is not what we time
    with tempfile.TemporaryDirectory() as tmp:
        extra = "" if args.broker_nagle else "set_tcp_nodelay true"
        broker = Mosquitto(Path(tmp), extra_conf=extra).start()
        try:
            raw = RawRoundTrip(broker, nodelay=True)
            plain = RawRoundTrip(broker, nodelay=False)
            ours = RunnerRoundTrip(broker)
            for _ in range(50):  # warm up every path
                raw.once()
                plain.once()
                ours.once()
            raw_t: list[float] = []
            plain_t: list[float] = []
            our_t: list[float] = []
            # Interleaved, so all see the same machine load.
            for _ in range(args.rounds):
                raw_t.append(raw.once())
                plain_t.append(plain.once())
                our_t.append(ours.once())
            raw.close()
            plain.close()
            ours.close()
        finally:
            broker.kill()
    ratio = statistics.median(our_t) / statistics.median(raw_t)
    print(f"command -> OK round trip, {args.rounds} rounds each, interleaved, mosquitto "
          f"set_tcp_nodelay {'false (default)' if args.broker_nagle else 'true'}")
    print(f"  raw paho, TCP_NODELAY        {describe(raw_t)}   <- baseline")
    print(f"  raw paho, Nagle on (default) {describe(plain_t)}")
    print(f"  client+handler+tracker       {describe(our_t)}")
    print(f"  ratio (median)               {ratio:.2f}x   goal <= 1.5x   "
          f"{'PASS' if ratio <= 1.5 else 'FAIL'}")
    return 0 if ratio <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
