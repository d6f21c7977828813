"""The one TLS context every MQTT connection of the runner uses (service, simulator, demo)."""

from __future__ import annotations

import ssl

from runner.model import TLSConfig


def tls_context(tls: TLSConfig) -> ssl.SSLContext:
    """Certificate and host name always verified; the CA file and client certificate if set.

    Raises OSError (ssl.SSLError included) when a configured file cannot be read or used.
    """
    context = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls.ca_file else None)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if tls.certfile:
        context.load_cert_chain(str(tls.certfile),
                                str(tls.keyfile) if tls.keyfile else None)
    return context
