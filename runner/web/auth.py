"""Who may read and who may control the dashboard: the token, signed session cookies, origins.

Reads are open to loopback clients (and to everyone with `public_reads`); play, stop
and panic always need the dashboard token, sent as `Authorization: Bearer <token>`
or proven once through the login form, which sets a signed session cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

SESSION_COOKIE = "runner_session"
SESSION_TTL = 12 * 3600.0  # a working day at the front desk
MAX_SESSIONS = 1000  # oldest are forgotten first, so a login loop cannot fill memory
LOGIN_ATTEMPTS = 10  # wrong tokens per client within LOGIN_WINDOW before refusing
LOGIN_WINDOW = 60.0
MAX_CLIENTS = 10_000  # clients whose wrong tokens are remembered

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

CONTROL_DISABLED_MESSAGE = (
    "Control is disabled because no dashboard token is configured: set "
    "`dashboard: {token: !secret dashboard_token}` in runner.yaml, put "
    "`dashboard_token: <a long random string>` in secrets.yaml beside it, "
    "and restart `runner serve`."
)


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for names and None."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_is_loopback_name(host_header: str | None) -> bool:
    """The Host header names this machine (guards token-less reads against DNS rebinding)."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8080
        host = host.split("]", 1)[0] + "]"
    elif host.count(":") == 1:  # 127.0.0.1:8080, localhost:8080
        host = host.split(":", 1)[0]
    return host in LOOPBACK_NAMES or is_loopback(host)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if there is one."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Auth:
    """Checks the dashboard token and issues and verifies session cookies.

    A cookie is `<session id>.<expiry>.<HMAC-SHA256 of both under a per-process secret>`;
    the session id is also kept here, so logging out really ends the session. A restart
    of the service ends every session (the secret is new).
    """

    def __init__(self, token: str | None, *, secret: bytes | None = None,
                 session_ttl: float = SESSION_TTL,
                 login_attempts: int = LOGIN_ATTEMPTS, login_window: float = LOGIN_WINDOW,
                 clock: Callable[[], float] = time.time) -> None:
        self._token = token or None
        self._secret = secret or secrets.token_bytes(32)
        self._ttl = session_ttl
        self._attempts = login_attempts
        self._window = login_window
        self._clock = clock
        self._sessions: dict[str, float] = {}  # id -> expiry (insertion ordered)
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @property
    def token_configured(self) -> bool:
        return self._token is not None

    def check_token(self, candidate: str | None) -> bool:
        """Constant-time comparison; always False when no token is configured."""
        if self._token is None or candidate is None:
            return False
        return hmac.compare_digest(candidate.encode(), self._token.encode())

    def login_blocked(self, client: str) -> bool:
        """Too many wrong tokens from this client lately."""
        now = self._clock()
        with self._lock:
            recent = self._failures.get(client)
            if recent is None:
                return False
            while recent and recent[0] < now - self._window:
                recent.popleft()
            return len(recent) >= self._attempts

    def note_failed_login(self, client: str) -> None:
        """A wrong token (login form or bearer header) from this client."""
        with self._lock:
            if client not in self._failures and len(self._failures) >= MAX_CLIENTS:
                self._forget_quiet_clients()
            self._failures.setdefault(client, deque()).append(self._clock())

    def retry_after(self, client: str) -> int:
        """Whole seconds until this client's oldest counted failure leaves the window."""
        now = self._clock()
        with self._lock:
            recent = self._failures.get(client)
            if not recent:
                return 0
            return max(1, math.ceil(recent[0] + self._window - now))

    def _forget_quiet_clients(self) -> None:
        # called with the lock held: clients with no failure in the window are dropped,
        # and if every one is recent the oldest half goes, so many addresses cannot fill memory
        cutoff = self._clock() - self._window
        for name in [c for c, q in self._failures.items() if not q or q[-1] < cutoff]:
            del self._failures[name]
        if len(self._failures) >= MAX_CLIENTS:
            for name in list(self._failures)[: MAX_CLIENTS // 2]:
                del self._failures[name]

    def new_session(self) -> str:
        """A fresh session; returns the cookie value."""
        session_id = secrets.token_urlsafe(24)
        expires = int(self._clock() + self._ttl)
        with self._lock:
            self._sessions[session_id] = expires
            while len(self._sessions) > MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
        return f"{session_id}.{expires}.{self._sign(session_id, expires)}"

    def session_valid(self, cookie: str | None) -> bool:
        session_id = self._verified_id(cookie)
        if session_id is None:
            return False
        with self._lock:
            expires = self._sessions.get(session_id)
        return expires is not None and expires > self._clock()

    def end_session(self, cookie: str | None) -> None:
        session_id = self._verified_id(cookie)
        if session_id is not None:
            with self._lock:
                self._sessions.pop(session_id, None)

    def authorized(self, headers: Mapping[str, str], cookie: str | None) -> bool:
        """A valid bearer token or a valid session cookie; never without a configured token."""
        if not self.token_configured:
            return False
        bearer = bearer_token(headers)
        if bearer is not None:
            return self.check_token(bearer)
        return self.session_valid(cookie)

    @property
    def session_ttl(self) -> float:
        return self._ttl

    def _sign(self, session_id: str, expires: int) -> str:
        msg = f"{session_id}.{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def _verified_id(self, cookie: str | None) -> str | None:
        if not cookie or cookie.count(".") != 2:
            return None
        session_id, expires_text, signature = cookie.split(".")
        if not expires_text.isdigit():
            return None
        expected = self._sign(session_id, int(expires_text))
        if not hmac.compare_digest(signature, expected):
            return None
        if int(expires_text) <= self._clock():
            return None
        return session_id


def origin_allowed(origin: str | None, own_origin: str) -> bool:
    """A POST from a page must come from this dashboard's own origin (CSRF guard).

    Scripts with a bearer token send no Origin, which is fine: a browser always sends
    one on a cross-site POST, and "null" (sandboxed frames, file://) is refused.
    """
    if origin is None:
        return True
    return origin.rstrip("/").lower() == own_origin.rstrip("/").lower()
