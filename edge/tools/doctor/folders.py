"""The watch folder and the state directory, tried with the service user's permissions."""

from __future__ import annotations

import shutil

from edge.config import Config
from edge.tools.doctor.account import Account
from edge.tools.doctor.check import Check


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
