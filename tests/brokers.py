"""A private mosquitto per test: free loopback port, readiness by polling, stop/kill/restart.

Used by the tests and by the benchmarks in bench/. Never touches the machine's own
broker on 1883.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    for name in MOSQUITTO_CANDIDATES:
        path = shutil.which(name) or (name if os.path.isfile(name) else None)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0, up: bool = True) -> bool:
    """Poll until the port accepts connections (up=True) or refuses them (up=False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                if up:
                    return True
        except OSError:
            if not up:
                return True
        time.sleep(0.02)
    return False


class Mosquitto:
    """One mosquitto process with a config written in `workdir`."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "",
                 listener_conf: str = "allow_anonymous true") -> None:
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError(
                "mosquitto is not installed: run `apt-get install mosquitto` "
                "(the README's test command does this)"
            )
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = self.workdir / f"mosquitto-{self.port}.conf"
        self.log = self.workdir / f"mosquitto-{self.port}.log"
        # As root, mosquitto drops to user `mosquitto`, which cannot read the test's
        # private temp dirs (log file, password file); stay the invoking user instead.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"{user}per_listener_settings true\n"
            f"persistence false\n"
            # Without it every broker-to-client hop after a PUBACK waits ~40 ms (Nagle).
            f"set_tcp_nodelay true\n"
            f"log_dest file {self.log}\n"
            f"log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            f"listener {self.port} 127.0.0.1\n"
            f"{listener_conf}\n"
            f"{extra_conf}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        if self.proc and self.proc.poll() is None:
            return self
        # The port may sit in TIME_WAIT right after a kill; mosquitto sets SO_REUSEADDR.
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if not wait_for_port(self.host, self.port, timeout):
            err = b""
            if self.proc.poll() is not None and self.proc.stderr:
                err = self.proc.stderr.read()
            self.stop()
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"mosquitto did not start on {self.address}: {err!r} {log}")
        return self

    def _end(self, sig: int, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        wait_for_port(self.host, self.port, timeout=5.0, up=False)

    def stop(self) -> None:
        """A clean stop (SIGTERM)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """A crash (SIGKILL): clients see their connection drop."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.kill()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
