"""What every command shares: its config (--config, ./runner.yaml or defaults), diagnostics."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from runner.configfile import default_config, load_config
from runner.errors import Diagnostic, RunnerError
from runner.logtime import use_zone, zone_named
from runner.model import Config

DEFAULT_CONFIG = "runner.yaml"


def config_path_from_args(args: argparse.Namespace) -> Path | None:
    """`--config FILE`, else `./runner.yaml` when present, else None."""
    given = getattr(args, "config", None)
    if given:
        path = Path(given)
        if not path.is_file():
            raise RunnerError(f"{given}: no such config file; check the path, or leave "
                              "--config out to use ./runner.yaml or the defaults")
        return path
    local = Path.cwd() / DEFAULT_CONFIG
    return local if local.is_file() else None


def config_from_args(args: argparse.Namespace) -> Config:
    """The config the command runs with, `--broker HOST[:PORT]` applied on top.

    Raises RunnerError (ValidationFailed for a bad file) with a sentence for people.
    """
    path = config_path_from_args(args)
    config = load_config(path) if path is not None else default_config()
    broker = getattr(args, "broker", None)
    if broker:
        host, port = parse_broker(broker, default_port=config.broker.port)
        config = dataclasses.replace(
            config, broker=dataclasses.replace(config.broker, host=host, port=port))
    use_zone(zone_named(config.timezone))  # log lines on the room's clock, as the dashboard
    return config


def parse_broker(text: str, default_port: int = 1883) -> tuple[str, int]:
    """`host`, `host:port`, `[::1]:port` → (host, port)."""
    try:
        parts = urlsplit(f"//{text.strip()}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
        bad_port = True
    else:
        bad_port = False
    if not host or bad_port or parts.path or parts.username or any(c.isspace() for c in host):
        raise RunnerError(f"--broker {text!r}: give HOST or HOST:PORT, e.g. "
                          "--broker 127.0.0.1:1883 (port 1-65535)")
    return host, port or default_port


def print_diagnostics(diagnostics: Iterable[Diagnostic], *, stream: TextIO | None = None,
                      ) -> None:
    """Each diagnostic on its own line: `file:line:col: error: $.path: message`."""
    out = stream or sys.stdout
    for d in diagnostics:
        out.write(d.format() + "\n")
