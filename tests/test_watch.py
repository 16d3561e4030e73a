"""The folder watcher on a real folder with inotify."""

from __future__ import annotations

import queue
import time
from pathlib import Path

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
