"""Local media for `/audio` and `/video` cues: a small playback interface, libvlc behind it.

libvlc is not re-entrant: nothing may call it from one of its own event callbacks. So
every libvlc call after `prepare()` runs on one worker thread, and libvlc's callbacks
only put the event on that thread's queue. `play()` and `stop()` therefore return at
once, which keeps the player's cue jobs from ever blocking on media.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.errors import RunnerError
from runner.model import Route, is_stop_message
from runner.records import Delivery

log = logging.getLogger("media")

MediaListener = Callable[[str, str, str], None]  # topic, filename, "ended" | "error"

PARSE_TIMEOUT = 2.0  # seconds prepare() waits for libvlc to open one file
DUMMY_ARGS = ("--aout=dummy", "--vout=dummy", "--no-video-title-show", "--quiet")
PRODUCTION_ARGS = ("--fullscreen", "--no-video-title-show", "--quiet")


SOUND_CARDS = Path("/proc/asound/cards")


def _missing_outputs() -> tuple[str, ...]:
    """Dummy outputs for what this machine lacks, so libvlc does not flood the log.

    Without a sound card libvlc's ALSA output prints a dozen lines per cue; without any
    display it probes every video output in turn. Cues still run, silently or unseen.
    """
    extra: list[str] = []
    cards = SOUND_CARDS.read_text(errors="replace") if SOUND_CARDS.exists() else ""
    if not cards.strip() or "no soundcards" in cards:
        log.warning("no sound card found: audio cues run silently (--aout=dummy)")
        extra.append("--aout=dummy")
    has_display = any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY"))
    if not has_display and not Path("/dev/fb0").exists() and not Path("/dev/dri").exists():
        log.warning("no display found: video cues run unseen (--vout=dummy)")
        extra.append("--vout=dummy")
    return tuple(extra)


def resolve_media(media_dir: Path, name: str) -> Path:
    """The file `name` under `media_dir`; refused when it would leave that folder."""
    base = Path(media_dir).resolve()
    if not name or Path(name).is_absolute():
        raise RunnerError(
            f"media file {name!r} must be a name relative to the media folder {base}; "
            "put the file there and write its name only"
        )
    # resolve() follows symlinks, so a link pointing out of media_dir is caught too.
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise RunnerError(
            f"media file {name!r} is outside the media folder {base}; "
            "copy the file into that folder and use its name"
        )
    return path


class MediaBackend(ABC):
    """Plays media files on local topics; every call returns at once."""

    def __init__(self, media_dir: Path) -> None:
        self.media_dir = Path(media_dir)
        self._listeners: list[MediaListener] = []

    def add_listener(self, cb: MediaListener) -> None:
        """`cb(topic, filename, "ended" | "error")`, called off libvlc's own threads."""
        self._listeners.append(cb)

    def remove_listener(self, cb: MediaListener) -> None:
        """Stop calling `cb`: a player replaced by a reload must not be kept alive by it."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(cb)

    def _emit(self, topic: str, filename: str, event: str) -> None:
        for cb in list(self._listeners):
            try:
                cb(topic, filename, event)
            except Exception:
                log.exception("media listener failed on %s %s %s", topic, filename, event)

    def _existing(self, topic: str, filename: str) -> Path | None:
        """The resolved file, or None after logging why it cannot be played."""
        try:
            path = resolve_media(self.media_dir, filename)
        except RunnerError as e:
            log.error("%s: %s", topic, e)
            return None
        if not path.is_file():
            log.error(
                "%s: media file %s does not exist; add it to %s or fix the scene",
                topic, path, self.media_dir,
            )
            return None
        return path

    @abstractmethod
    def prepare(self, topic: str, filename: str) -> None:
        """Open `filename` ahead of its cue so the cue starts within milliseconds."""

    @abstractmethod
    def play(self, topic: str, filename: str, volume: int | None = None) -> Delivery:
        """Start `filename` on the topic's player: PLAYED, SIMULATED or FAILED."""

    @abstractmethod
    def stop(self, topic: str) -> Delivery:
        """Stop the topic's player: STOPPED (also when nothing was playing)."""

    @abstractmethod
    def stop_all(self) -> None:
        """Stop every player."""

    @abstractmethod
    def close(self) -> None:
        """Release players and threads; the backend is unusable afterwards."""


class SimulatedMedia(MediaBackend):
    """Logs what it would play; used without libvlc and for `runner play --simulate`."""

    def prepare(self, topic: str, filename: str) -> None:
        if not is_stop_message(filename):
            self._existing(topic, filename)

    def play(self, topic: str, filename: str, volume: int | None = None) -> Delivery:
        if self._existing(topic, filename) is None:
            return Delivery.FAILED
        log.info("simulated: %s plays %s%s", topic, filename,
                 "" if volume is None else f" at volume {volume}")
        return Delivery.SIMULATED

    def stop(self, topic: str) -> Delivery:
        log.info("simulated: %s stops", topic)
        return Delivery.STOPPED

    def stop_all(self) -> None:
        log.debug("simulated: all media stops")

    def close(self) -> None:
        """Nothing to release."""


class VLCMedia(MediaBackend):
    """One libvlc instance, one media player per local topic, one worker thread."""

    def __init__(self, media_dir: Path, vlc_module: Any, *, dummy: bool = False) -> None:
        super().__init__(media_dir)
        self._vlc = vlc_module
        args = DUMMY_ARGS if dummy else PRODUCTION_ARGS + _missing_outputs()
        self._dummy = dummy
        self._instance = vlc_module.Instance(list(args))
        if self._instance is None:
            raise RunnerError(f"libvlc could not start with {' '.join(args)}")
        self._players: dict[str, Any] = {}
        self._playing: dict[str, str] = {}  # topic -> file name now on its player
        self._media: dict[Path, Any] = {}  # opened (parsed) media, by resolved path
        self._lock = threading.Lock()
        self._work: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="media", daemon=True)
        self._worker.start()

    # -- the worker thread: the only caller of libvlc after prepare() ------------------

    def _run(self) -> None:
        while True:
            task = self._work.get()
            if task is None:
                return
            try:
                task()
            except Exception:
                log.exception("media task failed")

    def _submit(self, task: Callable[[], None]) -> None:
        self._work.put(task)

    # -- players and media ---------------------------------------------------------------

    def _player(self, topic: str) -> Any:
        with self._lock:
            player = self._players.get(topic)
            if player is None:
                player = self._instance.media_player_new()
                if Route.for_topic(topic) is Route.VIDEO and not self._dummy:
                    player.set_fullscreen(True)
                events = player.event_manager()
                et = self._vlc.EventType
                # Runs on libvlc's thread: only queue the event, never call libvlc here.
                events.event_attach(
                    et.MediaPlayerEndReached, lambda _e: self._submit(
                        lambda: self._emit(topic, self._playing.get(topic, ""), "ended")))
                events.event_attach(
                    et.MediaPlayerEncounteredError, lambda _e: self._submit(
                        lambda: self._on_error(topic)))
                self._players[topic] = player
            return player

    def _on_error(self, topic: str) -> None:
        filename = self._playing.get(topic, "")
        log.error("%s: libvlc could not play %s", topic, filename)
        self._emit(topic, filename, "error")

    def _open(self, path: Path) -> Any:
        with self._lock:
            media = self._media.get(path)
        if media is not None:
            return media
        media = self._instance.media_new_path(str(path))
        parsed = threading.Event()
        # The callback only sets an Event, which does not re-enter libvlc.
        media.event_manager().event_attach(
            self._vlc.EventType.MediaParsedChanged, lambda _e: parsed.set())
        media.parse_with_options(self._vlc.MediaParseFlag.local, int(PARSE_TIMEOUT * 1000))
        if not parsed.wait(PARSE_TIMEOUT):
            log.warning("%s: libvlc took over %.1fs to open it; its cue may start late",
                        path, PARSE_TIMEOUT)
        with self._lock:
            self._media[path] = media
        return media

    def prepare(self, topic: str, filename: str) -> None:
        if is_stop_message(filename):
            self._player(topic)
            return
        path = self._existing(topic, filename)
        if path is None:
            return
        self._player(topic)
        self._open(path)
        log.debug("%s: %s opened", topic, path.name)

    def play(self, topic: str, filename: str, volume: int | None = None) -> Delivery:
        path = self._existing(topic, filename)
        if path is None:
            return Delivery.FAILED
        with self._lock:
            media = self._media.get(path)
        player = self._player(topic)

        def start() -> None:
            m = media if media is not None else self._open(path)
            self._playing[topic] = filename
            player.set_media(m)
            if player.play() != 0:
                self._on_error(topic)
                return
            if volume is not None:
                player.audio_set_volume(int(volume))
            log.info("%s: playing %s%s", topic, filename,
                     "" if volume is None else f" at volume {volume}")

        self._submit(start)
        return Delivery.PLAYED

    def stop(self, topic: str) -> Delivery:
        player = self._player(topic)

        def halt() -> None:
            player.stop()
            log.info("%s: stopped", topic)

        self._submit(halt)
        return Delivery.STOPPED

    def stop_all(self) -> None:
        with self._lock:
            players = list(self._players.values())
        for p in players:
            self._submit(p.stop)

    def close(self) -> None:
        self.stop_all()

        def release() -> None:
            with self._lock:
                for p in self._players.values():
                    p.release()
                for m in self._media.values():
                    m.release()
                self._players.clear()
                self._media.clear()
            self._instance.release()

        self._submit(release)
        self._work.put(None)
        self._worker.join(timeout=5.0)


def open_backend(media_dir: Path, *, dummy: bool = False) -> MediaBackend:
    """libvlc when it is installed; otherwise `SimulatedMedia`, with one log line saying so."""
    try:
        import vlc  # noqa: PLC0415 - optional: the rest of the runner works without it

        return VLCMedia(media_dir, vlc, dummy=dummy)
    except (ImportError, OSError, AttributeError, NameError, RunnerError) as e:
        log.warning(
            "libvlc is not available (%s): media cues are logged, not played; "
            "install it with `apt-get install libvlc5 vlc-plugin-base`", e,
        )
        return SimulatedMedia(media_dir)
