"""First contact (issue 11 item 6): what the commands say is true, and says how to go on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import run_runner


def test_shows_without_a_config_names_where_it_looked_and_how_to_pass_one(
        tmp_path: Path) -> None:
    result = run_runner("shows", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "default config" not in out
    assert "No config found" in out
    assert str(tmp_path.resolve() / "runner.yaml") in out
    assert "--config" in out


def test_shows_with_a_config_without_shows_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "scenes").mkdir()
    config = tmp_path / "room.yaml"
    config.write_text("room: room1\nscenes_dir: scenes\n")
    result = run_runner("shows", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"No shows configured in {config}" in result.stdout


def test_starlette_test_client_imports_without_a_deprecation_warning() -> None:
    # The test extra installs httpx2, the client starlette.testclient is built on; with plain
    # httpx every test run ended on "Using `httpx` with `starlette.testclient` is deprecated".
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import starlette.testclient"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
