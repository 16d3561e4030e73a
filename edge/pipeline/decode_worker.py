"""A decode worker process and the daemon's end of it: the pipe, the shared memory.

The daemon's :class:`Worker` sends a task (a file and the preprocessing of the
engine that will score it) and takes back the model input, the file's reason, or
the worker's death (``decoder_crashed``) or silence (``decode_timeout``); the
worker process runs :func:`serve`. Model inputs come back in ``memfd`` slots the
daemon maps too (:class:`_Slots`), scored where the worker wrote them.
"""

from __future__ import annotations

import dataclasses
import logging
import mmap
import os
import signal
import threading
import warnings
import weakref
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.reduction import recv_handle, send_handle

import numpy as np

from edge.bundle.manifest import Preprocessing
from edge.common.privacy import describe
from edge.errors import IngestError, Skip
from edge.pipeline.options import DecodeOptions, HeaderCheck
from edge.types import ImageHeader, IncomingFile, ModelInput

log = logging.getLogger(__name__)

#: model inputs of one worker that the daemon can hold at once without a copy: the
#: one being scored, one queued, and the one the worker is preparing
SHARED_SLOTS = 3
#: a slot's pages are made when it is: a box's memory does not grow later, the
#: first time a burst of images fills its every slot (Linux; 0 elsewhere)
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


class _SharedMemory:
    """An anonymous file mapped by the daemon and by one worker (Linux ``memfd``)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.fd = os.memfd_create("edge-decode", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self.map = _shared_map(self.fd, size)
        except OSError:
            os.close(self.fd)
            raise

    def view(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """The array the worker wrote here, not copied (the slot is lent out with it)."""
        count = int(np.prod(shape))
        return np.frombuffer(self.map, dtype=np.dtype(dtype), count=count)

    def close(self) -> None:
        os.close(self.fd)
        try:
            self.map.close()
        except BufferError:
            # A model input still looks at it: the mapping goes with its last view.
            log.debug("shared decode memory still in use; released with its last input")


def _shared_map(fd: int, size: int) -> mmap.mmap:
    """``size`` bytes of the memory file ``fd``, shared, its pages made now."""
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _POPULATE)


class _Slots:
    """A worker's shared memories, each lent to one model input at a time.

    The worker writes its model input into a free slot and the daemon scores it
    from there, not copied: the slot comes back when the last view of that input
    is gone (the inference worker is done with it). With every slot lent out
    (inputs queued behind a busy engine), the input comes through the pipe.
    """

    def __init__(self, count: int) -> None:
        self._memories: list[_SharedMemory | None] = [None] * count
        self._free = set(range(count))
        self._lock = threading.Lock()
        #: the slots the worker process now running has been sent
        self._sent: set[int] = set()

    def ensure(self, size: int) -> list[int]:
        """Make every slot at least ``size`` bytes; the slots to send the worker now
        (a worker whose pipe breaks on the way is replaced, and :meth:`unsent` again)."""
        with self._lock:
            for index, memory in enumerate(self._memories):
                if memory is None or memory.size < size:
                    if memory is not None:
                        memory.close()
                    self._memories[index] = _SharedMemory(size)
                    self._sent.discard(index)
            new = [index for index in range(len(self._memories)) if index not in self._sent]
            self._sent.update(new)
            return new

    def unsent(self) -> None:
        """A new worker process holds none of the slots yet."""
        with self._lock:
            self._sent.clear()

    def memory(self, index: int) -> _SharedMemory:
        memory = self._memories[index]
        assert memory is not None, "ensure() makes every slot"
        return memory

    def lend(self) -> int | None:
        """A free slot for the next model input, taken; None when all are lent."""
        with self._lock:
            return self._free.pop() if self._free else None

    def give_back(self, index: int) -> None:
        with self._lock:
            self._free.add(index)

    def lend_with(self, index: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """Slot ``index``'s input as an array; the slot is given back with the array."""
        flat = self.memory(index).view(shape, dtype)
        # Every view of the input (a batch of one, a reshape) has ``flat`` as its base.
        weakref.finalize(flat, self.give_back, index)
        shaped: np.ndarray = flat.reshape(shape)
        return shaped

    def close(self) -> None:
        with self._lock:
            memories, self._memories = self._memories, [None] * len(self._memories)
            self._sent.clear()
        for memory in memories:
            if memory is not None:
                memory.close()


class Worker:
    """One decoding process and the pipe to it; replaced when it dies."""

    def __init__(self, context: BaseContext, options: DecodeOptions) -> None:
        self._context = context
        self._options = options
        self.busy = False
        self._lock = threading.Lock()
        #: where the worker puts model inputs that fit; kept across worker restarts
        self._slots = _Slots(SHARED_SLOTS) if hasattr(os, "memfd_create") else None
        #: the slot lent to the task in hand
        self._slot: int | None = None
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
        if self._slots is not None:
            self._slots.unsent()

    def call(self, task: tuple[object, ...], spec: Preprocessing, timeout_s: float) -> ModelInput:
        self.send(task, spec)
        return self.receive(timeout_s)

    def send(self, task: tuple[object, ...], spec: Preprocessing) -> None:
        """Send a task that prepares an input for ``spec``; the reply is :meth:`receive`'s."""
        with self._lock:
            if not self._process.is_alive():
                self._replace("it had died while idle")
            slot = self._share(spec.height * spec.width * np.dtype(np.float32).itemsize)
            try:
                self._conn.send(("task", slot, task))
            except BaseException:
                if slot is not None and self._slots is not None:
                    self._slots.give_back(slot)
                raise
            self._slot = slot
            self.busy = True

    def receive(self, timeout_s: float) -> ModelInput:
        """The reply to the task sent; the worker is replaced if it died or hangs."""
        with self._lock:
            slot, self._slot = self._slot, None
            try:
                return self._receive(timeout_s, slot)
            finally:
                self.busy = False

    def _share(self, size: int) -> int | None:
        """Make sure the worker holds shared slots of ``size`` bytes; lend one for a task."""
        slots = self._slots
        if slots is None:
            return None  # not Linux: inputs come back through the pipe
        for index in slots.ensure(size):
            self._conn.send(("shared_memory", index, size))
            send_handle(self._conn, slots.memory(index).fd, self.pid)
        return slots.lend()

    def _receive(self, timeout_s: float, slot: int | None) -> ModelInput:
        """The reply; the slot lent to the task goes back unless the input stays in it."""
        lent = False
        try:
            prepared, lent = self._take_reply(timeout_s, slot)
            return prepared
        finally:
            if slot is not None and not lent and self._slots is not None:
                self._slots.give_back(slot)

    def _take_reply(self, timeout_s: float, slot: int | None) -> tuple[ModelInput, bool]:
        """The worker's model input, and whether it stays in its shared slot."""
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
            return payload, False
        if kind == "shared":
            prepared, shape, dtype = payload
            assert isinstance(prepared, ModelInput) and self._slots is not None and slot is not None
            tensor = self._slots.lend_with(slot, shape, dtype)
            return dataclasses.replace(prepared, tensor=tensor), True
        if kind == "ingest":
            reason, detail = payload
            raise IngestError(reason, detail)
        if kind == "skip":
            reason, detail = payload
            raise Skip(reason, detail)
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
            if self._slots is not None:
                self._slots.close()


def load(
    header: ImageHeader,
    spec: Preprocessing,
    options: DecodeOptions,
    out: np.ndarray | None = None,
) -> ModelInput:
    """Decode and prepare the file of ``header`` (read by the daemon) for ``spec``."""
    from edge.pipeline.decode import load_model_input

    return load_model_input(
        header,
        spec,
        threads=options.threads,
        tolerance=options.tolerance,
        gpu=options.gpu,
        out=out,
    )


def _run(task: tuple[object, ...], options: DecodeOptions, shared: mmap.mmap | None) -> ModelInput:
    """A worker's task: a file whose header the daemon has read, or a file alone; its
    input is written into ``shared`` (the slot lent to it) where it fits."""
    if task[0] == "file":
        from edge.pipeline.decode import load_file

        _, incoming, spec, check = task
        assert isinstance(incoming, IncomingFile) and isinstance(spec, Preprocessing)
        assert isinstance(check, HeaderCheck)
        return load_file(
            incoming,
            spec,
            max_pixels=check.max_pixels,
            accepts=check.accepts,
            threads=options.threads,
            tolerance=options.tolerance,
            gpu=options.gpu,
            out=_slot_input(shared, spec),
        )
    header, spec = task
    assert isinstance(header, ImageHeader) and isinstance(spec, Preprocessing)
    return load(header, spec, options, _slot_input(shared, spec))


def _slot_input(shared: mmap.mmap | None, spec: Preprocessing) -> np.ndarray | None:
    """The slot as the (1, H, W) input of ``spec``; None without a slot or when it
    is too small."""
    count = spec.height * spec.width
    if shared is None or count * np.dtype(np.float32).itemsize > len(shared):
        return None
    return np.frombuffer(shared, dtype=np.float32, count=count).reshape(1, spec.height, spec.width)


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
    shared: dict[int, mmap.mmap] = {}
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        if message[0] == "shared_memory":
            _, index, size = message
            fd = recv_handle(conn)
            if index in shared:
                shared[index].close()
            shared[index] = _shared_map(fd, size)
            os.close(fd)
            continue
        _, slot, task = message
        try:
            # The input's views of the slot are gone once _reply returns: a slot the
            # daemon grows is closed here, which a view still looking at it would stop.
            memory = shared.get(slot) if slot is not None else None
            reply = _reply(_run(task, options, memory), memory)
        except IngestError as error:
            reply = ("ingest", (error.reason, error.detail))
        except Skip as skip:
            reply = ("skip", (skip.reason, skip.detail))
        except Exception as exc:  # noqa: BLE001 - sent to the daemon, which logs it as a bug
            reply = ("bug", describe(exc))  # its text may quote a value
        conn.send(reply)


def _reply(prepared: ModelInput, shared: mmap.mmap | None) -> tuple[str, object]:
    """The input left in the slot it was prepared in (:func:`_slot_input` gave the slot
    whenever the input fits), else through the pipe."""
    tensor = prepared.tensor
    if shared is None or tensor.nbytes > len(shared):
        return ("ok", prepared)
    bare = dataclasses.replace(prepared, tensor=np.empty(0, dtype=tensor.dtype))
    return ("shared", (bare, tensor.shape, tensor.dtype.str))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exit status {code}"
