"""`runner validate [PATH...] [--config FILE]`: check scenes and a config, report every problem."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runner.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from runner.commands._common import config_path_from_args
from runner.errors import RunnerError
from runner.validate import validate, write_json, write_text


def run(args: argparse.Namespace) -> int:
    try:
        config_path = config_path_from_args(args)
    except RunnerError as e:
        print(f"runner validate: {e}", file=sys.stderr)
        return EXIT_ERROR
    paths = [Path(p) for p in args.paths]
    if not paths and config_path is None:
        print("runner validate: nothing to check; give scene files or folders "
              "(runner validate scenes/) or a config (--config runner.yaml)", file=sys.stderr)
        return EXIT_USAGE
    report = validate(paths, config_path=config_path)
    if args.strict:
        report = report.strict()
    if args.format == "json":
        write_json(report, sys.stdout)
    else:
        write_text(report, sys.stdout)
    return EXIT_OK if report.valid else EXIT_ERROR
