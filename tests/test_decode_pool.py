"""The decode pool: worker processes that a crashing or hanging decoder cannot take down.

The crash is real: the test kills the worker process (SIGKILL) while it decodes,
as a segfaulting decoder would end it. The file it held is refused as
``decoder_crashed``, and the next file is decoded by a fresh worker.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from mammo_files import build, header, incoming, real_pixels

from edge.bundle.manifest import Accepts, Preprocessing
from edge.errors import IngestError, Skip
from edge.pipeline.ingest import read_header
from edge.pipeline.options import HeaderCheck
from edge.pipeline.pool import ProcessDecoder, ThreadDecoder
from edge.pipeline.study import StudyAssembler
from edge.types import EngineInfo, ImageHeader, ImageScore, IncomingFile

SPEC = Preprocessing(height=128, width=104)
#: the model input equal to the slow file's size: a full-resolution JPEG 2000 decode
SLOW_SPEC = Preprocessing(height=2048, width=1664)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pool")
    made = {
        name: build(folder / f"{name}.dcm", encoding=name, laterality=side)
        for name, side in (("rle", "L"), ("j2k-lossless", "R"), ("jpeg-ls-lossless", "L"))
    }
    made["ct"] = build(
        folder / "ct.dcm", encoding="rle", edit=lambda ds: setattr(ds, "Modality", "CT")
    )
    made["slow"] = build(
        folder / "slow.dcm", pixels=real_pixels((2048, 1664)), encoding="j2k-lossless"
    )
    data = made["rle"].read_bytes()
    made["cut"] = folder / "cut.dcm"
    made["cut"].write_bytes(data[: len(data) * 2 // 3])
    return made


@pytest.fixture
def pool() -> ProcessDecoder:
    decoder = ProcessDecoder(2, threads=1, timeout_s=120)
    yield decoder  # type: ignore[misc]
    decoder.close()


def test_processes_give_what_threads_give_in_any_order(
    pool: ProcessDecoder, files: dict[str, Path]
) -> None:
    names = ["rle", "j2k-lossless", "jpeg-ls-lossless"] * 2
    headers = [header(files[name]) for name in names]
    inline = ThreadDecoder(threads=1)
    with ThreadPoolExecutor(max_workers=4) as executor:
        results = list(executor.map(lambda image: pool.run(image, SPEC), headers))
    for image, result in zip(headers, results, strict=True):
        assert result.header == image
        np.testing.assert_array_equal(result.tensor, inline.run(image, SPEC).tensor)


def test_inputs_of_every_engine_size_come_back_whole(files: dict[str, Path]) -> None:
    """One worker, engines of growing and shrinking input sizes (as across hot swaps):
    the memory the worker shares with the daemon grows, and nothing is cut or stale."""
    single = ProcessDecoder(1, threads=1, timeout_s=120)
    inline = ThreadDecoder(threads=1)
    image = header(files["rle"])
    try:
        for spec in (SPEC, Preprocessing(height=256, width=208), SPEC, SLOW_SPEC):
            result = single.run(image, spec)
            assert result.tensor.shape == (1, spec.height, spec.width)
            np.testing.assert_array_equal(result.tensor, inline.run(image, spec).tensor)
    finally:
        single.close()


@pytest.mark.filterwarnings("ignore:End of file:UserWarning")
def test_a_file_s_own_failure_comes_back_as_its_reason(
    pool: ProcessDecoder, files: dict[str, Path]
) -> None:
    with pytest.raises(IngestError) as caught:
        pool.run(header(files["cut"]), SPEC)
    assert caught.value.reason == "truncated"


def _run_and_kill_its_worker(
    pool: ProcessDecoder, image: ImageHeader, spec: Preprocessing
) -> IngestError:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            pool.run(image, spec)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            failures.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    while not pool.busy_pids() and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(pool.busy_pids()[0], signal.SIGKILL)
    worker.join(timeout=60)
    assert len(failures) == 1 and isinstance(failures[0], IngestError), failures
    return failures[0]


def test_a_crashed_decoder_costs_its_file_only(files: dict[str, Path]) -> None:
    slow = ProcessDecoder(1, threads=1, timeout_s=120)
    try:
        before = slow.worker_pids()
        error = _run_and_kill_its_worker(slow, header(files["slow"]), SLOW_SPEC)
        assert error.reason == "decoder_crashed"
        assert "SIGKILL" in error.detail
        assert slow.worker_pids() != before  # replaced
        assert slow.run(header(files["rle"]), SPEC).tensor.shape == (1, 128, 104)
    finally:
        slow.close()


def test_a_hanging_decoder_is_stopped_at_the_timeout(files: dict[str, Path]) -> None:
    hasty = ProcessDecoder(1, threads=1, timeout_s=0.01)
    try:
        with pytest.raises(IngestError) as caught:
            hasty.run(header(files["slow"]), SLOW_SPEC)
        assert caught.value.reason == "decode_timeout"
    finally:
        hasty.close()
    patient = ProcessDecoder(1, threads=1, timeout_s=120)
    try:
        assert patient.run(header(files["rle"]), SPEC).tensor.shape == (1, 128, 104)
    finally:
        patient.close()


def test_closing_the_pool_ends_its_workers(files: dict[str, Path]) -> None:
    decoder = ProcessDecoder(2, threads=1, timeout_s=120)
    pids = decoder.worker_pids()
    decoder.run(header(files["rle"]), SPEC)
    decoder.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_order_decodes_finish_in_does_not_show_in_the_result() -> None:
    """Five images of a study, a spot view among them, scored in every rotation."""
    engine = EngineInfo("demo", "1", "a" * 64, "onnxruntime")
    views = [("1.9", "L", "CC"), ("1.2", "L", "CC"), ("1.3", "L", "MLO")]
    views += [("1.4", "R", "CC"), ("1.5", "R", "MLO")]
    headers = [
        ImageHeader(
            source=IncomingFile(Path(sop), 1, 1, 0.0, "scan"),
            sop_uid=sop,
            study_uid="1.2.3",
            accession="A1",
            laterality=side,
            view=view,
            rows=10,
            columns=10,
            transfer_syntax="",
            row_direction=None,
            screening=sop != "1.9",
        )
        for sop, side, view in views
    ]
    orders = set()
    for shift in range(len(headers)):
        assembler = StudyAssembler(30, lambda _engine: 0.5)
        rotated = headers[shift:] + headers[:shift]
        for image in rotated:
            assembler.arrived(image)
        results = [assembler.scored(ImageScore(image, 0.1, engine)) for image in rotated]
        final = results[-1]
        assert final is not None
        orders.add(tuple(score.header.sop_uid for score in final.images))
    assert orders == {("1.2", "1.9", "1.3", "1.4", "1.5")}


CHECK = HeaderCheck(max_pixels=10**8, accepts=Accepts())


@pytest.mark.parametrize("name", ["rle", "j2k-lossless", "jpeg-ls-lossless"])
def test_a_file_begun_before_its_header_is_read_is_the_image_that_header_describes(
    pool: ProcessDecoder, files: dict[str, Path], name: str
) -> None:
    """The worker reads the file once while the daemon reads its header: the input
    is what a decode after the header gives, under the daemon's header and timings."""
    taken = incoming(files[name])
    decoding = pool.begin(taken, SPEC, CHECK)
    image = read_header(taken, max_pixels=CHECK.max_pixels)
    result = decoding.result(image, SPEC)
    assert result.header is image and "header" in result.header.timings_ms
    assert result.timings_ms["decode"] > 0
    np.testing.assert_array_equal(result.tensor, ThreadDecoder(threads=1).run(image, SPEC).tensor)
    decoding.abandon()  # taken: nothing left to let go


def test_an_image_other_than_the_header_read_is_refused_as_changed(
    pool: ProcessDecoder, files: dict[str, Path]
) -> None:
    """The file was replaced between the worker's reading and the daemon's."""
    decoding = pool.begin(incoming(files["rle"]), SPEC, CHECK)
    with pytest.raises(IngestError) as caught:
        decoding.result(header(files["j2k-lossless"]), SPEC)
    assert caught.value.reason == "changed"
    # A file the worker skipped, where the daemon read a mammogram: changed too.
    skipped = pool.begin(incoming(files["ct"]), SPEC, CHECK)
    with pytest.raises(IngestError) as caught:
        skipped.result(header(files["rle"]), SPEC)
    assert caught.value.reason == "changed"


def test_a_file_let_go_frees_its_worker_for_the_next(files: dict[str, Path]) -> None:
    """Skipped at the daemon's header, or a duplicate: the one worker is let go and
    serves the next file, whose own failure still comes back as its reason."""
    single = ProcessDecoder(1, threads=1, timeout_s=120)
    try:
        skipped = incoming(files["ct"])
        decoding = single.begin(skipped, SPEC, CHECK)
        with pytest.raises(Skip):
            read_header(skipped, max_pixels=CHECK.max_pixels)
        decoding.abandon()
        single.begin(incoming(files["rle"]), SPEC, CHECK).abandon()  # a duplicate
        cut = incoming(files["cut"])
        decoding = single.begin(cut, SPEC, CHECK)
        with pytest.raises(IngestError) as caught:
            decoding.result(read_header(cut, max_pixels=CHECK.max_pixels), SPEC)
        assert caught.value.reason == "truncated"
        taken = incoming(files["j2k-lossless"])
        decoding = single.begin(taken, SPEC, CHECK)
        result = decoding.result(read_header(taken, max_pixels=CHECK.max_pixels), SPEC)
        assert result.tensor.shape == (1, 128, 104)
    finally:
        single.close()


def test_inputs_held_in_shared_memory_are_never_overwritten(files: dict[str, Path]) -> None:
    """One worker, more inputs held at once than it has shared slots (a busy engine
    with a queue): every input stays the one its file gives, while held and after."""
    single = ProcessDecoder(1, threads=1, timeout_s=120)
    inline = ThreadDecoder(threads=1)
    names = ["rle", "j2k-lossless", "jpeg-ls-lossless", "slow", "rle", "j2k-lossless"]
    images = [header(files[name]) for name in names]
    expected = [inline.run(image, SPEC).tensor for image in images]
    try:
        for _round in range(2):  # the second round on slots given back by the first
            held = [single.run(image, SPEC) for image in images]
            for result, want in zip(held, expected, strict=True):
                np.testing.assert_array_equal(result.tensor, want)
            del held
    finally:
        single.close()


def _resident_shared_bytes() -> int:
    """This process's resident shared memory (``RssShmem``: the slots' pages it maps)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssShmem:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssShmem in /proc/self/status")


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="shared slots are Linux memfds")
def test_every_shared_slot_is_resident_once_made(files: dict[str, Path]) -> None:
    """The daemon's memory does not grow the first time a burst lends out every slot:
    all of a worker's slots are resident from the first image, not only the one it used."""
    from edge.pipeline.decode_worker import SHARED_SLOTS

    single = ProcessDecoder(1, threads=1, timeout_s=120)
    slot = SLOW_SPEC.height * SLOW_SPEC.width * 4
    before = _resident_shared_bytes()
    try:
        prepared = single.run(header(files["slow"]), SLOW_SPEC)
        assert prepared.tensor.shape == (1, SLOW_SPEC.height, SLOW_SPEC.width)
        grown = _resident_shared_bytes() - before
    finally:
        single.close()
    assert grown >= SHARED_SLOTS * slot * 0.95, (grown, SHARED_SLOTS * slot)
