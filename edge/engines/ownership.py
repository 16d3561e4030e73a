"""The engine store belongs to the service, also when root changed it.

A technician runs ``edge engines install`` as root, while the service runs as
``edge`` and must be able to write into the store it serves from (TensorRT plans,
the lock, the next install's scratch folder). So what root leaves in the store is
handed to the owner of the state directory the store lives in.
"""

from __future__ import annotations

import os
from pathlib import Path


def hand_to_state_owner(store: Path) -> None:
    """Give every entry under ``store`` to the owner of its parent, when root made it."""
    if os.geteuid() != 0 or not store.is_dir():
        return
    owner = store.parent.stat()
    if owner.st_uid == 0:
        return  # a state directory of root's own: nothing to hand over
    for path in (store, *store.rglob("*")):
        info = path.lstat()
        if (info.st_uid, info.st_gid) != (owner.st_uid, owner.st_gid):
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
