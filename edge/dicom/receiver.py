"""The storage SCP: studies by C-STORE, acknowledged only once they are durable.

    A-ASSOCIATE-RQ --policy--> accepted | A-ASSOCIATE-RJ with the standard reason
    C-STORE-RQ --spool (fsync, rename, fsync)--> C-STORE-RSP success --> intake
    C-STORE-RQ, state disk low or failing --> C-STORE-RSP 0xA700 (out of resources)

pynetdicom serves each association in a thread of its own and calls the
handlers here from it. The C-STORE handler answers success only after
:meth:`~edge.dicom.spool.Spool.keep` has made the instance durable, then hands
it on as an :class:`~edge.types.IncomingFile`: from there it takes exactly the
path of a file from the watch folder (duplicates, skips, quarantine). A sender
that had no success status sends the instance again; one that had it never
needs to, even if the daemon is killed the next instant.

A study closes at its fourth view or ``study.quiet_s`` after its last image, as
for the folder; the release of an association says nothing about a study (a
modality may send one study over several associations, or several in one).
"""

from __future__ import annotations

import errno
import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from edge.dicom.contexts import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, VERIFICATION
from edge.dicom.counters import ReceiverCounters, write_stats
from edge.dicom.policy import Request, SenderPolicy
from edge.dicom.spool import Spool, SpoolFull
from edge.dicom.tls import server_context
from edge.errors import ReceiverError
from edge.receiver_config import ReceiverConfig
from edge.types import IncomingFile

log = logging.getLogger(__name__)

SUCCESS = 0x0000
#: Refused: Out of Resources (PS3.4 Table B.2-1): the sender keeps the instance and retries
OUT_OF_RESOURCES = 0xA700
#: how often finished instances are deleted from the spool and the counters written
SWEEP_S = 0.25
#: on stop, how long associations in progress may take to finish before they are aborted
DRAIN_S = 5.0
#: connections beyond max_associations that may wait for their A-ASSOCIATE-RQ
HALF_OPEN_SPARE = 16

FileCallback = Callable[[IncomingFile], None]
#: told when instances start being refused (the reason) and when they are taken again (None)
RefusingCallback = Callable[[str | None, str], None]


class Receiver:
    """The storage SCP of ``edge run``: its AE, its policy, its spool and its counters."""

    def __init__(self, config: ReceiverConfig, spool: Spool, *, stats_dir: Path) -> None:
        """Bind the port (and load the TLS files) at once; serve only from :meth:`start`.

        Raises
        ------
        ReceiverError
            The port cannot be bound (in use; below 1024 without CAP_NET_BIND_SERVICE),
            or a TLS file cannot be loaded.
        """
        self.config = config
        self.spool = spool
        self.counters = ReceiverCounters(config.ae_title, config.port)
        self._policy = SenderPolicy(config.ae_title, config.allowed, config.max_associations)
        self._on_file: FileCallback = _not_started
        self._done: Callable[[Path], bool] = lambda path: False
        self._on_refusing: RefusingCallback = lambda reason, detail: None
        self._stats_dir = stats_dir
        #: associations let through the policy and not yet closed, and those established
        self._admitted: set[int] = set()
        self._established: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ae = _application_entity(config)
        self._tls = self._load_tls()
        self._server = self._bind()
        self._accepting = threading.Thread(
            target=self._server.serve_forever, name="receive-accept", daemon=True
        )
        self._sweeper = threading.Thread(target=self._sweep_loop, name="receive-spool", daemon=True)
        self._stats_failing = False

    # -- life cycle ---------------------------------------------------------------------

    def start(
        self,
        on_file: FileCallback,
        *,
        done: Callable[[Path], bool],
        on_refusing: RefusingCallback,
    ) -> None:
        """Serve, and take again what the spool holds.

        ``on_file`` takes each instance once it is durable; ``done`` says when the
        journal has finished with one; ``on_refusing`` hears refusals begin and end.
        """
        self._on_file, self._done, self._on_refusing = on_file, done, on_refusing
        waiting = self.spool.prepare()
        self._accepting.start()
        for path in waiting:
            self._hand_on(path, "scan")
        self._sweeper.start()
        log.info(
            "receiving DICOM as %s on port %d%s (%d instances waiting in the spool)",
            self.config.ae_title,
            self.config.port,
            " with TLS" if self._tls is not None else "",
            len(waiting),
        )

    def _load_tls(self) -> ssl.SSLContext | None:
        try:
            return None if self.config.tls is None else server_context(self.config.tls)
        except (OSError, ssl.SSLError) as exc:
            raise ReceiverError(f"cannot load receiver.tls: {exc}") from exc

    def _bind(self) -> ThreadedAssociationServer:
        where = f"{self.config.bind} port {self.config.port}"
        try:
            server = self._ae.make_server(
                (self.config.bind, self.config.port),
                ssl_context=self._tls,
                evt_handlers=self._handlers(),
                server_class=ThreadedAssociationServer,
            )
        except OSError as exc:
            hint = " (see edge doctor, and port 104 in docs/receiver.md)"
            hint = hint if exc.errno == errno.EACCES else ""
            raise ReceiverError(f"cannot listen on {where}: {exc.strerror or exc}{hint}") from exc
        # As AE.start_server does: the AE shuts down the servers it lists.
        self._ae._servers.append(server)
        return server

    def stop(self) -> None:
        """Stop listening, let associations in progress finish briefly, abort the rest."""
        if self._accepting.is_alive():
            self._server.shutdown()  # waits for serve_forever, which never ran otherwise
        else:
            self._server.server_close()
            self._ae._servers.remove(self._server)
        deadline = time.monotonic() + DRAIN_S
        while self._ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        self._ae.shutdown()
        self._stop.set()
        if self._sweeper.is_alive():
            self._sweeper.join(timeout=5)
        self._write_stats()

    def is_alive(self) -> bool:
        return self._sweeper.is_alive() and self._accepting.is_alive()

    @property
    def refusing(self) -> str | None:
        """Why instances are refused now (0xA700), or None while they are taken."""
        return self.counters.refusing

    def snapshot(self) -> dict[str, Any]:
        """The ``receiver`` section of health: counters, and what waits in the spool."""
        return {**self.counters.snapshot(), "spool_files": len(self.spool.files())}

    # -- pynetdicom's events --------------------------------------------------------------

    def _handlers(self) -> list[Any]:
        return [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]

    def _on_requested(self, event: Event) -> None:
        """Refuse, with the standard reason, a sender that is not registered."""
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        assert primitive is not None
        with self._lock:
            # Counted here, not from pynetdicom's threads: a connection that never
            # sends its A-ASSOCIATE-RQ (a port probe) holds a thread, not a slot.
            request = Request(
                called_ae_title=str(primitive.called_ae_title),
                calling_ae_title=str(primitive.calling_ae_title),
                address=assoc.requestor.address,
                active=len(self._admitted) + 1,
            )
            refusal = self._policy.judge(request)
            if refusal is None:
                self._admitted.add(id(assoc))
                return
        log.warning(
            "refused an association from %r at %s calling %r: %s",
            request.calling_ae_title.strip(),
            request.address,
            request.called_ae_title.strip(),
            refusal.reason,
        )
        self.counters.rejected(refusal.reason)
        assoc.acse.send_reject(refusal.result, refusal.source, refusal.diagnostic)
        assoc.kill()

    def _on_established(self, event: Event) -> None:
        assoc = event.assoc
        with self._lock:
            self._established.add(id(assoc))
        self.counters.opened()
        refused = len(assoc.rejected_contexts)
        log.info(
            "association from %r at %s accepted%s",
            assoc.requestor.ae_title.strip(),
            assoc.requestor.address,
            f" ({refused} proposed presentation contexts not supported)" if refused else "",
        )

    def _on_aborted(self, event: Event) -> None:
        self.counters.count("associations_aborted")

    def _on_closed(self, event: Event) -> None:
        with self._lock:
            established = id(event.assoc) in self._established
            self._established.discard(id(event.assoc))
            self._admitted.discard(id(event.assoc))
        if established:
            self.counters.closed()

    def _on_echo(self, event: Event) -> int:
        self.counters.count("echoes")
        return SUCCESS

    def _on_store(self, event: Event) -> int:
        """Answer success only once the instance is durable in the spool."""
        try:
            path = self.spool.keep(event.encoded_dataset())
        except SpoolFull as exc:
            return self._refuse("state_disk_low", str(exc))
        except OSError as exc:
            return self._refuse("write_failed", f"the spool write failed: {exc.strerror or exc}")
        self._taking_again()
        self.counters.count("instances_received")
        self._hand_on(path, "received")
        return SUCCESS

    # -- internals ----------------------------------------------------------------------

    def _hand_on(self, path: Path, trigger: str) -> None:
        stat = path.stat()
        self._on_file(IncomingFile(path, stat.st_size, stat.st_mtime_ns, time.monotonic(), trigger))

    def _refuse(self, reason: str, detail: str) -> int:
        self.counters.refused(reason)
        with self._lock:
            first = self.counters.refusing != reason
            self.counters.refusing = reason
        if first:
            log.warning("refusing instances (0xA700, out of resources): %s", detail)
            self._on_refusing(reason, detail)
        return OUT_OF_RESOURCES

    def _taking_again(self) -> None:
        with self._lock:
            was = self.counters.refusing
            self.counters.refusing = None
        if was is not None:
            log.info("taking instances again (refused for %s until now)", was)
            self._on_refusing(None, f"instances are taken again after {was}")

    def _sweep_loop(self) -> None:
        while not self._stop.wait(SWEEP_S):
            self.spool.sweep(self._done)
            if self.counters.take_changed():
                self._write_stats()

    def _write_stats(self) -> None:
        try:
            write_stats(self._stats_dir, self.counters.snapshot(), len(self.spool.files()))
        except OSError as exc:
            self.counters.count("stats_write_errors")  # also marks them changed: retried
            if not self._stats_failing:
                log.warning("cannot write the receiver's counters for edge status: %s", exc)
            self._stats_failing = True
            return
        self._stats_failing = False


def _application_entity(config: ReceiverConfig) -> AE:
    ae = AE(ae_title=config.ae_title)
    for sop_class in STORAGE_SOP_CLASSES.values():
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    ae.add_supported_context(VERIFICATION)
    # The policy refuses first, with the counted reason. pynetdicom's own limit counts
    # every connection's thread, half-open ones too: it only stops a flood of those.
    ae.maximum_associations = config.max_associations + HALF_OPEN_SPARE
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.timeout_s
    return ae


def _not_started(incoming: IncomingFile) -> None:
    raise RuntimeError("the receiver hands instances on only once started")
