"""Acceptance tests: `runner plan SCENE` prints the timeline as a table."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO, run_runner


def rows(output: str) -> list[list[str]]:
    """The table rows below the dashed line, split on runs of two or more spaces."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("--------"))
    out = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        out.append([c for c in line.split("  ") if c.strip() != ""])
    return [[c.strip() for c in r] for r in out]


def test_plan_of_the_example_scene() -> None:
    result = run_runner("plan", "room1_intro", "--config", "examples/runner.yaml", cwd=REPO)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("Room 1 introduction (room1_intro)")
    assert "duration 0:12.000 · plays once · feedback timeout 1 s" in out
    header = next(line for line in out.splitlines() if line.startswith("offset"))
    assert header.split() == ["offset", "label", "topic", "message", "route", "feedback"]
    assert rows(out) == [
        ["0:00.000", "room1/light", "ON", "mqtt", "expect"],
        ["0:02.500", "room1/audio", "bg.mp3", "audio", "—"],
        ["0:05.000", "room1/steam", "ON", "mqtt", "required"],
        ["0:10.000", "Motor starts", "room1/motor", "START", "mqtt", "expect"],
    ]
    assert "on stop (safe state):" in out and "room1/steam  OFF" in out


def test_plan_by_path_keeps_messages_as_written(tmp_path: Path) -> None:
    scene = tmp_path / "odd.yaml"
    scene.write_text(
        "name: Odd messages\nloop: 3\nactions:\n"
        "  - {at: '1:02:03.5', topic: r/code, message: 0172, feedback: none}\n"
        "  - {at: 1, topic: r/flag, message: yes, label: Flag, feedback_topic: r/flag/ack}\n"
        "  - {at: 2, topic: r/video, message: stop}\n", encoding="utf-8")
    result = run_runner("plan", str(scene), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "plays 3 rounds of 1:02:03.500" in result.stdout
    assert rows(result.stdout) == [
        ["0:00:01.000", "Flag", "r/flag", "yes", "mqtt", "expect on r/flag/ack"],
        ["0:00:02.000", "r/video", "stop", "video", "—"],
        ["1:02:03.500", "r/code", "0172", "mqtt", "none"],
    ]


def test_plan_of_a_looping_scene() -> None:
    result = run_runner("plan", "scenes/exhibit_loop.yaml", cwd=REPO)
    assert result.returncode == 0
    assert "loops forever, a round every 0:20.000" in result.stdout


def test_unknown_scene_suggests_a_name() -> None:
    result = run_runner("plan", "room1_intr", cwd=REPO)
    assert result.returncode == 1
    assert "no scene 'room1_intr'" in result.stderr
    assert "did you mean 'room1_intro'?" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_invalid_scene_prints_every_error_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "bad.yaml").write_text(
        "actions:\n  - {at: soon, topic: a/+, message: X}\n", encoding="utf-8")
    result = run_runner("plan", "bad", cwd=tmp_path)
    assert result.returncode == 1
    err = result.stderr
    assert "bad.yaml:2:10: error: $.actions[0].at: 'soon' is not a time" in err
    assert "bad.yaml:2:23: error: $.actions[0].topic:" in err and "wildcard" in err
    assert "Traceback" not in result.stdout + err


def test_bad_config_exits_1(tmp_path: Path) -> None:
    (tmp_path / "runner.yaml").write_text("room: r\nbroker: {port: high}\n", encoding="utf-8")
    result = run_runner("plan", "x", cwd=tmp_path)
    assert result.returncode == 1
    assert "runner.yaml:2:16: error: $.broker.port: expected a whole number" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
