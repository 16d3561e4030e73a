"""The C-STORE SCU: sends one SR to one destination and says what to do next.

What comes back is a decision, not a status to interpret again (PS3.4 B.2.3,
PS3.7 C): ``done`` for success and warnings; ``retry`` for what may pass (the
PACS unreachable, out of resources 0xA7xx, a transient association rejection,
a lost association); ``hold`` for a refusal that will not change by itself
(SOP class not supported 0x0122, data set not matching 0xA9xx, cannot
understand 0xCxxx, a permanent rejection, no accepted presentation context),
so that the destination's queue waits for an operator instead of looping.
"""

from __future__ import annotations

import io
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

import pydicom
from pynetdicom import AE
from pynetdicom.association import Association

from edge.dicom.cad_sr import MAMMOGRAPHY_CAD_SR
from edge.dicom_config import DicomDestination

Decision = Literal["done", "retry", "hold"]
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]  # explicit, implicit LE
NO_ASSOCIATION = "no association: the TLS handshake failed or the destination hung up"
#: pynetdicom logs PDUs and DIMSE messages with element values below this level
logging.getLogger("pynetdicom").setLevel(logging.ERROR)


@dataclass(frozen=True)
class StoreOutcome:
    decision: Decision
    #: the C-STORE response status, when one came
    status: int | None
    #: what happened, for health and ``edge status`` (never an element value)
    detail: str


def decide(status: int) -> Decision:
    """What a C-STORE response status means for the send (PS3.4 Table B.2-1)."""
    if status == 0x0000 or 0xB000 <= status <= 0xBFFF or status in (0x0001, 0x0107, 0x0116):
        return "done"
    if 0xA700 <= status <= 0xA7FF or status in (0x0110, 0x0213, 0xFE00):
        return "retry"
    return "hold"


class StoreScu:
    """Sends SRs to one configured destination, one association per batch."""

    def __init__(self, calling_ae: str, destination: DicomDestination) -> None:
        self._destination = destination
        self._ae = AE(ae_title=calling_ae)
        self._ae.add_requested_context(MAMMOGRAPHY_CAD_SR, TRANSFER_SYNTAXES)
        timeout = destination.timeout_s
        self._ae.acse_timeout = self._ae.dimse_timeout = self._ae.network_timeout = timeout
        self._ae.connection_timeout = timeout
        self._tls = _tls_context(destination)
        #: the last attempt found no TCP connection: probe before the next association
        self._unreachable = False

    def open(self) -> Association | StoreOutcome:
        """An association ready for C-STORE, or the outcome that stops this batch.

        While the destination cannot be reached, each retry first tries a plain TCP
        connection, closed at once: pynetdicom is not called again until the port
        answers (it leaves a refused connection's socket to the garbage collector, and
        logs two errors per attempt). Probing every time would not do: a PACS counts
        the probe against its associations until it notices the close.
        """
        d = self._destination
        if self._unreachable:
            reason = _unreachable(d.host, d.port, d.timeout_s)
            if reason is not None:
                return StoreOutcome("retry", None, reason)
        # Without server_name the name is not checked (check_hostname is off), and the
        # host only goes in the TLS handshake as its SNI.
        server = d.tls.server_name if d.tls is not None and d.tls.server_name else d.host
        tls_args = None if self._tls is None else (self._tls, server)
        assoc = self._ae.associate(d.host, d.port, ae_title=d.ae_title, tls_args=tls_args)
        if assoc.is_established:
            self._unreachable = False
            return assoc
        outcome = _refusal(assoc)
        if outcome.detail == NO_ASSOCIATION:  # why: the port refused, or the handshake failed
            reason = _unreachable(d.host, d.port, d.timeout_s)
            self._unreachable = reason is not None
            return outcome if reason is None else StoreOutcome("retry", None, reason)
        return outcome

    def send(self, assoc: Association, payload: bytes) -> StoreOutcome:
        """C-STORE one Part 10 file over an open association."""
        dataset = pydicom.dcmread(io.BytesIO(payload))
        response = assoc.send_c_store(dataset)
        if "Status" not in response:
            return StoreOutcome("retry", None, "no C-STORE response (association lost, timeout)")
        status = int(response.Status)
        return StoreOutcome(decide(status), status, f"C-STORE status 0x{status:04X}")


def _refusal(assoc: Association) -> StoreOutcome:
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        return StoreOutcome("hold", None, "the destination does not accept Mammography CAD SR")
    if assoc.is_rejected:
        result = getattr(assoc.acceptor.primitive, "result", None)
        reason = getattr(assoc.acceptor.primitive, "reason_str", "")
        if result == 0x01:
            return StoreOutcome("hold", None, f"association rejected permanently: {reason}")
        return StoreOutcome("retry", None, f"association rejected for now: {reason}")
    if assoc.is_aborted and getattr(assoc.acceptor, "primitive", None) is not None:
        return StoreOutcome("retry", None, "association aborted by the destination")
    return StoreOutcome("retry", None, NO_ASSOCIATION)


def _unreachable(host: str, port: int, timeout: float) -> str | None:
    """Why no TCP connection can be made (``Connection refused``...), or None."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"cannot connect to the destination: {exc.strerror or type(exc).__name__}"


def _tls_context(destination: DicomDestination) -> ssl.SSLContext | None:
    """DICOM TLS (PS3.15 B.1): the destination's certificate is checked against ca_file."""
    tls = destination.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    context.check_hostname = tls.server_name is not None
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context
