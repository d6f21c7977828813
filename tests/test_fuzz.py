"""Fuzzing: generated YAML through the scene and config loaders and `runner validate`, and
random MQTT messages through a running room (handler, triggers, remote control)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.cli import build_parser
from runner.commands import validate as validate_command
from runner.configfile import load_config
from runner.errors import Diagnostic, ValidationFailed
from runner.scenefile import check_scene
from runner.service import RoomService
from tests.brokers import Mosquitto
from tests.conftest import wait_until

SCENE_KEYS = ["name", "room", "mode", "feedback_timeout", "duration", "loop", "actions",
              "on_stop", "at", "topic", "message", "feedback", "qos", "retain", "volume",
              "label", "feedback_topic"]
CONFIG_KEYS = ["room", "broker", "host", "port", "client_id", "username", "password", "tls",
               "ca_file", "connect_retries", "retry_delay", "scenes_dir", "media_dir",
               "feedback", "timeout", "registry", "status_topics", "dashboard", "bind",
               "token", "shows", "scene", "cron", "time", "days", "triggers", "topic",
               "message", "safe_state", "devices", "timezone", "enabled"]
WORDS = ["ON", "off", "yes", "1:30", "0:10.5", "2024-05-01", "room1/light", "room1/audio",
         "room1/+", "#", "bg.mp3", "../x.mp3", "/etc/passwd", "expect", "required", "none",
         "single", "queue", "restart", "0 10 * * *", "17:45", "mon", "!secret x", "&a", "*a",
         "~", "null", "1e400", "-1", "nan", ".inf", "\u00e9\u00e8", "\U0001F4A5", ""]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WORDS),
    st.text(max_size=12),
)


def documents(keys: list[str]) -> st.SearchStrategy[Any]:
    """Nested mappings and lists whose keys are mostly the file's own words."""
    key = st.one_of(st.sampled_from(keys), st.text(max_size=8))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(key, inner, max_size=5)),
        max_leaves=25,
    )


# Characters that mean something to YAML, so that raw text reaches the parser's corners.
YAML_TEXT = st.lists(
    st.sampled_from([*":-[]{}&*!|>'\"#%@`,? \t\n\\", "a", "1", "ON", "é", "\x00", "\ufeff",
                     "!!python/object/apply:os.system", "<<", "---", "...", "%YAML 1.1"]),
    max_size=60).map("".join)


def rendered(doc: Any, flow: bool) -> str:
    return yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True)


DIAGNOSTIC = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (error|warning): \$")


def assert_located(diagnostics: list[Diagnostic], path: Path, text: str) -> None:
    lines = text.count("\n") + 2
    for d in diagnostics:
        m = DIAGNOSTIC.match(d.format())
        assert m, d.format()
        assert Path(m["file"]).name == path.name, d.format()
        assert 0 <= int(m["line"]) <= lines, d.format()


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    # hypothesis runs many examples per test: one folder for all, not a fixture per example
    with tempfile.TemporaryDirectory(prefix="runner-fuzz-") as d:
        root = Path(d)
        (root / "media").mkdir()
        (root / "media" / "bg.mp3").write_bytes(b"\0")
        (root / "scenes").mkdir()
        yield root


def check_scene_text(folder: Path, text: str) -> None:
    path = folder / "scenes" / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    scene, diagnostics = check_scene(path, media_dir=folder / "media")
    assert_located(diagnostics, path, text)
    if scene is None:
        assert any(d.severity.value == "error" for d in diagnostics)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(documents(SCENE_KEYS),
                     st.fixed_dictionaries({"name": scalars, "actions": st.lists(
                         st.dictionaries(st.sampled_from(SCENE_KEYS), scalars, max_size=6),
                         max_size=4)})),
       flow=st.booleans())
def test_generated_scene_documents_load_or_point_at_a_line(folder: Path, doc: Any,
                                                           flow: bool) -> None:
    check_scene_text(folder, rendered(doc, flow))


@settings(max_examples=400, deadline=None)
@given(text=YAML_TEXT)
def test_raw_yaml_text_never_escapes_the_scene_loader(folder: Path, text: str) -> None:
    check_scene_text(folder, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(documents(CONFIG_KEYS), YAML_TEXT), flow=st.booleans())
def test_generated_configs_load_or_point_at_a_line(folder: Path, doc: Any, flow: bool) -> None:
    text = doc if isinstance(doc, str) else rendered(doc, flow)
    path = folder / "runner.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ValidationFailed as e:
        assert e.diagnostics
        assert_located(e.diagnostics, path, text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(SCENE_KEYS), flow=st.booleans(), as_json=st.booleans())
def test_runner_validate_answers_every_document_without_a_traceback(
        folder: Path, doc: Any, flow: bool, as_json: bool) -> None:
    path = folder / "scenes" / "fuzz.yaml"
    path.write_text(rendered(doc, flow))
    argv = ["validate", str(path), *(["--format", "json"] if as_json else [])]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = validate_command.run(build_parser().parse_args(argv))
    assert code in (0, 1), err.getvalue()
    assert "Traceback" not in out.getvalue() + err.getvalue()
    if as_json:
        json.loads(out.getvalue())
    elif code == 1:
        text = out.getvalue() + err.getvalue()
        assert any(DIAGNOSTIC.match(line) for line in text.splitlines()), text


# -- random MQTT messages through a running room ---------------------------------------

SCENE = "name: Quick\nduration: 0.05\nactions:\n  - {at: 0, topic: room1/fog, message: 'ON'}\n"
TOPICS = st.sampled_from([
    "runner/room1/cmd", "room1/button", "room1/status", "devices/esp32_01/status",
    "devices/+/status", "devices//status", "other/status", "room1/fog", "#", "", "/",
    "runner/room1/state", "a/b/c/d/e/f/g",
])
COMMANDS = st.builds(
    lambda c, s, extra: json.dumps({"command": c, "scene": s, **extra}),
    st.sampled_from(["play", "stop", "panic", "PLAY", "exec", "reload", "", "play "]),
    st.one_of(st.sampled_from(["quick", "Quick", "../quick", "scenes/quick.yaml", "nope"]),
              scalars),
    st.dictionaries(st.text(max_size=5), scalars, max_size=2),
)
PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"online", b"offline", b"OK", b"ERROR", b"PRESSED", b"stop", b"panic",
                     b'{"status": "OK", "topic": "room1/fog"}', b"\xff\xfe", b"{",
                     b"x" * 70_000]),
    COMMANDS.map(str.encode),
)


class Tracebacks(logging.Handler):
    """Every log record that carries an exception: a bug that a message reached."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


TRACEBACKS = Tracebacks()


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoomService]:
    root = tmp_path_factory.mktemp("fuzz-room")
    broker = Mosquitto(root / "broker").start()
    (root / "scenes").mkdir()
    (root / "scenes" / "quick.yaml").write_text(SCENE)
    config = root / "runner.yaml"
    config.write_text(
        f"room: room1\nbroker: {{host: 127.0.0.1, port: {broker.port}}}\n"
        "scenes_dir: scenes\ndashboard: {enabled: false}\n"
        "triggers:\n  - {topic: room1/button, message: PRESSED, scene: quick, "
        "min_interval: 0}\n")
    service = RoomService(load_config(config), dummy_media=True)
    logging.getLogger().addHandler(TRACEBACKS)
    service.start()
    try:
        yield service
    finally:
        logging.getLogger().removeHandler(TRACEBACKS)
        service.shutdown()
        broker.kill()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(TOPICS, PAYLOADS, st.booleans()), min_size=1,
                         max_size=20))
def test_random_messages_through_the_room_never_raise(
        room: RoomService, messages: list[tuple[str, bytes, bool]]) -> None:
    for topic, payload, retain in messages:
        room.handler.handle_message(topic, payload, retain)


def test_the_room_still_obeys_after_the_fuzz(room: RoomService) -> None:
    # Runs after the fuzz above (same module-scoped room): it must still work, and
    # nothing but its one scene can ever have been played.
    played: list[str] = []
    seen = threading.Event()

    def on_event(event: str, run: Any) -> None:
        if event == "started":
            played.append(run.scene_id)
            seen.set()

    room.player.wait(5)
    room.player.add_listener(on_event)
    room.handler.handle_message("runner/room1/cmd",
                                b'{"command": "play", "scene": "quick"}', False)
    assert seen.wait(5), "the room no longer plays a scene after the fuzz"
    wait_until(lambda: room.player.current_run is None, what="the scene ended")
    runs = room.history.last_runs(10_000)
    assert runs and {r["scene"] for r in runs} == {"quick"}
    assert played == ["quick"]
    assert not TRACEBACKS.records, [r.getMessage() for r in TRACEBACKS.records]
