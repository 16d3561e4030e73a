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
:meth:`ProcessDecoder.begin` starts a worker on a file before the daemon has read
its header (:func:`~edge.pipeline.decode.load_file`: one reading, the same header
checks), so that the header read and the claim run beside the decode.

A worker hands its model input back in memory it shares with the daemon (``memfd``
slots sent over the pipe), where the daemon scores it without a copy until the
input is dropped; pickling the demo engine's 1024 x 832 float32 input through the
pipe took about 6 ms on the 2-core development VM, a copy out of shared memory
0.6-0.9 ms, on every image's path to a result.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import queue
from typing import TYPE_CHECKING, Protocol

from edge.bundle.manifest import Preprocessing
from edge.errors import IngestError, Skip
from edge.pipeline.codecs import availability
from edge.pipeline.decode_worker import Worker, load
from edge.pipeline.options import DecodeOptions, HeaderCheck
from edge.types import ImageHeader, IncomingFile, ModelInput

if TYPE_CHECKING:
    from edge.config import DecodeConfig

log = logging.getLogger(__name__)

#: modules the fork server imports once, so a replaced worker starts in milliseconds
PRELOAD = ["edge.pipeline.decode", "edge.pipeline.decode_worker"]


class Decoding(Protocol):
    """A file's decoding, begun before the daemon has read and claimed its header."""

    def result(self, header: ImageHeader, spec: Preprocessing) -> ModelInput:
        """The model input of the image ``header`` describes, for ``spec``.

        Raises
        ------
        IngestError
            The file's failure, ``decoder_crashed``, ``decode_timeout``, or
            ``changed`` when the worker read another image than ``header`` describes.
        """

    def abandon(self) -> None:
        """Let the file go (skipped, refused or a duplicate); nothing once the result
        was taken."""


class DecodePool(Protocol):
    def run(self, header: ImageHeader, spec: Preprocessing) -> ModelInput: ...

    def begin(self, incoming: IncomingFile, spec: Preprocessing, check: HeaderCheck) -> Decoding:
        """Start on ``incoming`` while the caller reads its header (the worker checks
        the header as ``check`` says, and reads the file once)."""

    def close(self) -> None: ...


class ThreadDecoder:
    """Decode in the calling thread (the daemon's ingest threads)."""

    def __init__(self, *, threads: int, options: DecodeOptions | None = None) -> None:
        self._options = dataclasses.replace(options or DecodeOptions(), threads=threads)

    def run(self, header: ImageHeader, spec: Preprocessing) -> ModelInput:
        return load(header, spec, self._options)

    def begin(self, incoming: IncomingFile, spec: Preprocessing, check: HeaderCheck) -> Decoding:
        """Nothing begins early: the calling thread is the decoder, once the header is read."""
        return _Deferred(self)

    def close(self) -> None:
        return None


class _Deferred:
    """A thread pool's decoding: it runs when its result is asked for."""

    def __init__(self, decoder: ThreadDecoder) -> None:
        self._decoder = decoder

    def result(self, header: ImageHeader, spec: Preprocessing) -> ModelInput:
        return self._decoder.run(header, spec)

    def abandon(self) -> None:
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
        self.timeout_s = timeout_s
        self._idle: queue.Queue[Worker] = queue.Queue()
        options = dataclasses.replace(options or DecodeOptions(), threads=threads)
        self._workers = [Worker(context, options) for _ in range(max(1, workers))]
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
            return worker.call((header, spec), spec, self.timeout_s)
        finally:
            self._idle.put(worker)

    def begin(self, incoming: IncomingFile, spec: Preprocessing, check: HeaderCheck) -> Decoding:
        """Send ``incoming`` to a free worker (waiting for one), which reads, checks and
        decodes it for ``spec`` while the caller reads its header: the header's reading
        and claim are then off the image's path to a result."""
        worker = self._idle.get()
        try:
            worker.send(("file", incoming, spec, check), spec)
        except BaseException:
            self._idle.put(worker)
            raise
        return _Begun(self, worker, spec)

    def _done_with(self, worker: Worker) -> None:
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


class _Begun:
    """A decoding sent to a worker by :meth:`ProcessDecoder.begin`; its reply is taken once."""

    def __init__(self, pool: ProcessDecoder, worker: Worker, spec: Preprocessing) -> None:
        self._pool = pool
        self._worker: Worker | None = worker
        self._spec = spec

    def result(self, header: ImageHeader, spec: Preprocessing) -> ModelInput:
        try:
            prepared = self._receive()
        except Skip as skip:  # the daemon's own reading took the file: it changed since
            raise IngestError(
                "changed", f"the file changed after its header was read: {skip.detail}"
            ) from skip
        if prepared.header != header:
            raise IngestError("changed", "the file changed after its header was read")
        if spec != self._spec:
            # The study is bound to an engine that prepares its input otherwise
            # (a hot swap while the study arrives): prepared again for that one.
            return self._pool.run(header, spec)
        # The daemon's header carries the timings of its own reading (header, detect).
        return dataclasses.replace(prepared, header=header)

    def abandon(self) -> None:
        if self._worker is None:
            return
        try:
            self._receive()
        except (IngestError, Skip) as why:
            log.debug("abandoned decoding ended: %s", why)

    def _receive(self) -> ModelInput:
        worker = self._worker
        if worker is None:
            raise RuntimeError("a begun decoding's result is taken once")
        self._worker = None
        try:
            return worker.receive(self._pool.timeout_s)
        finally:
            self._pool._done_with(worker)


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
