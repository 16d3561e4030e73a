"""The engine store: installed bundles under ``state_dir/engines``, and which one serves.

    engines/<name>/<version>/   an installed bundle (its files, checked) and .installed.json
    engines/current             "<name>/<version>" of the engine that serves
    engines/previous            the one it replaced, for ``rollback``
    engines/_incoming/          installs in progress; leftovers of a killed one are removed
    engines/_plans/             TensorRT plans built on this box (see edge.runtimes.plans)

An install is copied into ``_incoming``, fsync'ed, checked again and self-tested
there, and only then renamed to its real name, so an interrupted install leaves
the store exactly as it was. Pointers are replaced by write-then-rename. Every
change takes an exclusive lock on ``engines/.lock``, so two technicians (or a
technician and a script) cannot interleave.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from edge.bundle.archive import unpack_bundle
from edge.bundle.files import copy_durably, fsync_dir, write_atomically
from edge.bundle.manifest import MANIFEST, SIGNATURE, Bundle, Manifest, load_bundle, read_manifest
from edge.engines.ownership import hand_to_state_owner
from edge.engines.selftest import SelfTestResult
from edge.engines.signing import NotTrusted, TrustedKey, signer_of, verify_bundle
from edge.errors import EngineError

log = logging.getLogger(__name__)

#: free space an engine install leaves on state_dir's filesystem, for the journal
KEEP_FREE_BYTES = 64 << 20
INCOMING = "_incoming"
PLANS = "_plans"
CURRENT = "current"
PREVIOUS = "previous"
RECORD = ".installed.json"
LOCK = ".lock"
#: engine names and versions: path segments that can never collide with the store's own
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")

SelfTest = Callable[[Bundle], SelfTestResult]
StepReport = Callable[[str, str], None]
T = TypeVar("T")


@dataclass(frozen=True, order=True)
class EngineRef:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"

    @classmethod
    def parse(cls, text: str) -> EngineRef:
        name, _, version = text.strip().partition("/")
        if not (_SEGMENT.match(name) and _SEGMENT.match(version)):
            raise EngineError(f"{text!r} is not an engine reference (name/version)")
        return cls(name, version)


@dataclass(frozen=True)
class TrustPolicy:
    """Which signatures an install or activation accepts."""

    trusted: list[TrustedKey]
    allow_unsigned: bool = False

    def check(self, folder: Path) -> str | None:
        """The id of the trusted key that signed ``folder``, or None for an allowed unsigned one."""
        return self.judge(folder)[0]

    def judge(self, folder: Path) -> tuple[str | None, str]:
        """The trusted key's id (None: taken as unsigned) and a line saying what was done.

        With ``allow_unsigned``, a bundle that no trusted key vouches for (unsigned,
        or signed by a key not trusted) is taken as unsigned; a bad signature by a
        trusted key is refused all the same, as it means the bundle was altered.
        """
        try:
            key = verify_bundle(folder, self.trusted)
        except NotTrusted:
            if not self.allow_unsigned:
                raise
            signer = signer_of(folder)
            why = f"signed with key {signer}, not a trusted key" if signer else "not signed"
            return None, f"NOT VERIFIED ({why}): installed as unsigned (--allow-unsigned)"
        return key.key_id, f"trusted key {key.key_id} ({key.path.name})"


class StepFailed(EngineError):
    """An install or activation step that refused the bundle."""

    def __init__(self, step: str, reason: str, fix: str = "") -> None:
        super().__init__(f"step {step} failed: {reason}", fix)
        self.step = step
        self.reason = reason


@dataclass(frozen=True)
class InstalledEngine:
    ref: EngineRef
    path: Path
    manifest: Manifest
    #: id of the key that signed it; None when installed with --allow-unsigned
    signed_by: str | None
    installed_at: str


class EngineStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- reading (no lock: pointers are replaced atomically) ---------------------------

    def installed(self) -> list[InstalledEngine]:
        if not self.root.is_dir():
            return []
        found = []
        for name_dir in sorted(self.root.iterdir()):
            if not (name_dir.is_dir() and _SEGMENT.match(name_dir.name)):
                continue
            for version_dir in sorted(name_dir.iterdir()):
                if version_dir.is_dir() and _SEGMENT.match(version_dir.name):
                    found.append(self._describe(EngineRef(name_dir.name, version_dir.name)))
        return found

    def current(self) -> EngineRef | None:
        return self._read_pointer(CURRENT)

    def previous(self) -> EngineRef | None:
        return self._read_pointer(PREVIOUS)

    def pointer_text(self) -> str | None:
        """The raw ``current`` pointer, for the daemon's cheap change check."""
        try:
            return (self.root / CURRENT).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def path_of(self, ref: EngineRef) -> Path:
        return self.root / ref.name / ref.version

    def resolve(self, text: str) -> EngineRef:
        """``name/version``, or a bare version when exactly one engine name has it."""
        if "/" in text:
            ref = EngineRef.parse(text)
            if not self.path_of(ref).is_dir():
                raise EngineError(f"engine {ref} is not installed")
            return ref
        matches = [e.ref for e in self.installed() if e.ref.version == text]
        if not matches:
            raise EngineError(f"no installed engine has version {text!r}")
        if len(matches) > 1:
            raise EngineError(f"version {text!r} is ambiguous: {', '.join(map(str, matches))}")
        return matches[0]

    def describe(self, ref: EngineRef) -> InstalledEngine:
        if not self.path_of(ref).is_dir():
            raise EngineError(f"engine {ref} is not installed")
        return self._describe(ref)

    def load(self, ref: EngineRef, trust: TrustPolicy) -> Bundle:
        """An installed engine, its files checked against the manifest and its signature."""
        engine = self.describe(ref)
        bundle = _step("sha256", lambda: load_bundle(engine.path))
        if engine.signed_by is not None:
            _step("signature", lambda: TrustPolicy(trust.trusted).check(engine.path))
        return bundle

    # -- changing (under the lock) -------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock; remove what a killed install left in ``_incoming``."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                self._clear_incoming()
                yield
            finally:
                hand_to_state_owner(self.root)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def install(
        self, source: Path, trust: TrustPolicy, selftest: SelfTest, report: StepReport
    ) -> InstalledEngine:
        """Check, copy, self-test and commit a bundle (a folder or a ``.tar.gz``).

        Raises
        ------
        StepFailed
            Naming the step (unpack, manifest, signature, sha256, store, copy,
            self-test) and why; the store is then as it was.
        """
        with self.locked():
            incoming = self.root / INCOMING
            incoming.mkdir(exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="install-", dir=incoming))
            try:
                return self._install(source, work, trust, selftest, report)
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def activate(
        self, ref: EngineRef, trust: TrustPolicy, selftest: SelfTest, report: StepReport
    ) -> EngineRef | None:
        """Check and self-test ``ref``, then make it current; return the engine it replaced."""
        with self.locked():
            bundle = self.load(ref, trust)
            report("sha256", f"{len(bundle.manifest.files)} files match")
            result = _step("self-test", lambda: selftest(bundle))
            report("self-test", _selftest_line(result))
            current = self.current()
            if current == ref:
                return None
            if current is not None:
                write_atomically(self.root / PREVIOUS, f"{current}\n")
            write_atomically(self.root / CURRENT, f"{ref}\n")
            log.info("engine %s activated (replacing %s)", ref, current)
            return current

    def rollback(self, trust: TrustPolicy, selftest: SelfTest, report: StepReport) -> EngineRef:
        """Make the previous engine current again (after its checks and self-test)."""
        previous = self.previous()
        if previous is None:
            raise EngineError("no previous engine to roll back to")
        if not self.path_of(previous).is_dir():
            raise EngineError(f"the previous engine {previous} is no longer installed")
        self.activate(previous, trust, selftest, report)
        return previous

    def remove(self, ref: EngineRef) -> None:
        """Delete an installed engine; never the current one."""
        with self.locked():
            if self.current() == ref:
                raise EngineError(f"{ref} is the current engine; activate another one first")
            path = self.path_of(ref)
            if not path.is_dir():
                raise EngineError(f"engine {ref} is not installed")
            # Renamed away first so that no half-deleted engine is ever seen under its name.
            doomed = self.root / INCOMING / f"remove-{ref.name}-{ref.version}-{os.getpid()}"
            doomed.parent.mkdir(exist_ok=True)
            os.rename(path, doomed)
            fsync_dir(path.parent)
            if self.previous() == ref:
                (self.root / PREVIOUS).unlink()
                fsync_dir(self.root)
            shutil.rmtree(doomed)
            if not any(path.parent.iterdir()):
                path.parent.rmdir()

    # -- internals ---------------------------------------------------------------------------

    def _install(
        self, source: Path, work: Path, trust: TrustPolicy, selftest: SelfTest, report: StepReport
    ) -> InstalledEngine:
        folder = source
        if source.is_file():
            folder = _step(
                "unpack",
                lambda: unpack_bundle(
                    source,
                    work / "unpacked",
                    # Before the bulk is written; StepFailed goes through the unpack.
                    check_signature=lambda root: _step(
                        "signature", lambda: trust.judge(root), (root, source)
                    ),
                    keep_free_bytes=KEEP_FREE_BYTES,
                    copies=2,  # unpacked, then copied into the store
                ),
            )
            report("unpack", f"{source.name} unpacked (its signature checked first)")
        elif not source.is_dir():
            raise StepFailed("manifest", f"{source} is neither a bundle folder nor an archive")
        manifest = _step("manifest", lambda: _checked_manifest(folder))
        ref = EngineRef(manifest.name, manifest.version)
        report("manifest", f"{ref}")
        signer, verdict = _step("signature", lambda: trust.judge(folder), (folder, source))
        report("signature", verdict)
        _step("sha256", lambda: load_bundle(folder))
        report("sha256", f"{len(manifest.files)} files match")
        if self.path_of(ref).exists():
            raise StepFailed("store", f"{ref} is already installed; remove it first")
        staged = work / "bundle"
        _step("copy", lambda: _copy_bundle(folder, staged, manifest))
        bundle = _step("copy", lambda: load_bundle(staged))
        _step("copy", lambda: trust.check(staged))
        report("copy", "copied, synced to disk and checked again")
        result = _step("self-test", lambda: selftest(bundle))
        report("self-test", _selftest_line(result))
        _write_record(staged, signer, source)
        target = self.path_of(ref)
        target.parent.mkdir(exist_ok=True)
        os.rename(staged, target)
        fsync_dir(target.parent)
        fsync_dir(self.root)
        return self._describe(ref)

    def _describe(self, ref: EngineRef) -> InstalledEngine:
        path = self.path_of(ref)
        try:
            record = json.loads((path / RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EngineError(f"{path}: install record unreadable: {exc}") from exc
        return InstalledEngine(
            ref=ref,
            path=path,
            manifest=read_manifest(path),
            signed_by=record.get("signed_by"),
            installed_at=str(record.get("installed_at", "")),
        )

    def _read_pointer(self, name: str) -> EngineRef | None:
        try:
            text = (self.root / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return EngineRef.parse(text)

    def _clear_incoming(self) -> None:
        incoming = self.root / INCOMING
        if not incoming.is_dir():
            return
        for leftover in incoming.iterdir():
            log.warning("removing %s left by an interrupted install", leftover.name)
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def _step(step: str, action: Callable[[], T], shown: tuple[Path, Path] | None = None) -> T:
    """``action()``, its failure named by ``step``; ``shown``: (unpacked folder, source)."""
    try:
        return action()
    except StepFailed:
        raise
    except EngineError as exc:
        reason = str(exc)
        if shown is not None:  # the archive the technician named, not our scratch folder
            reason = reason.replace(str(shown[0]), str(shown[1]))
        raise StepFailed(step, reason, exc.fix) from exc
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise StepFailed(step, f"{where}{exc.strerror or exc}") from exc


def _checked_manifest(folder: Path) -> Manifest:
    manifest = read_manifest(folder)
    for field, value in (("name", manifest.name), ("version", manifest.version)):
        if not _SEGMENT.match(value):
            raise EngineError(
                f"{field} {value!r} must be 1-64 letters, digits, '_', '.', '+' or '-'"
            )
    return manifest


def _copy_bundle(source: Path, target: Path, manifest: Manifest) -> None:
    names = [MANIFEST, *manifest.files]
    if (source / SIGNATURE).is_file():
        names.append(SIGNATURE)
    for name in names:
        try:
            copy_durably(source / name, target / name)
        except OSError as exc:
            raise EngineError(f"copying {name}: {exc.strerror or exc}") from exc
    for folder in {(target / name).parent for name in names}:
        fsync_dir(folder)


def _write_record(folder: Path, signer: str | None, source: Path) -> None:
    record = {
        "installed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "signed_by": signer,
        "source": source.name,
    }
    write_atomically(folder / RECORD, json.dumps(record, indent=1) + "\n")


def _selftest_line(result: SelfTestResult) -> str:
    return (
        f"{result.count} inputs on {result.backend}: max |difference| "
        f"{result.max_abs_diff:.3g} <= tolerance {result.tolerance:g}"
    )
