"""The dashboard's web application: the page, the JSON API under /api/, and the live feed.

Only `runner.web.views.Room` is used of the room service. Reads are GETs and never
change anything; play, stop and panic are POSTs that need the dashboard token.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runner.errors import UnknownSceneError
from runner.web import views
from runner.web.auth import (
    CONTROL_DISABLED_MESSAGE,
    SESSION_COOKIE,
    Auth,
    bearer_token,
    host_is_loopback_name,
    is_loopback,
    origin_allowed,
)
from runner.web.feed import SnapshotFeed, to_json
from runner.web.limits import dashboard_log_limit

log = logging.getLogger("dashboard")

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Where `runner serve`'s token lives; the demo names its own (create_app's login_hint).
LOGIN_HINT = "check dashboard.token in runner.yaml (or its secrets.yaml)"
MAX_BODY = 4096  # a control request is a scene id; anything larger is refused

SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; object-src 'none'; "
     b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # nobody frames the panic button into another page
    (b"referrer-policy", b"no-referrer"),
]


class JSON(JSONResponse):
    """JSON that tolerates enums and paths in state dicts, never cached by a browser."""

    def __init__(self, content: Any, status_code: int = 200) -> None:
        super().__init__(content, status_code, headers={"cache-control": "no-store"})

    def render(self, content: Any) -> bytes:
        return to_json(content).encode("utf-8")


def problem(status: int, message: str) -> JSON:
    """An error for a person: a sentence, never a traceback."""
    return JSON({"error": message}, status)


class SecurityHeaders:
    """Adds the security headers to every response, streams included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


Handler = Callable[[Request], Awaitable[Response]]


def create_app(room: views.Room, *, auth: Auth | None = None,
               feed_min_interval: float | None = None,
               login_hint: str = LOGIN_HINT) -> Starlette:
    """The dashboard for `room`; `auth` defaults to one built from the config's token.

    `login_hint`: where a person who gave a wrong token finds the right one.
    """
    config = room.config
    dashboard = config.dashboard
    auth = auth or Auth(dashboard.token)
    if not auth.token_configured:
        log.warning("The dashboard has no token: it shows the room, but play, stop and "
                    "panic are refused until dashboard.token is set in runner.yaml")
    tz = views.room_timezone(config)
    failure_clock = views.FailureClock()
    feed_kwargs = {} if feed_min_interval is None else {"min_interval": feed_min_interval}
    feed = SnapshotFeed(lambda: views.snapshot(room, tz, failure_clock), **feed_kwargs)
    room.add_change_listener(feed.notify)

    def client_host(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def authorized(request: Request) -> bool:
        return auth.authorized(request.headers, request.cookies.get(SESSION_COOKIE))

    token_warnings = dashboard_log_limit(log)

    def too_many_guesses(host: str) -> JSON:
        response = problem(429, "Too many wrong tokens; wait a minute and try again.")
        response.headers["retry-after"] = str(auth.retry_after(host))
        return response

    def bearer_blocked(request: Request) -> JSON | None:
        """Wrong `Authorization: Bearer` tokens count like wrong logins, on every endpoint.

        Once a client has used up its attempts, every request of its that carries a
        bearer token (right or wrong) gets 429 until the window has passed.
        """
        token = bearer_token(request.headers)
        if token is None or not auth.token_configured:
            return None
        host = client_host(request)
        if auth.login_blocked(host):
            return too_many_guesses(host)
        if not auth.check_token(token):
            auth.note_failed_login(host)
            token_warnings.warning("wrong-token",
                                   "Dashboard request %s %s with a wrong bearer token from %s",
                                   request.method, request.url.path, host)
        return None

    def reads_allowed(request: Request) -> bool:
        if dashboard.public_reads or authorized(request):
            return True
        # Token-less reads need a loopback client *and* a loopback Host, so a web page
        # that rebinds its own name to 127.0.0.1 cannot read the room.
        return is_loopback(client_host(request)) and host_is_loopback_name(
            request.headers.get("host"))

    def read_refused(request: Request) -> JSON:
        return problem(401, (
            f"Reading the dashboard from {client_host(request)} needs the dashboard token: "
            "log in on the page, or send `Authorization: Bearer <token>`; or set "
            "`dashboard: {public_reads: true}` in runner.yaml to allow reads from the network."
        ))

    def control_refused(request: Request) -> JSON | None:
        """Why this POST may not change the room, or None when it may."""
        own_origin = f"{request.url.scheme}://{request.url.netloc}"
        cross_site = request.headers.get("sec-fetch-site") == "cross-site"
        if cross_site or not origin_allowed(request.headers.get("origin"), own_origin):
            log.warning("Dashboard refused a control request from another site (%s)",
                        request.headers.get("origin"))
            return problem(403, (
                "This request came from another web site and was refused; "
                "use the buttons on the dashboard page itself."
            ))
        if not auth.token_configured:
            return problem(403, CONTROL_DISABLED_MESSAGE)
        blocked = bearer_blocked(request)
        if blocked is not None:
            return blocked
        if not authorized(request):
            return problem(401, (
                "Play, stop and panic need the dashboard token: log in on the page, "
                "or send `Authorization: Bearer <token>`."
            ))
        return None

    def reader(view: Callable[[], dict[str, Any]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            blocked = bearer_blocked(request)
            if blocked is not None:
                return blocked
            if not reads_allowed(request):
                return read_refused(request)
            return JSON(await run_in_threadpool(view))
        return endpoint

    async def devices(request: Request) -> Response:
        if not reads_allowed(request):
            return read_refused(request)
        page: dict[str, int] = {}
        for name, default in (("offset", 0), ("limit", views.DEVICES_PAGE)):
            text = request.query_params.get(name, str(default))
            if not text.isdigit() or len(text) > 9:
                return problem(400, f"{name}={text[:20]!r} is not a whole number >= 0; page "
                                    f"with /api/devices?offset=0&limit=100 (limit at most "
                                    f"{views.DEVICES_PAGE_MAX}).")
            page[name] = int(text)
        return JSON(await run_in_threadpool(
            lambda: views.devices_view(room, tz, page["offset"], page["limit"])))

    async def read_body(request: Request) -> dict[str, Any] | JSON:
        # Streamed with a cap, never buffered whole: anyone who reaches the dashboard may
        # POST to /api/login, and an endless body must not fill the Pi's memory.
        too_large = problem(413, "The request is too large; send only {\"scene\": \"<id>\"}.")
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY:
            return too_large
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return too_large
        if not body.strip():
            return {}
        try:
            data = json.loads(body)
        except ValueError:
            return problem(400, "The request body is not JSON; send {\"scene\": \"<id>\"}.")
        if not isinstance(data, dict):
            return problem(400, "The request body must be a JSON object.")
        return data

    async def index(_request: Request) -> Response:
        # The page holds no room data (that comes from /api/), so anyone may load it
        # and see the login form.
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    async def session(request: Request) -> Response:
        blocked = bearer_blocked(request)
        if blocked is not None:
            return blocked
        return JSON({
            "authorized": authorized(request),
            "token_configured": auth.token_configured,
            "reads_allowed": reads_allowed(request),
            "room": config.room,
        })

    async def login(request: Request) -> Response:
        own_origin = f"{request.url.scheme}://{request.url.netloc}"
        if not origin_allowed(request.headers.get("origin"), own_origin):
            return problem(403, "Log in from the dashboard page itself.")
        if not auth.token_configured:
            return problem(403, CONTROL_DISABLED_MESSAGE)
        host = client_host(request)
        if auth.login_blocked(host):
            return too_many_guesses(host)
        data = await read_body(request)
        if isinstance(data, JSON):
            return data
        token = data.get("token")
        if not isinstance(token, str) or not auth.check_token(token):
            auth.note_failed_login(host)
            token_warnings.warning("wrong-token", "Dashboard login with a wrong token from %s",
                                   host)
            return problem(401, f"That is not the dashboard token; {login_hint}.")
        log.info("Dashboard login from %s", host)
        response = JSON({"authorized": True})
        response.set_cookie(
            SESSION_COOKIE, auth.new_session(), max_age=int(auth.session_ttl), path="/",
            httponly=True, samesite="strict", secure=request.url.scheme == "https",
        )
        return response

    async def logout(request: Request) -> Response:
        auth.end_session(request.cookies.get(SESSION_COOKIE))
        response = JSON({"authorized": False})
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def play(request: Request) -> Response:
        refused = control_refused(request)
        if refused is not None:
            return refused
        data = await read_body(request)
        if isinstance(data, JSON):
            return data
        scene_id = data.get("scene")
        if not isinstance(scene_id, str) or not scene_id:
            return problem(400, "Say which scene to play: {\"scene\": \"<id>\"}; "
                                "GET /api/scenes lists them.")
        if scene_id not in room.scenes:
            close = difflib.get_close_matches(scene_id, list(room.scenes), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else " GET /api/scenes lists them."
            return problem(404, f"There is no scene {scene_id!r}.{hint}")
        log.info("Dashboard: play %s (from %s)", scene_id, client_host(request))
        try:
            run = await run_in_threadpool(room.play, scene_id, "dashboard")
        except UnknownSceneError:  # removed by a reload between the check and the call
            return problem(404, f"There is no scene {scene_id!r} any more.")
        feed.notify()
        if run is None:
            return problem(409, (
                f"The scene {scene_id!r} was not started because a scene is playing "
                "(mode: single); stop it first."
            ))
        return JSON({"started": True, "scene": scene_id, "run_id": run.run_id})

    async def stop(request: Request) -> Response:
        refused = control_refused(request)
        if refused is not None:
            return refused
        log.info("Dashboard: stop (from %s)", client_host(request))
        await run_in_threadpool(room.stop)
        feed.notify()
        return JSON({"stopped": True})

    async def panic(request: Request) -> Response:
        refused = control_refused(request)
        if refused is not None:
            return refused
        log.warning("Dashboard: PANIC (from %s)", client_host(request))
        await run_in_threadpool(room.panic)
        feed.notify()
        return JSON({"panic": True})

    async def events(request: Request) -> Response:
        blocked = bearer_blocked(request)
        if blocked is not None:
            return blocked
        if not reads_allowed(request):
            return read_refused(request)
        return StreamingResponse(
            feed.stream(), media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("Dashboard request %s %s failed", request.method, request.url.path,
                  exc_info=exc)
        return problem(500, "The dashboard hit an internal error; the service log says why.")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 405:
            return problem(405, f"{request.method} is not allowed on {request.url.path}: "
                                "reads are GET; login, play, stop and panic are POST.")
        if status == 404:
            return problem(404, f"There is nothing at {request.url.path}; the README lists "
                                "the dashboard's API.")
        return problem(status, str(getattr(exc, "detail", "The request was refused.")))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(feed.run())
        try:
            yield
        finally:
            feed.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    routes = [
        Route("/", index),
        Route("/api/session", session),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/logout", logout, methods=["POST"]),
        Route("/api/status", reader(lambda: views.status_view(room, tz))),
        Route("/api/devices", devices),
        Route("/api/scene", reader(lambda: views.scene_view(room, tz))),
        Route("/api/failures", reader(lambda: views.failures_view(room, tz, failure_clock))),
        Route("/api/shows", reader(lambda: views.shows_view(room, tz))),
        Route("/api/history", reader(lambda: views.history_view(room, tz))),
        Route("/api/scenes", reader(lambda: views.scenes_view(room))),
        Route("/api/snapshot", reader(lambda: views.snapshot(room, tz, failure_clock))),
        Route("/api/events", events),
        Route("/api/play", play, methods=["POST"]),
        Route("/api/stop", stop, methods=["POST"]),
        Route("/api/panic", panic, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    app.add_middleware(SecurityHeaders)
    # DashboardServer ends the open event streams through this before it stops.
    app.state.close_streams = feed.close
    app.state.feed = feed
    return app
