"""The phases that need the broker and a running pipeline, one after the other.

- the latency daemon (health every second, for the publish timings): ``e2e``
  (views 0.5 s apart), ``e2e_burst`` (four views at once), then the throughput burst;
- the footprint daemon (the configuration's own health interval): idle CPU on an
  empty folder, warm-up, resident memory, soak, resident memory;
- the naive baseline on the same files and model.

One phase at a time, so that no phase competes with another for the cores.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.daemon import SERVING
from edge.tools.bench import BenchError, cstore, dicom, phases, repair
from edge.tools.bench.baseline import READY as BASELINE_READY
from edge.tools.bench.baseline import TOPIC as BASELINE_TOPIC
from edge.tools.bench.corpus import Case
from edge.tools.bench.harness import Broker, Child, Listener, daemon_child, daemon_config

#: studies in flight at once during the warm-up and the soak
SOAK_WINDOW = 4
RESULT_TIMEOUT_S = 300.0
#: the daemon finishes its last study's bookkeeping before its memory is read
IDLE_BEFORE_RSS_S = 1.0
#: the view gaps of the two arrival patterns
MODALITY_GAP_S = 0.5


@dataclass(frozen=True)
class LatencyFigures:
    e2e: list[phases.StudySample]
    e2e_burst: list[phases.StudySample]
    #: the daemon's own publish percentiles (submit -> PUBACK), from its health
    publish_ms: dict[str, float]
    burst: phases.BurstRun


@dataclass(frozen=True)
class FootprintFigures:
    idle_cpu_percent: float
    #: ``warm``, ``after_soak`` and ``peak`` (during the soak) of the daemon, and
    #: ``decode_workers`` (after the soak, the processes under it), MB
    rss_mb: dict[str, float]
    soak_images: int


class BenchSession:
    """A private broker and a hub-like listener, shared by the phases."""

    def __init__(self, config: Config, work: Path, cases: dict[str, list[Case]]) -> None:
        self.config = config
        self.work = work
        self.cases = cases
        self._numbers = itertools.count(1)
        self._broker = Broker(_folder(work, "broker"))
        self._listener: Listener | None = None

    def __enter__(self) -> BenchSession:
        self._broker.start()
        try:
            topics = [self.config.topic("results"), BASELINE_TOPIC]
            self._listener = Listener(self._broker.port, topics, self.config.topic("health"))
        except Exception:
            self._broker.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._listener is not None:
            self._listener.close()
        self._broker.stop()

    @property
    def listener(self) -> Listener:
        assert self._listener is not None, "use the session as a context manager"
        return self._listener

    def latency(
        self,
        encodings: tuple[str, ...],
        repeats: int,
        burst_studies: int,
        alone: Callable[[Path], float],
    ) -> LatencyFigures:
        """``alone`` measures a study's last view in isolation after each ``e2e`` study."""
        with self._daemon("daemon-latency", health_interval_s=1.0) as (daemon, rig):
            with _phase(f"e2e: views {MODALITY_GAP_S:g} s apart, {repeats} per encoding"):
                e2e = phases.arrivals(rig, encodings, repeats, MODALITY_GAP_S, alone)
            with _phase(f"e2e_burst: four views at once, {repeats} per encoding"):
                e2e_burst = phases.arrivals(rig, encodings, repeats, gap_s=0.0)
            health = self.listener.wait_health(after=time.monotonic(), timeout=30)
            publish_ms = dict(health.get("latency_ms", {}).get("publish", {}))
            if not publish_ms:
                raise BenchError("the daemon's health has no publish latency (an older daemon?)")
            with _phase(f"burst: {burst_studies} studies dropped at once"):
                burst = phases.burst(rig, encodings, burst_studies, daemon.pid)
        return LatencyFigures(e2e, e2e_burst, publish_ms, burst)

    def serving_latency(
        self, name: str, encodings: tuple[str, ...], repeats: int
    ) -> tuple[list[phases.StudySample], dict[str, Any]]:
        """``e2e`` alone on a daemon of ``self.config``, and its last health (counters)."""
        with self._daemon(name, health_interval_s=1.0) as (_daemon, rig):
            with _phase(f"{name}: views {MODALITY_GAP_S:g} s apart, {repeats} per encoding"):
                samples = phases.arrivals(rig, encodings, repeats, MODALITY_GAP_S)
            health = self.listener.wait_health(after=time.monotonic(), timeout=30)
        return samples, health

    def footprint(
        self, encodings: tuple[str, ...], *, idle_s: float, warm_up: int, soak: int
    ) -> FootprintFigures:
        with self._daemon("daemon-footprint") as (daemon, rig):
            time.sleep(2.0)  # let start-up (connect, first health) pass before idling
            with _phase(f"idle CPU over {idle_s:g} s, empty folder"):
                idle = phases.idle_cpu_percent(daemon.pid, idle_s)
            with _phase(f"warm-up: {warm_up} images"):
                phases.soak(rig, encodings, warm_up, SOAK_WINDOW)
            time.sleep(IDLE_BEFORE_RSS_S)
            warm = phases.rss_mb(daemon.pid)
            samples = [warm]
            with _phase(f"soak: {soak} images"):
                soaked = phases.soak(
                    rig,
                    encodings,
                    soak,
                    SOAK_WINDOW,
                    each=lambda: samples.append(phases.rss_mb(daemon.pid)),
                )
            time.sleep(IDLE_BEFORE_RSS_S)
            rss = {
                "warm": warm,
                "after_soak": phases.rss_mb(daemon.pid),
                "peak": max(samples),
                "decode_workers": phases.children_rss_mb(daemon.pid),
            }
        return FootprintFigures(idle, rss, soaked)

    def sr_delivery(self, encodings: tuple[str, ...], studies: int) -> dict[str, Any]:
        """The CAD SR phase (:mod:`edge.bench.dicom`): a daemon sending to a bench PACS."""
        pacs = dicom.Pacs()
        base, self.config = self.config, dicom.with_pacs(self.config, pacs)
        try:
            with self._daemon("daemon-sr", health_interval_s=1.0) as (_daemon, rig):
                with _phase(f"CAD SR: {studies} studies, views {dicom.GAP_S:g} s apart"):
                    samples = dicom.measure(rig, pacs, encodings, studies)
                health = self.listener.wait_health(after=time.monotonic(), timeout=30)
        finally:
            self.config = base
            pacs.close()
        return dicom.figures(samples, health)

    def baseline(
        self, encodings: tuple[str, ...], repeats: int, poll_s: float
    ) -> list[phases.StudySample]:
        folder = _folder(self.work, "baseline")
        export = _folder(folder, "export")
        argv = [
            *(sys.executable, "-m", "edge.tools.bench.baseline"),
            *("--folder", str(export), "--bundle", str(self.config.engine.bundle)),
            *("--port", str(self._broker.port), "--poll-s", str(poll_s)),
        ]
        child = Child("the naive baseline", argv, folder / "baseline.log")
        child.start(BASELINE_READY)
        try:
            with _phase(
                f"naive baseline: views {MODALITY_GAP_S:g} s apart, {repeats} per encoding"
            ):
                # The naive script lists its folder: its studies are staged outside.
                rig = self._rig(export, _folder(self.work, "staging"))
                return phases.arrivals(rig, encodings, repeats, gap_s=MODALITY_GAP_S)
        finally:
            child.stop()

    def cstore(self, encodings: tuple[str, ...], repeats: int) -> cstore.CstoreFigures:
        """Studies sent by C-STORE to a daemon's receiver (:mod:`edge.tools.bench.cstore`)."""
        folder = _folder(self.work, "daemon-cstore")
        path, port = cstore.receiver_daemon_config(self.config, folder, self._broker.port)
        rig = self._rig(folder / "export", _folder(self.work, "staging-cstore"))
        with _phase(f"C-STORE: {repeats} per encoding, views {MODALITY_GAP_S:g} s apart, at once"):
            return cstore.measure(rig, path, port, encodings, repeats)

    def repair(self, encoding: str, samples: int) -> repair.RepairFigures:
        """The repair phase (:mod:`edge.bench.repair`): a collector, and a box of its own."""
        folder = _folder(self.work, "repair")
        rig = self._rig(_folder(folder, "export"))
        with _phase(f"repair: {samples} confirmed studies, {samples} lost results repaired"):
            return repair.measure(self.config, folder, self._broker.port, rig, encoding, samples)

    @contextmanager
    def _daemon(
        self, name: str, *, health_interval_s: float | None = None
    ) -> Iterator[tuple[Child, phases.Rig]]:
        folder = _folder(self.work, name)
        path = daemon_config(
            self.config, folder, port=self._broker.port, health_interval_s=health_interval_s
        )
        child = daemon_child(path)
        with _phase(f"starting {name}"):
            child.start(SERVING)
        try:
            yield child, self._rig(folder / "export")
        finally:
            child.stop()

    def _rig(self, export: Path, staging: Path | None = None) -> phases.Rig:
        """Studies staged in a hidden folder inside ``export``, unless ``staging`` is given."""
        staging = staging or _folder(export, ".staging")
        scratch = _folder(self.work, "scratch")
        return phases.Rig(
            export, staging, scratch, self.listener, self.cases, RESULT_TIMEOUT_S, self._numbers
        )


@contextmanager
def _phase(what: str) -> Iterator[None]:
    print(f"bench: {what}", flush=True)
    started = time.monotonic()
    yield
    print(f"bench:   {time.monotonic() - started:.1f} s", flush=True)


def _folder(parent: Path, name: str) -> Path:
    folder = parent / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
