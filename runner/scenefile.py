"""Scene files → `Scene` models: load, check (schema and semantics), build; find scenes by id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner import checks, schema
from runner.errors import Diagnostic, Severity, UnknownSceneError, ValidationFailed
from runner.model import Action, FeedbackPolicy, Mode, Scene
from runner.yamlload import Document, JsonPath, load_file

SCENE_SUFFIXES = (".yaml", ".yml")
NOT_SCENES = ("runner.yaml", "secrets.yaml")  # a room folder may hold its config beside scenes


def check_scene(path: Path, *, default_room: str = "room1", media_dir: Path | None = None,
                ) -> tuple[Scene | None, list[Diagnostic]]:
    """The scene (None when it has errors) and every diagnostic, warnings included."""
    try:
        doc = load_file(path, partial=True)
    except ValidationFailed as e:
        return None, e.diagnostics
    return check_document(doc, path, default_room=default_room, media_dir=media_dir)


def check_document(doc: Document, path: Path, *, default_room: str = "room1",
                   media_dir: Path | None = None) -> tuple[Scene | None, list[Diagnostic]]:
    """Check an already loaded scene document; see `check_scene`."""
    diagnostics = schema.check(doc, schema.SCENE)
    if isinstance(doc.value, dict):
        diagnostics += checks.check_timeline(doc)
        diagnostics += checks.check_actions(doc, "actions", media_dir)
        diagnostics += checks.check_actions(doc, "on_stop", media_dir)
    diagnostics = doc.with_problems(diagnostics)
    diagnostics.sort(key=lambda d: (d.line, d.col))
    if any(d.severity is Severity.ERROR for d in diagnostics):
        return None, diagnostics
    return build_scene(doc, path, default_room), diagnostics


def load_scene(path: Path, *, default_room: str = "room1", media_dir: Path | None = None,
               ) -> Scene:
    """The scene in `path`; ValidationFailed lists every error (warnings do not raise)."""
    scene, diagnostics = check_scene(path, default_room=default_room, media_dir=media_dir)
    if scene is None:
        raise ValidationFailed([d for d in diagnostics if d.severity is Severity.ERROR])
    return scene


def build_scene(doc: Document, path: Path, default_room: str) -> Scene:
    """Build the model from a document that passed `check_document` without errors."""
    data: dict[str, Any] = doc.value
    actions = tuple(sorted(
        (build_action(doc, ("actions", i)) for i in range(len(data["actions"]))),
        key=lambda a: a.at,
    ))
    on_stop = tuple(build_action(doc, ("on_stop", i)) for i in range(len(data.get("on_stop", []))))
    duration = (checks.parse_offset(data["duration"]) if "duration" in data
                else max(a.at for a in actions))
    loop = data.get("loop", False)
    rounds = None if loop is True else 1 if loop is False else int(loop)
    return Scene(
        id=path.stem,
        name=data.get("name", path.stem),
        room=data.get("room", default_room),
        actions=actions,
        duration=duration,
        mode=Mode(data.get("mode", Mode.SINGLE.value)),
        feedback_timeout=(None if data.get("feedback_timeout") is None
                          else float(data["feedback_timeout"])),
        rounds=rounds,
        on_stop=on_stop,
        source=path,
    )


def build_action(doc: Document, path: JsonPath) -> Action:
    """One action (or safe-state item, which has no `at`) from a checked document."""
    item: Any = doc.value
    for part in path:
        item = item[part]
    message = doc.text((*path, "message"))
    return Action(
        at=checks.parse_offset(item["at"]) if "at" in item else 0.0,
        topic=item["topic"],
        message=message if message is not None else str(item["message"]),
        feedback=FeedbackPolicy(item.get("feedback", FeedbackPolicy.EXPECT.value)),
        qos=int(item.get("qos", 1)),  # JSON Schema counts 1.0 as the integer 1
        retain=item.get("retain", False),
        volume=None if item.get("volume") is None else int(item["volume"]),
        feedback_topic=item.get("feedback_topic"),
        label=item.get("label"),
        where=doc.where(path),
    )


def scene_files(folder: Path) -> list[Path]:
    """Every *.yaml / *.yml directly in `folder`, sorted by name; config files are not scenes."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix in SCENE_SUFFIXES and p.is_file() and not p.name.startswith(".")
                  and p.name not in NOT_SCENES)


def load_scenes(scenes_dir: Path, *, default_room: str = "room1",
                media_dir: Path | None = None) -> dict[str, Scene]:
    """Every scene in `scenes_dir` by id; ValidationFailed lists every error of every file."""
    if not scenes_dir.is_dir():
        raise ValidationFailed([Diagnostic(
            str(scenes_dir), 0, 0,
            "the scenes folder does not exist; create it or set scenes_dir in runner.yaml")])
    scenes: dict[str, Scene] = {}
    errors: list[Diagnostic] = []
    for path in scene_files(scenes_dir):
        if path.stem in scenes:
            errors.append(Diagnostic(str(path), 0, 0, f"scene id {path.stem!r} is used twice "
                                     f"({scenes[path.stem].source}); rename one of the files"))
            continue
        scene, diagnostics = check_scene(path, default_room=default_room, media_dir=media_dir)
        errors += [d for d in diagnostics if d.severity is Severity.ERROR]
        if scene is not None:
            scenes[scene.id] = scene
    if errors:
        raise ValidationFailed(errors)
    return scenes


def scene_ids(scenes_dir: Path) -> list[str]:
    """Ids of the scene files in `scenes_dir` (empty when it does not exist)."""
    return [p.stem for p in scene_files(scenes_dir)] if scenes_dir.is_dir() else []


def resolve_scene_ref(ref: str, scenes_dir: Path) -> Path:
    """A scene id (`room1_intro`) in `scenes_dir`, or a path to a scene file."""
    as_path = Path(ref)
    if as_path.suffix in SCENE_SUFFIXES or "/" in ref or "\\" in ref:
        if as_path.is_file():
            return as_path
        if as_path.name == ref and (scenes_dir / ref).is_file():  # `room1_intro.yaml`
            return scenes_dir / ref
        raise UnknownSceneError(f"{ref}: no such scene file; check the path, or give a scene id "
                          f"from {scenes_dir}")
    for suffix in SCENE_SUFFIXES:
        candidate = scenes_dir / f"{ref}{suffix}"
        if candidate.is_file():
            return candidate
    ids = scene_ids(scenes_dir)
    if not ids:
        raise UnknownSceneError(f"no scene {ref!r}: {scenes_dir} has no scene files "
                          "(set scenes_dir in runner.yaml or pass --config)")
    hint = schema.did_you_mean(ref, ids)
    listing = "" if hint else f"; scenes there: {', '.join(ids[:20])}"
    raise UnknownSceneError(f"no scene {ref!r} in {scenes_dir}{hint}{listing}")
