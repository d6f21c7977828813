"""`runner demo` end to end, with and without a broker already listening; the embedded broker."""

from __future__ import annotations

import ctypes.util
import json
import logging
import re
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from runner.demo import broker_answers, demo_files
from runner.embedded_broker import EmbeddedBroker
from runner.model import BrokerConfig, TLSConfig
from runner.mqtt.client import MQTTClient
from runner.simulate import DeviceFleet, VirtualDevice
from tests.brokers import Mosquitto, free_port
from tests.conftest import Recorder, require, spawn_runner, wait_until
from tests.tls_support import make_pki, tls_broker

DEMO_DEVICES = {"esp32_room1_light", "esp32_room1_motor", "esp32_room1_steam"}
URL = re.compile(r"dashboard\s+(http://127\.0\.0\.1:(\d+)/)")
START_TIMEOUT = 60.0  # the demo starts broker, devices, libvlc and uvicorn on a busy machine


class DemoProcess:
    """A running `runner demo` whose stdout is read line by line in the background."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr = ""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def url(self) -> str:
        def found() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"runner demo exited early:\n{self.output()}\n"
                                     f"{self.proc.stderr.read() if self.proc.stderr else ''}")
            return URL.search(self.output())
        wait_until(found, START_TIMEOUT, what="the dashboard URL on stdout")
        match = found()
        assert match is not None
        return match.group(1)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(30)
        self._reader.join(5)
        self.stderr = self.proc.stderr.read() if self.proc.stderr else ""
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def demo_factory(tmp_path: Path) -> Iterator[list[DemoProcess]]:
    started: list[DemoProcess] = []
    yield started
    for d in started:
        d.kill()


def start_demo(started: list[DemoProcess], tmp_path: Path, *args: str,
               env: dict[str, str] | None = None) -> DemoProcess:
    # cwd=tmp_path: no runner.yaml there, so only --broker decides where the broker is.
    demo = DemoProcess(spawn_runner("demo", *args, cwd=tmp_path, env=env))
    started.append(demo)
    return demo


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        return json.loads(response.read())


def post(url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body or {}).encode(), method="POST",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        return json.loads(response.read())


def online_devices(base: str) -> set[str]:
    return {d["id"] for d in get_json(base + "api/devices")["devices"] if d["online"]}


def ok_cues(base: str) -> list[dict[str, Any]]:
    scene = get_json(base + "api/scene")
    return [c for c in scene["cues"] if c["state"] == "ok"] if scene["playing"] else []


def check_running_demo(demo: DemoProcess) -> str:
    """The printed URL answers, the devices are online, feedback OK results appear."""
    base = demo.url()
    with urllib.request.urlopen(base, timeout=5) as page:
        assert page.status == 200
    wait_until(lambda: online_devices(base) >= DEMO_DEVICES, 20, what="virtual devices online")
    wait_until(lambda: ok_cues(base), 20, what="a cue confirmed with feedback OK")
    cue = ok_cues(base)[0]
    assert cue["latency"] is not None and cue["latency"] >= 0.05  # the devices' least latency
    wait_until(lambda: "✅ OK in" in demo.output(), 20, what="a feedback OK line on stdout")
    return base


def test_demo_uses_a_broker_that_answers(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        demo_factory: list[DemoProcess]) -> None:
    require("libvlc", ctypes.util.find_library("vlc") is not None,
            "apt-get install libvlc5 vlc-plugin-base")
    demo = start_demo(demo_factory, tmp_path, "--broker", mosquitto.address, "--port", "0")
    base = check_running_demo(demo)
    assert f"the MQTT broker at {mosquitto.address}" in demo.output()
    assert "media      played here through libvlc" in demo.output()
    assert "embedded" not in demo.output()
    # The show really went over this broker, answered by the virtual devices.
    recorder.wait_for("room1/light", "ON")
    recorder.wait_for("room1/status", "OK")
    recorder.wait_for("devices/esp32_room1_steam/status", "online")

    # The printed token lets staff stop the show and start it again from the dashboard.
    token = re.search(r"token\s+(\S+)", demo.output())
    assert token is not None
    post(base + "api/stop", token.group(1))
    wait_until(lambda: "press Play there" in demo.output(), 20, what="the stop reported")
    recorder.clear()
    assert post(base + "api/play", token.group(1), {"scene": "demo"})["started"]
    recorder.wait_for("room1/light", "ON", timeout=10)

    assert demo.interrupt() == 0, demo.stderr
    assert "Traceback" not in demo.stderr
    recorder.wait_for("devices/esp32_room1_steam/status", "offline")
    recorder.wait_for("runner/room1/status", "offline")
    assert "Stopped." in demo.output()


def wrong_login(base: str) -> str:
    """The error a wrong token gets from the login form's endpoint."""
    request = urllib.request.Request(
        base + "api/login", data=json.dumps({"token": "not-the-token"}).encode(),
        method="POST", headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # loopback only
    assert refused.value.code == 401
    return str(json.loads(refused.value.read())["error"])


def quiet_since(recorder: Recorder) -> list[str]:
    """Topics the recorder got, up to a barrier of its own (all earlier ones arrived)."""
    recorder.client.publish("test/barrier", "1", qos=1)
    recorder.wait_for("test/barrier", "1")
    with recorder.lock:
        return [m.topic for m in recorder.messages if m.topic != "test/barrier"]


def test_demo_sends_nothing_to_a_broker_it_did_not_start(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        demo_factory: list[DemoProcess]) -> None:
    # A room's Pi: its runner.yaml names the room's broker, real props listen there.
    (tmp_path / "runner.yaml").write_text(
        f"room: room1\nbroker: {{host: {mosquitto.host}, port: {mosquitto.port}}}\n")
    demo = start_demo(demo_factory, tmp_path, "--port", "0")
    base = check_running_demo(demo)  # the show plays, answered, on the demo's own broker
    banner = re.search(r"demo broker: embedded on 127\.0\.0\.1:(\d+) \(nothing is sent to "
                       r"a room's broker; --broker to use one\)", demo.output())
    assert banner is not None, demo.output()
    assert int(banner.group(1)) != mosquitto.port
    assert mosquitto.address not in demo.output()

    # A wrong token is pointed at the token this demo printed, not at a runner.yaml.
    hint = wrong_login(base)
    assert "runner demo` printed" in hint and "runner.yaml" not in hint, hint

    # Play while it plays starts it again from the top, and the terminal says so truly.
    token = re.search(r"token\s+(\S+)", demo.output())
    assert token is not None
    played = demo.output().count("Lights up: room1/light = ON")
    assert post(base + "api/play", token.group(1), {"scene": "demo"})["started"]
    wait_until(lambda: "started again from the top" in demo.output(), 20,
               what="the restart reported")
    wait_until(lambda: demo.output().count("Lights up: room1/light = ON") > played, 20,
               what="the first cue again")
    assert "press Play there" not in demo.output()

    assert demo.interrupt() == 0, demo.stderr
    assert "Traceback" not in demo.stderr
    # amqtt was asked for MQTT 3.1.1 at once: no MQTT 5 attempt timing out first.
    assert "does not accept MQTT 5" not in demo.stderr, demo.stderr
    # Nothing of the show, the devices' presence or the runner's state reached the room.
    assert quiet_since(recorder) == []


def test_mqtt311_from_the_first_connect_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    with EmbeddedBroker() as broker:
        client = MQTTClient(broker.host, broker.port, "runner_test", connect_retries=1,
                            mqtt5=False)
        with caplog.at_level(logging.WARNING, logger="mqtt"):
            try:
                assert client.connect()
            finally:
                client.disconnect()
    assert "MQTT 5" not in caplog.text


def test_demo_starts_its_own_broker_when_none_answers(
        tmp_path: Path, demo_factory: list[DemoProcess]) -> None:
    nothing_there = f"127.0.0.1:{free_port()}"
    # A machine without libvlc: the one fault here we cannot cause for real, so a `vlc`
    # module that fails to import as python-vlc does when libvlc is missing.
    no_vlc = tmp_path / "no_vlc"
    no_vlc.mkdir()
    (no_vlc / "vlc.py").write_text("raise ImportError('libvlc.so.5: cannot open shared object')\n")
    # The default dashboard port may be taken: occupy the one we ask for to prove the fallback.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        demo = start_demo(demo_factory, tmp_path, "--broker", nothing_there,
                          "--port", str(taken_port), env={"PYTHONPATH": str(no_vlc)})
        base = check_running_demo(demo)
    assert f"nothing answered at {nothing_there}" in demo.output()
    assert "media      simulated" in demo.output()
    wait_until(lambda: "demo_chime.wav  simulated" in demo.output(), 20,
               what="the chime cue, simulated")
    assert f":{taken_port}/" not in base
    assert demo.interrupt() == 0, demo.stderr
    assert "Traceback" not in demo.stderr


def test_demo_rejects_a_bad_port(tmp_path: Path) -> None:
    proc = spawn_runner("demo", "--port", "70000", cwd=tmp_path)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "is not a port" in err


# --- the parts -----------------------------------------------------------------------


def test_demo_files_are_beside_the_package() -> None:
    scenes, media = demo_files()
    assert (scenes / "demo.yaml").is_file()
    assert (media / "demo_chime.wav").is_file()


def test_broker_answers_only_when_a_broker_accepts(mosquitto: Mosquitto) -> None:
    assert broker_answers(BrokerConfig(host=mosquitto.host, port=mosquitto.port))
    assert not broker_answers(BrokerConfig(host="127.0.0.1", port=free_port()), timeout=1.0)
    # Something listens but is no MQTT broker: it does not count as one.
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        assert not broker_answers(BrokerConfig(host="127.0.0.1", port=other.getsockname()[1]),
                                  timeout=1.0)


def test_broker_answers_over_tls_with_the_configured_client_certificate(
        broker_factory: Callable[..., Mosquitto], tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    broker = tls_broker(broker_factory, pki, require_client_cert=True)
    with_cert = TLSConfig(ca_file=pki.ca, certfile=pki.client_crt, keyfile=pki.client_key)
    assert broker_answers(BrokerConfig(host=broker.host, port=broker.port, tls=with_cert))
    # The same broker refuses the probe without one: the certificate is what got it in.
    assert not broker_answers(BrokerConfig(host=broker.host, port=broker.port,
                                           tls=TLSConfig(ca_file=pki.ca)), timeout=1.0)


def test_embedded_broker_carries_retained_presence_and_last_wills() -> None:
    with EmbeddedBroker() as broker:
        assert broker.host == "127.0.0.1" and broker.port > 0
        fleet = DeviceFleet([VirtualDevice("esp32_01", ["room1/light"], broker.host,
                                           broker.port, latency=(0.0, 0.0))])
        fleet.start()
        try:
            assert fleet.wait_online(10)
            seen: list[tuple[str, str, bool]] = []
            answered = threading.Event()
            client = mqtt.Client(CallbackAPIVersion.VERSION2)

            def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
                seen.append((msg.topic, msg.payload.decode(), bool(msg.retain)))
                if msg.topic == "room1/status":
                    answered.set()

            client.on_message = on_message
            client.on_connect = lambda c, *_a: c.subscribe([("devices/+/status", 1),
                                                            ("room1/status", 1)])
            client.connect(broker.host, broker.port)
            client.loop_start()
            try:
                # A late subscriber gets the retained presence.
                wait_until(lambda: ("devices/esp32_01/status", "online", True) in seen,
                           what="retained online")
                client.publish("room1/light", "ON", qos=1)
                assert answered.wait(5)
                fleet.drop("esp32_01", away=30)
                wait_until(lambda: ("devices/esp32_01/status", "offline", False) in seen,
                           what="the last will")
            finally:
                client.loop_stop()
                client.disconnect()
        finally:
            fleet.stop()
    with pytest.raises(OSError):
        socket.create_connection((broker.host, broker.port), timeout=1).close()
