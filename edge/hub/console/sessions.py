"""Signed session cookies, CSRF tokens and the failed-login limit.

A session is a small JSON object (user, CSRF token, expiry) signed with
HMAC-SHA256 under the key in ``console.session_secret_file``: the server keeps
no session table, and a cookie changed by its holder fails the signature. Every
visitor, logged in or not, gets a session carrying a CSRF token, so the login
form is protected too; the token is sent in a hidden field of every form and
compared with the session's on every POST.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ConfigError

COOKIE = "edge_session"


@dataclass(frozen=True)
class Session:
    csrf: str
    user: str | None
    #: UNIX time after which the session is void
    expires: float


class SessionSigner:
    """Turns sessions into cookie values and back."""

    def __init__(self, key: bytes, lifetime_s: float) -> None:
        self._key = key
        self.lifetime_s = lifetime_s

    def new(self) -> Session:
        return Session(secrets.token_urlsafe(24), None, float(round(time.time() + self.lifetime_s)))

    def logged_in(self, user: str) -> Session:
        """A new session for ``user``: a new CSRF token, and the full lifetime from now."""
        return Session(secrets.token_urlsafe(24), user, float(round(time.time() + self.lifetime_s)))

    def dump(self, session: Session) -> str:
        body = json.dumps(
            {"c": session.csrf, "u": session.user, "e": round(session.expires)},
            separators=(",", ":"),
        ).encode()
        payload = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}"

    def load(self, value: str | None) -> Session | None:
        """The session in a cookie value, or None if it is absent, forged or expired."""
        if not value or "." not in value:
            return None
        payload, signature = value.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(data["c"]), data["u"], float(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > time.time() else None

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def csrf_ok(session: Session | None, sent: str | None) -> bool:
    return session is not None and sent is not None and hmac.compare_digest(session.csrf, sent)


def load_secret_key(path: Path) -> bytes:
    """The signing key; a new random one (file mode 0600) when the file does not exist.

    Raises
    ------
    ConfigError
        When the file exists and cannot be read or is too short to be a key.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(handle, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"console.session_secret_file {path}: {exc.strerror}") from exc
    if len(key) < 32:
        raise ConfigError(f"console.session_secret_file {path}: at least 32 characters expected")
    return key.encode()


class LoginLimiter:
    """At most ``attempts`` failed logins per key (a user name, a client) within ``window_s``.

    Kept in memory: a restart forgets it, which only gives a guesser a few tries more.
    """

    def __init__(self, attempts: int = 5, window_s: float = 300.0) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked_for(self, key: str) -> float:
        """Seconds until another attempt is allowed for ``key`` (0: allowed now)."""
        with self._lock:
            return self._wait(key, time.monotonic())

    def failed(self, key: str) -> None:
        with self._lock:
            self._failures.setdefault(key, deque()).append(time.monotonic())

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _wait(self, key: str, now: float) -> float:
        failures = self._failures.get(key)
        if failures is None:
            return 0.0
        while failures and now - failures[0] > self.window_s:
            failures.popleft()
        if len(failures) < self.attempts:
            return 0.0
        return self.window_s - (now - failures[0])
