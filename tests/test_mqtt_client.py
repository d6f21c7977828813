"""The broker connection against real mosquitto: simulation mode, reconnects, presence,
no late delivery, refused logins and TLS."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from runner.model import TLSConfig
from runner.mqtt.client import MQTTClient
from runner.records import Delivery
from tests.brokers import Mosquitto
from tests.conftest import REPO, Recorder, require, wait_until
from tests.mqtt_support import PRESENCE, Device, make_stack, stack_on
from tests.tls_support import Pki, make_pki, tls_broker


def retained_now(broker: Mosquitto, topic_filter: str, marker: str,
                 timeout: float = 5.0) -> dict[str, bytes]:
    """What the broker holds retained under `topic_filter`, once `marker` is among it."""
    got: dict[str, bytes] = {}
    lock = threading.Lock()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="retained-reader")

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            got[msg.topic] = bytes(msg.payload)

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(topic_filter, qos=1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        wait_until(lambda: marker in got, timeout, what=f"retained {marker}")
        # Retained messages come in one burst after SUBACK: a round trip of our own
        # through the broker marks its end.
        client.publish("zz/end", "end", qos=1).wait_for_publish(5)
        client.subscribe("zz/end", qos=1)
        client.publish("zz/end", "end", qos=1).wait_for_publish(5)
        wait_until(lambda: "zz/end" in got, timeout, what="the end of the retained burst")
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return dict(got)


# -- simulation mode and reconnecting -----------------------------------------------------


def test_broker_down_at_start_simulates_then_reconnects_and_resubscribes(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqtt")
    mosquitto.stop()
    stack = make_stack(mosquitto.host, mosquitto.port, connect_retries=3, retry_delay=0.05,
                       max_backoff=0.2)
    try:
        assert stack.client.connect() is False
        assert stack.client.simulation and not stack.client.connected
        assert stack.client.publish("room1/light", "ON") is Delivery.SIMULATED
        assert "SIMULATED room1/light = ON" in caplog.messages
        assert sum("not reachable" in m and mosquitto.address in m
                   for m in caplog.messages) == 3
        mosquitto.start()
        wait_until(lambda: stack.client.connected, timeout=10, what="the reconnect")
        assert not stack.client.simulation
        # Received after the reconnect: only possible if the subscriptions were renewed.
        device = Device(mosquitto)
        device.online()
        wait_until(lambda: stack.registry.get_connected_devices() == ["esp32_01"],
                   what="presence through the renewed subscription")
        device.close()
        assert stack.client.publish("room1/light", "ON") is Delivery.SENT
        health = stack.client.health()
        assert health.connected is True and health.broker == mosquitto.address
        assert health.messages_in >= 1 and health.messages_out == 1
    finally:
        stack.close()


def test_runner_presence_online_then_offline_on_clean_stop(mosquitto: Mosquitto,
                                                          recorder: Recorder) -> None:
    with stack_on(mosquitto) as stack:
        [online] = recorder.wait_for(PRESENCE, "online")
        assert stack.client.connected
    recorder.wait_for(PRESENCE, "offline")
    assert retained_now(mosquitto, "runner/#", PRESENCE)[PRESENCE] == b"offline"
    assert online.retain is False  # live delivery; the broker keeps it retained


RUNNER_SCRIPT = """
import sys, time
from runner.mqtt.client import MQTTClient
c = MQTTClient(sys.argv[1], int(sys.argv[2]), "runner-killed", connect_retries=1,
               presence_topic="runner/room1/status")
assert c.connect()
print("ready", flush=True)
time.sleep(60)
"""


def test_runner_killed_leaves_offline_by_its_last_will(mosquitto: Mosquitto,
                                                       recorder: Recorder) -> None:
    proc = subprocess.Popen([sys.executable, "-c", RUNNER_SCRIPT, mosquitto.host,
                             str(mosquitto.port)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        recorder.wait_for(PRESENCE, "online")
        proc.kill()
        proc.wait(5)
        recorder.wait_for(PRESENCE, "offline")
    finally:
        proc.kill()
        proc.wait(5)
        if proc.stdout:
            proc.stdout.close()


def test_a_failing_handler_never_kills_the_network_loop(mosquitto: Mosquitto,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with stack_on(mosquitto) as stack:
        seen: list[str] = []

        def handler(topic: str, payload: bytes, retain: bool) -> None:
            seen.append(topic)
            if topic == "room1/status":
                raise RuntimeError("handler bug")

        stack.client.set_handlers(on_message=handler)
        device = Device(mosquitto)
        device.send("room1/status", "OK")
        device.send("zz/status", "after")
        wait_until(lambda: "zz/status" in seen, what="the message after the failure")
        device.close()
        assert stack.client.connected
        assert any("room1/status" in m and "failed" in m for m in caplog.messages)


# -- broker lost while the show runs: nothing is delivered late --------------------------


@dataclass
class Sent:
    seq: int
    at: float
    delivery: Delivery


def test_broker_killed_and_restarted_while_messages_flow(mosquitto: Mosquitto,
                                                         recorder: Recorder) -> None:
    outage = 1.5  # longer than the lateness we tolerate, so a late message would show
    tolerance = 1.0
    recorder.client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]  # paho takes floats
    with stack_on(mosquitto) as stack:
        sent: list[Sent] = []
        stop = threading.Event()

        def flow() -> None:
            seq = 0
            while not stop.is_set():
                now = time.monotonic()
                sent.append(Sent(seq, now, stack.client.publish("room1/flow", f"{seq}")))
                seq += 1
                stop.wait(0.01)  # the show's pace, not a settle-wait

        thread = threading.Thread(target=flow)
        thread.start()
        try:
            wait_until(lambda: len(recorder.on("room1/flow")) >= 10, what="messages flowing")
            mosquitto.kill()
            wait_until(lambda: sent[-1].delivery is Delivery.NOT_SENT, what="NOT_SENT")
            down_at = time.monotonic()
            wait_until(lambda: time.monotonic() - down_at > outage, timeout=outage + 5,
                       what="the outage")
            mosquitto.start()
            wait_until(lambda: stack.client.connected, timeout=10, what="the reconnect")
            wait_until(recorder.client.is_connected, timeout=10,
                       what="the recorder back")
            resumed = len(sent)
            wait_until(lambda: any(int(m.payload) > resumed for m in recorder.on("room1/flow")),
                       timeout=10, what="messages flowing again")
        finally:
            stop.set()
            thread.join(5)
    by_seq = {s.seq: s for s in sent}
    arrived = recorder.on("room1/flow")
    not_sent = {s.seq for s in sent if s.delivery is Delivery.NOT_SENT}
    assert len(not_sent) >= 10
    assert not_sent.isdisjoint(int(m.payload) for m in arrived)
    late = [(int(m.payload), m.at - by_seq[int(m.payload)].at) for m in arrived
            if m.at - by_seq[int(m.payload)].at > tolerance]
    assert late == [], f"delivered late: {late}"
    assert stack.client.health().reconnects == 1


def freeze_then_kill(broker: Mosquitto, publish: Callable[[], object]) -> object:
    """Publish into a frozen broker (bytes sit unread in its socket), then crash it."""
    assert broker.proc is not None
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        return publish()
    finally:
        broker.kill()  # SIGKILL ends a stopped process too


def test_command_in_flight_when_the_broker_dies_is_never_sent_late(
        mosquitto: Mosquitto) -> None:
    with stack_on(mosquitto) as stack:
        delivery = freeze_then_kill(
            mosquitto, lambda: stack.client.publish("room1/stale", "FIRE", retain=True))
        assert delivery is Delivery.SENT  # handed over; the broker never read it
        wait_until(lambda: not stack.client.connected, what="the loss to be noticed")
        mosquitto.start()
        wait_until(lambda: stack.client.connected, timeout=10, what="the reconnect")
        assert stack.client.publish("room1/marker", "M", retain=True) is Delivery.SENT
        held = retained_now(mosquitto, "room1/#", "room1/marker")
    # Retained: had it been re-sent at any moment after the reconnect, the broker would hold it.
    assert "room1/stale" not in held


def test_raw_paho_would_send_that_command_late(mosquitto: Mosquitto) -> None:
    """The control: the same fault with a plain paho client does deliver the stale command,
    so the test above really exercises paho's resend."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-paho")
    client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]  # paho takes floats
    connects = []
    client.on_connect = lambda *a: connects.append(1)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        wait_until(lambda: connects, what="raw paho connected")
        freeze_then_kill(mosquitto, lambda: client.publish("room1/stale", "FIRE", qos=1,
                                                           retain=True))
        mosquitto.start()
        wait_until(lambda: len(connects) >= 2, timeout=10, what="raw paho reconnected")
        client.publish("room1/marker", "M", qos=1, retain=True).wait_for_publish(5)
        held = retained_now(mosquitto, "room1/#", "room1/marker")
    finally:
        client.disconnect()
        client.loop_stop()
    assert held.get("room1/stale") == b"FIRE"


# -- refused logins ----------------------------------------------------------------------


def test_wrong_password_is_one_clear_error_and_no_retry_storm(
        broker_factory: Callable[..., Mosquitto], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    require("mosquitto_passwd", shutil.which("mosquitto_passwd") is not None,
            "apt-get install mosquitto (it ships mosquitto_passwd)")
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "museum", "right-one"],
                   check=True, capture_output=True)
    passwords.chmod(0o600)
    broker = broker_factory(
        listener_conf=f"allow_anonymous false\npassword_file {passwords}").start()
    caplog.set_level(logging.DEBUG, logger="mqtt")
    secret = "wrong-secret-value"
    client = MQTTClient(broker.host, broker.port, "runner-auth", username="museum",
                        password=secret, connect_retries=3, retry_delay=0.05, max_backoff=0.1)
    try:
        assert client.connect() is False
        assert client.simulation and client.health().gave_up is True
        assert client.publish("room1/light", "ON") is Delivery.SIMULATED
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and broker.address in errors[0], errors
        assert "refused the login" in errors[0]
        assert all(secret not in m for m in caplog.messages)
        # mosquitto writes its log line after refusing the client: wait for it.
        wait_until(lambda: "not authorised" in broker.log.read_text(), timeout=10,
                   what="mosquitto to log the refused login")
        assert client._supervisor is None or not client._supervisor.is_alive()
    finally:
        client.disconnect()
    good = MQTTClient(broker.host, broker.port, "runner-auth-ok", username="museum",
                      password="right-one", connect_retries=1)
    assert good.connect() is True
    good.disconnect()
    # One attempt, not three: mosquitto logs in the order it serves clients, so once the
    # good client's line is there, every refused attempt before it is logged too.
    wait_until(lambda: "runner-auth-ok" in broker.log.read_text(), timeout=10,
               what="mosquitto to log the good client")
    broker_log = broker.log.read_text()
    assert broker_log.count("not authorised") == 1, broker_log


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_client(broker: Mosquitto, tls: TLSConfig) -> MQTTClient:
    return MQTTClient(broker.host, broker.port, "runner-tls", tls=tls, connect_retries=2,
                      retry_delay=0.05, max_backoff=0.1, presence_topic=PRESENCE)


def test_tls_with_the_right_ca_connects_and_carries_messages(
        broker_factory: Callable[..., Mosquitto], pki: Pki) -> None:
    broker = tls_broker(broker_factory, pki)
    client = tls_client(broker, TLSConfig(ca_file=pki.ca))
    try:
        assert client.connect() is True
        got = threading.Event()
        client.set_handlers(on_message=lambda t, p, r: got.set() if t == "room1/echo" else None)
        client.subscribe("room1/echo")
        wait_until(lambda: client.publish("room1/echo", "hi") and got.is_set(),
                   interval=0.05, what="a message over TLS")
    finally:
        client.disconnect()


@pytest.mark.parametrize("fault", ["wrong CA", "wrong host name"])
def test_tls_refuses_an_unverifiable_broker(broker_factory: Callable[..., Mosquitto],
                                            pki: Pki, caplog: pytest.LogCaptureFixture,
                                            fault: str) -> None:
    broker = tls_broker(broker_factory, pki, wrong_name=fault == "wrong host name")
    ca = pki.other_ca if fault == "wrong CA" else pki.ca
    client = tls_client(broker, TLSConfig(ca_file=ca))
    try:
        assert client.connect() is False
        assert not client.connected and client.health().gave_up is True
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and broker.address in errors[0], errors
        assert "TLS" in errors[0]
        if fault == "wrong host name":
            assert "127.0.0.1" in errors[0] or "hostname" in errors[0].lower()
    finally:
        client.disconnect()


def test_tls_client_certificate_when_the_broker_requires_one(
        broker_factory: Callable[..., Mosquitto], pki: Pki) -> None:
    broker = tls_broker(broker_factory, pki, require_client_cert=True)
    with_cert = tls_client(broker, TLSConfig(ca_file=pki.ca, certfile=pki.client_crt,
                                             keyfile=pki.client_key))
    try:
        assert with_cert.connect() is True
    finally:
        with_cert.disconnect()
    without = tls_client(broker, TLSConfig(ca_file=pki.ca))
    try:
        assert without.connect() is False
    finally:
        without.disconnect()


def test_unreadable_tls_file_is_one_error_not_a_crash(mosquitto: Mosquitto, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    client = tls_client(mosquitto, TLSConfig(ca_file=tmp_path / "missing-ca.crt"))
    try:
        assert client.connect() is False  # no exception reaches the service
        assert client.publish("room1/light", "ON") is Delivery.SIMULATED
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "missing-ca.crt" in errors[0], errors
        assert "broker.tls" in errors[0]
    finally:
        client.disconnect()
