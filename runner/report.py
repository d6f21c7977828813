"""How a scene run is told to people: a cue line, a live status line, the final table, JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from runner.errors import RunnerError
from runner.records import ActionRecord, Delivery, FeedbackStatus, PlayerSnapshot, SceneRun

DASH = "—"


def _ms(seconds: float | None) -> str:
    return DASH if seconds is None else f"{seconds * 1000:+.1f}"


def _secs(seconds: float | None) -> str:
    return DASH if seconds is None else f"{seconds:.3f}"


def _feedback(rec: ActionRecord) -> str:
    if rec.feedback is FeedbackStatus.NONE:
        return DASH
    if rec.feedback_latency is None:
        return str(rec.feedback.value)
    return f"{rec.feedback.value} {rec.feedback_latency:.3f}s"


def _delivery(rec: ActionRecord) -> str:
    return DASH if rec.delivery is None else rec.delivery.value


def cue_line(rec: ActionRecord) -> str:
    """One fired cue: `  2.500  room1/audio = bg.mp3  played (+0.1 ms)`."""
    what = rec.label if rec.label and rec.index < 0 else None
    late = "" if rec.lateness is None or rec.index < 0 else f" ({_ms(rec.lateness)} ms)"
    tag = f"[{what}] " if what else ""
    return (f"{rec.planned:9.3f}  {tag}{rec.topic} = {rec.message}  "
            f"{_delivery(rec)}{late}")


def feedback_line(rec: ActionRecord) -> str:
    return f"{rec.planned:9.3f}  {rec.topic} = {rec.message}  feedback {_feedback(rec)}"


def status_line(state: PlayerSnapshot, width: int = 100) -> str:
    """The live line: scene, elapsed / total, the next cue."""
    line = f"▶ {state.scene}  {state.elapsed:7.2f} / {state.duration:.2f} s"
    nxt = state.next_cue
    if nxt is not None:
        name = nxt.label or f"{nxt.topic} = {nxt.message}"
        line += f"  next: {name} at {nxt.at:.3f}"
    return line[:width]


def table(run: SceneRun) -> str:
    """Every record of the run as an aligned table, then a one-line summary."""
    loops = len({r.round for r in run.records if r.index >= 0}) > 1
    header = ["#", *(["round"] if loops else []), "planned", "actual", "late ms", "topic",
              "message", "route", "delivery", "feedback"]
    rows: list[list[str]] = []
    for rec in run.records:
        rows.append([
            str(rec.index + 1) if rec.index >= 0 else (rec.label or "stop"),
            *([str(rec.round + 1)] if loops else []),
            _secs(rec.planned), _secs(rec.actual),
            _ms(rec.lateness) if rec.index >= 0 else DASH,
            rec.topic, rec.message, rec.route, _delivery(rec), _feedback(rec),
        ])
    return "\n".join([*aligned(header, rows), summary(run)])


def aligned(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell, a dashed line under the header."""
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return lines


def summary(run: SceneRun) -> str:
    cues = [r for r in run.records if r.index >= 0]
    fired = [r for r in cues if r.actual is not None and r.delivery is not Delivery.CANCELLED]
    late = [abs(r.lateness) for r in fired if r.lateness is not None]
    confirmed = sum(r.feedback is FeedbackStatus.OK for r in cues)
    expected = sum(r.feedback is not FeedbackStatus.NONE for r in cues)
    text = (f"{run.scene_id}: {run.outcome.value}; {len(fired)} of {len(cues)} cue(s) fired, "
            f"{confirmed} of {expected} confirmed, {len(run.failures)} failure(s)")
    if late:
        text += f"; max lateness {max(late) * 1000:.1f} ms"
    return text


def write_json(run: SceneRun, path: Path) -> None:
    """The run's records as JSON (`SceneRun.to_json`); RunnerError when it cannot be written."""
    try:
        path.write_text(json.dumps(run.to_json(), indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8")
    except OSError as e:
        raise RunnerError(f"could not write the report to {path}: {e.strerror}; "
                          "choose another --report path") from e
