"""The watch folder and the state directory, tried with the service user's permissions.

The technician runs ``edge doctor`` as root, who may read and write anything;
the service runs as ``edge``. So when root runs it and the ``edge`` account
exists, every permission is asked of the kernel under that account's identity.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edge.config import Config
from edge.doctor.check import Check

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


def check_watch_folder(config: Config, account: Account) -> Check:
    folder = config.watch.dir
    create = (
        f"create it (install -d -o {account.name} -g {account.name} {folder}) or set "
        "watch.dir to the folder the modality exports into"
    )
    if not folder.exists():
        return Check("watch", False, f"{folder} does not exist", create)
    if not folder.is_dir():
        return Check("watch", False, f"{folder} is not a folder", create)
    if not account.can(folder, "rx"):
        return Check(
            "watch",
            False,
            f"{folder} is not readable by {account.name}",
            f"let {account.name} read it: chgrp {account.name} {folder}; chmod g+rx {folder}",
        )
    if not account.can(folder, "w"):
        return Check(
            "watch",
            False,
            f"{account.name} cannot move unusable files out of {folder} into quarantine",
            f"let {account.name} write there: chgrp {account.name} {folder}; chmod g+w {folder}",
        )
    return Check("watch", True, f"{folder} exists and {account.name} may read it")


def check_state_dir(config: Config, account: Account) -> Check:
    folder = config.state_dir
    if not folder.is_dir():
        return Check(
            "state",
            False,
            f"{folder} does not exist",
            f"create it: install -d -m 0750 -o {account.name} -g {account.name} {folder}",
        )
    if not account.can(folder, "rwx"):
        return Check(
            "state",
            False,
            f"{folder} is not writable by {account.name}",
            f"chown -R {account.name}: {folder}",
        )
    free_mb = shutil.disk_usage(folder).free // (1 << 20)
    need_mb = config.health.min_free_mb
    if free_mb < need_mb:
        return Check(
            "state",
            False,
            f"{folder} has {free_mb} MiB free, less than health.min_free_mb ({need_mb} MiB)",
            f"free space on the disk holding {folder}, or move state_dir to a larger disk",
        )
    return Check("state", True, f"{folder} is writable by {account.name}; {free_mb} MiB free")
