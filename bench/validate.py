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
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the child, exit status)."""
    cpu = _children_cpu()
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        print(f"  ! {cmd[0]} exited {result.returncode}: {result.stdout[-500:]}"
              f"{result.stderr[-500:]}", file=sys.stderr)
    return elapsed, _children_cpu() - cpu, result.returncode


def median_run(cmd: list[str], cwd: Path, repeat: int) -> tuple[float, float, int]:
    runs = [timed(cmd, cwd) for _ in range(repeat)]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            max(r[2] for r in runs))


def cpu_of(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of `fn()` in this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


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

        runner_s, runner_cpu, runner_rc = median_run(
            [sys.executable, "-m", "runner", "validate", str(folder)], REPO, args.repeat)
        cj_s, cj_cpu, cj_rc = median_run(
            [check_jsonschema, "--schemafile", str(SCHEMA), *files], REPO, args.repeat)

        texts = [Path(f).read_text(encoding="utf-8") for f in files]
        libyaml_s, libyaml_cpu = cpu_of(lambda: [load_file(Path(f)) for f in files])
        pure_s, pure_cpu = cpu_of(lambda: [load_text(t, n, pure=True)
                                           for n, t in zip(files, texts, strict=True)])

    starts = [timed([sys.executable, "-m", "runner", "--help"], REPO)
              for _ in range(args.starts)]
    bare = [timed([sys.executable, "-c", "pass"], REPO) for _ in range(args.starts)]
    help_s, help_cpu = (statistics.median(r[0] for r in starts),
                        statistics.median(r[1] for r in starts))
    pass_s, pass_cpu = (statistics.median(r[0] for r in bare),
                        statistics.median(r[1] for r in bare))

    rows = [
        ("`runner validate DIR` (schema, line numbers, semantic checks)",
         runner_s, runner_cpu, runner_rc),
        ("`check-jsonschema --schemafile` (schema only)", cj_s, cj_cpu, cj_rc),
        ("loader only, libyaml parser (in process)", libyaml_s, libyaml_cpu, 0),
        ("loader only, PyYAML's Python parser (in process)", pure_s, pure_cpu, 0),
        (f"`runner --help` cold start (median of {args.starts})", help_s, help_cpu, 0),
        (f"`python -c pass` (median of {args.starts})", pass_s, pass_cpu, 0),
    ]
    print()
    print("| what | wall s | CPU s | exit |")
    print("|---|---:|---:|---:|")
    for what, seconds, cpu, rc in rows:
        print(f"| {what} | {seconds:.3f} | {cpu:.3f} | {rc} |")
    print()
    print(f"runner validate: {cj_s / runner_s:.1f}x less wall time and {cj_cpu / runner_cpu:.1f}x "
          f"less CPU than check-jsonschema; libyaml's parser: {pure_cpu / libyaml_cpu:.1f}x less "
          f"CPU than the Python one; `runner --help` costs {1000 * (help_s - pass_s):.0f} ms "
          "over a bare interpreter.")
    return 0 if runner_rc == 0 and cj_rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
