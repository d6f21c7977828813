"""Each module logs under its own short name; the spec's names (mqtt, mqtt_handler,
mqtt_feedback, mqtt_devices, player, media, shows, dashboard) stay where they were."""

from __future__ import annotations

import importlib
import logging

import pytest

NAMES = {
    # the spec's names (shared/spec.md, Logging)
    "runner.mqtt.client": "mqtt",
    "runner.mqtt.handler": "mqtt_handler",
    "runner.mqtt.feedback": "mqtt_feedback",
    "runner.mqtt.registry": "mqtt_devices",
    "runner.player": "player",
    "runner.media": "media",
    "runner.shows": "shows",
    "runner.web.app": "dashboard",
    # the module's own short name
    "runner.service": "service",
    "runner.commands.serve": "serve",
    "runner.control": "control",
    "runner.triggers": "triggers",
    "runner.history": "history",
}


@pytest.mark.parametrize(("module", "name"), sorted(NAMES.items()))
def test_a_module_logs_under_its_name(module: str, name: str) -> None:
    log = importlib.import_module(module).log
    assert isinstance(log, logging.Logger) and log.name == name
