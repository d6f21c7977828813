"""The room config: model, secrets and environment, cross-references, cron, --config, --broker."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from runner.commands._common import config_from_args, parse_broker
from runner.configfile import check_config, default_config, load_config
from runner.errors import RunnerError, Severity, ValidationFailed
from tests.conftest import REPO, run_runner

SCENE = "actions:\n  - {at: 0, topic: room1/light, message: 'ON'}\n"


def room(tmp_path: Path, config: str, secrets: str | None = None,
         scenes: tuple[str, ...] = ("intro",)) -> Path:
    (tmp_path / "scenes").mkdir(exist_ok=True)
    for name in scenes:
        (tmp_path / "scenes" / f"{name}.yaml").write_text(SCENE, encoding="utf-8")
    if secrets is not None:
        (tmp_path / "secrets.yaml").write_text(secrets, encoding="utf-8")
    path = tmp_path / "runner.yaml"
    path.write_text(config, encoding="utf-8")
    return path


def messages(path: Path) -> list[str]:
    _, diagnostics = check_config(path)
    return [d.format() for d in diagnostics]


def test_example_config_builds_the_model() -> None:
    config = load_config(REPO / "examples" / "runner.yaml")
    assert config.room == "room1" and config.client_id == "rpi_room_room1"
    assert config.scenes_dir == REPO / "scenes" and config.media_dir == REPO / "media"
    assert config.broker.host == "127.0.0.1" and config.broker.port == 1883
    assert config.feedback_timeout == 1.0
    assert config.status_topics == ("devices/+/status",)
    assert [s.scene for s in config.shows] == ["room1_intro", "exhibit_loop"]
    assert config.shows[0].cron == "0 10,14 * * *"
    assert config.shows[1].days == ("mon", "tue", "wed", "thu", "fri")
    assert config.shows[1].where.endswith("examples/runner.yaml:20:5")
    assert config.triggers[0].message == "PRESSED" and config.triggers[0].min_interval == 2
    assert [a.message for a in config.safe_state] == ["OFF", "ON"]
    assert config.device_for_topic("room1/steam") == "esp32_02"
    assert config.timezone == "Europe/Berlin"
    assert config.history_keep_days == 90
    assert config.source == REPO / "examples" / "runner.yaml"


def test_defaults(tmp_path: Path) -> None:
    config = load_config(room(tmp_path, "room: hall\n"))
    assert config.client_id == "rpi_room_hall" and config.broker.host == "127.0.0.1"
    assert config.scenes_dir == tmp_path.resolve() / "scenes"
    assert config.dashboard.bind == "127.0.0.1" and config.dashboard.token is None
    assert config.history_file is None and config.broker.tls is None
    base = default_config(base=tmp_path)
    assert base.room == "room1" and base.media_dir == tmp_path.resolve() / "media"


def test_secret_and_env_are_substituted_as_written(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASH_TOKEN", "t0k3n")
    path = room(tmp_path, "room: r\nbroker: {username: m, password: !secret mqtt_password}\n"
                "dashboard: {token: !env DASH_TOKEN}\n", secrets="mqtt_password: 0172\n")
    config = load_config(path)
    assert config.broker.password == "0172"  # not 172
    assert config.dashboard.token == "t0k3n"
    assert "0172" not in repr(config) and "t0k3n" not in repr(config)


def test_missing_secret_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = room(tmp_path, "room: r\nbroker:\n  password: !secret mqtt_pasword\n",
                secrets="mqtt_password: x\n")
    [msg] = messages(path)
    assert msg.startswith("runner.yaml:3:13: error: $.broker.password: secret 'mqtt_pasword'"
                          .replace("runner.yaml", str(path)))
    assert "did you mean 'mqtt_password'?" in msg


def test_a_missing_secret_does_not_hide_other_errors(tmp_path: Path) -> None:
    path = room(tmp_path, "room: r\nbroker:\n  password: !secret nope\n  port: 0\n",
                secrets="mqtt_password: x\n")
    assert [m.split(": ", 3)[2] for m in messages(path)] == [
        "$.broker.password", "$.broker.port"]


def test_missing_secrets_file(tmp_path: Path) -> None:
    [msg] = messages(room(tmp_path, "room: r\nbroker: {password: !secret pw}\n"))
    assert ":2:20: error:" in msg and "secrets.yaml does not exist" in msg


def test_missing_env_is_an_error_at_its_line(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    [msg] = messages(room(tmp_path, "room: r\ndashboard:\n  token: !env NOT_SET_ANYWHERE\n"))
    assert ":3:10: error: $.dashboard.token: environment variable NOT_SET_ANYWHERE" in msg


def test_secret_values_are_never_printed(tmp_path: Path) -> None:
    secret = "hunter2-very-secret"
    path = room(tmp_path, "room: r\nbroker:\n  port: !secret pw\n  host: !secret pw\n"
                "dashboard: {bind: !secret pw}\nsafe_state:\n  - {topic: !secret pw, message: X}\n",
                secrets=f"pw: {secret}\n")
    found = messages(path)
    assert any(":3:9: error: $.broker.port:" in m for m in found), found
    assert any(":5:19: error: $.dashboard.bind:" in m for m in found), found
    assert all(secret not in m for m in found), found
    result = run_runner("validate", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert secret not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_secrets_file_must_be_a_mapping(tmp_path: Path) -> None:
    [msg] = messages(room(tmp_path, "room: r\nbroker: {password: !secret pw}\n",
                          secrets="- pw\n"))
    assert "must be a mapping" in msg


@pytest.mark.parametrize(("cron", "words"), [
    ("0 10 * *", "has 4 fields"), ("61 10 * * *", "61"), ("0 10 * * 8", "day of week '8'"),
    ("0 10 * * 5-1", "backwards"), ("0 25 * * *", "25"), ("@daily", "has 1 fields"),
])
def test_bad_cron(tmp_path: Path, cron: str, words: str) -> None:
    [msg] = messages(room(tmp_path, f"room: r\nshows:\n  - scene: intro\n    cron: '{cron}'\n"))
    assert ":4:11: error: $.shows[0].cron:" in msg and words in msg


def test_shows_and_triggers_name_existing_scenes(tmp_path: Path) -> None:
    path = room(tmp_path, "room: r\nshows:\n  - {scene: intro, time: '09:30', days: [mon, tue]}\n"
                "  - {scene: outro, time: '9:30'}\n  - {scene: intro, days: [wedn]}\n"
                "  - {scene: intro, cron: '0 9 * * *', time: '09:00'}\n"
                "triggers:\n  - {topic: 'room1/#/x', scene: intro}\n  - {topic: room1/+}\n",
                scenes=("intro", "outro_long"))
    found = messages(path)
    text = "\n".join(found)
    assert ":4:13: error: $.shows[1].scene: no scene 'outro' in" in text
    assert "(did you mean 'outro_long'?)" in text
    assert ":4:26: error: $.shows[1].time: time is a time of day" in text
    assert "did you mean 'wed'?" in text
    assert ":5:5: error: $.shows[2]: a show needs either cron: or time:" in text
    assert "'days' needs 'time' as well" in text
    assert ":6:5: error: $.shows[3]: a show needs either cron: or time:" in text
    assert ":8:13: error: $.triggers[0].topic: in 'room1/#/x', '#' must be" in text
    assert ":9:5: error: $.triggers[1]: missing required key 'scene'" in text


def test_valid_show_forms(tmp_path: Path) -> None:
    path = room(tmp_path, "room: r\nshows:\n  - {scene: intro, cron: '30 9 * * 1-5'}\n"
                "  - {scene: intro, time: '23:59', days: [sat, sun], require_devices: true}\n"
                "triggers:\n  - {topic: room1/+/button, scene: intro, message: 1}\n")
    config = load_config(path)
    assert config.shows[1].require_devices is True
    assert config.triggers[0].message == "1" and config.triggers[0].topic == "room1/+/button"


def test_dashboard_on_the_network_needs_a_token(tmp_path: Path) -> None:
    [msg] = messages(room(tmp_path, "room: r\ndashboard: {bind: 0.0.0.0}\n"))
    assert "$.dashboard.bind" in msg and "without a token" in msg
    path = room(tmp_path, "room: r\ndashboard: {bind: 0.0.0.0, token: abcdef}\n")
    assert load_config(path).dashboard.bind == "0.0.0.0"


def test_dashboard_connection_limits(tmp_path: Path) -> None:
    defaults = load_config(room(tmp_path, "room: r\n")).dashboard
    assert (defaults.max_connections, defaults.header_timeout) == (256, 10.0)
    path = room(tmp_path, "room: r\ndashboard: {max_connections: 40, header_timeout: 2.5}\n")
    dash = load_config(path).dashboard
    assert (dash.max_connections, dash.header_timeout) == (40, 2.5)
    text = "\n".join(messages(room(tmp_path, "room: r\ndashboard: {max_connections: 0, "
                                             "header_timeout: -1}\n")))
    assert ":2:" in text and "$.dashboard.max_connections" in text
    assert "$.dashboard.header_timeout" in text


def test_unknown_keys_timezone_and_tls_files(tmp_path: Path) -> None:
    path = room(tmp_path, "room: r\nbrokr: {}\ntimezone: Europe/Berln\n"
                "broker: {tls: {ca_file: ca.crt}}\n")
    text = "\n".join(messages(path))
    assert ":2:1: error: $.brokr: unknown key 'brokr' (did you mean 'broker'?)" in text
    assert "did you mean 'Europe/Berlin'?" in text
    assert "$.broker.tls.ca_file: ca_file 'ca.crt' does not exist" in text


def test_a_misspelt_tls_key_is_reported_once(tmp_path: Path) -> None:
    path = room(tmp_path, "room: r\nbroker: {tls: {ca_fil: ca.crt}}\n")
    assert [m.split(": ", 2)[2] for m in messages(path)] == [
        "$.broker.tls.ca_fil: unknown key 'ca_fil' (did you mean 'ca_file'?)"]


@pytest.mark.parametrize("setting", ["feedback: {timeout: 1e300}",
                                     "broker: {retry_delay: 1e300}"])
def test_endless_waits_are_refused(tmp_path: Path, setting: str) -> None:
    # Threads cannot wait 1e300 s (OverflowError): play crashed with a traceback.
    text = "\n".join(messages(room(tmp_path, f"room: r\n{setting}\n")))
    assert ":2:" in text and "must be at most 3600, not 1e+300" in text


def test_a_safe_state_media_file_must_exist(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    path = room(tmp_path, "room: r\nsafe_state:\n  - {topic: r/audio, message: calm.mp3}\n")
    [msg] = messages(path)
    assert "$.safe_state[0].message: media file 'calm.mp3' is not in" in msg
    (tmp_path / "media" / "calm.mp3").write_bytes(b"x")
    assert messages(path) == []


def test_tls_paths_are_absolute(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x", encoding="utf-8")
    config = load_config(room(tmp_path, "room: r\nbroker: {tls: {ca_file: ca.crt}}\n"))
    assert config.broker.tls is not None
    assert config.broker.tls.ca_file == (tmp_path / "ca.crt").resolve()


def test_warnings_do_not_stop_loading(tmp_path: Path) -> None:
    path = room(tmp_path, "room: r\nsafe_state:\n  - {topic: r/x, message: 'OFF', retain: true}\n")
    config, diagnostics = check_config(path)
    assert config is not None and [d.severity for d in diagnostics] == [Severity.WARNING]
    load_config(path)


def args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"config": None, "broker": None, **kw})


def test_config_from_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_from_args(args()).scenes_dir == tmp_path.resolve() / "scenes"
    room(tmp_path, "room: hall\nbroker: {port: 1999}\n")
    assert config_from_args(args()).room == "hall"  # ./runner.yaml when present
    other = tmp_path / "other"
    other.mkdir()
    room(other, "room: lobby\n")
    config = config_from_args(args(config=str(other / "runner.yaml"), broker="localhost"))
    assert (config.room, config.broker.host, config.broker.port) == ("lobby", "localhost", 1883)
    config = config_from_args(args(broker="[::1]:1884"))
    assert (config.room, config.broker.host, config.broker.port) == ("hall", "::1", 1884)
    assert config_from_args(args(broker="127.0.0.1")).broker.port == 1999
    with pytest.raises(RunnerError, match="no such config file"):
        config_from_args(args(config="missing.yaml"))
    (tmp_path / "runner.yaml").write_text("room: [x]\n", encoding="utf-8")
    with pytest.raises(ValidationFailed, match=r"runner\.yaml:1:7"):
        config_from_args(args())


@pytest.mark.parametrize("bad", ["", "host:99999", "host:port", "a b:1", "user@host"])
def test_bad_broker_option(bad: str) -> None:
    with pytest.raises(RunnerError, match="HOST:PORT"):
        parse_broker(bad)


def test_safe_state_at_start_defaults_to_after_crash_and_refuses_other_words(
        tmp_path: Path) -> None:
    from runner.model import SafeStateAtStart  # noqa: PLC0415
    path = room(tmp_path, "room: room1\n")
    assert load_config(path).safe_state_at_start is SafeStateAtStart.AFTER_CRASH
    path = room(tmp_path, "room: room1\nsafe_state_at_start: always\n")
    assert load_config(path).safe_state_at_start is SafeStateAtStart.ALWAYS
    path = room(tmp_path, "room: room1\nsafe_state_at_start: after-crash\n")
    [msg] = messages(path)
    assert f"{path}:2:" in msg
    assert "after_crash, always, never" in msg and "did you mean 'after_crash'" in msg
