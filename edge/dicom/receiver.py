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

from edge.config import Config
from edge.dicom.contexts import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, VERIFICATION
from edge.dicom.counters import ReceiverCounters, write_stats
from edge.dicom.policy import Request, SenderPolicy
from edge.dicom.spool import Spool, SpoolFull
from edge.dicom.tls import server_context
from edge.errors import JournalError, ReceiverError
from edge.journal import DONE_STATES, Journal
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

    def __init__(
        self,
        config: ReceiverConfig,
        spool: Spool,
        on_file: FileCallback,
        *,
        done: Callable[[Path], bool],
        on_refusing: RefusingCallback,
        stats_dir: Path,
    ) -> None:
        self.config = config
        self.spool = spool
        self.counters = ReceiverCounters(config.ae_title, config.port)
        self._policy = SenderPolicy(config.ae_title, config.allowed, config.max_associations)
        self._on_file = on_file
        self._done = done
        self._on_refusing = on_refusing
        self._stats_dir = stats_dir
        #: associations let through the policy and not yet closed, and those established
        self._admitted: set[int] = set()
        self._established: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ae = _application_entity(config)
        self._server: ThreadedAssociationServer | None = None
        self._sweeper = threading.Thread(target=self._sweep_loop, name="receive-spool", daemon=True)
        self._stats_failing = False

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Listen, then take again what the spool holds.

        Raises
        ------
        ReceiverError
            The port cannot be bound (in use; below 1024 without CAP_NET_BIND_SERVICE),
            or a TLS file cannot be loaded.
        """
        waiting = self.spool.prepare()
        tls = self._listen()
        for path in waiting:
            self._hand_on(path, "scan")
        self._sweeper.start()
        log.info(
            "receiving DICOM as %s on port %d%s (%d instances waiting in the spool)",
            self.config.ae_title,
            self.config.port,
            " with TLS" if tls is not None else "",
            len(waiting),
        )

    def _listen(self) -> ssl.SSLContext | None:
        where = f"{self.config.bind} port {self.config.port}"
        try:
            tls = None if self.config.tls is None else server_context(self.config.tls)
            self._server = self._ae.start_server(
                (self.config.bind, self.config.port),
                block=False,
                ssl_context=tls,
                evt_handlers=self._handlers(),
            )
        except ssl.SSLError as exc:
            raise ReceiverError(f"cannot load receiver.tls: {exc}") from exc
        except OSError as exc:
            hint = (
                " (see edge doctor and docs/receiver.md, port 104)"
                if exc.errno == errno.EACCES
                else ""
            )
            raise ReceiverError(f"cannot listen on {where}: {exc.strerror or exc}{hint}") from exc
        return tls

    def stop(self) -> None:
        """Stop listening, let associations in progress finish briefly, abort the rest."""
        if self._server is not None:
            self._server.shutdown()
        deadline = time.monotonic() + DRAIN_S
        while self._ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        self._ae.shutdown()
        self._stop.set()
        if self._sweeper.is_alive():
            self._sweeper.join(timeout=5)
        self._write_stats()

    def is_alive(self) -> bool:
        return self._sweeper.is_alive() and self._server is not None

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


def open_receiver(
    config: Config,
    journal: Journal,
    on_file: FileCallback,
    on_refusing: RefusingCallback,
) -> Receiver | None:
    """The receiver ``config.receiver`` describes, or None when it has none."""
    if config.receiver is None:
        return None
    # pynetdicom's INFO and DEBUG lines quote UIDs and element values of what it
    # receives; the receiver logs what matters itself.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLogger().level))
    return Receiver(
        config.receiver,
        Spool(config.spool_dir, min_free_mb=config.health.min_free_mb),
        on_file,
        done=lambda path: _finished(journal, path),
        on_refusing=on_refusing,
        stats_dir=config.state_dir,
    )


def _finished(journal: Journal, path: Path) -> bool:
    """Whether the journal says the instance at ``path`` needs no more work."""
    try:
        record = journal.file(path)
    except JournalError:
        return False  # read again at the next sweep
    return record is not None and record.state in DONE_STATES
