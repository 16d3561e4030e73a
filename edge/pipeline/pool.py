"""Where decoding runs: worker processes that a hostile file can kill, or threads.

Measured (docs/ingest.md): pylibjpeg-openjpeg, pylibjpeg-libjpeg, pylibjpeg-rle
and pyjpegls hold the GIL for the whole decode (a thread beside them stalls for
up to 1.7 s); glymur, imagecodecs and OpenCV release it. The process pool is the
default because it also contains what threads cannot: a decoder that crashes on a
hostile file takes down one worker, which is replaced, and the file is
quarantined as ``decoder_crashed``; a decoder that hangs is killed after
``timeout_s``. The thread pool is for small boxes where memory is short; with it
a crashing decoder takes the daemon down, and systemd restarts it.

Both run :func:`~edge.pipeline.decode.load_model_input` on one file at a time per
worker, for the preprocessing of the engine that will score it (engines can be
swapped while the daemon runs); results go back to the caller of :meth:`run`, so
the order in which files finish never matters to the study they belong to.

A worker hands its model input back through memory it shares with the daemon (a
``memfd`` sent over the pipe), not pickled through the pipe: for the demo engine's
1024 x 832 float32 input that is about 2 ms instead of 6 on the 2-core
development VM, on every image's path to a result.
"""

from __future__ import annotations

import dataclasses
import logging
import mmap
import multiprocessing
import os
import queue
import signal
import threading
import warnings
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.reduction import recv_handle, send_handle
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edge.bundle.manifest import Preprocessing
from edge.common.privacy import describe
from edge.errors import IngestError
from edge.pipeline.codecs import availability
from edge.pipeline.options import DecodeOptions
from edge.types import ImageHeader, ModelInput

if TYPE_CHECKING:
    from edge.config import DecodeConfig

log = logging.getLogger(__name__)

#: modules the fork server imports once, so a replaced worker starts in milliseconds
PRELOAD = ["edge.pipeline.decode"]


class DecodePool(Protocol):
    def run(self, header: ImageHeader, spec: Preprocessing) -> ModelInput: ...

    def close(self) -> None: ...


class ThreadDecoder:
    """Decode in the calling thread (the daemon's ingest threads)."""

    def __init__(self, *, threads: int, options: DecodeOptions | None = None) -> None:
        self._options = dataclasses.replace(options or DecodeOptions(), threads=threads)

    def run(self, header: ImageHeader, spec: Preprocessing) -> ModelInput:
        return _load(header, spec, self._options)

    def close(self) -> None:
        return None


class ProcessDecoder:
    """``workers`` processes, each decoding one file at a time; thread-safe."""

    def __init__(
        self,
        workers: int,
        *,
        threads: int,
        timeout_s: float,
        options: DecodeOptions | None = None,
    ) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        self._timeout_s = timeout_s
        self._idle: queue.Queue[_Worker] = queue.Queue()
        options = dataclasses.replace(options or DecodeOptions(), threads=threads)
        self._workers = [_Worker(context, options) for _ in range(max(1, workers))]
        for worker in self._workers:
            self._idle.put(worker)

    def run(self, header: ImageHeader, spec: Preprocessing) -> ModelInput:
        """Decode and prepare ``header``'s file for ``spec`` in a free worker, waiting for one.

        Raises
        ------
        IngestError
            The file's own failure, ``decoder_crashed`` or ``decode_timeout``.
        """
        worker = self._idle.get()
        try:
            return worker.call(header, spec, self._timeout_s)
        finally:
            self._idle.put(worker)

    def worker_pids(self) -> list[int]:
        """Process ids of the workers (for health and for tests that kill one)."""
        return [worker.pid for worker in self._workers]

    def busy_pids(self) -> list[int]:
        """Process ids of the workers decoding a file right now."""
        return [worker.pid for worker in self._workers if worker.busy]

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()


class _SharedMemory:
    """An anonymous file mapped by the daemon and by one worker (Linux ``memfd``)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.fd = os.memfd_create("edge-decode", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self.map = mmap.mmap(self.fd, size)
        except OSError:
            os.close(self.fd)
            raise

    def copy_out(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        count = int(np.prod(shape))
        view = np.frombuffer(self.map, dtype=np.dtype(dtype), count=count).reshape(shape)
        copied: np.ndarray = view.copy()
        return copied

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


class _Worker:
    """One decoding process and the pipe to it; replaced when it dies."""

    def __init__(self, context: BaseContext, options: DecodeOptions) -> None:
        self._context = context
        self._options = options
        self.busy = False
        self._lock = threading.Lock()
        #: where the worker puts model inputs that fit; kept across worker restarts
        self._shared: _SharedMemory | None = None
        self._start()

    @property
    def pid(self) -> int:
        return self._process.pid or 0

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(  # type: ignore[attr-defined]
            target=serve, args=(child, self._options), name="edge-decode", daemon=True
        )
        process.start()
        child.close()
        self._conn: Connection = parent
        self._process = process
        self._shared_sent = False

    def call(self, header: ImageHeader, spec: Preprocessing, timeout_s: float) -> ModelInput:
        with self._lock:
            if not self._process.is_alive():
                self._replace("it had died while idle")
            self.busy = True
            try:
                self._share(spec.height * spec.width * np.dtype(np.float32).itemsize)
                self._conn.send((header, spec))
                return self._receive(timeout_s)
            finally:
                self.busy = False

    def _share(self, size: int) -> None:
        """Make sure the worker holds shared memory of at least ``size`` bytes."""
        if not hasattr(os, "memfd_create"):
            return  # not Linux: inputs come back through the pipe
        if self._shared is None or self._shared.size < size:
            if self._shared is not None:
                self._shared.close()
            self._shared = _SharedMemory(size)
            self._shared_sent = False
        if not self._shared_sent:
            self._conn.send(("shared_memory", self._shared.size))
            send_handle(self._conn, self._shared.fd, self.pid)
            self._shared_sent = True

    def _receive(self, timeout_s: float) -> ModelInput:
        if not self._conn.poll(timeout_s):
            self._replace("it ran past the decode timeout")
            raise IngestError("decode_timeout", f"decoding took longer than {timeout_s:g} s")
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._process.join(timeout=5)
            how = _describe_exit(self._process.exitcode)
            self._replace(f"it died ({how})")
            raise IngestError("decoder_crashed", f"the decoder process died ({how})") from exc
        if kind == "ok":
            assert isinstance(payload, ModelInput)
            return payload
        if kind == "shared":
            prepared, shape, dtype = payload
            assert isinstance(prepared, ModelInput) and self._shared is not None
            return dataclasses.replace(prepared, tensor=self._shared.copy_out(shape, dtype))
        if kind == "ingest":
            reason, detail = payload
            raise IngestError(reason, detail)
        raise RuntimeError(f"decode worker: {payload}")

    def _replace(self, why: str) -> None:
        log.warning("replacing decode worker %d: %s", self.pid, why)
        self._kill()
        self._start()

    def _kill(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=5)
        self._conn.close()

    def stop(self) -> None:
        with self._lock:
            try:
                self._conn.send(None)
            except OSError as exc:
                log.debug("decode worker %d already gone: %s", self.pid, exc)
            self._process.join(timeout=5)
            self._kill()
            if self._shared is not None:
                self._shared.close()
                self._shared = None


def _load(header: ImageHeader, spec: Preprocessing, options: DecodeOptions) -> ModelInput:
    from edge.pipeline.decode import load_model_input

    return load_model_input(
        header, spec, threads=options.threads, tolerance=options.tolerance, gpu=options.gpu
    )


def serve(conn: Connection, options: DecodeOptions) -> None:
    """A worker's loop: decode each (header, preprocessing) it is sent until told to stop."""
    # The daemon stops its workers itself once it has drained; a Ctrl-C or a
    # systemd SIGTERM sent to the whole group must not kill a decode in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # As in the daemon (edge.logs): pydicom's own messages about a broken file may
    # quote what the file holds; the daemon logs the file's reason instead.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
    shared: mmap.mmap | None = None
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        if task[0] == "shared_memory":
            fd = recv_handle(conn)
            if shared is not None:
                shared.close()
            shared = mmap.mmap(fd, task[1])
            os.close(fd)
            continue
        header, spec = task
        try:
            reply = _reply(_load(header, spec, options), shared)
        except IngestError as error:
            reply = ("ingest", (error.reason, error.detail))
        except Exception as exc:  # noqa: BLE001 - sent to the daemon, which logs it as a bug
            reply = ("bug", describe(exc))  # its text may quote a value
        conn.send(reply)


def _reply(prepared: ModelInput, shared: mmap.mmap | None) -> tuple[str, object]:
    """The tensor through shared memory when it fits, else through the pipe."""
    tensor = prepared.tensor
    if shared is None or tensor.nbytes > len(shared):
        return ("ok", prepared)
    np.frombuffer(shared, dtype=tensor.dtype, count=tensor.size).reshape(tensor.shape)[...] = tensor
    bare = dataclasses.replace(prepared, tensor=np.empty(0, dtype=tensor.dtype))
    return ("shared", (bare, tensor.shape, tensor.dtype.str))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exit status {code}"


def pool_for(decode: DecodeConfig, workers: int) -> DecodePool:
    """The pool the configuration's ``decode`` section asks for, ``workers`` wide."""
    options = DecodeOptions(tolerance=decode.score_tolerance, gpu=decode.gpu == "auto")
    return make_pool(decode.pool, workers, timeout_s=decode.timeout_s, options=options)


def make_pool(
    kind: str,
    workers: int,
    *,
    timeout_s: float,
    threads: int = 0,
    options: DecodeOptions | None = None,
) -> DecodePool:
    """The pool ``decode.pool`` names: ``process`` or ``thread``."""
    threads = threads or os.cpu_count() or 1
    found, complete = availability()
    (log.info if complete else log.warning)("decoders: %s", found)
    if options is not None and options.gpu:
        from edge.pipeline import gpudecode

        log.info("GPU decoding of JPEG 2000 (decode.gpu: auto): %s", gpudecode.is_available()[1])
    if kind == "thread":
        return ThreadDecoder(threads=threads, options=options)
    return ProcessDecoder(workers, threads=threads, timeout_s=timeout_s, options=options)
