"""Media cues inside a scene: played locally by real libvlc, never published."""

from __future__ import annotations

import queue
from pathlib import Path

from runner.media import VLCMedia, open_backend
from runner.model import FeedbackPolicy
from runner.records import Delivery, Outcome
from tests.brokers import Mosquitto
from tests.conftest import Recorder, require, wait_until
from tests.test_media import write_wav
from tests.test_player import act, make_rig, scene


def test_media_cues_play_locally_and_a_missing_file_is_a_failed_record(
        mosquitto: Mosquitto, recorder: Recorder, tmp_path: Path) -> None:
    write_wav(tmp_path / "beep.wav", seconds=0.3)
    media = open_backend(tmp_path, dummy=True)
    require("libvlc", isinstance(media, VLCMedia), "apt-get install libvlc5 vlc-plugin-base")
    ended: queue.Queue[tuple[str, str, str]] = queue.Queue()
    media.add_listener(lambda t, f, e: ended.put((t, f, e)))
    rig, close = make_rig(mosquitto, media, tmp_path)
    try:
        run = rig.play(scene(act(0, "room1/audio", "beep.wav", volume=80),
                             act(0.1, "room1/video", "missing.mp4"),
                             act(0.2, "room1/light", "ON", feedback=FeedbackPolicy.NONE)))
        assert ended.get(timeout=10) == ("room1/audio", "beep.wav", "ended")
        assert rig.player.wait(5)
        recorder.wait_for("room1/light", "ON")
    finally:
        close()
    assert [r.route for r in run.records] == ["audio", "video", "mqtt"]
    assert [r.delivery for r in run.records] == [Delivery.PLAYED, Delivery.FAILED,
                                                 Delivery.SENT]
    assert recorder.on("room1/audio") == [] and recorder.on("room1/video") == []
    assert run.outcome is Outcome.FEEDBACK_FAILED  # the missing file counts as a failure


def test_a_file_libvlc_cannot_play_turns_its_record_failed(
        mosquitto: Mosquitto, recorder: Recorder, tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 10)
    media = open_backend(tmp_path, dummy=True)
    require("libvlc", isinstance(media, VLCMedia), "apt-get install libvlc5 vlc-plugin-base")
    rig, close = make_rig(mosquitto, media, tmp_path)
    try:
        run = rig.play(scene(act(0, "room1/video", "broken.mp4"), duration=3))
        wait_until(lambda: run.records[0].delivery is Delivery.FAILED, 10,
                   what="the libvlc error to reach the record")
        assert run.records[0].error == "libvlc could not play it"
        rig.player.stop()
    finally:
        close()
