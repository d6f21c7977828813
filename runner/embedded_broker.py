"""An MQTT broker inside the process (amqtt) on a free loopback port, for the demo.

amqtt is asyncio-based; it gets its own thread and event loop so that the rest of
the runner (paho, APScheduler, uvicorn) needs to know nothing about it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from typing import Any

from amqtt.broker import Broker

from runner.errors import RunnerError

log = logging.getLogger("mqtt")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5  # a free port can be taken between choosing it and binding it


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _broker_config(host: str, port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        # Only what the demo needs: anonymous clients on loopback, no $SYS chatter.
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


class EmbeddedBroker:
    """amqtt on `host:port` (port 0: a free one), run in a thread; `start()` / `stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 start_timeout: float = START_TIMEOUT) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise RunnerError(f"the embedded broker listens on loopback only, not on {host}")
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Listen and return once clients can connect; RunnerError when it cannot."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="amqtt", daemon=True)
        self._thread.start()
        fixed = self.port != 0
        last: BaseException | None = None
        for _ in range(1 if fixed else PORT_ATTEMPTS):
            port = self.port if fixed else free_loopback_port(self.host)
            future = asyncio.run_coroutine_threadsafe(self._start(port), loop)
            try:
                self._broker = future.result(self.start_timeout)
                self.port = port
                log.info("embedded MQTT broker (amqtt) listening on %s", self.address)
                return self
            except concurrent.futures.TimeoutError:
                last = TimeoutError(f"no answer in {self.start_timeout}s")
            except Exception as exc:  # amqtt wraps every start problem in BrokerError
                last = exc
        self._end_loop()
        raise RunnerError(
            f"could not start the embedded MQTT broker on {self.host}: {last}; "
            "start a broker yourself (e.g. mosquitto) and pass --broker HOST:PORT"
        )

    async def _start(self, port: int) -> Any:
        broker = Broker(_broker_config(self.host, port))
        await broker.start()
        return broker

    def stop(self) -> None:
        """Close every client connection and the listener; wait for the thread."""
        if self._loop is None:
            return
        if self._broker is not None:
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                future.result(STOP_TIMEOUT)
            except Exception as exc:  # a failing shutdown must not block the exit
                log.warning("the embedded broker did not shut down cleanly: %s", exc)
            self._broker = None
        self._end_loop()

    def _end_loop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        if not loop.is_running():
            loop.close()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
