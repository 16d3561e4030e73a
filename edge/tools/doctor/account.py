"""The account the service runs as, and doing things with its rights.

The technician runs ``edge doctor`` as root, who may read and write anything;
the service runs as ``edge``. So when root runs it and the ``edge`` account
exists, permissions are asked of the kernel under that account's identity, and
the engine checks run in a child process that has become that account: a
self-test on TensorRT writes plans into the engine store, which must belong to
the service, not to root.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from edge.tools.doctor.check import Check

log = logging.getLogger(__name__)
SERVICE_USER = "edge"
_ACCESS = {"r": os.R_OK, "w": os.W_OK, "x": os.X_OK}


@dataclass(frozen=True)
class Account:
    """The user the service runs as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def current(cls) -> Account:
        entry = pwd.getpwuid(os.geteuid())
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, tuple(os.getgroups()))

    @classmethod
    def named(cls, name: str) -> Account:
        entry = pwd.getpwnam(name)
        groups = tuple(os.getgrouplist(name, entry.pw_gid))
        return cls(name, entry.pw_uid, entry.pw_gid, groups)

    def can(self, path: Path, flags: str) -> bool:
        """Whether this user may ``flags`` (any of ``r``, ``w``, ``x``) ``path``."""
        if self.uid == os.geteuid():
            return all(os.access(path, _ACCESS[flag]) for flag in flags)
        # test(1) under the service user's identity gets the kernel's answer,
        # ACLs included, instead of a guess from the mode bits.
        return all(
            subprocess.run(
                ["test", f"-{flag}", str(path)],
                user=self.uid,
                group=self.gid,
                extra_groups=list(self.groups),
                check=False,
            ).returncode
            == 0
            for flag in flags
        )


def service_account(name: str | None) -> Account:
    """The account named; else ``edge`` when root runs the doctor and it exists; else the caller.

    Raises
    ------
    KeyError
        When ``name`` is given and no such user exists.
    """
    if name is not None:
        return Account.named(name)
    if os.geteuid() == 0 and _user_exists(SERVICE_USER):
        return Account.named(SERVICE_USER)
    return Account.current()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def run_as(account: Account, checks: Callable[[], list[Check]]) -> list[Check]:
    """``checks()``, run with ``account``'s identity when that is not the caller's."""
    if account.uid == os.geteuid():
        return checks()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the account, check, answer, and end
        os.close(read_end)
        code = 1
        try:
            os.setgroups(list(account.groups))
            os.setgid(account.gid)
            os.setuid(account.uid)
            # as systemd starts the service: its own home, not root's (ONNX Runtime
            # writes there, and warns on a terminal when it cannot)
            os.environ["HOME"] = pwd.getpwuid(account.uid).pw_dir
            answer = json.dumps([asdict(check) for check in checks()]).encode()
            with os.fdopen(write_end, "wb") as stream:
                stream.write(answer)
            code = 0
        except Exception:  # the parent reports a child without an answer as a failed check
            log.exception("the engine checks failed unexpectedly")
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        answer = stream.read()
    _, status = os.waitpid(pid, 0)
    if not answer:
        return [
            Check(
                "engine",
                False,
                f"the engine checks as {account.name} ended without an answer "
                f"(exit status {os.waitstatus_to_exitcode(status)}; see above)",
                "run edge doctor again; if it repeats, send its output to the vendor",
            )
        ]
    return [Check(**fields) for fields in json.loads(answer)]
