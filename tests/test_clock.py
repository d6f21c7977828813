"""runner/clock.py: the room's zone, its name, epoch seconds in it; the dashboard and
`runner history` read the clock without importing the show scheduler."""

from __future__ import annotations

import subprocess
import sys
from datetime import timezone
from zoneinfo import ZoneInfo

import pytest

from runner.clock import iso, system_timezone, timezone_for, timezone_name
from runner.errors import ShowError
from runner.model import Config

BERLIN = ZoneInfo("Europe/Berlin")
WINTER = 1_796_300_000.25  # 2026-12-03 (Berlin +01:00)


def test_timezone_for_names_the_config_zone_or_the_systems() -> None:
    assert timezone_for(Config(room="r", timezone="Europe/Berlin")) == BERLIN
    assert timezone_for(Config(room="r")) == system_timezone()
    with pytest.raises(ShowError, match=r"timezone 'Mars/Base' is unknown; use a name like"):
        timezone_for(Config(room="r", timezone="Mars/Base"))


def test_timezone_name_is_the_iana_name_where_known() -> None:
    assert timezone_name(BERLIN) == "Europe/Berlin"
    assert timezone_name(timezone.utc) == "UTC"
    assert timezone_name(None) == "local time"


def test_iso_carries_the_zones_offset_and_keeps_non_numbers_out() -> None:
    assert iso(WINTER, BERLIN) == "2026-12-03T13:13:20+01:00"
    assert iso(WINTER, BERLIN, timespec="milliseconds") == "2026-12-03T13:13:20.250+01:00"
    assert iso(0, timezone.utc) == "1970-01-01T00:00:00+00:00"
    for junk in (None, True, "1796300000", [1]):
        assert iso(junk, BERLIN) is None


@pytest.mark.parametrize("module", ["runner.web.app", "runner.web.server",
                                    "runner.commands.history", "runner.history"])
def test_dashboard_and_history_do_not_import_the_show_scheduler(module: str) -> None:
    code = f"import sys, {module}; print('runner.shows' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
