"""Media backend: real libvlc (dummy outputs) plays files to their end; paths stay in media_dir."""

from __future__ import annotations

import logging
import os
import queue
import struct
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.errors import RunnerError
from runner.media import MediaBackend, SimulatedMedia, VLCMedia, open_backend, resolve_media
from runner.model import Action
from runner.records import Delivery
from tests.conftest import require


def write_wav(path: Path, seconds: float = 0.3, rate: int = 8000) -> Path:
    """A short sine-free tone (a square wave) written with the stdlib."""
    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            struct.pack("<h", 8000 if (i // 20) % 2 else -8000) for i in range(frames)))
    return path


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    d = tmp_path / "media"
    d.mkdir()
    write_wav(d / "beep.wav")
    return d


@pytest.fixture
def vlc_media(media_dir: Path) -> Iterator[MediaBackend]:
    backend = open_backend(media_dir, dummy=True)
    require("libvlc", isinstance(backend, VLCMedia),
            "apt-get install libvlc5 vlc-plugin-base (and pip install python-vlc)")
    yield backend
    backend.close()


def test_libvlc_plays_a_wav_to_its_end(vlc_media: MediaBackend) -> None:
    events: queue.Queue[tuple[str, str, str]] = queue.Queue()
    vlc_media.add_listener(lambda t, f, e: events.put((t, f, e)))
    vlc_media.prepare("room1/audio", "beep.wav")
    assert vlc_media.play("room1/audio", "beep.wav", volume=50) is Delivery.PLAYED
    assert events.get(timeout=10) == ("room1/audio", "beep.wav", "ended")


def test_the_same_file_plays_again_after_it_ended(vlc_media: MediaBackend) -> None:
    events: queue.Queue[str] = queue.Queue()
    vlc_media.add_listener(lambda _t, _f, e: events.put(e))
    vlc_media.prepare("room1/audio", "beep.wav")
    for _ in range(2):
        assert vlc_media.play("room1/audio", "beep.wav") is Delivery.PLAYED
        assert events.get(timeout=10) == "ended"


def test_a_listener_may_call_the_backend_from_an_end_event(vlc_media: MediaBackend) -> None:
    """libvlc is not re-entrant: events must arrive off its thread, or this deadlocks."""
    events: queue.Queue[str] = queue.Queue()

    def again(topic: str, filename: str, event: str) -> None:
        events.put(event)
        if events.qsize() == 1:
            vlc_media.play(topic, filename)

    vlc_media.add_listener(again)
    vlc_media.play("room1/audio", "beep.wav")
    assert events.get(timeout=10) == "ended"
    assert events.get(timeout=10) == "ended"


def test_a_missing_file_fails_and_plays_nothing(vlc_media: MediaBackend,
                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="media"):
        assert vlc_media.play("room1/audio", "nope.wav") is Delivery.FAILED
    assert "nope.wav does not exist" in caplog.text


def test_stop_on_an_idle_player_is_fine(vlc_media: MediaBackend) -> None:
    assert vlc_media.stop("room1/video") is Delivery.STOPPED
    vlc_media.stop_all()


@pytest.mark.parametrize("name", ["../secret.wav", "/etc/passwd", "sub/../../x.wav", ""])
def test_paths_that_leave_media_dir_are_refused(media_dir: Path, name: str) -> None:
    with pytest.raises(RunnerError, match="media"):
        resolve_media(media_dir, name)


def test_a_symlink_out_of_media_dir_is_refused(media_dir: Path, tmp_path: Path) -> None:
    outside = write_wav(tmp_path / "outside.wav")
    os.symlink(outside, media_dir / "link.wav")
    with pytest.raises(RunnerError, match="outside the media folder"):
        resolve_media(media_dir, "link.wav")
    assert SimulatedMedia(media_dir).play("room1/audio", "link.wav") is Delivery.FAILED


def test_files_in_subfolders_resolve(media_dir: Path) -> None:
    (media_dir / "music").mkdir()
    write_wav(media_dir / "music" / "a.wav")
    assert resolve_media(media_dir, "music/a.wav") == (media_dir / "music" / "a.wav").resolve()


def test_without_vlc_the_backend_is_simulated_with_one_log_line(
        media_dir: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A missing python-vlc is a fault we cannot cause for real on this machine.
    monkeypatch.setitem(sys.modules, "vlc", None)
    with caplog.at_level(logging.WARNING, logger="media"):
        backend = open_backend(media_dir, dummy=True)
    assert isinstance(backend, SimulatedMedia)
    lines = [r for r in caplog.records if r.name == "media"]
    assert len(lines) == 1 and "libvlc is not available" in lines[0].getMessage()
    assert backend.play("room1/audio", "beep.wav") is Delivery.SIMULATED
    assert backend.play("room1/audio", "missing.wav") is Delivery.FAILED


def test_preparing_a_stop_cue_is_not_a_missing_file(
        media_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="media"):
        SimulatedMedia(media_dir).prepare("room1/audio", "stop")
    assert caplog.records == []


def test_a_machine_without_a_sound_card_gets_the_dummy_audio_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runner.media as media_module  # noqa: PLC0415 - the module, to point it elsewhere

    cards = tmp_path / "cards"
    monkeypatch.setattr(media_module, "SOUND_CARDS", cards)
    assert "--aout=dummy" in media_module._missing_outputs()  # no /proc/asound at all
    cards.write_text("--- no soundcards ---\n")
    assert "--aout=dummy" in media_module._missing_outputs()
    cards.write_text(" 0 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0\n")
    assert "--aout=dummy" not in media_module._missing_outputs()


def test_a_stop_cue_is_known_by_the_model() -> None:
    for message in ("stop", "STOP", " Stop "):
        assert Action(0, "room1/audio", message).is_stop
        assert Action(0, "room1/video", message).is_stop
    assert not Action(0, "room1/audio", "stop.mp3").is_stop
    assert not Action(0, "room1/light", "stop").is_stop  # an MQTT message, published


def test_the_checks_know_stop_without_importing_the_media_player() -> None:
    code = "import sys, runner.checks; print('runner.media' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
