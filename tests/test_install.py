"""The installed product: a wheel built from this tree, installed into a fresh venv, run
from a folder that is not the source tree. Catches a package or data file left out of the
wheel (an editable install hides both)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import Mosquitto, free_port
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(900)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """(the fresh venv, an environment using it): the wheel of this tree installed there."""
    base = tmp_path_factory.mktemp("install")
    wheels = base / "wheels"
    env = _clean_env(base / "venv")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
         base, env, timeout=600)
    (wheel,) = wheels.glob("runner-*.whl")
    _run([sys.executable, "-m", "venv", str(base / "venv")], base, env)
    _run([str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
         base, env, timeout=600)
    yield base / "venv", env


def test_the_runner_on_path_is_the_fresh_venvs_and_imports_from_its_site_packages(
        installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    assert shutil.which("runner", path=env["PATH"]) == str(venv / "bin" / "runner")
    where = _run([str(venv / "bin" / "python"), "-c",
                  "import runner, runner.commands, runner.web, sys; print(runner.__file__)"],
                 tmp_path, env).strip()
    assert Path(where).is_relative_to(venv), where
    assert "site-packages" in where
    assert not Path(where).is_relative_to(ROOT / "runner")


def test_installed_commands_work_outside_the_source_tree(
        installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    runner = str(venv / "bin" / "runner")
    assert "runner 0.1.0" in _run([runner, "--version"], tmp_path, env)
    shutil.copytree(ROOT / "scenes", tmp_path / "scenes")
    shutil.copytree(ROOT / "media", tmp_path / "media")
    out = _run([runner, "validate", "scenes"], tmp_path, env)
    assert "0 errors" in out or "error" not in out, out
    out = _run([runner, "plan", "scenes/room1_intro.yaml"], tmp_path, env)
    assert "room1/light" in out
    out = _run([runner, "play", "--simulate", "scenes/room1_intro.yaml"], tmp_path, env)
    assert "SIMULATED" in out or "simulated" in out, out


def test_installed_serve_starts_its_dashboard_and_stops_cleanly_on_sigterm(
        installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        shutil.copytree(ROOT / "scenes", tmp_path / "room" / "scenes")
        shutil.copytree(ROOT / "media", tmp_path / "room" / "media")
        port = free_port()
        config = tmp_path / "room" / "runner.yaml"
        config.write_text(
            f"room: room1\nbroker: {{host: 127.0.0.1, port: {broker.port}}}\n"
            f"scenes_dir: scenes\nmedia_dir: media\n"
            f"history_file: {tmp_path / 'history.sqlite3'}\n"
            f"dashboard: {{bind: 127.0.0.1, port: {port}}}\n", encoding="utf-8")
        _run([str(venv / "bin" / "runner"), "validate", "--config", str(config)], tmp_path, env)
        _serve_answers_then_stops(venv, env, config, port, tmp_path)
    finally:
        broker.kill()


def _serve_answers_then_stops(venv: Path, env: dict[str, str], config: Path, port: int,
                              cwd: Path) -> None:
    proc = subprocess.Popen([str(venv / "bin" / "runner"), "serve", "--config", str(config)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        got: list[str] = []

        def answered() -> bool:
            if proc.poll() is not None:
                return True  # it died: the assert below says so
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status",
                                            timeout=2) as r:
                    got.append(r.read().decode())
            except OSError:
                return False
            return True

        wait_until(answered, 60, interval=0.1, what="the installed dashboard to answer")
        answer = got[0] if got else None
        assert answer is not None and '"room1"' in answer, (answer, proc.poll())
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "Traceback" not in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_install_script_lays_out_a_room_that_validates_and_serves(
        installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    root = tmp_path / "root"
    out = _run(["sh", str(ROOT / "deploy" / "install.sh"), "--root", str(root)], tmp_path, env)
    etc = root / "etc" / "runner"
    secrets_file = etc / "secrets.yaml"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    token = secrets_file.read_text(encoding="utf-8").split("dashboard_token:")[1].strip().strip('"')
    assert len(token) >= 32 and token not in out
    unit = (root / "etc/systemd/system/runner.service").read_text(encoding="utf-8")
    assert "LimitNOFILE=65536" in unit and "StateDirectory=runner" in unit
    config = etc / "runner.yaml"
    _run([str(venv / "bin" / "runner"), "validate", "--config", str(config)], tmp_path, env)
    # a re-run keeps the room's files
    config.write_text(config.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    _run(["sh", str(ROOT / "deploy" / "install.sh"), "--root", str(root)], tmp_path, env)
    assert config.read_text(encoding="utf-8").endswith("# edited\n")
    assert token in secrets_file.read_text(encoding="utf-8")
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        port = free_port()
        text = config.read_text(encoding="utf-8")
        text = text.replace("  port: 1883", f"  port: {broker.port}")
        text = text.replace("port: 8080", f"port: {port}")
        config.write_text(text, encoding="utf-8")
        _serve_answers_then_stops(venv, env, config, port, tmp_path)
    finally:
        broker.kill()


def test_dev_sets_up_a_fresh_clone_without_build_noise(tmp_path: Path) -> None:
    # The README's first command on a fresh clone: `./dev` makes .venv and installs the
    # project (editable). setuptools printed a boxed BuildBackendWarning on every setup.
    tree = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(ROOT)))
    proc = subprocess.run(["sh", "dev", "demo", "--help"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "usage: runner demo" in proc.stdout
    assert "BuildBackendWarning" not in proc.stderr, proc.stderr
    assert "Editable installation" not in proc.stderr, proc.stderr
