"""`runner validate`'s work: check scene files, folders and a config; report as text or JSON.

Parse, check and report are separate steps: every file is checked and every problem
collected before anything is printed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from runner import checks
from runner.configfile import check_config, folders_of
from runner.errors import Diagnostic, Severity, ValidationFailed
from runner.model import Config
from runner.scenefile import check_document, scene_files
from runner.yamlload import load_file

CONFIG_NAME = "runner.yaml"


@dataclass
class Report:
    """Which files were checked and what was found in them."""

    files: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return len(self.diagnostics) - self.errors

    @property
    def valid(self) -> bool:
        return self.errors == 0

    def strict(self) -> Report:
        """The same report with every warning turned into an error."""
        return Report(self.files, [dataclasses.replace(d, severity=Severity.ERROR)
                                   for d in self.diagnostics])


def validate(paths: Iterable[Path], *, config_path: Path | None = None) -> Report:
    """Check the config (when given) and every scene in `paths`; with no paths, its scenes_dir."""
    report = Report()
    config: Config | None = None
    targets = list(paths)
    if config_path is None:  # `runner validate runner.yaml` means the config
        named = [p for p in targets if p.name == CONFIG_NAME and p.is_file()]
        config_path = named[0] if named else None
    if config_path is not None:
        targets = [p for p in targets
                   if not (p.is_file() and p.resolve() == config_path.resolve())]
        config, found = check_config(config_path)
        report.files.append(str(config_path))
        report.diagnostics += found
        if config is None:  # still check the scenes, against what can be read of it
            room, scenes_dir, media_dir = folders_of(config_path)
            config = Config(room=room, scenes_dir=scenes_dir, media_dir=media_dir)
    if not targets and config is not None:
        targets = [config.scenes_dir]
    seen: set[Path] = set()
    for target in targets:
        for scene_path in _expand(target, report):
            key = scene_path.resolve()
            if key not in seen:
                seen.add(key)
                report.files.append(str(scene_path))
                report.diagnostics += _check_scene_file(scene_path, config)
    return report


def _expand(target: Path, report: Report) -> list[Path]:
    if target.is_dir():
        found = scene_files(target)
        if not found:
            report.diagnostics.append(Diagnostic(
                str(target), 0, 0,
                "this folder has no scene files (*.yaml, *.yml); check the folder name"))
        ids: dict[str, Path] = {}
        for path in found:
            if path.stem in ids:
                report.diagnostics.append(Diagnostic(
                    str(path), 0, 0, f"scene id {path.stem!r} is used twice (also "
                    f"{ids[path.stem].name}); rename or remove one of the files"))
            ids.setdefault(path.stem, path)
        return found
    if not target.exists():
        report.diagnostics.append(Diagnostic(
            str(target), 0, 0, "no such file or folder; check the path (it is relative "
            "to the folder you run runner in)"))
        return []
    return [target]


def _check_scene_file(path: Path, config: Config | None) -> list[Diagnostic]:
    try:
        doc = load_file(path, partial=True)
    except ValidationFailed as e:
        return e.diagnostics
    _, found = check_document(
        doc, path,
        default_room=config.room if config else "room1",
        media_dir=config.media_dir if config else None,
    )
    if config is not None and isinstance(doc.value, dict):
        if config.devices:
            found += checks.check_devices(doc, config.devices)
        room = doc.value.get("room")
        if isinstance(room, str) and room and room != config.room:
            found.append(doc.diagnostic(
                ("room",), f"this scene is for room {room!r}, but the config is for room "
                f"{config.room!r}; fix the room, or move the scene to that room's scenes "
                "folder", severity=Severity.WARNING))
    return sorted(found, key=lambda d: (d.line, d.col))


def write_text(report: Report, out: TextIO) -> None:
    """One `file:line:col: severity: $.path: message` line each, then a summary line."""
    for d in report.diagnostics:
        out.write(d.format() + "\n")
    files = len(report.files)
    checked = f"{files} file{'s' if files != 1 else ''} checked"
    if not report.diagnostics:
        out.write(f"{checked}: all valid\n")
        return
    parts = [f"{report.errors} error{'s' if report.errors != 1 else ''}"]
    if report.warnings:
        parts.append(f"{report.warnings} warning{'s' if report.warnings != 1 else ''}")
    out.write(f"{checked}: {', '.join(parts)}\n")


def write_json(report: Report, out: TextIO) -> None:
    """A JSON object for tools: valid, counts, files, and every diagnostic."""
    json.dump({
        "valid": report.valid,
        "errors": report.errors,
        "warnings": report.warnings,
        "files": report.files,
        "diagnostics": [d.to_json() for d in report.diagnostics],
    }, out, indent=2, ensure_ascii=False)
    out.write("\n")
