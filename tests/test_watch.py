"""The folder watcher on a real folder with inotify."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.pipeline.watch import FolderWatcher
from edge.types import IncomingFile


def reopen_for_writing(path: Path) -> None:
    """Open for writing and close without writing: a close-write, same size and mtime."""
    with path.open("r+b"):
        pass


def test_a_repeated_event_is_dropped_and_the_memory_of_taken_files_is_bounded(
    tmp_path: Path,
) -> None:
    taken: queue.Queue[IncomingFile] = queue.Queue()
    watcher = FolderWatcher(tmp_path, taken.put, settle_s=30.0, remember=10)
    watcher.start()
    try:
        paths = [tmp_path / f"image-{n:02d}" for n in range(30)]
        for path in paths:
            path.write_bytes(b"x" * 100)
        got = [taken.get(timeout=10).path for _ in paths]
        assert sorted(got) == paths  # each once
        reopen_for_writing(paths[-1])  # still remembered: dropped
        reopen_for_writing(paths[0])  # forgotten long ago: handed on again
        again = taken.get(timeout=10)
        assert again.path == paths[0]
        time.sleep(0.5)  # the dropped event had its chance to come through
        assert taken.empty()
    finally:
        watcher.stop()


def test_a_file_moved_in_from_outside_the_folder_is_taken_as_arrived(tmp_path: Path) -> None:
    """Written elsewhere on the same file system, then renamed in: no close-write in the
    folder, and far sooner than ``settle_s``; one written in place still waits for its
    close, however long its writer pauses."""
    watched, outside = tmp_path / "export", tmp_path / "outside"
    watched.mkdir()
    outside.mkdir()
    taken: queue.Queue[IncomingFile] = queue.Queue()
    watcher = FolderWatcher(watched, taken.put, settle_s=60.0)
    watcher.start()
    try:
        staged = outside / "study-1.dcm"
        staged.write_bytes(b"a whole file" * 1000)
        staged.rename(watched / "study-1.dcm")
        moved = taken.get(timeout=10)
        assert (moved.path.name, moved.trigger, moved.size) == ("study-1.dcm", "arrived", 12000)

        with (watched / "study-2.dcm").open("wb") as stream:
            stream.write(b"first half")
            stream.flush()
            time.sleep(0.5)  # far past the grace of a new file
            assert taken.empty()
            stream.write(b" and the rest")
        written = taken.get(timeout=10)
        assert (written.path.name, written.trigger) == ("study-2.dcm", "close_write")
        assert written.size == len(b"first half and the rest")
        time.sleep(0.3)
        assert taken.empty()  # each once
    finally:
        watcher.stop()


# Run in a user namespace of its own, where this process is root and the inotify
# limits are its own to set (/proc/sys/user/max_inotify_watches): the kernel refuses
# a watch exactly as when a box's fs.inotify.max_user_watches is exhausted, and no
# other process on the machine is touched.
_LIMITED_GUARD = """
import json, sys, time
from pathlib import Path
from edge.pipeline.watch import FolderWatcher
from edge.pipeline.watch_folder import WatchGuard

root, limit = Path(sys.argv[1]), Path("/proc/sys/user/max_inotify_watches")
taken, events = {}, []
limit.write_text("2")  # the folder and one sub-folder: no room for a third
guard = WatchGuard(
    root,
    lambda polling: FolderWatcher(root, lambda f: taken.setdefault(f.path.name, f.trigger),
                                  settle_s=0.3, polling=polling),
    lambda kind, reason, message, where="": events.append([reason, message]),
    inotify_retry_s=1,
)

def wait(condition):
    deadline = time.monotonic() + 20
    while not condition() and time.monotonic() < deadline:
        guard.poll()
        time.sleep(0.1)
    return condition()

guard.start()
said = {"at_start": guard.inotify_limit}
(root / "study-1" / "views").mkdir(parents=True)  # views: refused a watch
(root / "study-1" / "views" / "rcc.dcm").write_bytes(b"x" * 100)
said["polled"] = wait(lambda: "rcc.dcm" in taken)
said["limit"] = guard.inotify_limit
limit.write_text("100")  # the technician raises it
said["cleared"] = wait(lambda: guard.inotify_limit is None)
(root / "study-2").mkdir()
(root / "study-2" / "lcc.dcm").write_bytes(b"y" * 100)
said["watched"] = wait(lambda: "lcc.dcm" in taken)
guard.stop()
print(json.dumps({**said, "taken": taken, "events": events}))
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_a_sub_folder_the_inotify_limit_leaves_unwatched_is_an_alarm_and_polled(
    tmp_path: Path,
) -> None:
    probe = subprocess.run(["unshare", "-U", "-r", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a user namespace here: {probe.stderr.decode().strip()}")
    done = subprocess.run(
        ["unshare", "-U", "-r", sys.executable, "-c", _LIMITED_GUARD, str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert said["at_start"] is None  # room for the folder, and for one more
    # The new sub-folder's own sub-folder could not be watched: the alarm names the
    # sysctl, and the folder is polled, so the file written into it is taken all the same.
    assert said["polled"] and said["limit"] == "fs.inotify.max_user_watches"
    assert ["inotify_limit", "inotify limit fs.inotify.max_user_watches reached: raise it"] in (
        said["events"]
    )
    # Raised, inotify is tried again: the alarm clears, and a new sub-folder is watched.
    assert said["cleared"] and said["watched"]
    assert [reason for reason, _message in said["events"]] == ["inotify_limit", "inotify_available"]
    assert said["taken"]["lcc.dcm"] in ("close_write", "arrived")


def test_a_file_written_in_many_writes_costs_the_watcher_no_event_per_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each inotify event crosses watchdog's threads, and a write's events would wait
    ahead of the close that completes the file: the watcher asks for none of them. A
    file written in 200 writes reaches the handler as a few events, and is taken once,
    at its close-write."""
    from edge.pipeline import watch

    seen: list[str] = []
    dispatch = watch._Handler.dispatch

    def counting(self: watch._Handler, event: object) -> None:
        seen.append(type(event).__name__)
        dispatch(self, event)  # type: ignore[arg-type]

    monkeypatch.setattr(watch._Handler, "dispatch", counting)
    taken: queue.Queue[IncomingFile] = queue.Queue()
    watcher = FolderWatcher(tmp_path, taken.put, settle_s=30.0)
    watcher.start()
    try:
        with (tmp_path / "view.dcm").open("wb") as stream:
            for _ in range(200):
                stream.write(b"x" * 4096)
                stream.flush()
        incoming = taken.get(timeout=10)
        time.sleep(0.2)  # any late event would have arrived by now
    finally:
        watcher.stop()
    taken_as = (incoming.path.name, incoming.trigger, incoming.size)
    assert taken_as == ("view.dcm", "close_write", 200 * 4096)
    assert "FileModifiedEvent" not in seen and "DirModifiedEvent" not in seen, seen
    assert len(seen) <= 4, seen
    assert taken.empty()
