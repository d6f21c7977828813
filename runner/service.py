"""The room service: the one place that builds every part from the config and wires them.

The MQTT stack (client, registry, tracker, handler and their subscriptions) comes from
runner.mqtt.stack, as for every other command; media, player, history, shows, triggers,
remote control, retained state and (optionally) the dashboard are made here and handed
what they need; nothing else in the runner constructs them for `runner serve`.

Threads: MQTT callbacks only hand work to the room's one worker thread, so play, stop
and panic from triggers and remote commands happen in the order they came, and the
network thread never waits on the player.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from runner.clock import iso, timezone_for
from runner.control import RemoteControl, StatePublisher
from runner.errors import RunnerError, UnknownSceneError, ValidationFailed
from runner.history import RunHistory, default_path
from runner.media import MediaBackend, open_backend
from runner.model import Action, Config, FeedbackPolicy, Mode, Scene, Show, Trigger
from runner.mqtt.readiness import log_readiness, offline_devices
from runner.mqtt.registry import DeviceInfo
from runner.mqtt.stack import build_mqtt_stack
from runner.player import Player
from runner.ratelimitlog import RateLimitedLog
from runner.records import ActionRecord, Delivery, FeedbackResult, SceneRun
from runner.recovery import StartRecovery, plan_recovery
from runner.reloadload import Refused, load_elsewhere
from runner.scenefile import check_scene, load_scenes, scene_files
from runner.shows import (
    GRACE_SECONDS,
    TICK_SECONDS,
    ShowError,
    ShowScheduler,
    describe,
)
from runner.topics import TopicFilter
from runner.triggers import TriggerRouter

log = logging.getLogger("service")

IN_MEMORY = ":memory:"  # sqlite's name for a database that lives only in this process
RESULTS_IN_STATE = 10  # feedback results carried in the retained state
MAX_PENDING_WORK = 64  # starts and commands waiting for the room's worker; more are dropped
ChangeListener = Callable[[], None]


def scenes_at_start(config: Config) -> dict[str, Scene]:
    """Every valid scene; one with errors is left out with its errors logged.

    Unlike a reload (which keeps the running set), a start has nothing to fall back on:
    refusing every scene for one bad file would keep the room dark after a reboot.
    """
    try:
        return load_scenes(config.scenes_dir, default_room=config.room,
                           media_dir=config.media_dir)
    except ValidationFailed as e:
        if not config.scenes_dir.is_dir():
            raise
        for d in e.diagnostics:
            log.error("%s", d.format())
    scenes: dict[str, Scene] = {}
    for path in scene_files(config.scenes_dir):
        scene, _ = check_scene(path, default_room=config.room, media_dir=config.media_dir)
        if scene is None:
            log.error("Scene %s left out: fix the errors above (runner validate %s), then "
                      "reload", path.stem, path)
        elif scene.id not in scenes:
            scenes[scene.id] = scene
    return scenes


def open_history(path: Path, keep_days: float | None = None) -> RunHistory:
    """The run history at `path`; when it cannot be written, one in memory and a loud line.

    A room must not stay dark because its record cannot be kept: the shows go on.
    """
    try:
        return RunHistory(path, keep_days=keep_days)
    except (OSError, sqlite3.Error) as e:
        log.error("The run history %s cannot be written (%s): runs are kept in memory only "
                  "until the service stops. Set history_file in runner.yaml to a writable "
                  "file, e.g. /var/lib/runner/history.sqlite3", path, e)
        return RunHistory(Path(IN_MEMORY), keep_days=keep_days)


class RoomService:
    """Everything `runner serve` runs, built from one `Config`.

    `now` (an aware wall clock), `show_tick`, `show_grace` and `show_wait` reach the show
    scheduler, so tests can move time; `dummy_media` opens libvlc without audio and video
    output.
    """

    def __init__(self, config: Config, *, now: Callable[[], datetime] | None = None,
                 show_tick: float = TICK_SECONDS, show_grace: float = GRACE_SECONDS,
                 show_wait: Callable[[float], object] | None = None,
                 dummy_media: bool = False, history_path: Path | None = None) -> None:
        self.config = config
        self.scenes: dict[str, Scene] = scenes_at_start(config)
        self._tz = timezone_for(config)
        self._now = now
        self._show_tick = show_tick
        self._show_grace = show_grace
        self._show_wait = show_wait
        self._lock = threading.RLock()  # play / stop / reload against each other
        self._listeners: list[ChangeListener] = []
        self._last_run: SceneRun | None = None
        self._player_outdated = False  # a reload came while a scene played
        self.last_reload_pid: int | None = None  # the process that read the last reload
        self._started = False
        self._stopping = False
        self._shows_started = False  # a reload during start-up leaves starting them to start()
        self.room_safe = threading.Event()  # set once shutdown sent safe state and `offline`
        self._recovery: StartRecovery | None = None  # sent at the first connection

        self.mqtt = build_mqtt_stack(config, self.scenes)  # presence and feedback subscribed
        self.client = self.mqtt.client
        self.registry = self.mqtt.registry
        self.tracker = self.mqtt.tracker
        self.handler = self.mqtt.handler
        self.media: MediaBackend = open_backend(config.media_dir, dummy=dummy_media)
        self.player = self._new_player(config)
        self.history = open_history(history_path or default_path(config),
                                    config.history_keep_days)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="room")
        self._pending = threading.BoundedSemaphore(MAX_PENDING_WORK)  # the worker's queue
        self._queue_full_log = RateLimitedLog(log)
        self.triggers = TriggerRouter(config.triggers, self._on_trigger)
        self.control = RemoteControl(self, self._submit)
        self.state = StatePublisher(self.client, config.runner_state_topic, self.state_snapshot,
                                    running=lambda: self.player.current_run is not None)
        self.shows = self._new_shows(config)
        self._routed: set[str] = set()
        self._trigger_routes: list[TopicFilter] = []  # in the order they were routed
        self.dashboard: Any = None  # runner.web.server.DashboardServer once started

    # -- building ------------------------------------------------------------------------

    def _new_player(self, config: Config) -> Player:
        player = Player(self.client, self.tracker, self.media, config)
        player.add_listener(self._on_player_event)
        player.add_record_listener(self._on_record)
        return player

    def _new_shows(self, config: Config) -> ShowScheduler:
        return ShowScheduler(config.shows, self._on_show, self._tz, now=self._now,
                             tick=self._show_tick, grace=self._show_grace,
                             wait=self._show_wait)

    def _route_topics(self) -> None:
        """Route and subscribe the trigger and command topics not routed yet (start, reload)."""
        filters = [*self.triggers.topic_filters(), self.config.runner_cmd_topic]
        for topic_filter in filters:
            if topic_filter in self._routed:
                continue
            self._routed.add(topic_filter)
            if topic_filter == self.config.runner_cmd_topic:
                self.mqtt.add_route(topic_filter, self.control.handle)
            else:
                self._trigger_routes.append(TopicFilter(topic_filter))
                self.mqtt.add_route(topic_filter, self._trigger_route(topic_filter))

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect (or go on in simulation mode), then start shows and the retained state.

        Connecting may take `connect_retries` x `retry_delay` while the broker is away;
        `shutdown()` from another thread cuts it short.
        """
        unfinished = self.history.close_unfinished_runs()
        if unfinished:
            log.warning("%d run(s) in the history never ended (the service stopped hard); "
                        "marked interrupted", len(unfinished))
        self._recovery = plan_recovery(self.config, unfinished, self.scenes)
        if unfinished and self._recovery is None:
            log.warning("safe_state_at_start: never: the room is left as the crash left it")
        self.client.set_handlers(on_message=self._on_message, on_connect=self._on_connect,
                                 on_disconnect=self._on_disconnect)
        self.registry.add_listener(self._on_device)
        self.tracker.add_result_listener(self._on_result)
        with self._lock:
            self._route_topics()
            self.state.start()
            self._started = True
        self.client.connect()
        with self._lock:
            if self._stopping:
                return
            self.shows.start()
            self._shows_started = True
        log.info("Room %s ready: %d scene(s), %d show(s), %d trigger(s); commands on %s",
                 self.config.room, len(self.scenes), len(self.config.shows),
                 len(self.config.triggers), self.config.runner_cmd_topic)

    def start_dashboard(self) -> Any:
        """The dashboard from `config.dashboard`, when enabled and installed; None otherwise.

        Kept apart from `start()` so that a caller with its own dashboard (the demo)
        does not get a second one on the same port.
        """
        dash = self.config.dashboard
        if not dash.enabled or self._stopping:
            return None
        try:
            from runner.web.app import create_app  # noqa: PLC0415 - only when enabled
            from runner.web.server import DashboardServer  # noqa: PLC0415
        except ImportError as e:
            logging.getLogger("dashboard").warning(
                "The dashboard is not available (%s); the room runs without it", e)
            return None
        server = DashboardServer(create_app(self), dash.bind, dash.port,
                                 max_connections=dash.max_connections,
                                 header_timeout=dash.header_timeout)
        try:
            server.start()
        except RunnerError as e:
            logging.getLogger("dashboard").error("%s The room runs without it.", e)
            return None
        self.dashboard = server
        return server

    def shutdown(self) -> None:
        """The scene's on_stop and the safe state, the idle state and `offline`, then close."""
        with self._lock:
            self._stopping = True
            self.shows.stop()
            if self.player.current_run is None:
                self._apply_safe_state()
            self.player.shutdown()  # a running scene: on_stop, safe_state, Outcome.SHUTDOWN
        if self._started:
            self.state.stop(final=self.state_snapshot(idle=True))
        self.client.disconnect()
        self.room_safe.set()
        self._worker.shutdown(wait=False, cancel_futures=True)
        if self.dashboard is not None:
            self.dashboard.stop()
        self.tracker.close()
        self.history.close()
        self.media.close()

    def _apply_safe_state(self) -> None:
        """The room's safe state when no scene runs (a running one gets it from the player)."""
        if not self.config.safe_state:
            return
        log.info("Applying the room's safe state before stopping")
        self.media.stop_all()
        for action in self.config.safe_state:
            if action.is_media:
                if action.is_stop:
                    self.media.stop(action.topic)
                continue  # the room goes quiet; nothing starts playing on the way out
            self.client.publish(action.topic, action.message, action.qos, action.retain)

    def reload(self, path: Path) -> bool:
        """Read the config again; an invalid one is refused and the running one kept.

        The broker connection stays up: broker settings apply at the next restart.
        """
        # Read and checked in a child process: a big scene parsed here would hold the
        # GIL for hundreds of milliseconds and make the playing scene's cues late.
        outcome = load_elsewhere(path)
        if isinstance(outcome, Refused):
            if outcome.reason is not None:
                log.error("Reload refused: %s; still running the previous config",
                          outcome.reason)
                return False
            for d in outcome.diagnostics:
                log.error("%s", d.format())
            log.error("Reload refused: %d error(s) in %s or its scenes (above); still running "
                      "the previous config", outcome.errors, path)
            return False
        new, scenes = outcome.config, outcome.scenes
        self.last_reload_pid = outcome.pid
        try:
            tz = timezone_for(new)  # checked by the child; cheap
        except ShowError as e:
            log.error("Reload refused: %s; still running the previous config", e)
            return False
        old = self.config
        if new.room != old.room:
            log.error("Reload refused: the room changed from %s to %s; restart the service "
                      "to apply that (sudo systemctl restart runner)", old.room, new.room)
            return False
        if new.broker != old.broker:
            log.warning("Broker settings changed: they apply at the next restart; the "
                        "connection to %s stays up", self.client.address)
        if new.dashboard != old.dashboard:
            log.warning("Dashboard settings changed: they apply at the next restart")
        if new.devices != old.devices or new.status_topics != old.status_topics \
                or new.devices_max_other != old.devices_max_other:
            # The tracker and the handler were built with them; half-applied, a scene's
            # readiness would name one device map and its confirmations follow another.
            log.warning("`devices` or `registry` changed: they apply at the next restart "
                        "(sudo systemctl restart runner)")
        new = dataclasses.replace(new, broker=old.broker, dashboard=old.dashboard,
                                  devices=old.devices, status_topics=old.status_topics,
                                  devices_max_other=old.devices_max_other)
        with self._lock:
            self.config = new
            self.scenes = scenes
            self._tz = tz
            self.triggers.set_triggers(new.triggers)
            self.mqtt.follow_scenes(scenes)
            self._route_topics()
            self.shows.stop()
            self.shows = self._new_shows(new)
            if self._shows_started:
                self.shows.start()
            if self.player.current_run is None:
                self._replace_player()
            else:
                self._player_outdated = True
                log.info("The new safe state and feedback timeout apply when %s ends",
                         self.player.current_run.scene_id)
        log.info("Reloaded %s: %d scene(s), %d show(s), %d trigger(s)", path, len(scenes),
                 len(new.shows), len(new.triggers))
        self._changed()
        return True

    def _replace_player(self) -> None:
        old = self.player
        self.player = self._new_player(self.config)
        self._player_outdated = False
        old.shutdown()

    # -- commands ------------------------------------------------------------------------

    def play(self, scene_id: str, trigger: str) -> SceneRun | None:
        """Start a scene by id (UnknownSceneError when there is none); None when refused (busy)."""
        with self._lock:
            scene = self.scenes.get(scene_id)
            if scene is None:
                raise UnknownSceneError(f"no scene {scene_id!r} is loaded")
            log_readiness(log, self.config, self.registry, scene)
            return self.player.play(scene, trigger)

    def stop(self) -> None:
        with self._lock:
            self.player.stop()

    def panic(self) -> None:
        with self._lock:
            self.player.panic()

    def next_shows(self) -> list[tuple[Show, datetime | None]]:
        return self.shows.next_starts()

    def add_change_listener(self, cb: ChangeListener) -> None:
        """`cb()` after any change: devices, player, feedback, broker. Must return at once."""
        self._listeners.append(cb)

    def offline_devices(self, scene: Scene) -> list[str]:
        return offline_devices(self.config, self.registry, scene)

    # -- what comes in -------------------------------------------------------------------

    def _submit(self, work: Callable[[], object]) -> None:
        """Hand `work` to the room's one worker thread, in order.

        At most MAX_PENDING_WORK wait: more (a flood of presses or commands, a show loop
        gone wrong) are dropped with one warning per 10 s, so memory stays bounded. Stop
        and panic are never dropped.
        """
        essential = work in (self.stop, self.panic)
        counted = self._pending.acquire(blocking=False)
        if not counted and not essential:
            self._queue_full_log.warning(
                "queue-full", "The room is busy: %d starts and commands already wait for it, "
                "so this one is dropped; if this repeats, look for what floods the room "
                "(a stuck button, a script sending commands)", MAX_PENDING_WORK)
            return

        def run() -> None:
            try:
                work()
            except Exception:
                log.exception("room command failed")
            finally:
                if counted:
                    self._pending.release()

        try:
            self._worker.submit(run)
        except RuntimeError:  # shutting down: nothing starts any more
            if counted:
                self._pending.release()
            log.info("Command ignored: the service is stopping")

    def _on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        if retain and (self.triggers.matches(topic)
                       or TopicFilter(self.config.runner_cmd_topic).matches(topic)):
            # A retained button press or command would start a scene at every restart.
            logging.getLogger("mqtt_handler").warning(
                "Retained message on %s ignored: triggers and commands must not be retained",
                topic)
            return
        self.handler.handle_message(topic, payload, retain)

    def _trigger_route(self, topic_filter: str) -> Callable[[str, str], None]:
        def route(topic: str, text: str) -> None:
            # Overlapping filters (room1/# and room1/button) each get the message: the
            # first matching route alone passes it on, so one press is one press.
            first = next(f for f in self._trigger_routes if f.matches(topic))
            if first.text == topic_filter:
                self.triggers.handle(topic, text)

        return route

    def _on_trigger(self, trigger: Trigger) -> None:
        self._submit(lambda: self._play_for(trigger.scene, f"trigger:{trigger.topic}"))

    def _play_for(self, scene_id: str, trigger: str) -> SceneRun | None:
        try:
            return self.play(scene_id, trigger)
        except UnknownSceneError:
            log.error("%s: scene %r is not loaded (missing from %s, or left out for its "
                      "errors: runner validate says which)", trigger, scene_id,
                      self.config.scenes_dir)
            return None

    def _on_show(self, show: Show, planned: datetime) -> None:
        scene = self.scenes.get(show.scene)
        if scene is None:
            log.error("Show %s skipped: the scene is not loaded (missing from %s, or left "
                      "out for its errors: runner validate says which)", show.scene,
                      self.config.scenes_dir)
            return
        if show.require_devices:
            offline = self.offline_devices(scene)
            if offline:
                log.warning("Show %s (%s) skipped: it requires its devices and %s %s not "
                            "online", show.scene, describe(show), ", ".join(offline),
                            "is" if len(offline) == 1 else "are")
                return
        trigger = f"show:{show.cron or describe(show)}"

        def start() -> None:
            now = self._now() if self._now is not None else datetime.now(planned.tzinfo)
            late = now.timestamp() - planned.timestamp()
            if late > self._show_grace:
                log.warning("Show %s skipped: the room was busy until %.0f s after its "
                            "time", show.scene, late)
                return
            with self._lock:
                running = self.player.current_run
                if running is not None and scene.mode is Mode.QUEUE:
                    # Queued, it would start whenever the other scene ends: not on time.
                    log.warning("Show %s skipped: %s is still running, and a show is never "
                                "queued to start late", show.scene, running.scene_id)
                    return
                if self._play_for(show.scene, trigger) is None:
                    log.warning("Show %s skipped: another scene is still running (mode "
                                "single)", show.scene)

        self._submit(start)

    def _on_connect(self) -> None:
        # On the network thread, before any trigger or command it delivers: the safe
        # state goes out first, then the idle state replaces what a crash left retained.
        self._recover_at_start()
        self.state.on_connect()
        self._changed()

    def _recover_at_start(self) -> None:
        with self._lock:
            recovery, self._recovery = self._recovery, None
            if recovery is None:
                return
            running = self.player.current_run
            if running is not None:  # it started in simulation mode, before the broker came
                log.warning("The safe state at start was not sent: %s plays already (its "
                            "stop applies the safe state)", running.scene_id)
                return
            log.warning("Applying %d safe-state command(s) at start: %s",
                        len(recovery.actions), recovery.reason)
            for scene_id in recovery.missing:
                log.warning("Scene %s is no longer loaded: its on_stop cannot be sent; only "
                            "the room's safe state is", scene_id)
            self.media.stop_all()
            for source, action in recovery.actions:
                self._send_at_start(source, action)
        self.state.publish_now(self.state_snapshot(idle=True))

    def _send_at_start(self, source: str, action: Action) -> None:
        try:
            if action.is_media:
                if action.is_stop:
                    self.media.stop(action.topic)
                return  # nothing starts playing on the way to the safe state
            delivery = self.client.publish(action.topic, action.message, action.qos,
                                           action.retain)
            if delivery is Delivery.SENT and action.feedback is not FeedbackPolicy.NONE:
                self.tracker.expect_stray_answer(action.topic,
                                                 feedback_topic=action.feedback_topic)
            log.info("  %s: %s = %s (%s)", source, action.topic, action.message,
                     delivery.value)
        except Exception:
            log.exception("%s: %s = %s could not be sent", source, action.topic, action.message)

    def _on_disconnect(self) -> None:
        # A device that loses power while the broker is away leaves no last will, and a
        # restarted broker may hold no presence for it: its old `online` would stand for
        # good. Those still there say `online` (retained) again on the next connection.
        self.registry.mark_all_offline("the connection to the MQTT broker was lost")
        self._changed()

    def _on_device(self, _info: DeviceInfo) -> None:
        self._changed()

    def _on_result(self, _result: FeedbackResult) -> None:
        self._changed()

    def _on_player_event(self, event: str, run: SceneRun) -> None:
        # On the player's events thread: history writes are queued, never waited for.
        if event == "started":
            self.history.record_start(run)
        elif event == "finished":
            self.history.record_end(run)
            self._last_run = run
            if self._player_outdated:
                self._submit(self._replace_player_when_idle)
        self._changed()

    def _replace_player_when_idle(self) -> None:
        with self._lock:
            if self._player_outdated and self.player.current_run is None:
                self._replace_player()

    def _on_record(self, _event: str, run: SceneRun, rec: ActionRecord) -> None:
        self.history.record_action(run, rec)

    def _changed(self) -> None:
        self.state.notify()
        for cb in list(self._listeners):
            try:
                cb()
            except Exception:
                log.exception("change listener failed")

    # -- the retained state --------------------------------------------------------------

    def state_snapshot(self, idle: bool = False) -> dict[str, Any]:
        """The retained `runner/<room>/state`: scene, started, elapsed, last results, devices."""
        playing = None if idle else self.player.state(records=False)
        last = self._last_run
        results = self.tracker.recent_results(RESULTS_IN_STATE)
        known = self.registry.get_all_devices()
        own = [d for d in known.values() if d.id in self.registry.own_ids]
        nxt = None if playing is None else playing.next_cue
        return {
            "room": self.config.room,
            "scene": None if playing is None else playing.scene,
            "name": None if playing is None else playing.name,
            "run_id": None if playing is None else playing.run_id,
            "started": None if playing is None else _iso(playing.started_at, self._tz),
            "elapsed": None if playing is None else playing.elapsed,
            "duration": None if playing is None else playing.duration,
            "next_cue": None if nxt is None else nxt.to_json(),
            "last_run": None if last is None else {
                "scene": last.scene_id, "run_id": last.run_id, "trigger": last.trigger,
                "outcome": last.outcome.value, "started": _iso(last.started_at, self._tz),
                "ended": _iso(last.ended_at, self._tz), "failures": len(last.failures),
            },
            "results": [
                {"topic": r.topic, "message": r.message, "status": r.status.value,
                 "latency": r.latency, "device": r.device} for r in results
            ],
            # The room's own devices only, and counts: the size stays small however many
            # devices a shared broker holds (the full list: the dashboard's /api/devices).
            "devices": {
                d.id: {"online": d.online, "last_seen": _iso(d.last_seen, self._tz),
                       "since": _iso(d.since, self._tz)}
                for d in sorted(own, key=lambda d: d.id)
            },
            "device_counts": {"online": sum(1 for d in known.values() if d.online),
                              "total": len(known), "forgotten": self.registry.forgotten},
        }


def _iso(epoch: object, tz: tzinfo) -> str | None:
    """The status's times: milliseconds; 0 (never) is None."""
    return iso(epoch or None, tz, timespec="milliseconds")
