"""What every page and API call goes through: who is asking, may they, and the answer.

``@page(role)`` serves a browser: no valid session sends it to the login page,
a POST without the session's CSRF token is refused. ``@api(role)`` serves a
machine: no valid ``Authorization: Bearer`` token is a 401 in JSON. Database
reads run in the thread pool (SQLAlchemy is synchronous), never on the loop.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.hub.config import HubConfig
from edge.hub.console.sessions import COOKIE, LoginLimiter, Session, SessionSigner, csrf_ok
from edge.hub.console.users import Role, User, UserBook

T = TypeVar("T")

#: no script, style or image from anywhere but the console; no framing
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]  # fmt: skip


@dataclass
class Console:
    """What the application holds for its whole life."""

    config: HubConfig
    #: reads (on SQLite: deferred transactions, which never hold up the collector)
    engine: Engine
    #: writes: outcomes and the audit log (on SQLite: BEGIN IMMEDIATE, queued like a collector)
    writer: Engine
    users: UserBook
    signer: SessionSigner
    #: failed logins per user name, and per client address (a proxy's, behind one)
    user_limiter: LoginLimiter
    client_limiter: LoginLimiter
    templates: jinja2.Environment


@dataclass(frozen=True)
class Visit:
    """One browser request of a logged-in user."""

    request: Request
    user: User
    session: Session
    form: FormData | None

    @property
    def console(self) -> Console:
        return console_of(self.request)


PageHandler = Callable[[Visit], Awaitable[Response]]
ApiHandler = Callable[[Request, User], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def session_of(request: Request) -> Session | None:
    return console_of(request).signer.load(request.cookies.get(COOKIE))


def page(
    role: Role = "viewer",
) -> Callable[[PageHandler], Callable[[Request], Awaitable[Response]]]:
    """A browser page for users with ``role`` or higher."""

    def wrap(handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            console = console_of(request)
            session = session_of(request)
            user = console.users.user(session.user) if session and session.user else None
            if session is None or user is None:
                return RedirectResponse(login_url(request), status_code=303)
            form = None
            if request.method == "POST":
                form = await request.form()
                sent = form.get("csrf")
                if not csrf_ok(session, sent if isinstance(sent, str) else None):
                    return error_page(request, session, user, 403, "The form has expired: "
                                      "reload the page and send it again.")  # fmt: skip
            if not user.may(role):
                return error_page(request, session, user, 403, f"This needs the {role} role.")
            return await handler(Visit(request, user, session, form))

        return endpoint

    return wrap


def api(role: Role = "viewer") -> Callable[[ApiHandler], Endpoint]:
    """An API call for a bearer token of a user with ``role`` or higher."""

    def wrap(handler: ApiHandler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            user = None
            if scheme.lower() == "bearer" and token.strip():
                user = console_of(request).users.user_for_token(token.strip())
            if user is None:
                refusal = {"error": "an API token is needed (Authorization: Bearer)"}
                headers = {"WWW-Authenticate": "Bearer"}
                return JSONResponse(refusal, status_code=401, headers=headers)
            if not user.may(role):
                return JSONResponse({"error": f"this needs the {role} role"}, status_code=403)
            return await handler(request, user)

        return endpoint

    return wrap


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/login?next={quote(target, safe='')}"


async def read(request: Request, query: Callable[..., T], *args: Any) -> T:
    """``query(connection, *args)`` on a pooled connection, in the thread pool."""
    engine = console_of(request).engine

    def run() -> T:
        with engine.connect() as connection:
            return query(connection, *args)

    return await run_in_threadpool(run)


def render(
    request: Request,
    session: Session,
    user: User | None,
    template: str,
    status_code: int = 200,
    **values: Any,
) -> HTMLResponse:
    page_template = console_of(request).templates.get_template(template)
    text = page_template.render(request=request, csrf=session.csrf, user=user, **values)
    return HTMLResponse(text, status_code=status_code, headers={"cache-control": "no-store"})


def error_page(
    request: Request, session: Session, user: User | None, status: int, message: str
) -> HTMLResponse:
    return render(request, session, user, "error.html", status, status=status, message=message)


def json_response(value: Any, status_code: int = 200) -> Response:
    """JSON with times in RFC 3339 UTC (``Z``)."""
    body = json.dumps(value, default=_jsonable, separators=(",", ":"))
    return Response(body, status_code=status_code, media_type="application/json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response (pages, API, static files)."""

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
