"""The pause a full garbage collection puts on every thread, before and after `gc.freeze()`.

A full (generation 2) collection walks every tracked object while holding the GIL: no cue
can fire meanwhile. `runner serve` freezes what it built at start (modules, libraries, the
room), so later full collections walk only what came after (a reload's scenes). This
measures both in one process: the service's imports and a room with a scene of N actions
built, then one full collection as it would be without the freeze and one after it.

    .venv/bin/python bench/gc_pause.py [--actions 20000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def full_collection_ms(repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        gc.collect(2)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=20_000, help="at least 1")
    args = parser.parse_args()
    import runner.service  # noqa: PLC0415 - what serve imports: paho, vlc, starlette
    import runner.web.app  # noqa: F401, PLC0415
    from runner.configfile import load_config  # noqa: PLC0415
    from runner.service import scenes_at_start  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "scenes").mkdir()
        lines = ["name: Big", "actions:"] + [
            f"  - {{at: {i * 0.01:.2f}, topic: room1/light, message: L{i}, feedback: none}}"
            for i in range(args.actions)]
        (root / "scenes" / "big.yaml").write_text("\n".join(lines) + "\n")
        (root / "runner.yaml").write_text("room: room1\nscenes_dir: scenes\nmedia_dir: .\n")
        scenes = scenes_at_start(load_config(root / "runner.yaml"))
        tracked = len(gc.get_objects())
        before = full_collection_ms()
        gc.freeze()
        frozen = full_collection_ms()
        reloaded = scenes_at_start(load_config(root / "runner.yaml"))  # a reload's new scenes
        after_reload = full_collection_ms()
        print(f"{tracked:,} tracked objects at start ({len(scenes)} scene of "
              f"{args.actions:,} actions); a reload reads {len(reloaded)} more of the same")
        print(f"full collection, nothing frozen (baseline):   {before:6.2f} ms")
        print(f"full collection after gc.freeze():            {frozen:6.2f} ms")
        print(f"full collection after the freeze and a reload: {after_reload:6.2f} ms")


if __name__ == "__main__":
    main()
