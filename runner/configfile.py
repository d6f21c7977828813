"""The room config `runner.yaml` → `Config`: secrets and environment, paths, cross-references.

`!secret NAME` reads `secrets.yaml` beside the config, `!env NAME` an environment
variable; both give text. Their values are never put into a diagnostic.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from datetime import timezone
from pathlib import Path
from typing import Any

from runner import checks, schema
from runner.errors import Diagnostic, Severity, ValidationFailed
from runner.model import (
    DEFAULT_KEEP_DAYS,
    BrokerConfig,
    Config,
    DashboardConfig,
    SafeStateAtStart,
    Show,
    TLSConfig,
    Trigger,
    _frozen_devices,
)
from runner.scenefile import build_action, scene_ids
from runner.yamlload import Document, TagError, TagHandler, load_file

SECRETS_FILE = "secrets.yaml"
LOOPBACK_BINDS = ("127.0.0.1", "::1", "localhost")
TLS_FILES = ("ca_file", "certfile", "keyfile")  # an unknown key is the schema's to report
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def default_config(room: str = "room1", base: Path | None = None) -> Config:
    """The config used when there is no runner.yaml: folders under `base` (the cwd)."""
    root = (base or Path.cwd()).resolve()
    return Config(room=room, scenes_dir=root / "scenes", media_dir=root / "media")


def load_config(path: Path) -> Config:
    """The config in `path`; ValidationFailed lists every error (warnings do not raise)."""
    config, diagnostics = check_config(path)
    if config is None:
        raise ValidationFailed([d for d in diagnostics if d.severity is Severity.ERROR])
    return config


def check_config(path: Path) -> tuple[Config | None, list[Diagnostic]]:
    """The config (None when it has errors) and every diagnostic, warnings included."""
    secrets: list[str] = []
    try:
        doc = load_file(path, tags=_tag_handlers(path, secrets), partial=True)
    except ValidationFailed as e:
        return None, e.diagnostics
    diagnostics = schema.check(doc, schema.CONFIG)
    if isinstance(doc.value, dict):
        diagnostics += _semantic_checks(doc, path.parent)
    diagnostics = doc.with_problems(diagnostics)
    diagnostics = [_redact(d, secrets) for d in diagnostics]
    diagnostics.sort(key=lambda d: (d.line, d.col))
    if any(d.severity is Severity.ERROR for d in diagnostics):
        return None, diagnostics
    return build_config(doc, path), diagnostics


def folders_of(path: Path) -> tuple[str, Path, Path]:
    """(room, scenes_dir, media_dir) read leniently from a config that has errors elsewhere.

    `runner validate --config` uses it to check the scenes even when the config is broken.
    """
    base = path.parent.resolve()
    try:
        data = load_file(path, tags={"!secret": str, "!env": str}).value
    except ValidationFailed:
        data = None
    data = data if isinstance(data, dict) else {}

    def text(key: str, default: str) -> str:
        value = data.get(key)
        return value if isinstance(value, str) and value else default

    return (text("room", "room1"), (base / text("scenes_dir", "scenes")).resolve(),
            (base / text("media_dir", "media")).resolve())


def _redact(d: Diagnostic, secrets: list[str]) -> Diagnostic:
    """Messages name values; a secret's value must never be among them."""
    message = d.message
    for value in sorted(secrets, key=len, reverse=True):
        if value:
            message = message.replace(value, "***")
    return d if message == d.message else dataclasses.replace(d, message=message)


def _tag_handlers(path: Path, used: list[str]) -> dict[str, TagHandler]:
    """Handlers for !secret and !env; every value they hand out is appended to `used`."""
    secrets_path = path.parent / SECRETS_FILE
    cache: dict[str, Mapping[str, Any]] = {}

    def secret(name: str) -> str:
        if "secrets" not in cache:
            cache["secrets"] = _load_secrets(secrets_path)
        secrets = cache["secrets"]
        if name not in secrets:
            if not secrets_path.is_file():
                raise TagError(f"secret {name!r} is not set: {secrets_path} does not exist; "
                               f"create it with a line `{name}: ...`")
            raise TagError(f"secret {name!r} is not in {secrets_path}"
                           f"{schema.did_you_mean(name, secrets)}; add a line `{name}: ...`")
        value = secrets[name]
        if isinstance(value, (dict, list)) or value is None:
            raise TagError(f"secret {name!r} in {secrets_path} must be a single value")
        used.append(str(value))
        return str(value)

    def env(name: str) -> str:
        if not _ENV_NAME.match(name):
            raise TagError(f"!env needs a variable name such as MQTT_PASSWORD, not {name!r}")
        value = os.environ.get(name)
        if value is None:
            raise TagError(f"environment variable {name} is not set; set it in the service's "
                           "environment (e.g. systemd Environment=) or use !secret")
        used.append(value)
        return value

    return {"!secret": secret, "!env": env}


def _load_secrets(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        return {}
    try:
        doc = load_file(path)
    except ValidationFailed as e:
        # Only positions and our own sentences are shown; the secrets file's values are not.
        first = e.diagnostics[0]
        raise TagError(f"{SECRETS_FILE} cannot be read ({first.file}:{first.line}: "
                       f"{first.message})") from None
    if not isinstance(doc.value, dict):
        raise TagError(f"{path} must be a mapping of names to values (name: value)")
    # Secrets keep their source text: a password 0172 stays "0172".
    return {k: doc.text((k,)) if doc.text((k,)) is not None else v
            for k, v in doc.value.items()}


def _semantic_checks(doc: Document, base: Path) -> list[Diagnostic]:
    data: dict[str, Any] = doc.value
    media_dir = base / data["media_dir"] if isinstance(data.get("media_dir"), str) \
        and data["media_dir"] else base / "media"
    out = checks.check_actions(doc, "safe_state", media_dir)
    for i, topic in enumerate(_list(data.get("registry"), "status_topics")):
        if isinstance(topic, str) and topic and (p := checks.filter_problem(topic)):
            out.append(doc.diagnostic(("registry", "status_topics", i), p))
    scenes_dir = base / data["scenes_dir"] if isinstance(data.get("scenes_dir"), str) \
        else base / "scenes"
    ids = scene_ids(scenes_dir)
    for key in ("shows", "triggers"):
        for i, item in enumerate(_list(data, key)):
            if not isinstance(item, dict):
                continue
            scene = item.get("scene")
            if isinstance(scene, str) and scene and scene not in ids:
                hint = schema.did_you_mean(scene, ids)
                where = f"in {scenes_dir}" if ids else f"({scenes_dir} has no scene files)"
                out.append(doc.diagnostic((key, i, "scene"),
                                          f"no scene {scene!r} {where}{hint}"))
            if key == "shows" and isinstance(item.get("cron"), str):
                problem = cron_problem(item["cron"])
                if problem:
                    out.append(doc.diagnostic((key, i, "cron"), problem))
            topic = item.get("topic")
            if key == "triggers" and isinstance(topic, str) and topic:
                problem = checks.filter_problem(topic)
                if problem:
                    out.append(doc.diagnostic((key, i, "topic"), problem))
    for device, topics in (data.get("devices") or {}).items() \
            if isinstance(data.get("devices"), dict) else ():
        for i, topic in enumerate(topics if isinstance(topics, list) else []):
            if isinstance(topic, str) and topic and (p := checks.topic_problem(topic)):
                out.append(doc.diagnostic(("devices", device, i), p))
    out += _check_timezone(doc)
    out += _check_dashboard(doc)
    out += _check_tls_files(doc, base)
    return out


def _list(parent: Any, key: str) -> list[Any]:
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, list) else []


def _check_timezone(doc: Document) -> list[Diagnostic]:
    tz = doc.value.get("timezone")
    if not isinstance(tz, str) or not tz:
        return []
    # Only configs that name a time zone pay for loading the zone database.
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones  # noqa: PLC0415

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        hint = schema.did_you_mean(tz, available_timezones())
        return [doc.diagnostic(("timezone",), f"unknown time zone {tz!r}{hint}; "
                                              "use a name such as Europe/Berlin")]
    return []


def _check_dashboard(doc: Document) -> list[Diagnostic]:
    dash = doc.value.get("dashboard")
    if not isinstance(dash, dict):
        return []
    bind = dash.get("bind", LOOPBACK_BINDS[0])
    if isinstance(bind, str) and bind not in LOOPBACK_BINDS and not dash.get("token"):
        return [doc.diagnostic(
            ("dashboard", "bind"),
            f"the dashboard would listen on {bind} without a token, so anyone on that "
            "network could start and stop scenes; set dashboard.token (e.g. !secret "
            "dashboard_token) or bind to 127.0.0.1")]
    return []


def _check_tls_files(doc: Document, base: Path) -> list[Diagnostic]:
    tls = doc.value.get("broker", {}).get("tls") if isinstance(doc.value.get("broker"),
                                                               dict) else None
    if not isinstance(tls, dict):
        return []
    return [
        doc.diagnostic(("broker", "tls", key),
                       f"{key} {value!r} does not exist (paths are relative to runner.yaml)")
        for key, value in tls.items()
        if key in TLS_FILES and isinstance(value, str) and value
        and not (base / value).is_file()
    ]


def cron_problem(expr: str) -> str | None:
    """Why `expr` is not a standard 5-field crontab line, or None.

    The check is the show scheduler's own translation (crontab's 0/7 = Sunday into
    APScheduler), so validate accepts exactly what `runner serve` will run.
    """
    # Imported here, not at CLI start: only configs with cron shows pay for APScheduler.
    from runner.shows import ShowError, cron_trigger  # noqa: PLC0415

    try:
        cron_trigger(expr, timezone.utc)
    except ShowError as e:
        return str(e)
    return None


def _path(base: Path, value: str | None) -> Path | None:
    return None if value is None else (base / value).resolve()


def _keep_days(history: dict[str, Any]) -> float | None:
    """`history.keep_days`: the default when absent; 0 or null keep every run."""
    if "keep_days" not in history:
        return DEFAULT_KEEP_DAYS
    value = history["keep_days"]
    return float(value) if value else None


def build_config(doc: Document, path: Path) -> Config:
    """Build the model from a config document that passed `check_config` without errors."""
    data: dict[str, Any] = doc.value
    base = path.parent.resolve()
    b = data.get("broker", {})
    tls = b.get("tls")
    broker = BrokerConfig(
        host=b.get("host", "127.0.0.1"),
        port=b.get("port", 1883),
        client_id=b.get("client_id", ""),
        username=b.get("username"),
        password=b.get("password"),
        tls=None if tls is None else TLSConfig(
            ca_file=_path(base, tls.get("ca_file")),
            certfile=_path(base, tls.get("certfile")),
            keyfile=_path(base, tls.get("keyfile")),
        ),
        connect_retries=b.get("connect_retries", 5),
        retry_delay=float(b.get("retry_delay", 2.0)),
        reconnect_delay=float(b.get("reconnect_delay", 0.1)),
        keepalive=b.get("keepalive", 30),
    )
    d = data.get("dashboard", {})
    dashboard = DashboardConfig(
        bind=d.get("bind", "127.0.0.1"),
        port=d.get("port", 8080),
        token=d.get("token"),
        enabled=d.get("enabled", True),
        public_reads=d.get("public_reads", False),
        max_connections=d.get("max_connections", 256),
        header_timeout=float(d.get("header_timeout", 10.0)),
    )
    shows = tuple(
        Show(scene=s["scene"], cron=s.get("cron"), time=s.get("time"),
             days=tuple(s.get("days", ())), require_devices=s.get("require_devices", False),
             where=doc.where(("shows", i)))
        for i, s in enumerate(data.get("shows", []))
    )
    triggers = tuple(
        Trigger(topic=t["topic"], scene=t["scene"],
                message=None if "message" not in t else (
                    doc.text(("triggers", i, "message")) or str(t["message"])),
                min_interval=float(t.get("min_interval", 2.0)),
                where=doc.where(("triggers", i)))
        for i, t in enumerate(data.get("triggers", []))
    )
    safe_state = tuple(build_action(doc, ("safe_state", i))
                       for i in range(len(data.get("safe_state", []))))
    return Config(
        room=data["room"],
        broker=broker,
        scenes_dir=(base / data.get("scenes_dir", "scenes")).resolve(),
        media_dir=(base / data.get("media_dir", "media")).resolve(),
        feedback_timeout=float(data.get("feedback", {}).get("timeout", 1.0)),
        status_topics=tuple(data.get("registry", {}).get(
            "status_topics", ("devices/+/status",))),
        devices_max_other=int(data.get("registry", {}).get("devices_max_other", 200)),
        dashboard=dashboard,
        shows=shows,
        triggers=triggers,
        safe_state=safe_state,
        devices=_frozen_devices({k: tuple(v) for k, v in data.get("devices", {}).items()}),
        timezone=data.get("timezone"),
        history_file=_path(base, data.get("history_file")),
        history_keep_days=_keep_days(data.get("history", {})),
        safe_state_at_start=SafeStateAtStart(data.get("safe_state_at_start", "after_crash")),
        source=path.resolve(),
    )
