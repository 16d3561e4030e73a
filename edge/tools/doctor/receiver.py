"""The DICOM receiver's port, tried as the service user binds it: ``edge doctor``'s ``dicom``.

A port below 1024 (104, DICOM's registered port) needs ``CAP_NET_BIND_SERVICE``,
which the unit grants only when the operator installs its drop-in
(``systemd/edge-dicom-port.conf``, docs/receiver.md). A port that is taken is
asked who holds it: a DICOM service that answers to the receiver's AE title is
the running daemon; anything else is in the way.
"""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
from pathlib import Path

from pynetdicom import AE

from edge.config import Config
from edge.dicom.contexts import VERIFICATION
from edge.receiver_config import ReceiverConfig
from edge.tools.doctor.account import Account, run_as
from edge.tools.doctor.check import Check

#: the drop-in that lets the service bind a port below 1024
DROP_IN = Path("/etc/systemd/system/edge.service.d/dicom-port.conf")
INSTALL_DROP_IN = (
    f"install -D -m 0644 systemd/edge-dicom-port.conf {DROP_IN} && systemctl daemon-reload "
    "&& systemctl restart edge (docs/receiver.md), or set receiver.port to 11112"
)
PRIVILEGED_BELOW = 1024
#: how long the doctor waits for the DICOM service on a taken port to answer
PROBE_TIMEOUT_S = 5.0


def check_receiver(config: Config, account: Account) -> list[Check]:
    """The ``dicom`` checks: none without a receiver, else its TLS files and its port."""
    receiver = config.receiver
    if receiver is None:
        return []
    unreadable = [
        path for path in _tls_files(receiver) if not path.is_file() or not account.can(path, "r")
    ]
    if unreadable:
        return [
            Check(
                "dicom",
                False,
                f"{account.name} cannot read {', '.join(map(str, unreadable))}",
                f"put the receiver's TLS files there, readable by {account.name}",
            )
        ]
    if receiver.port < PRIVILEGED_BELOW and not unit_grants_bind():
        return [_needs_capability(receiver, account)]
    if receiver.port < PRIVILEGED_BELOW:
        return [try_bind(receiver, account.name)]  # the unit's capability, not the user's
    return run_as(account, lambda: [try_bind(receiver, account.name)])


def try_bind(receiver: ReceiverConfig, user: str) -> Check:
    """Bind the receiver's address and port as this process is, then let go."""
    where = f"{receiver.bind} port {receiver.port}"
    family = socket.AF_INET6 if ":" in receiver.bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((receiver.bind, receiver.port))
        except OSError as exc:
            return _bind_failed(receiver, user, where, exc)
    return Check("dicom", True, f"{user} can listen on {where} as {receiver.ae_title}")


def _bind_failed(receiver: ReceiverConfig, user: str, where: str, exc: OSError) -> Check:
    if exc.errno == errno.EADDRINUSE:
        if answers_as(receiver.ae_title, receiver.port):
            return Check(
                "dicom",
                True,
                f"{where} is served by a DICOM receiver answering as "
                f"{receiver.ae_title} (the running daemon)",
            )
        return Check(
            "dicom",
            False,
            f"{where} is taken by another program",
            f"ss -ltnp 'sport = :{receiver.port}' names it; stop it or set receiver.port",
        )
    if exc.errno == errno.EACCES:
        return Check("dicom", False, f"{user} may not listen on {where}", INSTALL_DROP_IN)
    if exc.errno == errno.EADDRNOTAVAIL:
        return Check(
            "dicom",
            False,
            f"receiver.bind {receiver.bind} is not an address of this box",
            "set receiver.bind to one of the addresses ip -brief address lists, or 0.0.0.0",
        )
    return Check("dicom", False, f"cannot listen on {where}: {exc.strerror or exc}")


def answers_as(ae_title: str, port: int) -> bool:
    """Whether a DICOM service on ``port`` knows ``ae_title`` as its own.

    The doctor is no registered sender: the receiver refuses it, but with
    "calling AE title not recognised", which a service of another AE title
    would not say (it would refuse the called AE title first).
    """
    ae = AE(ae_title="EDGE_DOCTOR")
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.network_timeout = PROBE_TIMEOUT_S
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if assoc.is_established:
        assoc.release()
        return True
    rejection = assoc.acceptor.primitive
    return bool(
        assoc.is_rejected
        and rejection is not None
        and (rejection.result_source, rejection.diagnostic) == (0x01, 0x03)
    )


def unit_grants_bind() -> bool:
    """Whether the edge unit (with its drop-ins) gives the service CAP_NET_BIND_SERVICE."""
    if shutil.which("systemctl") is not None and Path("/run/systemd/system").is_dir():
        shown = subprocess.run(
            ["systemctl", "show", "edge.service", "--property=AmbientCapabilities"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return "cap_net_bind_service" in shown.stdout.lower()
    drop_ins = DROP_IN.parent.glob("*.conf") if DROP_IN.parent.is_dir() else []
    return any("AmbientCapabilities=CAP_NET_BIND_SERVICE" in path.read_text() for path in drop_ins)


def _needs_capability(receiver: ReceiverConfig, account: Account) -> Check:
    return Check(
        "dicom",
        False,
        f"receiver.port {receiver.port} is below 1024: the service ({account.name}) may "
        "bind it only with CAP_NET_BIND_SERVICE, which the unit does not grant yet",
        INSTALL_DROP_IN,
    )


def _tls_files(receiver: ReceiverConfig) -> list[Path]:
    tls = receiver.tls
    if tls is None:
        return []
    return [path for path in (tls.cert_file, tls.key_file, tls.ca_file) if path is not None]
