"""Acceptance tests: the real `runner validate` on good and bad scene files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SCENES, run_runner, spawn_runner

GOOD = """\
name: Test scene
actions:
  - at: 0
    topic: room1/light
    message: ON
  - at: "0:02"
    topic: room1/motor
    message: START
"""


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def validate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = run_runner("validate", *args, cwd=cwd)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def assert_rejected(tmp_path: Path, content: str | bytes, line: int, *words: str,
                    name: str = "bad.yaml") -> str:
    """Exit 1, `bad.yaml:LINE:` printed, each of `words` in the output, no traceback."""
    write(tmp_path, name, content)
    result = validate(name, cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert f"{name}:{line}:" in out, out
    for word in words:
        assert word in out, out
    return out


def test_every_example_scene_is_valid_without_warnings() -> None:
    result = validate(str(SCENES), cwd=REPO)
    assert result.returncode == 0, result.stdout
    assert "warning" not in result.stdout
    assert f"{len(list(SCENES.glob('*.yaml')))} files checked: all valid" in result.stdout


def test_example_config_and_its_scenes_are_valid_even_strict() -> None:
    result = validate("--config", "examples/runner.yaml", "--strict", cwd=REPO)
    assert result.returncode == 0, result.stdout
    assert "examples/runner.yaml" not in result.stdout  # nothing reported against it
    assert "all valid" in result.stdout


def test_example_config_with_secret_and_env_is_valid() -> None:
    result = run_runner("validate", "--config", "examples/secrets/runner.yaml", cwd=REPO,
                        env={"RUNNER_DASHBOARD_TOKEN": "tok-123"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tok-123" not in result.stdout + result.stderr


def test_good_scene_exits_0(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    result = validate("good.yaml", cwd=tmp_path)
    assert result.returncode == 0
    assert "1 file checked: all valid" in result.stdout


def test_yaml_syntax_error(tmp_path: Path) -> None:
    assert_rejected(tmp_path, "actions:\n  - at: [0, 1\n    topic: x\n", 2,
                    "bad.yaml:2:9:", "[ is not closed", "add the closing ]")


@pytest.mark.parametrize("q", ['"', "'"])
@pytest.mark.parametrize("at_end", [False, True], ids=["mid-file", "end-of-file"])
def test_an_unclosed_quote_names_the_line_it_opens_on(tmp_path: Path, q: str,
                                                      at_end: bool) -> None:
    # Issue 11: a quote opened on line 20 was reported on line 26 (at the next quote) or
    # at the end of the file, in the parser's words.
    text = GOOD.replace("    message: START", f"    message: {q}START")
    if not at_end:
        text += f"  - at: 4\n    topic: room1/door\n    message: {q}OPEN{q}\n  - at: 5\n"
    out = assert_rejected(tmp_path, text, 8, f"bad.yaml:8:14: error: $: this {q} is never "
                          f"closed", f"add the closing {q} at the end of the value")
    assert "did not find expected key" not in out and "end of stream" not in out


def test_a_stray_closing_quote_is_a_warning_at_the_quote(tmp_path: Path) -> None:
    write(tmp_path, "scene.yaml", GOOD.replace("message: ON", 'message: ON"')
          + '  - at: 3\n    topic: room1/say\n    message: say "hi"\n')
    result = validate("scene.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[0].startswith(
        'scene.yaml:5:16: warning: $.actions[0].message: this value ends with a " that has '
        'no opening "'), result.stdout
    assert "0 errors, 1 warning" in result.stdout  # `say "hi"` is fine
    assert validate("--strict", "scene.yaml", cwd=tmp_path).returncode == 1


def test_tab_used_for_indentation(tmp_path: Path) -> None:
    assert_rejected(tmp_path, "actions:\n\t- at: 0\n", 2, "tab", "spaces")


def test_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    out = assert_rejected(tmp_path, GOOD + "name: Again\n", 9, "duplicate key 'name'",
                          "line 1")
    assert "$.name" in out


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    text = GOOD.replace("    message: START", "    mesage: START")
    out = assert_rejected(tmp_path, text, 8, "unknown key 'mesage'",
                          "did you mean 'message'?")
    assert "bad.yaml:8:5:" in out  # at the key itself
    assert "missing required key 'message'" in out  # and every error at once


def test_a_yaml_1_1_merge_key_is_explained(tmp_path: Path) -> None:
    text = ("actions:\n  - &cue {at: 0, topic: a/b, message: X}\n"
            "  - <<: *cue\n    at: 1\n")
    assert_rejected(tmp_path, text, 3, "$.actions[1]['<<']: '<<' merge keys (<<: *name) "
                    "are YAML 1.1")


def test_wrong_types_are_each_reported(tmp_path: Path) -> None:
    text = GOOD + ("  - at: [1]\n    topic: room1/x\n    message: A\n"
                   "    qos: high\n    retain: yes\n")
    out = assert_rejected(tmp_path, text, 9, "$.actions[2].at")
    assert "bad.yaml:12:10:" in out and "not one of: 0, 1, 2" in out
    assert "bad.yaml:13:13:" in out and "expected true or false, not the text 'yes'" in out


@pytest.mark.parametrize(("at", "words"), [
    ("-1", ("negative",)),
    ('"1:75"', ("seconds go up to 59", 'did you mean "2:15"')),
    ("soon", ("'soon' is not a time", "m:ss")),
])
def test_unreadable_or_negative_at(tmp_path: Path, at: str, words: tuple[str, ...]) -> None:
    text = f"actions:\n  - topic: room1/light\n    message: ON\n    at: {at}\n"
    assert_rejected(tmp_path, text, 4, "$.actions[0].at", *words)


def test_missing_required_field_points_at_the_action(tmp_path: Path) -> None:
    text = GOOD + "  - at: 5\n    message: STOP\n"
    out = assert_rejected(tmp_path, text, 9, "missing required key 'topic'")
    assert "bad.yaml:9:5: error: $.actions[2]:" in out


def test_an_empty_action_names_each_missing_key_once(tmp_path: Path) -> None:
    out = assert_rejected(tmp_path, GOOD + "  - {}\n", 9)
    assert [line.rsplit(": ", 1)[1] for line in out.splitlines() if ":9:" in line] == [
        "missing required key 'at'", "missing required key 'topic'",
        "missing required key 'message'"]


def test_topic_with_a_wildcard(tmp_path: Path) -> None:
    assert_rejected(tmp_path, GOOD.replace("room1/motor", "room1/+/motor"), 7, "wildcard")
    assert_rejected(tmp_path, GOOD.replace("room1/light", "room1/#"), 4, "wildcard",
                    name="hash.yaml")


def test_a_list_at_top_level(tmp_path: Path) -> None:
    assert_rejected(tmp_path, "- at: 0\n  topic: a/b\n  message: X\n", 1,
                    "a scene file is a mapping of keys", "not a list")


def test_an_empty_file(tmp_path: Path) -> None:
    assert_rejected(tmp_path, "", 1, "empty")
    assert_rejected(tmp_path, "# just a comment\n", 1, "empty", name="comment.yaml")


def test_actions_as_a_mapping(tmp_path: Path) -> None:
    assert_rejected(tmp_path, "actions:\n  at: 0\n  topic: a/b\n", 2,
                    "actions is a list of cues", "not a mapping")


def test_non_utf8_bytes(tmp_path: Path) -> None:
    assert_rejected(tmp_path, b"name: caf\xe9\nactions: []\n", 1, "not UTF-8", "0xe9")


def test_unknown_tag_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = (f"name: !!python/object/apply:os.system [\"touch {marker}\"]\n"
            "actions:\n  - {at: 0, topic: a/b, message: X}\n")
    assert_rejected(tmp_path, text, 1, "!!python/object/apply:os.system", "not allowed")
    assert not marker.exists()


def test_alias_bomb_is_refused_within_a_second(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = "\n".join(lines) + "\n"
    started = time.monotonic()
    assert_rejected(tmp_path, bomb, 1, "billion laughs")
    # The subprocess includes interpreter start-up; the refusal itself is far quicker.
    assert time.monotonic() - started < 5


def test_media_path_with_dotdot(tmp_path: Path) -> None:
    text = GOOD + "  - at: 3\n    topic: room1/audio\n    message: ../secret.mp3\n"
    assert_rejected(tmp_path, text, 11, "leaves media_dir")


def test_absolute_media_path(tmp_path: Path) -> None:
    text = GOOD + "  - at: 3\n    topic: room1/video\n    message: /etc/passwd\n"
    assert_rejected(tmp_path, text, 11, "is absolute")


def test_a_file_that_does_not_exist(tmp_path: Path) -> None:
    result = validate("nope.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "nope.yaml:0:0: error: $: no such file or folder" in result.stdout


def test_a_folder_without_scenes(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write(tmp_path, "empty/notes.txt", "not a scene")
    result = validate("empty", cwd=tmp_path)
    assert result.returncode == 1
    assert "empty:0:0: error: $: this folder has no scene files" in result.stdout


def test_enum_suggestion_and_every_error_at_once(tmp_path: Path) -> None:
    text = "mode: sngle\nloop: maybe\n" + GOOD.replace("ON", "ON\n    feedback: requird")
    out = assert_rejected(tmp_path, text, 1, "did you mean 'single'?")
    assert "bad.yaml:2:7:" in out and "loop is true" in out
    assert "did you mean 'required'?" in out
    assert "3 errors" in out


def test_loader_and_schema_errors_are_reported_together(tmp_path: Path) -> None:
    # A refused tag or a duplicate key used to hide every schema error until fixed.
    text = ("mode: sngle\nname: !!python/name:os.system\nactions:\n"
            "  - {at: 0, at: 1, topic: a/b, message: X, qos: 5}\n")
    out = assert_rejected(tmp_path, text, 1, "did you mean 'single'?")
    assert "bad.yaml:2:7: error: $.name: tag !!python/name:os.system is not allowed" in out
    assert "duplicate key 'at'" in out and "$.actions[0].qos: 5 is not one of" in out
    assert "4 errors" in out  # the refused name is not also "expected text, not nothing"


def test_a_duplicate_key_does_not_hide_the_first_value_s_error(tmp_path: Path) -> None:
    out = assert_rejected(tmp_path, "actions:\n  - {at: soon, at: 1, topic: a/b, message: X}\n",
                          2, "duplicate key 'at'")
    assert "$.actions[0].at: 'soon' is not a time" in out


def test_message_as_a_list_is_a_type_error(tmp_path: Path) -> None:
    assert_rejected(tmp_path, GOOD.replace("message: ON", "message: [ON]"), 5,
                    "a message is text")


def test_warnings_pass_but_strict_fails(tmp_path: Path) -> None:
    text = GOOD.replace("message: ON", "message: ON\n    retain: true") + (
        "  - at: 2\n    topic: room1/motor\n    message: STOP\n"  # same topic, same moment
        "duration: 1\n")  # actions after duration
    write(tmp_path, "warn.yaml", text)
    lenient = validate("warn.yaml", cwd=tmp_path)
    assert lenient.returncode == 0, lenient.stdout
    assert "warn.yaml:6:13: warning: $.actions[0].retain: retain: true" in lenient.stdout
    assert "same moment" in lenient.stdout and "after the scene's duration" in lenient.stdout
    strict = validate("warn.yaml", "--strict", cwd=tmp_path)
    assert strict.returncode == 1
    assert ": error: $.actions[0].retain" in strict.stdout


def test_json_format_for_tools(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    write(tmp_path, "bad.yaml", GOOD.replace("room1/light", "room1/#"))
    result = validate(".", "--format", "json", cwd=tmp_path)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["errors"] == 1
    assert sorted(Path(f).name for f in report["files"]) == ["bad.yaml", "good.yaml"]
    [d] = report["diagnostics"]
    assert (d["line"], d["col"], d["severity"], d["path"]) == (4, 12, "error",
                                                               "$.actions[0].topic")


def test_no_paths_and_no_config_is_a_usage_error(tmp_path: Path) -> None:
    result = validate(cwd=tmp_path)
    assert result.returncode == 2
    assert "nothing to check" in result.stderr


def test_config_alone_checks_its_scenes_and_media(tmp_path: Path) -> None:
    write(tmp_path, "scenes/intro.yaml",
          GOOD + "  - at: 3\n    topic: room1/audio\n    message: missing.mp3\n")
    write(tmp_path, "scenes/other.yaml", GOOD)
    (tmp_path / "media").mkdir()
    write(tmp_path, "runner.yaml",
          "room: room1\nshows:\n  - {scene: intro, cron: '0 10 * * 1-5'}\n"
          "  - {scene: intr, time: '25:00'}\n"
          "triggers:\n  - {topic: room1/button, scene: othr}\n")
    result = validate("--config", "runner.yaml", cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 1, out
    assert "runner.yaml:4:13: error: $.shows[1].scene: no scene 'intr'" in out
    assert "did you mean 'intro'?" in out and "did you mean 'other'?" in out
    assert "runner.yaml:4:25: error: $.shows[1].time: time is a time of day" in out
    assert "intro.yaml:11:14: error: $.actions[2].message: media file 'missing.mp3'" in out


def test_a_scene_for_another_room_is_a_warning(tmp_path: Path) -> None:
    write(tmp_path, "scenes/intro.yaml", "room: room2\n" + GOOD)
    write(tmp_path, "runner.yaml", "room: room1\n")
    out = validate("--config", "runner.yaml", cwd=tmp_path).stdout
    assert "intro.yaml:1:7: warning: $.room: this scene is for room 'room2', but the " \
        "config is for room 'room1'" in out
    assert validate("--config", "runner.yaml", "--strict", cwd=tmp_path).returncode == 1


def test_a_misspelt_device_topic_gets_a_suggestion(tmp_path: Path) -> None:
    write(tmp_path, "scenes/intro.yaml", "actions:\n  - {at: 0, topic: room1/ligth, message: X}"
          "\n  - {at: 1, topic: room1/fog, message: X}\n")
    write(tmp_path, "runner.yaml", "room: room1\ndevices:\n  esp32_01: [room1/light]\n")
    out = validate("--config", "runner.yaml", cwd=tmp_path).stdout
    assert "serves 'room1/ligth' (did you mean 'room1/light'?)" in out
    assert "serves 'room1/fog'; add it" in out  # same room, different thing: no hint


def test_runner_yaml_in_the_folder_is_used_by_default(tmp_path: Path) -> None:
    write(tmp_path, "scenes/a.yaml", GOOD)
    write(tmp_path, "runner.yaml", "room: room1\nshows:\n  - {scene: b, time: '10:00'}\n")
    result = validate(cwd=tmp_path)
    assert result.returncode == 1
    assert "runner.yaml:3:13: error: $.shows[0].scene: no scene 'b'" in result.stdout


@pytest.mark.parametrize("argv", [["--help"], ["validate", "scenes"]])
def test_cli_does_not_import_mqtt_media_or_scheduler(argv: list[str]) -> None:
    code = (
        "import sys\nfrom runner.cli import main\n"
        f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'paho', 'vlc', 'apscheduler'})\n"
        "print('HEAVY', heavy, 'RC', rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=False)
    assert "HEAVY [] RC 0" in result.stdout, result.stdout + result.stderr


def test_a_room_folder_with_its_config_beside_the_scenes(tmp_path: Path) -> None:
    write(tmp_path, "intro.yaml", GOOD)
    write(tmp_path, "runner.yaml", "room: room1\nscenes_dir: .\nbroker: {password: !secret pw}\n"
          "shows:\n  - {scene: intro, time: '10:00'}\n")
    write(tmp_path, "secrets.yaml", "pw: x\n")
    folder = validate(".", cwd=tmp_path)  # ./runner.yaml is the config, not a scene
    assert folder.returncode == 0, folder.stdout
    assert "2 files checked: all valid" in folder.stdout
    config = validate("runner.yaml", cwd=tmp_path)  # the config and its scenes
    assert config.returncode == 0, config.stdout
    assert "2 files checked: all valid" in config.stdout


def test_output_piped_into_head_ends_without_a_traceback(tmp_path: Path) -> None:
    # More errors than a pipe holds, so runner is still writing when the reader leaves.
    write(tmp_path, "many.yaml", "actions:\n" + "  - {at: soon, topic: a/b, message: X}\n" * 3000)
    proc = spawn_runner("validate", "many.yaml", cwd=tmp_path)
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does after its line
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
