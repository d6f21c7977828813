"""The 20-second soak: `runner serve` under broker kills, device drops, junk and reloads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.brokers import find_mosquitto
from tests.conftest import REPO, require

DURATION = 20


def test_twenty_seconds_of_chaos_lose_nothing_and_send_nothing_late(tmp_path: Path) -> None:
    require("mosquitto", find_mosquitto() is not None, "apt-get install mosquitto")
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "soak.py"), "--duration", str(DURATION),
         "--show-interval", "3.5", "--json", str(out)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert out.exists(), f"no report:\n{done.stdout}\n{done.stderr}"
    report = json.loads(out.read_text())
    context = f"\n{done.stdout}\n{done.stderr}"

    # The chaos really happened ...
    assert report["broker_flaps"] == 1, context
    assert report["presence_bursts"] == 1, context
    assert report["junk_messages"] > 100, context
    assert report["device_drops"] >= 3, context
    assert report["reloads_logged"] >= 1, context
    assert report["scenes_played"] >= 3, context
    assert report["commands_on_time"] >= 50, context
    # ... and the room held.
    assert report["commands_late"] == 0, context
    assert report["commands_lost_while_up"] == 0, context
    assert report["service_restarts"] == 0 and report["service_exit"] == 0, context
    assert report["tracebacks_in_log"] == 0, context
    assert report["reconnect_s"]["max"] is not None, context
    assert report["registry_right_after_flaps"] == 1, report["registry_mismatch"]
    assert report["bursts_right"] == 1, context
    assert report["registry_right_at_end"], report["registry_mismatch_at_end"]
    assert report["fds"]["end"] <= report["fds"]["start"] + 5, context
    assert report["threads"]["end"] <= report["threads"]["start"] + 3, context
    assert done.returncode == 0, context
