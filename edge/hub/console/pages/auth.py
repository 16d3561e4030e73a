"""Logging in and out: a rate-limited password check, then a new signed session."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from edge.hub.console.sessions import COOKIE, Session, csrf_ok
from edge.hub.console.web import Visit, console_of, page, render, session_of


def set_session(response: Response, request: Request, session: Session) -> None:
    console = console_of(request)
    response.set_cookie(
        COOKIE,
        console.signer.dump(session),
        max_age=int(console.signer.lifetime_s),
        httponly=True,
        samesite="strict",
        secure=console.config.console.secure_cookies,
        path="/",
    )


def _next(request: Request, sent: object) -> str:
    """Where to go after logging in: a path on this console only (never //elsewhere)."""
    target = sent if isinstance(sent, str) else request.query_params.get("next", "")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/fleet"
    return target


async def login_form(request: Request, message: str | None = None, status: int = 200) -> Response:
    session = session_of(request)
    fresh = session is None or session.user is not None
    if session is None or fresh:
        session = console_of(request).signer.new()
    response = render(request, session, None, "login.html", status, message=message,
                      next=_next(request, None))  # fmt: skip
    set_session(response, request, session)
    return response


async def login(request: Request) -> Response:
    console = console_of(request)
    session = session_of(request)
    form = await request.form()
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    sent = form.get("csrf")
    if not csrf_ok(session, sent if isinstance(sent, str) else None) or session is None:
        return await login_form(request, "The form has expired: please log in again.", 403)
    client = request.client.host if request.client else "-"
    wait = max(console.user_limiter.blocked_for(name), console.client_limiter.blocked_for(client))
    if wait > 0:
        return await login_form(request, f"Too many failed logins: try again in "
                                f"{int(wait) + 1} s.", 429)  # fmt: skip
    user = await run_in_threadpool(console.users.check_password, name, password)
    if user is None:
        console.user_limiter.failed(name)
        console.client_limiter.failed(client)
        return await login_form(request, "Wrong user name or password.", 401)
    console.user_limiter.succeeded(name)
    response = RedirectResponse(_next(request, form.get("next")), status_code=303)
    set_session(response, request, console.signer.logged_in(user.name))
    return response


@page()
async def logout(visit: Visit) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def home(request: Request) -> Response:
    return RedirectResponse("/fleet", status_code=303)


routes = [
    Route("/", home),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
