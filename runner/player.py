"""The scene player: fires each cue at its moment, routes it, and accounts for every one.

Timing: every cue's moment is the run's monotonic start plus its offset (round k of a
loop starts at start + k * duration), never the previous cue's time plus a gap, so
nothing drifts. APScheduler wakes one job per offset `EARLY_WAKE` before the moment;
the job sleeps most of the rest and busy-waits the last `SPIN_WINDOW`, because the
scheduler's own wake-up is only good to a millisecond or two.

Threads: cue jobs run in APScheduler's pool and only publish or start media. Feedback
results, media events and listener calls go through one events thread, so a slow
listener (history, dashboard) never delays a cue, and callbacks arriving on the MQTT or
tracker threads never take the player's lock there.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from runner.media import MediaBackend
from runner.model import Action, Config, FeedbackPolicy, Mode, Scene
from runner.records import (
    ActionRecord,
    Delivery,
    FeedbackResult,
    FeedbackStatus,
    NextCue,
    Outcome,
    PlayerSnapshot,
    SceneRun,
)

log = logging.getLogger("player")

EARLY_WAKE = 0.030  # APScheduler wakes a cue job this long before its moment
SPIN_WINDOW = 0.0015  # busy-wait the last stretch: sleep() overshoots by ~0.1 ms
START_DELAY = 0.100  # from play() to the scene's 0, so the first cue is scheduled too
MISFIRE_GRACE = 1  # seconds (APScheduler takes whole ones): a cue job later than this
# is dropped (recorded NOT_SENT) and logged
LATE_WARNING = 0.050  # a cue fired this late is logged as a warning
POOL_SIZE = 16  # cue jobs at offsets closer than EARLY_WAKE wait side by side
ROUND_LEAD = 1.0  # a loop's next round is scheduled this long before it starts
FEEDBACK_GRACE = 0.5  # after the last feedback timeout, the run is closed regardless
MIN_ROUND = 0.05  # a loop shorter than this would spin: it plays once instead
KEEP_ROUNDS = 20  # records kept of a scene that loops forever

Listener = Callable[[str, SceneRun], None]
RecordListener = Callable[[str, SceneRun, ActionRecord], None]


class Publisher(Protocol):
    """What the player needs of `runner.mqtt.client.MQTTClient`."""

    def publish(self, topic: str, payload: str, qos: int = 1,
                retain: bool = False) -> Delivery: ...


class Tracker(Protocol):
    """What the player needs of `runner.mqtt.feedback.FeedbackTracker`."""

    def enable_feedback_tracking(self) -> None: ...

    def disable_feedback_tracking(self) -> None: ...

    def track_published_message(
        self, topic: str, message: str, *, feedback: FeedbackPolicy = ...,
        timeout: float | None = ..., feedback_topic: str | None = ...,
        on_result: Callable[[FeedbackResult], None] | None = ...,
    ) -> int | None: ...

    def expect_stray_answer(self, topic: str, *, feedback_topic: str | None = ...,
                            timeout: float | None = ...) -> None: ...


Cue = tuple[Action, ActionRecord]


@dataclass(eq=False)
class _Live:
    """The run being played, with what the player needs to keep time and cancel it."""

    run: SceneRun
    scene: Scene
    generation: int
    start: float  # monotonic moment of offset 0
    timeout: float  # feedback timeout for this scene
    groups: dict[str, list[Cue]] = field(default_factory=dict)  # job id -> cues
    jobs: set[str] = field(default_factory=set)  # every job scheduled for this run
    end_reached: bool = False
    next_seq: int = 0  # the `seq` the next record reported gets


class Player:
    """Plays one scene at a time on APScheduler; `stop()` puts the room in its safe state."""

    def __init__(self, client: Publisher, tracker: Tracker, media: MediaBackend,
                 config: Config, *, clock: Callable[[], float] = time.monotonic,
                 early_wake: float = EARLY_WAKE, start_delay: float = START_DELAY,
                 misfire_grace: int = MISFIRE_GRACE, pool_size: int = POOL_SIZE) -> None:
        self._client = client
        self._tracker = tracker
        self._media = media
        self._config = config
        self._clock = clock
        self._early = early_wake
        self._start_delay = start_delay
        self._lock = threading.RLock()
        self._generation = 0
        self._live: _Live | None = None
        self._queue: list[tuple[Scene, SceneRun]] = []
        self._idle = threading.Event()
        self._idle.set()
        self._listeners: list[Listener] = []
        self._record_listeners: list[RecordListener] = []
        self._events: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._events_thread = threading.Thread(target=self._run_events, name="player-events",
                                               daemon=True)
        self._events_thread.start()
        # APScheduler logs every job run at INFO, which would drown the cue lines.
        aps_log = logging.getLogger("apscheduler")
        if aps_log.level == logging.NOTSET:
            aps_log.setLevel(logging.WARNING)
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(pool_size)},
            job_defaults={"misfire_grace_time": misfire_grace, "coalesce": False,
                          "max_instances": 1},
            timezone=timezone.utc,
        )
        self._scheduler.add_listener(self._on_job_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR)
        self._scheduler.start()
        media.add_listener(self._on_media_event)

    # -- public ----------------------------------------------------------------------

    @property
    def current_run(self) -> SceneRun | None:
        with self._lock:
            return self._live.run if self._live else None

    def add_listener(self, cb: Listener) -> None:
        """`cb(event, run)` for "started", "action", "feedback", "finished", on one thread."""
        self._listeners.append(cb)

    def add_record_listener(self, cb: RecordListener) -> None:
        """`cb(event, run, record)` for every "action" and "feedback" event, in order."""
        self._record_listeners.append(cb)

    def play(self, scene: Scene, trigger: str = "manual") -> SceneRun | None:
        """Start `scene`; while another runs, the new scene's `mode` decides. None: refused."""
        with self._lock:
            run = self._new_run(scene, trigger)
            if self._live is not None:
                if scene.mode is Mode.SINGLE:
                    log.warning("%s not started: %s is still running (mode single)",
                                scene.id, self._live.scene.id)
                    return None
                if scene.mode is Mode.QUEUE:
                    self._queue.append((scene, run))
                    log.info("%s queued after %s (mode queue)", scene.id, self._live.scene.id)
                    return run
                log.info("%s restarts: stopping %s first (mode restart)",
                         scene.id, self._live.scene.id)
                self._stop_live(self._live, Outcome.STOPPED, keep_queue=False)
            self._start(scene, run)
            return run

    def stop(self, outcome: Outcome = Outcome.STOPPED) -> None:
        """Cancel every pending cue, then run the scene's on_stop and the room's safe_state."""
        with self._lock:
            self._queue.clear()
            if self._live is not None:
                self._stop_live(self._live, outcome, keep_queue=False)

    def panic(self) -> None:
        """Stop with Outcome.PANIC; the room's safe state is applied even when idle."""
        with self._lock:
            self._queue.clear()
            if self._live is not None:
                self._stop_live(self._live, Outcome.PANIC, keep_queue=False)
                return
            log.warning("PANIC: applying the room's safe state")
            self._media.stop_all()
            for action in self._config.safe_state:
                self._send_safe(action)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing plays or is queued; False when `timeout` passed first."""
        return self._idle.wait(timeout)

    def state(self, *, records: bool = True) -> PlayerSnapshot | None:
        """What plays now (None: nothing), for the dashboard, the retained state, the terminal.

        Only the list is taken under the lock, so a cue due meanwhile is not held up by
        the copying; `records=False` leaves the (long) record list out.
        """
        with self._lock:
            live = self._live
            if live is None:
                return None
            run, scene = live.run, live.scene
            elapsed = max(0.0, self._clock() - live.start)
            snapshot = list(run.records)
        rnd = int(elapsed // scene.duration) if scene.duration > 0 else 0
        if scene.rounds is not None:
            rnd = min(rnd, scene.rounds - 1)
        nxt = next((r for r in snapshot if r.delivery is None), None)
        return PlayerSnapshot(
            scene=scene.id,
            name=scene.name,
            run_id=run.run_id,
            started_at=run.started_at,
            elapsed=round(elapsed, 3),
            duration=run.duration,
            round=rnd,
            next_cue=None if nxt is None else NextCue(
                at=nxt.planned, due_in=round(max(0.0, nxt.planned - elapsed), 3),
                topic=nxt.topic, message=nxt.message, label=nxt.label),
            records=tuple(copy.copy(r) for r in snapshot) if records else (),
        )

    def shutdown(self) -> None:
        """Stop a running scene into its safe state (Outcome.SHUTDOWN) and end the threads."""
        self.stop(Outcome.SHUTDOWN)
        self._media.remove_listener(self._on_media_event)
        self._scheduler.shutdown(wait=False)
        self._events.put(None)
        if self._events_thread is not threading.current_thread():
            self._events_thread.join(timeout=5.0)

    # -- starting and scheduling -----------------------------------------------------

    def _new_run(self, scene: Scene, trigger: str) -> SceneRun:
        total = scene.duration * scene.rounds if scene.rounds else scene.duration
        return SceneRun(run_id=uuid.uuid4().hex[:12], scene_id=scene.id,
                        scene_name=scene.name, trigger=trigger, started_at=0.0,
                        duration=total)

    def _start(self, scene: Scene, run: SceneRun) -> None:
        # Opening media can take a moment: it happens before the clock starts.
        for action in scene.actions:
            if action.is_media and not action.is_stop:
                self._media.prepare(action.topic, action.message)
        self._tracker.enable_feedback_tracking()
        self._generation += 1
        start = self._clock() + self._start_delay
        run.started_at = time.time() + self._start_delay
        timeout = (scene.feedback_timeout if scene.feedback_timeout is not None
                   else self._config.feedback_timeout)
        live = _Live(run, scene, self._generation, start, timeout)
        self._live = live
        self._idle.clear()
        rounds = "forever" if scene.rounds is None else f"{scene.rounds} round(s)"
        log.info("▶ %s (%s): %d cue(s), %.3fs, %s, trigger %s", scene.id, scene.name,
                 len(scene.actions), scene.duration, rounds, run.trigger)
        self._notify("started", run)
        self._schedule_round(live, 0)

    def _wall(self, moment: float) -> datetime:
        """The wall-clock datetime APScheduler needs for a monotonic moment."""
        return datetime.fromtimestamp(time.time() + (moment - self._clock()), tz=timezone.utc)

    def _add_job(self, live: _Live, job_id: str, moment: float,
                 func: Callable[..., None], *args: Any, control: bool = False) -> None:
        # Control jobs (next round, end, close) run however late: a run must end.
        extra: dict[str, Any] = {"misfire_grace_time": None} if control else {}
        live.jobs.add(job_id)
        self._scheduler.add_job(func, "date", run_date=self._wall(moment), id=job_id,
                                args=[live, *args], **extra)

    def _schedule_round(self, live: _Live, rnd: int) -> None:
        with self._lock:
            if live is not self._live:
                return
            scene, run = live.scene, live.run
            round_start = live.start + rnd * scene.duration
            cues: list[Cue] = []
            for i, action in enumerate(scene.actions):
                rec = ActionRecord(index=i, round=rnd,
                                   planned=rnd * scene.duration + action.at,
                                   topic=action.topic, message=action.message,
                                   route=action.route.value, label=action.label)
                cues.append((action, rec))
            if scene.rounds is None and rnd >= KEEP_ROUNDS:
                # A scene looping all day keeps only its recent rounds' records.
                oldest = rnd - KEEP_ROUNDS
                run.records[:] = [r for r in run.records if r.round > oldest
                                  or r.delivery is None
                                  or r.feedback is FeedbackStatus.PENDING]
            run.records.extend(rec for _, rec in cues)
            # Actions at one offset fire together, in file order, from one job.
            for g, (at, group) in enumerate(itertools.groupby(cues, key=lambda c: c[0].at)):
                job_id = f"{run.run_id}:{rnd}:{g}"
                live.groups[job_id] = list(group)
                self._add_job(live, job_id, round_start + at - self._early, self._fire,
                              job_id, round_start + at)
            log.debug("%s round %d: %d cue(s) scheduled", scene.id, rnd, len(cues))
            round_end = round_start + scene.duration
            more = scene.rounds is None or rnd + 1 < scene.rounds
            if more and scene.duration >= MIN_ROUND:
                lead = min(ROUND_LEAD, scene.duration / 2)
                self._add_job(live, f"{run.run_id}:{rnd + 1}:round", round_end - lead,
                              self._schedule_round, rnd + 1, control=True)
            else:
                if more:
                    log.warning("%s lasts %.3fs, too short to loop: it plays once",
                                scene.id, scene.duration)
                self._add_job(live, f"{run.run_id}:end", round_end, self._end_reached,
                              control=True)

    # -- firing ------------------------------------------------------------------------

    def _fire(self, live: _Live, job_id: str, moment: float) -> None:
        if live.generation != self._generation:
            return  # the run was stopped after this job was handed to the pool
        remaining = moment - self._clock()
        if remaining > SPIN_WINDOW:
            time.sleep(remaining - SPIN_WINDOW)
        while self._clock() < moment:
            pass
        with self._lock:
            # Checked again under the lock: stop() may have run while this job waited.
            if live.generation != self._generation:
                return
            cues = live.groups.pop(job_id, [])
            for action, rec in cues:
                # Taken once the publish is handed to the socket: what a subscriber sees.
                delivery = self._send(live, action, rec)
                rec.actual = self._clock() - live.start
                rec.delivery = delivery
            if cues and (late := cues[0][1].lateness or 0.0) > LATE_WARNING:
                log.warning("cue at %.3fs fired %.0f ms late (machine busy?)",
                            cues[0][1].planned, late * 1000)
            for _, rec in cues:
                self._report(live, rec)
            unsent = next((a for a, rec in cues if a.feedback is FeedbackPolicy.REQUIRED
                           and rec.undelivered), None)
            if unsent is not None:
                # Never sent can never be confirmed: what follows must not run without it.
                log.error("required command %s = %s was not sent: stopping %s into its "
                          "safe state", unsent.topic, unsent.message, live.scene.id)
                self._queue.clear()
                self._stop_live(live, Outcome.ABORTED, keep_queue=False)
                return
            self._check_done(live)

    def _send(self, live: _Live, action: Action, rec: ActionRecord) -> Delivery:
        """Publish or start media; never blocks, never raises."""
        try:
            delivery = self._deliver(action)
            if delivery is Delivery.SENT and action.feedback is not FeedbackPolicy.NONE:
                # Set before tracking: an early answer may be reported at once.
                rec.feedback = FeedbackStatus.PENDING
                command_id = self._tracker.track_published_message(
                    action.topic, action.message, feedback=action.feedback,
                    timeout=live.timeout, feedback_topic=action.feedback_topic,
                    on_result=lambda res: self._post(
                        lambda: self._on_feedback(live, action, rec, res)),
                )
                if command_id is None and rec.feedback is FeedbackStatus.PENDING:
                    rec.feedback = FeedbackStatus.NONE
            return delivery
        except Exception as e:  # a bug in a backend must not cost the other cues
            log.exception("%s = %s could not be sent", action.topic, action.message)
            rec.error = str(e)
            return Delivery.FAILED

    def _deliver(self, action: Action) -> Delivery:
        """Media starts (or stops) here; everything else is published."""
        if action.is_media:
            if action.is_stop:
                return self._media.stop(action.topic)
            return self._media.play(action.topic, action.message, action.volume)
        return self._client.publish(action.topic, action.message, action.qos, action.retain)

    def _send_safe(self, action: Action) -> Delivery:
        """A safe-state command: its answer is not reported; one failing must not stop the rest."""
        try:
            delivery = self._deliver(action)
            if delivery is Delivery.SENT and action.feedback is not FeedbackPolicy.NONE:
                # Not reported, but its answer must not confirm a later command.
                self._tracker.expect_stray_answer(action.topic,
                                                  feedback_topic=action.feedback_topic)
            return delivery
        except Exception:
            log.exception("safe state %s = %s could not be sent", action.topic, action.message)
            return Delivery.FAILED

    # -- ending --------------------------------------------------------------------------

    def _end_reached(self, live: _Live) -> None:
        with self._lock:
            if live is not self._live:
                return
            live.end_reached = True
            # Answers may still come in for the last cues; then the run is closed anyway.
            self._add_job(live, f"{live.run.run_id}:close",
                          self._clock() + live.timeout + FEEDBACK_GRACE, self._close,
                          control=True)
            self._check_done(live)

    def _close(self, live: _Live) -> None:
        with self._lock:
            if live is not self._live:
                return
            for rec in live.run.records:
                if rec.feedback is FeedbackStatus.PENDING:
                    rec.feedback = FeedbackStatus.TIMEOUT
            self._finish(live, self._outcome(live.run))

    def _check_done(self, live: _Live) -> None:
        if live is not self._live or not live.end_reached:
            return
        if any(r.delivery is None or r.feedback is FeedbackStatus.PENDING
               for r in live.run.records):
            return
        self._finish(live, self._outcome(live.run))

    @staticmethod
    def _outcome(run: SceneRun) -> Outcome:
        return Outcome.FEEDBACK_FAILED if run.failures else Outcome.COMPLETED

    def _stop_live(self, live: _Live, outcome: Outcome, *, keep_queue: bool) -> None:
        """Cancel what has not fired, then the safe state; the caller holds the lock."""
        self._generation += 1  # jobs already in the pool see this and do nothing
        self._remove_jobs(live)
        elapsed = self._clock() - live.start
        for rec in live.run.records:
            if rec.delivery is None:
                rec.delivery = Delivery.CANCELLED
        log.warning("■ %s stopped at %.3fs (%s): on_stop and safe state", live.scene.id,
                    elapsed, outcome.value)
        self._media.stop_all()
        rnd = max((r.round for r in live.run.records), default=0)
        for source, actions in (("on_stop", live.scene.on_stop),
                                ("safe_state", self._config.safe_state)):
            for action in actions:
                rec = ActionRecord(index=-1, round=rnd, planned=elapsed, topic=action.topic,
                                   message=action.message, route=action.route.value,
                                   label=action.label or source)
                rec.actual = self._clock() - live.start
                rec.delivery = self._send_safe(action)
                live.run.records.append(rec)
                self._report(live, rec)
        self._finish(live, outcome, keep_queue=keep_queue)

    def _remove_jobs(self, live: _Live) -> None:
        for job_id in live.jobs:
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(job_id)
        live.jobs.clear()
        live.groups.clear()

    def _finish(self, live: _Live, outcome: Outcome, *, keep_queue: bool = True) -> None:
        """Close the run and start the next queued scene; the caller holds the lock."""
        self._generation += 1
        self._remove_jobs(live)
        self._tracker.disable_feedback_tracking()
        run = live.run
        run.outcome = outcome
        run.ended_at = time.time()
        for rec in run.records:  # cancelled ones were never reported: placed after the rest
            if rec.seq < 0 and (rec.delivery is not None or rec.actual is not None):
                self._place(live, rec)
        self._live = None
        fails = len(run.failures)
        log.info("%s %s: %s, %d cue(s), %d failure(s)", "✔" if not fails else "✖",
                 run.scene_id, outcome.value, len(run.records), fails)
        self._notify("finished", run)
        if keep_queue and self._queue:
            scene, nxt = self._queue.pop(0)
            self._start(scene, nxt)
            return
        self._idle.set()

    # -- callbacks from other threads ------------------------------------------------------

    def _on_feedback(self, live: _Live, action: Action, rec: ActionRecord,
                     res: FeedbackResult) -> None:
        with self._lock:
            if rec.feedback is not FeedbackStatus.PENDING:
                return  # the run was closed meanwhile
            rec.feedback = res.status
            rec.feedback_latency = res.latency
            self._notify("feedback", live.run, rec)
            required = action.feedback is FeedbackPolicy.REQUIRED
            if res.status.failed and required and live is self._live:
                log.error("required feedback for %s = %s is %s: stopping %s into its "
                          "safe state", action.topic, action.message, res.status.value,
                          live.scene.id)
                self._queue.clear()  # the room is in its safe state: nothing follows
                self._stop_live(live, Outcome.ABORTED, keep_queue=False)
                return
            self._check_done(live)

    def _on_media_event(self, topic: str, filename: str, event: str) -> None:
        if event != "error":
            return

        def mark() -> None:
            with self._lock:
                live = self._live
                if live is None:
                    return
                for rec in reversed(live.run.records):
                    if rec.topic == topic and rec.message == filename \
                            and rec.delivery is Delivery.PLAYED:
                        rec.delivery = Delivery.FAILED
                        rec.error = "libvlc could not play it"
                        self._report(live, rec)
                        return

        self._post(mark)

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        """Runs on the scheduler's thread: a late or failed job is logged, never silent."""
        if event.code == EVENT_JOB_ERROR:
            log.error("cue job %s failed: %r", event.job_id, event.exception)
            return
        with self._lock:
            live = self._live
            cues = live.groups.pop(event.job_id, None) if live else None
            if live is None or cues is None:
                log.error("scheduled job %s missed its time (%s)", event.job_id,
                          event.scheduled_run_time)
                return
            for _, rec in cues:
                rec.delivery = Delivery.NOT_SENT
                rec.error = "missed its moment: the machine was too busy"
                self._report(live, rec)
            log.error("%d cue(s) at %.3fs missed their moment (machine too busy); "
                      "not sent", len(cues), cues[0][1].planned if cues else 0.0)
            self._check_done(live)

    # -- the events thread ----------------------------------------------------------------

    def _post(self, task: Callable[[], None]) -> None:
        self._events.put(task)

    @staticmethod
    def _place(live: _Live, rec: ActionRecord) -> None:
        """Give a record its `seq` once, in the order records are reported; under the lock."""
        if rec.seq < 0:
            rec.seq = live.next_seq
            live.next_seq += 1

    def _report(self, live: _Live, rec: ActionRecord) -> None:
        """An "action" event for `rec`; the first one places it. The caller holds the lock."""
        self._place(live, rec)
        self._notify("action", live.run, rec)

    def _notify(self, event: str, run: SceneRun, rec: ActionRecord | None = None) -> None:
        def call() -> None:
            for cb in list(self._listeners):
                cb(event, run)
            if rec is not None:
                for rcb in list(self._record_listeners):
                    rcb(event, run, rec)
        self._post(call)

    def _run_events(self) -> None:
        while True:
            task = self._events.get()
            if task is None:
                return
            try:
                task()
            except Exception:
                log.exception("player listener failed")
