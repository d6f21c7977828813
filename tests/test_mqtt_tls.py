"""The one TLS context builder (runner.mqtt.tls) and the callers that use it."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.model import TLSConfig
from runner.mqtt.tls import tls_context
from runner.simulate import DeviceFleet, VirtualDevice
from tests.brokers import Mosquitto
from tests.tls_support import Pki, make_pki, tls_broker


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_the_context_verifies_certificate_and_host_name(pki: Pki) -> None:
    context = tls_context(TLSConfig(ca_file=pki.ca))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "ca"),),)]


def test_without_a_ca_file_the_system_store_still_verifies() -> None:
    context = tls_context(TLSConfig())
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True


def test_the_client_certificate_is_loaded_when_configured(pki: Pki, tmp_path: Path) -> None:
    tls_context(TLSConfig(ca_file=pki.ca, certfile=pki.client_crt, keyfile=pki.client_key))
    # Loaded, not merely remembered: a missing or mismatched one fails here.
    with pytest.raises(FileNotFoundError):
        tls_context(TLSConfig(ca_file=pki.ca, certfile=tmp_path / "missing.crt"))
    with pytest.raises(ssl.SSLError):
        tls_context(TLSConfig(ca_file=pki.ca, certfile=pki.client_crt, keyfile=pki.server_key))


def test_a_virtual_device_uses_its_client_certificate(
        broker_factory: Callable[..., Mosquitto], pki: Pki) -> None:
    broker = tls_broker(broker_factory, pki, require_client_cert=True)
    tls = TLSConfig(ca_file=pki.ca, certfile=pki.client_crt, keyfile=pki.client_key)
    fleet = DeviceFleet([VirtualDevice("esp32_tls", ["room1/light"], broker.host, broker.port,
                                       latency=(0.0, 0.0), tls=tls)])
    fleet.start()
    try:
        assert fleet.wait_online(10)
    finally:
        fleet.stop()
