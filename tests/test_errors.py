"""Every error a person can act on is a RunnerError (runner/errors.py), still importable
where it was defined before, and still the ValueError / KeyError it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import checks, errors, shows, yamlload
from runner.errors import RunnerError, UnknownSceneError
from tests.conftest import run_runner


@pytest.mark.parametrize(("name", "was"), [("ShowError", ValueError),
                                          ("OffsetError", ValueError),
                                          ("TagError", Exception),
                                          ("UnknownSceneError", KeyError)])
def test_each_is_a_runner_error_and_still_what_it_was(name: str, was: type) -> None:
    error = getattr(errors, name)
    assert issubclass(error, RunnerError) and issubclass(error, was)


def test_the_old_homes_hand_out_the_same_classes() -> None:
    assert shows.ShowError is errors.ShowError
    assert checks.OffsetError is errors.OffsetError
    assert yamlload.TagError is errors.TagError


def test_an_unknown_scene_reads_as_its_sentence() -> None:
    assert str(UnknownSceneError("no scene 'x' is loaded")) == "no scene 'x' is loaded"


def test_an_unknown_scene_on_the_command_line_keeps_its_message(tmp_path: Path) -> None:
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "intro.yaml").write_text("id: intro\nactions: []\n")
    result = run_runner("plan", "intr", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (f"runner plan: no scene 'intr' in {tmp_path / 'scenes'} "
                             "(did you mean 'intro'?)\n")
    assert result.stdout == ""
