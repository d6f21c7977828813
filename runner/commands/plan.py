"""`runner plan SCENE`: a scene's timeline as a table, without touching MQTT or media."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from runner.checks import format_offset
from runner.cli import EXIT_OK
from runner.commands._common import config_from_args
from runner.model import Action, FeedbackPolicy, Scene
from runner.report import aligned
from runner.scenefile import load_scene, resolve_scene_ref

NO_FEEDBACK = "—"  # media plays locally: no device answers


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    path = resolve_scene_ref(args.scene, config.scenes_dir)
    # Without a runner.yaml, media files are checked only if ./media exists.
    media_dir = config.media_dir if config.source or config.media_dir.is_dir() else None
    scene = load_scene(path, default_room=config.room, media_dir=media_dir)
    write_plan(scene, sys.stdout, feedback_timeout=scene.feedback_timeout
               or config.feedback_timeout)
    return EXIT_OK


def _shown(path: Path | None) -> str:
    if path is None:
        return "?"
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _message(action: Action) -> str:
    return action.message if action.message.strip() == action.message and action.message \
        else f'"{action.message}"'


def _feedback(action: Action) -> str:
    if action.is_media:
        return NO_FEEDBACK
    if action.feedback_topic and action.feedback is not FeedbackPolicy.NONE:
        return f"{action.feedback.value} on {action.feedback_topic}"  # not <room>/status
    return action.feedback.value


def write_plan(scene: Scene, out: TextIO, *, feedback_timeout: float) -> None:
    """The header (name, room, mode, length, rounds) and the timeline table."""
    if scene.rounds is None:
        rounds = f"loops forever, a round every {format_offset(scene.duration)}"
    elif scene.rounds == 1:
        rounds = "plays once"
    else:
        rounds = f"plays {scene.rounds} rounds of {format_offset(scene.duration)}"
    out.write(f"{scene.name} ({scene.id}) — {_shown(scene.source)}\n")
    out.write(f"room {scene.room} · mode {scene.mode.value} · duration "
              f"{format_offset(scene.duration)} · {rounds} · feedback timeout "
              f"{feedback_timeout:g} s\n\n")
    header = ("offset", "label", "topic", "message", "route", "feedback")
    long = any(a.at >= 3600 for a in scene.actions)  # one format for the whole column
    rows = [[format_offset(a.at, hours=long), a.label or "", a.topic, _message(a), a.route.value,
             _feedback(a)] for a in scene.actions]
    out.write("\n".join(aligned(header, rows)) + "\n")
    if scene.on_stop:
        out.write("\non stop (safe state):\n")
        rows = [[a.label or "", a.topic, _message(a), a.route.value, _feedback(a)]
                for a in scene.on_stop]
        out.write("\n".join(aligned(header[1:], rows)) + "\n")
