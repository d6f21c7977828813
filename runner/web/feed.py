"""Live updates for the page: one snapshot rebuilt after changes, coalesced, sent as SSE.

Changes arrive from the MQTT and player threads (`notify`, which never blocks). One
task in the dashboard's event loop rebuilds the snapshot at most every `min_interval`
seconds, however many changes and however many open pages; each page's stream sends
the newest one, or a comment line as a heartbeat so proxies keep the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread

log = logging.getLogger("dashboard")

MIN_INTERVAL = 0.25  # at most 4 snapshots a second, however busy the room is
REFRESH_INTERVAL = 15.0  # rebuilt anyway: "last seen" and next shows move with time
HEARTBEAT = 10.0  # a comment line on an idle stream


def to_json(data: object) -> str:
    # default=str: an enum or a Path slipping into a state dict must not break the page
    return json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":"))


class SnapshotFeed:
    """Builds the dashboard snapshot when something changed and hands it to every stream."""

    def __init__(self, build: Callable[[], dict[str, Any]], *,
                 min_interval: float = MIN_INTERVAL, refresh_interval: float = REFRESH_INTERVAL,
                 heartbeat: float = HEARTBEAT) -> None:
        self._build = build
        self._min_interval = min_interval
        self._refresh = refresh_interval
        self._heartbeat = heartbeat
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._published: asyncio.Event | None = None
        self._closed = False
        self.seq = 0  # how many snapshots were built
        self.latest: str | None = None

    def notify(self) -> None:
        """Something changed; callable from any thread, returns at once."""
        with self._lock:
            loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed: shutting down
            loop.call_soon_threadsafe(wake.set)

    async def run(self) -> None:
        """The rebuilding task; runs until `close()` or cancellation."""
        wake = asyncio.Event()
        self._closed = False  # the same app may be served again after a stop
        self._published = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._wake = wake
        wake.set()  # the first snapshot right away
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), self._refresh)
            if self._closed:
                break
            wake.clear()
            try:
                data = await anyio.to_thread.run_sync(self._build)
                self.latest = to_json(data)
            except Exception:  # the page keeps its last snapshot; the log says why
                log.exception("Dashboard snapshot failed")
            else:
                self.seq += 1
                self._publish()
            # Changes during this pause are coalesced into the next rebuild.
            await asyncio.sleep(self._min_interval)

    def close(self) -> None:
        """Ends every stream (so the server can stop at once) and the rebuilding task."""
        self._closed = True
        with self._lock:
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._close_in_loop)

    def _close_in_loop(self) -> None:
        if self._wake is not None:
            self._wake.set()
        self._publish()

    def _publish(self) -> None:
        old, self._published = self._published, asyncio.Event()
        if old is not None:
            old.set()

    async def stream(self) -> AsyncIterator[str]:
        """Server-sent events for one page: `snapshot` events and heartbeat comments."""
        seen = self.seq
        # The stored snapshot may be many seconds old (the playhead would jump back),
        # so a new page asks for a fresh one and waits for it.
        self.notify()
        yield "retry: 2000\n\n"
        while not self._closed:
            published = self._published
            if self.seq != seen and self.latest is not None:
                seen = self.seq
                yield f"event: snapshot\nid: {seen}\ndata: {self.latest}\n\n"
                continue
            if published is None:  # the rebuilding task has not started yet
                await asyncio.sleep(self._min_interval)
                continue
            try:
                await asyncio.wait_for(published.wait(), self._heartbeat)
            except asyncio.TimeoutError:
                yield ": heartbeat\n\n"
