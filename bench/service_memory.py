"""Idle resident memory of `runner serve` (VmRSS from /proc), against a bare Python baseline.

Each variant runs the real `runner serve` against a private mosquitto, waits for its
"ready" line, lets it idle, and samples VmRSS every second; reported: the last sample
and the peak (VmHWM, start-up included). The baseline is `python -c` sleeping, the
floor any Python service pays.

    .venv/bin/python bench/service_memory.py [--idle 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.brokers import Mosquitto, free_port  # noqa: E402

PLAIN_SCENE = """\
name: Plain
actions:
  - {at: 0, topic: room1/light, message: "ON"}
  - {at: 2, topic: room1/light, message: "OFF"}
"""


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(cmd: list[str], cwd: Path, idle: float, ready: str | None) -> tuple[float, float]:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if ready is None or ready in line:
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if ready is not None and not seen.wait(30):
            raise RuntimeError(f"{cmd} did not get ready")
        deadline = time.monotonic() + idle
        rss = 0
        while time.monotonic() < deadline:
            rss = status_kb(proc.pid, "VmRSS")
            time.sleep(1.0)
        return rss / 1024, status_kb(proc.pid, "VmHWM") / 1024
    finally:
        proc.terminate()
        proc.wait(10)


def room(root: Path, broker: Mosquitto, *, scenes: Path | None, dashboard: bool) -> Path:
    scenes_dir = root / "scenes"
    if scenes is None:
        scenes_dir.mkdir(parents=True)
        (scenes_dir / "plain.yaml").write_text(PLAIN_SCENE)
        media = root / "media"
        media.mkdir()
    else:
        shutil.copytree(scenes, scenes_dir)
        media = REPO / "media"
    dash = f"{{bind: 127.0.0.1, port: {free_port()}}}" if dashboard else "{enabled: false}"
    config = root / "runner.yaml"
    config.write_text(
        "room: room1\n"
        f"broker: {{host: 127.0.0.1, port: {broker.port}}}\n"
        f"scenes_dir: {scenes_dir}\n"
        f"media_dir: {media}\n"
        f"dashboard: {dash}\n"
        "shows:\n  - {scene: %s, cron: \"0 10 * * 1\"}\n"
        "triggers:\n  - {topic: room1/button, scene: %s}\n"
        % (("plain",) * 2 if scenes is None else ("room1_intro",) * 2)
    )
    return config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=10.0, help="seconds idle before reading")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "broker").start()
        try:
            rows = [("python -c sleep (baseline)",
                     *measure([sys.executable, "-c", "import time; time.sleep(60)"], work,
                              args.idle, None))]
            variants = [
                ("serve, no media scenes, no dashboard", None, False),
                ("serve, example scenes (libvlc), no dashboard", REPO / "scenes", False),
                ("serve, example scenes (libvlc), dashboard", REPO / "scenes", True),
            ]
            for i, (name, scenes, dash) in enumerate(variants):
                root = work / f"room{i}"
                config = room(root, broker, scenes=scenes, dashboard=dash)
                cmd = [sys.executable, "-m", "runner", "serve", "--config", str(config)]
                rows.append((name, *measure(cmd, root, args.idle, "ready")))
        finally:
            broker.kill()
    print(f"| variant | idle VmRSS (MB) after {args.idle:g} s | peak VmHWM (MB) |")
    print("|---|---|---|")
    for name, rss, hwm in rows:
        print(f"| {name} | {rss:.1f} | {hwm:.1f} |")


if __name__ == "__main__":
    main()
