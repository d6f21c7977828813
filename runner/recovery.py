"""What `runner serve` sends first thing at start: the room back into its safe state.

A crash (kill -9, power cut) skips the scene's on_stop and the room's safe state: steam
stays on, a motor runs. The history shows which runs never ended; their scenes' on_stop
and then the safe state are sent before anything else starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runner.model import Action, Config, SafeStateAtStart, Scene


@dataclass(frozen=True)
class StartRecovery:
    """The commands to send at start, each with where it came from, and why."""

    actions: tuple[tuple[str, Action], ...]  # (source, action): "on_stop of X" / "safe_state"
    reason: str
    missing: tuple[str, ...] = ()  # crashed scenes no longer loaded: their on_stop is unknown


def plan_recovery(config: Config, unfinished: Sequence[str],
                  scenes: Mapping[str, Scene]) -> StartRecovery | None:
    """The recovery for the `safe_state_at_start` policy; None when nothing is to be sent."""
    policy = config.safe_state_at_start
    if policy is SafeStateAtStart.NEVER:
        return None
    if not unfinished and policy is SafeStateAtStart.AFTER_CRASH:
        return None
    crashed = list(dict.fromkeys(unfinished))  # in order, each scene once
    actions: list[tuple[str, Action]] = []
    for scene_id in crashed:
        scene = scenes.get(scene_id)
        if scene is not None:
            actions.extend((f"on_stop of {scene_id}", a) for a in scene.on_stop)
    actions.extend(("safe_state", a) for a in config.safe_state)
    if crashed:
        reason = (f"the history shows {', '.join(crashed)} never ended (the service stopped "
                  "hard: crash, kill -9 or power cut)")
    else:
        reason = "safe_state_at_start: always"
    missing = tuple(s for s in crashed if s not in scenes)
    return StartRecovery(actions=tuple(actions), reason=reason, missing=missing)
