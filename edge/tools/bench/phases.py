"""What the bench does to a running pipeline: arrivals, bursts, idling and a soak.

The bench writes the files itself, so it knows when it closed each one; the
listener knows when the study's result reached the hub. Both times come from the
system-wide monotonic clock, the same one the daemon stamps its stages with.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.tools.bench import BenchError
from edge.tools.bench.corpus import Case, StagedStudy, sent_name, stage_study
from edge.tools.bench.harness import Listener

if TYPE_CHECKING:
    import psutil

#: bytes per write() when the bench writes a file as a receiver would
WRITE_CHUNK = 1 << 20
#: pause after a study's result, so the next study starts on an idle pipeline
SETTLE_S = 0.2


@dataclass
class Rig:
    """Where studies are staged and dropped, and who hears the results."""

    export: Path
    staging: Path
    #: where pydicom writes a study before it is renamed into ``staging``
    scratch: Path
    listener: Listener
    templates: dict[str, list[Case]]
    timeout_s: float
    numbers: Iterator[int]

    def stage(self, encoding: str, index: int) -> StagedStudy:
        cases = self.templates[encoding]
        case = cases[index % len(cases)]
        return stage_study(
            case, encoding, self.staging, number=next(self.numbers), scratch=self.scratch
        )

    def drop(self, study: StagedStudy) -> None:
        """Rename a staged study's files into the watch folder, as fast as that goes.

        Staged inside the watch folder (hidden), each file is renamed within the
        watched tree: the watcher sees a move, as from a PACS that writes under a
        temporary name, and takes the file at once.
        """
        for path in study.files:
            path.rename(self.export / sent_name(path))

    def discard(self, study: StagedStudy) -> None:
        """Delete a study's files from the watch folder and the staging folder."""
        for path in study.files:
            (self.export / sent_name(path)).unlink(missing_ok=True)
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class StudySample:
    """One study's end-to-end time and the stage timings its result carried."""

    encoding: str
    e2e_ms: float
    timings_ms: dict[str, float]
    #: decode + preprocess + infer of the last view, in-process, right after the study
    isolated_ms: float | None = None


def arrivals(
    rig: Rig,
    encodings: tuple[str, ...],
    repeats: int,
    gap_s: float,
    alone: Callable[[Path], float] | None = None,
) -> list[StudySample]:
    """``repeats`` studies per encoding, each view written ``gap_s`` after the last.

    Encodings take turns, so that a change of load on the box spreads over all of them.
    ``alone`` (a file -> milliseconds of its compute in isolation) is run on each
    study's last view once its result is in: a measure of the unavoidable work taken
    under the same load as the study itself.
    """
    samples = []
    for index, encoding in itertools.product(range(repeats), encodings):
        study = rig.stage(encoding, index)
        try:
            sample = _one_study(rig, study, gap_s)
            if alone is not None:
                time.sleep(SETTLE_S)
                sample = replace(sample, isolated_ms=alone(study.files[-1]))
            samples.append(sample)
        finally:
            rig.discard(study)
        time.sleep(SETTLE_S)
    return samples


def _one_study(rig: Rig, study: StagedStudy, gap_s: float) -> StudySample:
    contents = [(sent_name(path), path.read_bytes()) for path in study.files]
    started = time.monotonic()
    closed = 0.0
    for number, (name, data) in enumerate(contents):
        _sleep_until(started + number * gap_s)
        closed = write_file(rig.export / name, data)
    received = rig.listener.wait_result(study.study_uid, rig.timeout_s)
    _check_complete(received.message)
    timings = received.message.get("timings_ms", {})
    return StudySample(study.encoding, (received.at - closed) * 1000, dict(timings))


def write_file(path: Path, data: bytes) -> float:
    """Write ``data`` in chunks, as a DICOM receiver does while PDUs arrive; return the
    monotonic time of the close.
    """
    with path.open("wb") as stream:
        for start in range(0, len(data), WRITE_CHUNK):
            stream.write(data[start : start + WRITE_CHUNK])
    return time.monotonic()


@dataclass(frozen=True)
class BurstRun:
    studies: int
    images: int
    seconds: float
    encodings: tuple[str, ...]
    #: the daemon's CPU time over the burst's wall time: cores it kept busy on average
    daemon_cores_busy: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def burst(rig: Rig, encodings: tuple[str, ...], studies: int, pid: int) -> BurstRun:
    """Drop ``studies`` studies (encodings in turn) at once; time until the last result.

    The files are staged first, then renamed into place one after the other
    (:meth:`Rig.drop`), which takes milliseconds: a PACS pushing a backlog.
    The CPU time of the daemon (process ``pid``) and its decode workers over the
    burst says how many cores it kept busy.
    """
    staged = [rig.stage(encodings[n % len(encodings)], n) for n in range(studies)]
    process = _process(pid)
    try:
        cpu_before = _cpu_seconds(process)
        started = time.monotonic()
        for study in staged:
            rig.drop(study)
        last = max(rig.listener.wait_result(s.study_uid, rig.timeout_s).at for s in staged)
        cpu = _cpu_seconds(process) - cpu_before
    finally:
        for study in staged:
            rig.discard(study)
    used = tuple(dict.fromkeys(s.encoding for s in staged))
    return BurstRun(studies, 4 * studies, last - started, used, cpu / (last - started))


def idle_cpu_percent(pid: int, seconds: float) -> float:
    """CPU time the process used over ``seconds`` of wall time, in % of one core."""
    process = _process(pid)
    before = _cpu_seconds(process)
    started = time.monotonic()
    time.sleep(seconds)
    used = _cpu_seconds(process) - before
    return 100.0 * used / (time.monotonic() - started)


def rss_mb(pid: int) -> float:
    return float(_process(pid).memory_info().rss) / (1 << 20)


def children_rss_mb(pid: int) -> float:
    """Resident memory of every process under ``pid`` (the fork server and the decode
    workers), summed: pages they share are counted once per process."""
    rss = _sum_over(_process(pid).children(recursive=True), lambda p: p.memory_info().rss)
    return rss / (1 << 20)


def soak(
    rig: Rig,
    encodings: tuple[str, ...],
    images: int,
    window: int,
    each: Callable[[], None] | None = None,
) -> int:
    """Feed ``images`` images (whole studies, encodings in turn), ``window`` studies in
    flight at most, deleting each study once its result is in; return images fed.

    ``each`` is called after every result (to sample the daemon's memory).
    """
    in_flight: deque[StagedStudy] = deque()
    fed = 0
    number = 0
    while fed < images or in_flight:
        if fed < images and len(in_flight) < window:
            study = rig.stage(encodings[number % len(encodings)], number)
            rig.drop(study)
            in_flight.append(study)
            fed += len(study.files)
            number += 1
            continue
        oldest = in_flight.popleft()
        rig.listener.wait_result(oldest.study_uid, rig.timeout_s)
        rig.discard(oldest)
        if each is not None:
            each()
    return fed


def _check_complete(message: dict[str, Any]) -> None:
    missing = message.get("missing_views") or []
    if missing:
        raise BenchError(
            f"a study's result lacks {', '.join(missing)}: a file was not scored "
            "(see the daemon log in the bench folder, kept with --keep)"
        )


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _cpu_seconds(process: psutil.Process) -> float:
    """CPU time of ``process`` and every process under it (the daemon's decode workers
    are its grandchildren, under the fork server)."""

    def used(member: psutil.Process) -> float:
        times = member.cpu_times()
        return float(times.user + times.system)

    return _sum_over([process, *process.children(recursive=True)], used)


def _sum_over(members: list[psutil.Process], measure: Callable[[psutil.Process], float]) -> float:
    """``measure`` summed over the processes still there (a worker replaced meanwhile
    is left out)."""
    import psutil

    total = 0.0
    for member in members:
        try:
            total += measure(member)
        except psutil.NoSuchProcess:
            continue
    return total


def _process(pid: int) -> psutil.Process:
    try:
        import psutil
    except ImportError as exc:
        raise BenchError("the footprint figures need psutil: pip install 'edge[bench]'") from exc
    return psutil.Process(pid)
