"""Test PKI made with openssl, and a mosquitto TLS listener that uses it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.brokers import Mosquitto
from tests.conftest import require


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    server_crt: Path
    server_key: Path
    wrong_name_crt: Path
    wrong_name_key: Path
    client_crt: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_cert(d: Path, name: str, ca: str, san: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
             "-extfile", f"{name}.ext", cwd=d)


def make_pki(d: Path) -> Pki:
    """A CA, a second CA, broker certificates (right and wrong name) and a client certificate."""
    require("openssl", shutil.which("openssl") is not None,
            "apt-get install openssl")
    _make_ca(d, "ca")
    _make_ca(d, "other_ca")
    _make_cert(d, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    _make_cert(d, "wrong_name", "ca", "DNS:broker.elsewhere.example")
    _make_cert(d, "client", "ca", "DNS:runner")
    return Pki(d / "ca.crt", d / "other_ca.crt", d / "server.crt", d / "server.key",
               d / "wrong_name.crt", d / "wrong_name.key", d / "client.crt", d / "client.key")


def tls_broker(factory: Callable[..., Mosquitto], pki: Pki, *, wrong_name: bool = False,
               require_client_cert: bool = False) -> Mosquitto:
    crt, key = ((pki.wrong_name_crt, pki.wrong_name_key) if wrong_name
                else (pki.server_crt, pki.server_key))
    conf = (f"allow_anonymous true\ncafile {pki.ca}\ncertfile {crt}\nkeyfile {key}\n"
            f"require_certificate {'true' if require_client_cert else 'false'}\n")
    return factory(listener_conf=conf).start()
