"""`runner validate` against check-jsonschema on the same generated scenes, and CLI cold start.

Generates N scene files of M actions each in a temporary folder, then, in the same run:
  - `runner validate DIR` (schema + line numbers + semantic checks) vs
    `check-jsonschema --schemafile schemas/scene.schema.json FILES...` (schema only);
  - the loader alone over every file, with libyaml's parser and with PyYAML's Python one;
  - cold start of `runner --help` vs `python -c pass` (median of several runs).

    .venv/bin/python bench/validate.py [--files 1000] [--actions 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from runner.yamlload import load_file, load_text  # noqa: E402

SCHEMA = REPO / "schemas" / "scene.schema.json"


def scene_text(index: int, actions: int) -> str:
    lines = [f"name: Generated scene {index}", "room: room1", "mode: single",
             "feedback_timeout: 1.5", "actions:"]
    for i in range(actions):
        at = f'"{i // 60}:{i % 60:02d}.250"' if i % 3 == 0 else str(i + 0.5)
        if i % 10 == 5:
            lines += [f"  - at: {at}", "    topic: room1/audio", "    message: bg.mp3",
                      "    volume: 70"]
        else:
            lines += [f"  - at: {at}", f"    topic: room1/device{i % 7}/cmd",
                      f"    message: {'ON' if i % 2 else 'OFF'}",
                      f"    label: Cue {i}", "    feedback: expect"]
    lines += ["on_stop:", "  - topic: room1/device0/cmd", '    message: "OFF"']
    return "\n".join(lines) + "\n"


def timed(cmd: list[str], cwd: Path) -> tuple[float, int]:
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        print(f"  ! {cmd[0]} exited {result.returncode}: {result.stdout[-500:]}"
              f"{result.stderr[-500:]}", file=sys.stderr)
    return elapsed, result.returncode


def median_run(cmd: list[str], cwd: Path, repeat: int) -> tuple[float, int]:
    runs = [timed(cmd, cwd) for _ in range(repeat)]
    return statistics.median(t for t, _ in runs), max(rc for _, rc in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--actions", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--starts", type=int, default=9, help="cold-start runs")
    args = parser.parse_args()
    check_jsonschema = shutil.which("check-jsonschema", path=str(BIN)) or shutil.which(
        "check-jsonschema")
    if check_jsonschema is None:
        raise SystemExit("check-jsonschema is missing: .venv/bin/pip install -e '.[test]'")

    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        folder = Path(tmp) / "scenes"
        folder.mkdir()
        for i in range(args.files):
            (folder / f"scene_{i:04d}.yaml").write_text(scene_text(i, args.actions),
                                                        encoding="utf-8")
        files = sorted(str(p) for p in folder.iterdir())
        size = sum(os.path.getsize(f) for f in files)
        print(f"{args.files} scene files x {args.actions} actions ({size / 1e6:.1f} MB), "
              f"median of {args.repeat} runs, {os.cpu_count()} CPUs")

        runner_s, runner_rc = median_run(
            [sys.executable, "-m", "runner", "validate", str(folder)], REPO, args.repeat)
        cj_s, cj_rc = median_run(
            [check_jsonschema, "--schemafile", str(SCHEMA), *files], REPO, args.repeat)

        texts = [Path(f).read_text(encoding="utf-8") for f in files]
        started = time.perf_counter()
        for f in files:
            load_file(Path(f))
        libyaml_s = time.perf_counter() - started
        started = time.perf_counter()
        for name, text in zip(files, texts, strict=True):
            load_text(text, name, pure=True)
        pure_s = time.perf_counter() - started

    help_s = statistics.median(
        timed([sys.executable, "-m", "runner", "--help"], REPO)[0] for _ in range(args.starts))
    pass_s = statistics.median(
        timed([sys.executable, "-c", "pass"], REPO)[0] for _ in range(args.starts))

    rows = [
        ("runner validate DIR (schema, lines, semantic checks)", runner_s, runner_rc),
        ("check-jsonschema --schemafile (schema only)", cj_s, cj_rc),
        ("loader only, libyaml parser (in process)", libyaml_s, 0),
        ("loader only, PyYAML Python parser (in process)", pure_s, 0),
        (f"runner --help cold start (median of {args.starts})", help_s, 0),
        (f"python -c pass (median of {args.starts})", pass_s, 0),
    ]
    print()
    print("| what | seconds | exit |")
    print("|---|---:|---:|")
    for what, seconds, rc in rows:
        print(f"| {what} | {seconds:.3f} | {rc} |")
    print()
    print(f"runner validate is {cj_s / runner_s:.1f}x faster than check-jsonschema; "
          f"libyaml's parser is {pure_s / libyaml_s:.1f}x faster than the Python one; "
          f"`runner --help` costs {1000 * (help_s - pass_s):.0f} ms over a bare interpreter.")
    return 0 if runner_rc == 0 and cj_rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
