"""Whether the devices a scene needs are online, and the one line that says when not.

`runner serve` says it at every start of a scene, `runner play` before its one start:
the same function, the same words.
"""

from __future__ import annotations

import logging
import threading

from runner.model import Config, Scene
from runner.mqtt.registry import DeviceInfo, DeviceRegistry


def offline_devices(config: Config, registry: DeviceRegistry, scene: Scene) -> list[str]:
    """The devices `scene` uses (by the config's `devices` map) that are not online now."""
    online = set(registry.get_connected_devices())
    return [d for d in config.devices_needed(scene) if d not in online]


def log_readiness(log: logging.Logger, config: Config, registry: DeviceRegistry,
                  scene: Scene, *, wait: float = 0.0) -> None:
    """Name the devices `scene` needs that are not online, each offline or never seen.

    `wait` > 0: presence is retained, so it arrives right after connecting; at most
    `wait` seconds are given to it to be heard for every device the scene uses.
    """
    needed = config.devices_needed(scene)
    if not needed:
        return
    if wait > 0:
        _wait_for_presence(registry, needed, wait)
    offline = offline_devices(config, registry, scene)
    if offline:
        known = registry.get_all_devices()
        named = [f"{d} ({'offline' if d in known else 'never seen'})" for d in offline]
        log.warning("%s needs device(s) that are not online: %s; their commands will "
                    "not be confirmed", scene.id, ", ".join(named))


def _wait_for_presence(registry: DeviceRegistry, needed: list[str], wait: float) -> None:
    heard = threading.Event()

    def check(_info: DeviceInfo | None = None) -> None:
        if set(needed) <= set(registry.get_all_devices()):
            heard.set()

    registry.add_listener(check)
    check()
    heard.wait(wait)
