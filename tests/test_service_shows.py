"""Daily shows in the room service: on time through an injected clock, skipped when not ready."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from runner.configfile import load_config
from runner.service import MAX_PENDING_WORK, RoomService
from tests.brokers import Mosquitto
from tests.conftest import Recorder, wait_until
from tests.test_service import INTRO, QUICK
from tests.test_shows import FakeWallClock

UTC = ZoneInfo("UTC")
TEN = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def write_room(root: Path, broker: Mosquitto, shows: str, extra: str = "") -> Path:
    (root / "scenes").mkdir(parents=True, exist_ok=True)
    (root / "scenes" / "intro.yaml").write_text(INTRO)
    (root / "scenes" / "quick.yaml").write_text(QUICK)
    (root / "runner.yaml").write_text(
        "room: room1\n"
        f"broker: {{host: 127.0.0.1, port: {broker.port}}}\n"
        "scenes_dir: scenes\n"
        "timezone: UTC\n"
        "dashboard: {enabled: false}\n"
        f"shows:\n{shows}"
        f"{extra}"
    )
    return root / "runner.yaml"


@pytest.fixture
def services() -> Iterator[list[RoomService]]:
    made: list[RoomService] = []
    yield made
    for s in made:
        s.shutdown()


def start_service(config: Path, clock: FakeWallClock, made: list[RoomService],
                  recorder: Recorder) -> RoomService:
    service = RoomService(load_config(config), now=clock, show_tick=0.05, dummy_media=True)
    made.append(service)
    service.start()
    recorder.wait_for("runner/room1/status", "online")  # connected and subscribed
    return service


def test_a_show_due_two_seconds_after_start_runs_on_time(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        services: list[RoomService]) -> None:
    config = write_room(tmp_path, mosquitto, '  - {scene: quick, time: "10:00"}\n')
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 58, tzinfo=UTC))
    service = start_service(config, clock, services, recorder)
    assert service.next_shows()[0][1] == TEN
    [msg] = recorder.wait_for("room1/fog", "ON", timeout=10)
    assert clock() >= TEN  # not before its time
    wait_until(lambda: service.player.current_run is None, what="quick ended")
    [run] = service.history.last_runs()
    assert run["trigger"] == "show:10:00 every day"
    assert run["scene"] == "quick" and run["outcome"] == "completed"
    assert service.next_shows()[0][1] == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert msg.payload == b"ON"


def test_a_show_that_requires_its_devices_is_skipped_when_one_is_offline(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        services: list[RoomService], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    recorder.client.publish("devices/esp32_01/status", "offline", qos=1,
                            retain=True).wait_for_publish(5)
    config = write_room(
        tmp_path, mosquitto, '  - {scene: quick, time: "10:00", require_devices: true}\n',
        extra="devices:\n  esp32_01: [room1/fog]\n")
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 58, tzinfo=UTC))
    service = start_service(config, clock, services, recorder)
    wait_until(lambda: "esp32_01" in service.registry.get_all_devices(), what="presence")
    wait_until(lambda: "skipped" in caplog.text, timeout=10, what="the skip line")
    assert "requires its devices and esp32_01 is not online" in caplog.text
    with pytest.raises(AssertionError):
        recorder.wait_for("room1/fog", "ON", timeout=1.0)
    assert service.history.last_runs() == []


def test_a_show_while_a_single_mode_scene_runs_is_skipped_not_played_late(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        services: list[RoomService], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config = write_room(tmp_path, mosquitto, '  - {scene: quick, cron: "0 10 * * 1"}\n')
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 59, tzinfo=UTC))
    service = start_service(config, clock, services, recorder)
    assert service.play("intro", "manual") is not None  # 1.5 s long, mode single
    wait_until(lambda: "Show quick skipped" in caplog.text, timeout=10, what="skip line")
    assert "another scene is still running" in caplog.text
    wait_until(lambda: service.player.current_run is None, timeout=10, what="intro ended")
    with pytest.raises(AssertionError):  # never played late once the room is free
        recorder.wait_for("room1/fog", "ON", timeout=1.0)


def test_a_show_of_a_queue_mode_scene_is_not_queued_to_start_late(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        services: list[RoomService], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config = write_room(tmp_path, mosquitto, '  - {scene: queued, time: "10:00"}\n')
    (tmp_path / "scenes" / "queued.yaml").write_text(
        "name: Queued\nmode: queue\nactions:\n"
        "  - {at: 0, topic: room1/fog, message: \"ON\", feedback: none}\n")
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 59, tzinfo=UTC))
    service = start_service(config, clock, services, recorder)
    assert service.play("intro", "manual") is not None
    wait_until(lambda: "Show queued skipped" in caplog.text, timeout=10, what="skip line")
    assert "never queued to start late" in caplog.text
    wait_until(lambda: service.player.current_run is None, timeout=10, what="intro ended")
    with pytest.raises(AssertionError):
        recorder.wait_for("room1/fog", "ON", timeout=1.0)


class LoopClock:
    """A wall clock that moves only when the show loop waits, and by what the loop asked
    for: a loop that asks for no wait stays at the same instant, and its turns are counted."""

    def __init__(self, start: datetime, end: datetime, max_turns: int) -> None:
        self._tz = start.tzinfo
        self.t = start.timestamp()
        self._end = end.timestamp()
        self._max_turns = max_turns
        self.turns = 0
        self.done = threading.Event()
        self._idle = threading.Event()  # never set: the real wait once the run is over

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, self._tz)

    def wait(self, seconds: float) -> None:
        if self.done.is_set():
            self._idle.wait(seconds)  # over: the loop waits for real until it is stopped
            return
        self.turns += 1
        if self.t >= self._end or self.turns >= self._max_turns:
            self.done.set()
            return
        self.t += seconds


def test_the_show_loop_in_the_repeated_hour_turns_a_bounded_number_of_times(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        services: list[RoomService], caplog: pytest.LogCaptureFixture) -> None:
    # Berlin, 25 Oct 2026: from 02:59:50 CEST through 02:00 CET (the wall clock reads
    # 02:00 a second time) to 02:40 CET. The old loop planned "just after now" on the wall
    # and found 02:00 CEST again, an hour earlier: due at once, forever, without waiting.
    caplog.set_level(logging.INFO, logger="shows")
    berlin = ZoneInfo("Europe/Berlin")
    config = write_room(tmp_path, mosquitto, '  - {scene: quick, cron: "0 * * * *"}\n'
                                             '  - {scene: intro, cron: "*/30 * * * *"}\n'
                                             '  - {scene: quick, time: "02:30"}\n')
    config.write_text(config.read_text().replace("timezone: UTC", "timezone: Europe/Berlin"))
    start = datetime(2026, 10, 25, 2, 59, 50, tzinfo=berlin)  # fold=0: CEST
    end = datetime(2026, 10, 25, 2, 40, tzinfo=berlin, fold=1)  # CET
    tick = 0.5
    simulated = end.timestamp() - start.timestamp()  # 2,410 s
    bound = int(simulated / tick) + 20  # one turn per tick, and one per start
    clock = LoopClock(start, end, max_turns=2 * bound)
    service = RoomService(load_config(config), now=clock.now, show_tick=tick,
                          show_wait=clock.wait, dummy_media=True)
    services.append(service)
    service.start()
    assert clock.done.wait(60), f"the show loop got stuck after {clock.turns} turns"
    assert clock.turns <= bound, f"{clock.turns} turns for {simulated:.0f} s: the loop spins"
    assert clock.t >= end.timestamp()
    due = [r.getMessage() for r in caplog.records if " due (planned " in r.getMessage()]
    assert sorted(due) == sorted([
        "Show quick due (planned 2026-10-25T02:00:00+01:00 (Sunday), cron '0 * * * *')",
        "Show intro due (planned 2026-10-25T02:00:00+01:00 (Sunday), cron '*/30 * * * *')",
        "Show intro due (planned 2026-10-25T02:30:00+01:00 (Sunday), cron '*/30 * * * *')",
    ])  # 02:30 was played at 02:30 CEST, before this run: not again at 02:30 CET


def test_the_room_work_queue_is_bounded_and_says_so_once(
        tmp_path: Path, mosquitto: Mosquitto, services: list[RoomService],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    config = write_room(tmp_path, mosquitto, '  - {scene: quick, time: "10:00"}\n')
    service = RoomService(load_config(config), dummy_media=True,
                          history_path=tmp_path / "history.sqlite3")
    services.append(service)
    release = threading.Event()
    ran: list[int] = []
    service._submit(lambda: release.wait(30))  # the worker is busy with one
    for i in range(10 * MAX_PENDING_WORK):
        service._submit(functools.partial(ran.append, i))
    release.set()
    wait_until(lambda: len(ran) == MAX_PENDING_WORK - 1, what="the queued work done")
    service._submit(lambda: ran.append(-1))  # room again once the queue drained
    wait_until(lambda: ran[-1:] == [-1], what="work after the flood")
    assert ran[:-1] == list(range(MAX_PENDING_WORK - 1))  # the first ones, in order
    busy = [r for r in caplog.records if "The room is busy" in r.getMessage()]
    assert len(busy) == 1
