"""The dashboard end to end: real headless Chromium against `runner serve` and a test mosquitto.

A device that comes online appears without a reload; Play without the token is refused
and sends nothing; Play after logging in starts the scene (seen on the broker) and its
cues turn green as a virtual device confirms them. Screenshots at desktop and phone
width go to test-artifacts/.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.brokers import Mosquitto, free_port, wait_for_port
from tests.conftest import REPO, Recorder, require, spawn_runner

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu",
                 "--disable-background-networking", "--disable-quic", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"
TOKEN = "browser-test-token-5f2c9a7e1b"
UI_TIMEOUT = 10_000  # ms, for the page to show what the broker already saw

SCENE = """\
name: Browser test show
actions:
  - {at: 0, topic: room1/light, message: "ON", label: Lights up}
  - {at: 0.4, topic: room1/fog, message: "ON", feedback: none}
  - {at: 0.8, topic: room1/motor, message: START, label: Motor starts}
  - {at: 1.2, topic: room1/door, message: OPEN}
  - {at: 1.6, topic: room1/smoke, message: "ON", label: Smoke machine}
duration: 20
on_stop:
  - {topic: room1/door, message: CLOSE, feedback: none}
"""
OTHER_SCENE = """\
name: Another show
actions:
  - {at: 0, topic: room1/organ, message: "ON", feedback: none}
"""
CONFIRMED = ("room1/light", "room1/motor", "room1/door")
REFUSED = "room1/smoke"  # the virtual device answers ERROR to this one


def write_room(tmp: Path, broker: Mosquitto, port: int) -> Path:
    (tmp / "scenes").mkdir()
    (tmp / "media").mkdir()
    (tmp / "scenes" / "browser_show.yaml").write_text(SCENE)
    (tmp / "scenes" / "another.yaml").write_text(OTHER_SCENE)  # sorts first in the list
    (tmp / "secrets.yaml").write_text(f"dashboard_token: {TOKEN}\n")
    config = tmp / "runner.yaml"
    config.write_text(
        "room: room1\n"
        f"broker: {{host: {broker.host}, port: {broker.port}, connect_retries: 3, "
        "retry_delay: 0.2}\n"
        "scenes_dir: scenes\n"
        "media_dir: media\n"
        "feedback: {timeout: 3.0}\n"
        f"dashboard: {{bind: 127.0.0.1, port: {port}, token: !secret dashboard_token}}\n"
        "shows:\n"
        "  - {scene: browser_show, time: \"23:59\"}\n"
        "safe_state:\n"
        "  - {topic: room1/steam, message: \"OFF\"}\n"
    )
    return config


class VirtualDevice:
    """An ESP32 stand-in on the test broker: answers each command on room1/status."""

    def __init__(self, broker: Mosquitto, topics: tuple[str, ...], refuse: str) -> None:
        self.topics = (*topics, refuse)
        self.refuse = refuse
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="browser-vdev")
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_a: c.subscribe([(t, 1) for t in self.topics])
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_message = self._answer
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(5), "the virtual device could not subscribe"

    def _answer(self, client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if not msg.retain:
            status = "ERROR" if msg.topic == self.refuse else "OK"
            client.publish("room1/status", json.dumps({"status": status, "topic": msg.topic}),
                           qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def serve(tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder) -> Iterator[str]:
    """`runner serve` on a free dashboard port; yields the dashboard's URL."""
    port = free_port()
    config = write_room(tmp_path, mosquitto, port)
    proc = spawn_runner("serve", "--config", str(config), cwd=tmp_path)
    try:
        if not wait_for_port("127.0.0.1", port, timeout=20):
            proc.kill()
            out, err = proc.communicate(timeout=10)
            pytest.fail(f"runner serve did not open the dashboard:\n{out}\n{err}")
        recorder.wait_for("runner/room1/status", "online", timeout=10)
        yield f"http://127.0.0.1:{port}/"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def publish(broker: Mosquitto, topic: str, payload: str, retain: bool = False) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="browser-test-publisher")
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def test_dashboard_in_chromium(serve: str, mosquitto: Mosquitto, recorder: Recorder) -> None:
    require("chromium", Path(CHROMIUM).exists() or shutil.which("chromium") is not None,
            "apt-get install chromium (.ci/run does)")
    from playwright.sync_api import expect, sync_playwright  # noqa: PLC0415

    ARTIFACTS.mkdir(exist_ok=True)
    device = VirtualDevice(mosquitto, CONFIRMED, REFUSED)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(serve)
                expect(page.locator("#live")).to_have_text("Live", timeout=UI_TIMEOUT)
                expect(page.locator("#broker")).to_have_text("Broker: connected")
                expect(page.locator("#scene-select option")).to_have_count(2)
                page.evaluate("window.loadedOnce = true")  # survives only without a reload

                # A device comes online: it appears in words and colour, live.
                publish(mosquitto, "devices/esp32_09/status", "online", retain=True)
                row = page.locator('#devices li[data-device="esp32_09"]')
                expect(row).to_contain_text("ONLINE", timeout=UI_TIMEOUT)
                expect(row.locator(".badge")).to_have_class("badge ok")
                publish(mosquitto, "devices/esp32_09/status", "offline", retain=True)
                expect(row).to_contain_text("OFFLINE", timeout=UI_TIMEOUT)
                expect(row.locator(".badge")).to_have_class("badge bad")
                assert page.evaluate("window.loadedOnce") is True, "the page reloaded"

                # A device id is whatever a topic says: shown as text, never run as markup.
                hostile = "<img src=x onerror=window.pwned=1>"
                publish(mosquitto, f"devices/{hostile}/status", "online", retain=True)
                expect(page.locator("#devices li .name", has_text=hostile)).to_have_count(
                    1, timeout=UI_TIMEOUT)
                assert page.locator("#devices img").count() == 0
                assert page.evaluate("window.pwned") is None

                # Without the token, Play is refused and nothing reaches the broker.
                page.click("#play")
                expect(page.locator("#control-message")).to_contain_text(
                    "need the dashboard token", timeout=UI_TIMEOUT)
                assert recorder.payloads("room1/light") == []
                expect(page.locator("#scene-name")).to_have_text("Nothing is playing.")

                # Log in, then Play: the scene starts and its cues turn green.
                page.fill("#token", TOKEN)
                page.click("#login-form button[type=submit]")
                expect(page.locator("#login-state")).to_contain_text("Logged in",
                                                                     timeout=UI_TIMEOUT)
                expect(page.locator("#login-form")).to_be_hidden()
                page.select_option("#scene-select", "browser_show")
                page.click("#play")
                recorder.wait_for("room1/light", "ON", timeout=10)
                expect(page.locator("#scene-name")).to_contain_text("Browser test show",
                                                                    timeout=UI_TIMEOUT)
                for index in (0, 2, 3):  # light, motor, door: confirmed by the device
                    cue = page.locator(f'#cues li[data-index="{index}"]')
                    expect(cue).to_have_attribute("data-state", "ok", timeout=UI_TIMEOUT)
                    expect(cue).to_contain_text("✓ OK")
                fog = page.locator('#cues li[data-index="1"]')
                expect(fog).to_have_attribute("data-state", "no-feedback")
                smoke = page.locator('#cues li[data-index="4"]')
                expect(smoke).to_have_attribute("data-state", "error", timeout=UI_TIMEOUT)
                expect(smoke).to_contain_text("✗ ERROR")
                expect(page.locator(".cue-mark.st-ok")).to_have_count(3)
                expect(page.locator(".cue-mark.st-error")).to_have_count(1)
                failure = page.locator("#failures li").first
                expect(failure).to_contain_text("ERROR", timeout=UI_TIMEOUT)
                expect(failure).to_contain_text("room1/smoke ON")
                expect(page.locator("#shows li").first).to_contain_text("browser_show")
                expect(page.locator(".cue-mark.st-no-feedback")).to_have_count(1)
                recorder.wait_for("room1/door", "OPEN")
                assert recorder.payloads("room1/light") == ["ON"]

                # The playhead moves on its own between snapshots.
                left = page.eval_on_selector("#playhead", "e => parseFloat(e.style.left)")
                page.wait_for_function(
                    f"parseFloat(document.getElementById('playhead').style.left) > {left}",
                    timeout=UI_TIMEOUT)
                page.screenshot(path=str(ARTIFACTS / "dashboard-desktop.png"), full_page=True)

                phone = browser.new_context(viewport={"width": 390, "height": 844},
                                            device_scale_factor=2, is_mobile=True)
                small = phone.new_page()
                small.goto(serve)
                expect(small.locator('#cues li[data-index="4"]')).to_have_attribute(
                    "data-state", "error", timeout=UI_TIMEOUT)
                # not logged in on this phone: the login form shows
                expect(small.locator("#login-form")).to_be_visible()
                width = small.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
                small.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
                phone.close()

                # Stop from the page: the scene's on_stop and the room's safe state go out.
                page.click("#stop")
                recorder.wait_for("room1/door", "CLOSE", timeout=10)
                recorder.wait_for("room1/steam", "OFF", timeout=10)
                expect(page.locator("#scene-name")).to_have_text("Nothing is playing.",
                                                                 timeout=UI_TIMEOUT)
                expect(page.locator("#runs li").first).to_contain_text("stopped",
                                                                       timeout=UI_TIMEOUT)
                assert errors == [], f"script errors on the page: {errors}"
            finally:
                browser.close()
    finally:
        device.close()


def test_the_scene_list_follows_what_plays_and_devices_say_since_when_they_are_up(
        serve: str, mosquitto: Mosquitto, recorder: Recorder) -> None:
    """Play after a Stop starts the scene that ran, not whichever sorts first; an online
    device shows since when it is up (its presence message may be hours old)."""
    require("chromium", Path(CHROMIUM).exists() or shutil.which("chromium") is not None,
            "apt-get install chromium (.ci/run does)")
    from playwright.sync_api import expect, sync_playwright  # noqa: PLC0415

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(serve)
            expect(page.locator("#live")).to_have_text("Live", timeout=UI_TIMEOUT)
            select = page.locator("#scene-select")
            expect(select).to_have_value("another")  # nothing has run yet: the first

            publish(mosquitto, "devices/esp32_07/status", "online", retain=True)
            row = page.locator('#devices li[data-device="esp32_07"]')
            expect(row.locator(".when")).to_contain_text("online since", timeout=UI_TIMEOUT)
            publish(mosquitto, "devices/esp32_07/status", "offline", retain=True)
            expect(row.locator(".when")).to_contain_text("last seen", timeout=UI_TIMEOUT)

            # Started elsewhere (a show, a button, another desk): the list follows it.
            publish(mosquitto, "runner/room1/cmd",
                    json.dumps({"command": "play", "scene": "browser_show"}))
            recorder.wait_for("room1/light", "ON", timeout=10)
            expect(select).to_have_value("browser_show", timeout=UI_TIMEOUT)
            publish(mosquitto, "runner/room1/cmd", json.dumps({"command": "stop"}))
            expect(page.locator("#scene-name")).to_have_text("Nothing is playing.",
                                                             timeout=UI_TIMEOUT)

            # A page opened after the Stop offers the scene that ran; Play starts it again.
            fresh = browser.new_page(viewport={"width": 390, "height": 844})
            fresh.goto(serve)
            expect(fresh.locator("#runs li").first).to_contain_text("stopped",
                                                                    timeout=UI_TIMEOUT)
            # Stopped by a person is not a failure: grey, not the red of what went wrong.
            expect(fresh.locator("#runs li .badge").first).to_have_class("badge unknown")
            expect(fresh.locator("#scene-select")).to_have_value("browser_show")
            fresh.fill("#token", TOKEN)
            fresh.click("#login-form button[type=submit]")
            expect(fresh.locator("#logout")).to_be_visible(timeout=UI_TIMEOUT)
            fresh.click("#play")
            recorder.wait_for("room1/light", "ON", count=2, timeout=10)
            assert recorder.payloads("room1/organ") == []

            # Someone who picks a scene keeps it while snapshots come and go.
            fresh.select_option("#scene-select", "another")
            recorder.wait_for("room1/motor", "START", count=2, timeout=10)  # new snapshots
            expect(fresh.locator("#cues li[data-index=\"2\"]")).not_to_have_attribute(
                "data-state", "waiting", timeout=UI_TIMEOUT)
            expect(fresh.locator("#scene-select")).to_have_value("another")
        finally:
            browser.close()
