"""The console's application: routes, templates, static files, security headers.

``edge hub serve`` builds it with :func:`build_app` and runs it under uvicorn;
the tests run the same application on a free port.
"""

from __future__ import annotations

import logging

import jinja2
import uvicorn
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from edge.hub.config import HubConfig
from edge.hub.console import filters
from edge.hub.console.pages import api, auth, feedback, views
from edge.hub.console.sessions import LoginLimiter, SessionSigner, load_secret_key
from edge.hub.console.users import UserBook
from edge.hub.console.web import Console, SecurityHeaders

log = logging.getLogger(__name__)

#: failed logins allowed within LOGIN_WINDOW_S per user name and per client address
USER_ATTEMPTS, CLIENT_ATTEMPTS, LOGIN_WINDOW_S = 5, 20, 300.0


def build_app(config: HubConfig, engine: Engine, writer: Engine | None = None) -> Starlette:
    """The application on ``engine`` (reads) and ``writer`` (outcomes; ``engine`` if None)."""
    settings = config.console
    console = Console(
        config=config,
        engine=engine,
        writer=writer or engine,
        users=UserBook(settings.users_file),
        signer=SessionSigner(load_secret_key(settings.session_secret_file),
                             settings.session_hours * 3600),
        user_limiter=LoginLimiter(USER_ATTEMPTS, LOGIN_WINDOW_S),
        client_limiter=LoginLimiter(CLIENT_ATTEMPTS, LOGIN_WINDOW_S),
        templates=_templates(),
    )  # fmt: skip
    routes = [
        *auth.routes,
        *views.routes,
        *feedback.routes,
        *api.routes,
        Mount("/static", StaticFiles(packages=[("edge.hub.console", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.state.console = console
    return app


def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("edge.hub.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    filters.install(environment)
    return environment


def serve(config: HubConfig, engine: Engine, writer: Engine) -> None:
    """Run the console in the foreground until SIGINT or SIGTERM (uvicorn's handlers)."""
    settings = config.console
    app = build_app(config, engine, writer)
    if not app.state.console.users.names():
        log.warning("no users in %s yet: add one with edge hub users add NAME --role admin",
                    settings.users_file)  # fmt: skip
    log.info("console on http://%s:%d", settings.host, settings.port)
    server_config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=settings.forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
    )
    uvicorn.Server(server_config).run()
