"""The console's users: roles, argon2 password hashes and API token hashes in one YAML file.

    users:
      alice:
        role: admin                       # viewer < reader (records outcomes) < admin
        password: $argon2id$v=19$...      # argon2-cffi's encoded hash, never the password
        tokens: [{id: 1f3a..., sha256: ..., created_at: ...}]

An API token is 32 random bytes: only its sha256 is kept (it is too long to
guess, so a slow hash would add nothing). The file is rewritten atomically with
mode 0600, and the server reads it again when it changes, so ``edge hub users``
takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from edge.errors import ConfigError

Role = Literal["viewer", "reader", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "reader", "admin")
TOKEN_PREFIX = "edge_"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")
_hasher = PasswordHasher()
#: verified against when the user is unknown, so that a wrong name costs as long
_DUMMY_HASH = _hasher.hash("not a password of anyone")


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    def may(self, role: Role) -> bool:
        """Whether this user has ``role`` or a higher one."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class _Entry:
    user: User
    password_hash: str
    token_hashes: tuple[str, ...]


class UserBook:
    """The users file, read again whenever it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, _Entry] = {}

    def check_password(self, name: str, password: str) -> User | None:
        """The user, if ``password`` is theirs; as slow for an unknown name as for a known one."""
        entry = self._current().get(name)
        try:
            _hasher.verify(entry.password_hash if entry else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        return entry.user if entry else None

    def user_for_token(self, token: str) -> User | None:
        """The user an API token belongs to, or None."""
        digest = token_digest(token)
        for entry in self._current().values():
            if any(hmac.compare_digest(digest, known) for known in entry.token_hashes):
                return entry.user
        return None

    def user(self, name: str) -> User | None:
        """The user of that name, if they still exist (a removed user's session ends)."""
        entry = self._current().get(name)
        return entry.user if entry else None

    def names(self) -> list[str]:
        return sorted(self._current())

    def _current(self) -> dict[str, _Entry]:
        try:
            status = self.path.stat()
        except FileNotFoundError:
            self._entries, self._stamp = {}, None
            return self._entries
        stamp = (status.st_mtime_ns, status.st_size)
        if stamp != self._stamp:
            self._entries = {name: _entry(name, raw) for name, raw in read_users(self.path).items()}
            self._stamp = stamp
        return self._entries


def _entry(name: str, raw: dict[str, Any]) -> _Entry:
    tokens = tuple(str(token["sha256"]) for token in raw.get("tokens") or [])
    return _Entry(User(name, raw["role"]), str(raw["password"]), tokens)


def read_users(path: Path) -> dict[str, dict[str, Any]]:
    """The ``users`` mapping of the file ({} when the file does not exist yet).

    Raises
    ------
    ConfigError
        When the file is not what ``edge hub users`` writes, naming the user and key.
    """
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the users file: {exc}") from exc
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise ConfigError(f"{path}: expected a mapping under 'users'")
    for name, raw in users.items():
        _check_user(path, str(name), raw)
    return {str(name): raw for name, raw in users.items()}


def _check_user(path: Path, name: str, raw: Any) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: users.{name}: expected a mapping")
    if raw.get("role") not in ROLES:
        raise ConfigError(f"{path}: users.{name}.role: expected one of {', '.join(ROLES)}")
    if not str(raw.get("password", "")).startswith("$argon2"):
        raise ConfigError(f"{path}: users.{name}.password: expected an argon2 hash")
    tokens = raw.get("tokens") or []
    if not isinstance(tokens, list) or not all(
        isinstance(token, dict) and "sha256" in token for token in tokens
    ):
        raise ConfigError(f"{path}: users.{name}.tokens: expected a list of {{id, sha256}}")


def write_users(path: Path, users: dict[str, dict[str, Any]]) -> None:
    """Replace the file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            yaml.safe_dump({"users": users}, out, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def add_user(path: Path, name: str, role: Role, password: str) -> bool:
    """Add ``name`` or replace their role and password (tokens kept); True if new."""
    check_name(name)
    if role not in ROLES:
        raise ConfigError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise ConfigError("a password needs at least 8 characters")
    users = read_users(path)
    new = name not in users
    tokens = [] if new else users[name].get("tokens") or []
    users[name] = {"role": role, "password": _hasher.hash(password), "tokens": tokens}
    write_users(path, users)
    return new


def remove_user(path: Path, name: str) -> bool:
    """Remove ``name`` and their tokens; False if there was no such user."""
    users = read_users(path)
    if users.pop(name, None) is None:
        return False
    write_users(path, users)
    return True


def new_token(path: Path, name: str, now: datetime | None = None) -> str:
    """A new API token for ``name`` (shown once; only its hash is kept).

    Raises
    ------
    ConfigError
        When there is no such user.
    """
    users = read_users(path)
    if name not in users:
        raise ConfigError(f"no user {name!r} in {path}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    made = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    entry = {"id": token_digest(token)[:12], "sha256": token_digest(token), "created_at": made}
    users[name]["tokens"] = [*(users[name].get("tokens") or []), entry]
    write_users(path, users)
    return token


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: str) -> None:
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
        raise ConfigError(
            f"user name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-' expected"
        )
