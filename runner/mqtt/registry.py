"""Device presence: which ESP32s are online, since when, and when each was last heard from."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from runner.ratelimitlog import RateLimitedLog

log = logging.getLogger("mqtt_devices")
MAX_OTHER = 200  # devices kept beyond the room's own (config `registry.devices_max_other`)

ONLINE = "online"
OFFLINE = "offline"


@dataclass(frozen=True, slots=True)  # one per device, made for every presence message
class DeviceInfo:
    """One device as last reported; times are wall-clock epoch seconds, for display."""

    id: str
    online: bool
    last_seen: float  # the last presence message, repeated or not
    since: float  # when `online` last changed


DeviceListener = Callable[[DeviceInfo], None]


class DeviceRegistry:
    """Presence of the room's devices and of a bounded number of others; any thread.

    The room's own devices (`keep`: those in the config's `devices` map) are always
    kept. Of the others, a shared broker may hold thousands: at most `max_other` are
    kept, and the one heard from least recently is forgotten first (one log line per
    period with a count, not one per device).
    """

    def __init__(self, clock: Callable[[], float] = time.time, *,
                 keep: Iterable[str] = (), max_other: int = MAX_OTHER) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceInfo] = {}
        self._keep = frozenset(keep)
        self._max_other = max(0, max_other)
        self._others: OrderedDict[str, None] = OrderedDict()  # least recently heard first
        self._forgotten = 0
        self._listeners: list[DeviceListener] = []
        self._full_log = RateLimitedLog(log)

    @property
    def own_ids(self) -> frozenset[str]:
        """The room's own devices, always kept."""
        return self._keep

    @property
    def forgotten(self) -> int:
        """How many other devices were forgotten to keep the registry bounded."""
        with self._lock:
            return self._forgotten

    def update_device_status(self, device_id: str, status: str) -> None:
        """Record `online` / `offline` (any case); listeners hear only of changes."""
        word = status if status in (ONLINE, OFFLINE) else status.strip().lower()
        if word not in (ONLINE, OFFLINE):
            log.warning("ignored presence %r for device %s: expected online or offline",
                        status[:40], device_id)
            return
        online = word == ONLINE
        now = self._clock()
        with self._lock:
            before = self._devices.get(device_id)
            changed = before is None or before.online != online
            info = DeviceInfo(device_id, online, now, now if changed or before is None
                              else before.since)
            self._devices[device_id] = info
            dropped = self._bound(device_id)
            listeners = list(self._listeners) if changed else []
        if dropped:
            self._full_log.warning(
                "full", "device registry full: forgot %s, heard from least recently of the "
                "%d device(s) not in `devices` (registry.devices_max_other in runner.yaml)",
                dropped, self._max_other)
        if not changed:
            return
        # A device first seen offline is news too: it is known but not there.
        if online:
            log.info("📶 device %s connected", device_id)
        else:
            log.warning("📴 device %s disconnected", device_id)
        for listener in listeners:
            try:
                listener(info)
            except Exception:
                log.exception("device listener failed for %s", device_id)

    def _bound(self, device_id: str) -> str | None:
        """Under the lock: note `device_id` heard; forget the stalest other when over."""
        if device_id in self._keep:
            return None
        self._others[device_id] = None
        self._others.move_to_end(device_id)
        if len(self._others) <= self._max_other:
            return None
        stale, _ = self._others.popitem(last=False)
        self._devices.pop(stale, None)
        self._forgotten += 1
        return stale

    def get_connected_devices(self) -> list[str]:
        """Ids of the devices online now, sorted."""
        with self._lock:
            return sorted(d.id for d in self._devices.values() if d.online)

    def get_all_devices(self) -> dict[str, DeviceInfo]:
        """A snapshot of every known device by id."""
        with self._lock:
            return dict(self._devices)

    def mark_all_offline(self, reason: str) -> list[str]:
        """Every online device becomes offline (e.g. the broker is lost); returns their ids.

        A device that loses power while the broker is away leaves no last will behind,
        so without this its last `online` would stand forever. Those still there say
        `online` again (retained) when the broker is back. One log line, not one per device.
        """
        now = self._clock()
        with self._lock:
            changed = [DeviceInfo(d.id, False, d.last_seen, now)
                       for d in self._devices.values() if d.online]
            for info in changed:
                self._devices[info.id] = info
            listeners = list(self._listeners)
        if changed:
            log.warning("%d device(s) marked offline until they report again: %s",
                        len(changed), reason)
        for info in changed:
            for listener in listeners:
                try:
                    listener(info)
                except Exception:
                    log.exception("device listener failed for %s", info.id)
        return [info.id for info in changed]

    def clear_devices(self) -> None:
        """Forget everything, e.g. before retained presence refills the registry."""
        with self._lock:
            self._devices.clear()
            self._others.clear()

    def add_listener(self, listener: DeviceListener) -> None:
        """Call `listener(info)` whenever a device appears or goes on- or offline."""
        with self._lock:
            self._listeners.append(listener)
