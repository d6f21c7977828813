"""JSON Schemas: valid Draft 2020-12, shipped in the package; the scene model built from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from runner import schema
from runner.checks import format_offset, parse_offset
from runner.errors import Severity, ValidationFailed
from runner.model import FeedbackPolicy, Mode, Route
from runner.scenefile import check_scene, load_scene, load_scenes, resolve_scene_ref
from tests.conftest import REPO, SCENES

SCHEMA_FILES = sorted((REPO / "schemas").glob("*.schema.json"))


def test_both_schemas_exist() -> None:
    assert [p.name for p in SCHEMA_FILES] == ["config.schema.json", "scene.schema.json"]


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_is_valid_against_the_2020_12_metaschema(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(document)


def test_schemas_load_from_the_installed_package(tmp_path: Path) -> None:
    # From another folder, so nothing comes from the checkout's working directory.
    code = ("import json\nfrom importlib.resources import files\n"
            "names = sorted(p.name for p in files('runner.schemas').iterdir() "
            "if p.name.endswith('.json'))\n"
            "print(names)\n"
            "from runner.schema import validator\n"
            "print(validator('scene.schema.json').is_valid({'actions': []}))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.stdout.split("\n")[:2] == [
        "['config.schema.json', 'scene.schema.json']", "False"], result.stderr


def test_wheel_ships_the_schemas() -> None:
    # The built wheel itself is checked by tests/test_install.py; here, the mapping.
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    assert '"runner.schemas"' in setup
    assert (REPO / "schemas" / "scene.schema.json").is_file()

def test_compiled_validator_is_reused() -> None:
    assert schema.validator(schema.SCENE) is schema.validator(schema.SCENE)


def test_example_scenes_build_the_model() -> None:
    scenes = load_scenes(SCENES, default_room="room1", media_dir=REPO / "media")
    assert {"room1_intro", "exhibit_loop", "av_show"} <= set(scenes)
    intro = scenes["room1_intro"]
    assert [a.message for a in intro.actions] == ["ON", "bg.mp3", "ON", "START"]
    assert [a.at for a in intro.actions] == [0.0, 2.5, 5.0, 10.0]
    assert intro.actions[1].route is Route.AUDIO
    assert intro.actions[2].feedback is FeedbackPolicy.REQUIRED
    assert intro.actions[3].label == "Motor starts"
    assert intro.actions[0].where.endswith("room1_intro.yaml:10:5")
    assert intro.duration == 12 and intro.rounds == 1 and intro.mode is Mode.SINGLE
    assert [a.message for a in intro.on_stop] == ["OFF", "STOP"]
    loop = scenes["exhibit_loop"]
    assert loop.rounds is None and loop.loops_forever and loop.duration == 20
    assert loop.actions[-1].at == 12.5
    av = scenes["av_show"]
    assert {a.route for a in av.actions} == {Route.MQTT, Route.AUDIO, Route.VIDEO}
    assert av.duration == 3.0  # the last action's offset


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("at", "seconds"), [
    ("0", 0.0), ("2.5", 2.5), ('"12"', 12.0), ('"1:30"', 90.0), ('"0:10.250"', 10.25),
    ('"1:02:03"', 3723.0), ('"1:02:03.5"', 3723.5), ('"90:00"', 5400.0),
])
def test_at_forms(tmp_path: Path, at: str, seconds: float) -> None:
    scene = load_scene(write(tmp_path, f"actions:\n  - {{at: {at}, topic: a/b, message: X}}\n"))
    assert scene.actions[0].at == seconds


@pytest.mark.parametrize("at", ['"1:75"', "soon", "-0.5", '"-1:00"', '"1:60:00"', ".inf",
                                "true", '""',
                                # Past a day: play crashed scheduling these (time_t overflow).
                                "99999999999999999999999999", "1e300", '"25:00:00"',
                                "-99999999999999999999999999"])
def test_bad_at(tmp_path: Path, at: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        load_scene(write(tmp_path, f"actions:\n  - {{at: {at}, topic: a/b, message: X}}\n"))
    [d] = info.value.diagnostics
    assert (d.line, d.json_path) == (2, "$.actions[0].at")


@pytest.mark.parametrize(("loop", "rounds"), [("true", None), ("false", 1), ("3", 3)])
def test_loop(tmp_path: Path, loop: str, rounds: int | None) -> None:
    path = write(tmp_path, f"loop: {loop}\nactions:\n  - {{at: 1, topic: a/b, message: X}}\n")
    assert load_scene(path).rounds == rounds


def test_times_up_to_a_day_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, 'duration: "24:00:00"\n'
                 "actions:\n  - {at: 86400, topic: a/b, message: X}\n")
    assert load_scene(path).duration == 86400.0


def test_an_endless_feedback_timeout_is_refused(tmp_path: Path) -> None:
    # 1e300 s passed validation, and the run could then never be closed.
    path = write(tmp_path, "feedback_timeout: 1e300\n"
                 "actions:\n  - {at: 0, topic: a/b, message: X}\n")
    with pytest.raises(ValidationFailed, match="at most 3600"):
        load_scene(path)


@pytest.mark.parametrize("text", ["loop: true\n", "loop: 3\nduration: 0\n"])
def test_a_loop_of_zero_seconds_is_a_warning(tmp_path: Path, text: str) -> None:
    # The player plays a 0 s round once (it cannot repeat); validate said nothing.
    path = write(tmp_path, text + "actions:\n  - {at: 0, topic: a/b, message: X}\n")
    scene, diagnostics = check_scene(path)
    assert scene is not None
    [d] = diagnostics
    assert d.severity is Severity.WARNING and "one round lasts 0 s" in d.message


def test_loop_zero_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "loop: 0\nactions:\n  - {at: 1, topic: a/b, message: X}\n")
    with pytest.raises(ValidationFailed, match="loop is true"):
        load_scene(path)


def test_actions_are_sorted_stably_and_messages_kept_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, "room: hall\nactions:\n"
                 "  - {at: 5, topic: a/x, message: 0172}\n"
                 "  - {at: 1, topic: a/y, message: 1.50}\n"
                 "  - {at: 5, topic: a/z, message: true}\n"
                 "  - {at: 1, topic: a/w, message: yes}\n")
    scene = load_scene(path)
    assert [(a.topic, a.message) for a in scene.actions] == [
        ("a/y", "1.50"), ("a/w", "yes"), ("a/x", "0172"), ("a/z", "true")]
    assert scene.duration == 5 and scene.room == "hall" and scene.id == "s"
    assert scene.name == "s"  # no name: the id


def test_warnings_do_not_raise(tmp_path: Path) -> None:
    path = write(tmp_path, "actions:\n  - {at: 1, topic: a/b, message: X, retain: true}\n")
    assert load_scene(path).actions[0].retain is True


def test_required_feedback_in_on_stop_is_a_warning(tmp_path: Path) -> None:
    # The player sends on_stop without tracking feedback; validate let it pass unmentioned.
    path = write(tmp_path, "actions:\n  - {at: 0, topic: a/b, message: X}\n"
                 "on_stop:\n  - {topic: a/b, message: Y, feedback: required}\n")
    _, [d] = check_scene(path)
    assert (d.severity, d.json_path) == (Severity.WARNING, "$.on_stop[0].feedback")


def test_media_must_exist_when_media_dir_is_given(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "ok.mp3").write_bytes(b"x")
    good = write(tmp_path, "actions:\n  - {at: 0, topic: r/audio, message: ok.mp3}\n")
    assert load_scene(good, media_dir=tmp_path / "media").actions[0].is_media
    bad = write(tmp_path, "actions:\n  - {at: 0, topic: r/audio, message: no.mp3}\n", "b.yaml")
    load_scene(bad)  # without a media folder only the path's shape is checked
    with pytest.raises(ValidationFailed, match=r"'no\.mp3' is not in"):
        load_scene(bad, media_dir=tmp_path / "media")


@pytest.mark.parametrize("word", ["stop", "STOP", "Stop"])
def test_media_stop_in_any_case_is_not_a_missing_file(tmp_path: Path, word: str) -> None:
    # The player stops on any case of `stop`; validate said "media file 'STOP' is not in".
    (tmp_path / "media").mkdir()
    path = write(tmp_path, f"actions:\n  - {{at: 0, topic: r/video, message: {word}}}\n")
    [action] = load_scene(path, media_dir=tmp_path / "media").actions
    assert action.is_stop


def test_media_symlink_out_of_media_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "secret.mp3").write_bytes(b"x")
    (tmp_path / "media" / "link.mp3").symlink_to(tmp_path / "secret.mp3")
    path = write(tmp_path, "actions:\n  - {at: 0, topic: r/video, message: link.mp3}\n")
    with pytest.raises(ValidationFailed, match="outside media_dir"):
        load_scene(path, media_dir=tmp_path / "media")


@pytest.mark.parametrize(("topic", "words"), [
    ("a/+", "wildcard"), ("#", "wildcard"), ("a/\0b", "U\\+0000"), ("x" * 65536, "longer"),
    # mosquitto drops the runner's connection when it publishes one of these.
    ("a/\x01b", "U\\+0001"), ("a/\x1b[31mb", "U\\+001B"), ("a/\u2028b", "U\\+2028"),
])
def test_bad_publish_topics(tmp_path: Path, topic: str, words: str) -> None:
    quoted = json.dumps(topic)  # a JSON string is a valid double-quoted YAML scalar
    path = write(tmp_path, f"actions:\n  - at: 0\n    topic: {quoted}\n    message: X\n")
    with pytest.raises(ValidationFailed, match=words):
        load_scene(path)


def test_resolve_scene_ref(tmp_path: Path) -> None:
    assert resolve_scene_ref("room1_intro", SCENES) == SCENES / "room1_intro.yaml"
    assert resolve_scene_ref(str(SCENES / "av_show.yaml"), tmp_path) == SCENES / "av_show.yaml"
    with pytest.raises(Exception, match="did you mean 'room1_intro'"):
        resolve_scene_ref("room1_intr", SCENES)
    with pytest.raises(Exception, match="has no scene files"):
        resolve_scene_ref("x", tmp_path)
    with pytest.raises(Exception, match="no such scene file"):
        resolve_scene_ref("nope/x.yaml", tmp_path)


def test_a_scene_file_name_is_found_in_the_scenes_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `runner play room1_intro.yaml` from the room folder said "no such scene file".
    monkeypatch.chdir(tmp_path)
    assert resolve_scene_ref("room1_intro.yaml", SCENES) == SCENES / "room1_intro.yaml"


def test_load_scenes_collects_every_error(tmp_path: Path) -> None:
    write(tmp_path, "actions:\n  - {at: 0, topic: a/+, message: X}\n", "one.yaml")
    write(tmp_path, "actions: {}\n", "two.yml")
    write(tmp_path, "actions:\n  - {at: 0, topic: a/b, message: X}\n", "ok.yaml")
    with pytest.raises(ValidationFailed) as info:
        load_scenes(tmp_path)
    assert sorted(Path(d.file).name for d in info.value.diagnostics) == ["one.yaml", "two.yml"]


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=24 * 3600 * 1000))  # checks.MAX_OFFSET
def test_a_planned_offset_reads_back_as_the_same_time(millis: int) -> None:
    seconds = millis / 1000
    for text in (format_offset(seconds), format_offset(seconds, hours=True)):
        assert abs(parse_offset(text) - seconds) < 1e-9, text
