"""Hostile and broken input: each refused with a named reason, nothing else escapes.

``ingest`` here is what a daemon worker does with a file: read the header, then
decode and prepare it. Every case must end in :class:`IngestError` (quarantine)
or :class:`Skip`, never in another exception, a hang or a huge allocation.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mammo_files import build, header, incoming, real_pixels
from pydicom.uid import DeflatedExplicitVRLittleEndian

from edge.bundle.manifest import Preprocessing
from edge.errors import IngestError, Skip
from edge.pipeline.decode import load_model_input
from edge.pipeline.ingest import read_header
from edge.pipeline.quarantine import quarantine
from edge.types import ModelInput

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
SPEC = Preprocessing(height=128, width=104)


def ingest(path: Path) -> ModelInput:
    return load_model_input(header(path, max_pixels=120_000_000), SPEC)


def reason_of(path: Path) -> str:
    with pytest.raises(IngestError) as caught:
        ingest(path)
    return caught.value.reason


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.dcm").touch()
    assert reason_of(tmp_path / "empty.dcm") == "empty"


def test_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a mammogram\n" * 100)
    assert reason_of(path) == "not_dicom"


def test_dicomdir_is_quarantined() -> None:
    assert reason_of(PYDICOM_FILES / "dicomdirtests" / "DICOMDIR") == "dicomdir"


@pytest.mark.filterwarnings("ignore:End of file:UserWarning")  # pydicom says so, then we do
def test_file_cut_inside_its_header(tmp_path: Path) -> None:
    data = build(tmp_path / "whole.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:700])
    assert reason_of(tmp_path / "cut.dcm") == "truncated"


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on a cut UID, before we refuse
def test_a_file_cut_at_any_byte_of_its_file_meta_is_refused_with_a_reason(
    tmp_path: Path,
) -> None:
    data = build(tmp_path / "whole.dcm", encoding="rle").read_bytes()
    cut = tmp_path / "cut.dcm"
    reasons = set()
    for end in range(128, 360):  # from the preamble's end through the file meta
        cut.write_bytes(data[:end])
        reasons.add(reason_of(cut))
    # an element cut short may read as a wrong length (malformed) rather than an early end
    assert reasons <= {"not_dicom", "truncated", "malformed"} and "truncated" in reasons


def test_a_header_claiming_60000_by_60000_is_refused_before_any_allocation(
    tmp_path: Path,
) -> None:
    def huge(ds: pydicom.Dataset) -> None:
        ds.Rows = 60000
        ds.Columns = 60000

    path = build(tmp_path / "huge.dcm", edit=huge)
    tracemalloc.start()
    try:
        with pytest.raises(IngestError) as caught:
            read_header(incoming(path), max_pixels=120_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "too_large"
    assert peak < 16 << 20  # 60000 x 60000 x 2 bytes would be 7.2 GB


def test_the_pixel_limit_is_configurable(tmp_path: Path) -> None:
    path = build(tmp_path / "small.dcm")
    with pytest.raises(IngestError) as caught:
        read_header(incoming(path), max_pixels=1000)
    assert caught.value.reason == "too_large"


def _deflated_with_private_blobs(path: Path, blobs: int, blob_bytes: int) -> Path:
    def edit(ds: pydicom.Dataset) -> None:
        block = ds.private_block(0x0009, "EDGE TEST", create=True)
        for index in range(blobs):
            block.add_new(index, "OB", bytes(blob_bytes))

    build(path, edit=edit, encoding="deflated")
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == (
        DeflatedExplicitVRLittleEndian
    )
    return path


def test_deflate_bomb_before_the_pixel_data_is_bounded(tmp_path: Path) -> None:
    # 96 elements of 1 MiB of zeros: 96 MiB inflated from about 100 kB.
    path = _deflated_with_private_blobs(tmp_path / "bomb.dcm", 96, 1 << 20)
    assert path.stat().st_size < 2 << 20
    assert reason_of(path) == "deflate_bomb"


def test_deflate_bomb_in_the_pixel_data_is_bounded(tmp_path: Path) -> None:
    def edit(ds: pydicom.Dataset) -> None:
        ds.PixelData = bytes(64 << 20)  # 64 MiB of zeros for a 512 x 416 image

    path = build(tmp_path / "bomb.dcm", edit=edit, encoding="deflated")
    assert path.stat().st_size < 1 << 20
    assert reason_of(path) == "deflate_bomb"


def test_a_small_deflated_file_is_read(tmp_path: Path) -> None:
    path = _deflated_with_private_blobs(tmp_path / "fine.dcm", 2, 1000)
    assert ingest(path).tensor.shape == (1, 128, 104)


def test_an_oversized_element_in_the_header_is_refused(tmp_path: Path) -> None:
    def edit(ds: pydicom.Dataset) -> None:
        ds.private_block(0x0009, "EDGE TEST", create=True).add_new(0, "OB", bytes(20 << 20))

    assert reason_of(build(tmp_path / "big.dcm", edit=edit)) == "oversized_element"


def test_no_pixel_data(tmp_path: Path) -> None:
    assert reason_of(build(tmp_path / "np.dcm", edit=lambda ds: delattr(ds, "PixelData"))) == (
        "truncated"
    )


@pytest.mark.parametrize(
    "name",
    ["with space.dcm", "new\nline.dcm", "Müller^Anna_右.dcm", os.fsdecode(b"bad-\xff-bytes")],
)
def test_odd_file_names_are_read_and_quarantined_safely(tmp_path: Path, name: str) -> None:
    path = build(tmp_path / name)
    assert ingest(path).tensor.shape == (1, 128, 104)
    moved = quarantine(path, IngestError("test", "a test"), tmp_path / "quarantine")
    assert moved is not None and moved.exists()
    assert "Müller" not in moved.name and "\n" not in moved.name
    reason = Path(f"{moved}.reason.txt").read_text(encoding="utf-8")
    assert reason.count("\n") == 5  # a newline in the name cannot add a line


def test_symlink_is_not_followed_and_is_quarantined_as_a_link(tmp_path: Path) -> None:
    target = build(tmp_path / "target.dcm")
    link = tmp_path / "export" / "link.dcm"
    link.parent.mkdir()
    link.symlink_to(target)
    assert reason_of(link) == "symlink"
    moved = quarantine(link, IngestError("symlink", "a link"), tmp_path / "quarantine")
    assert moved is not None and moved.is_symlink()
    assert target.is_file() and not link.exists()


def test_a_fifo_does_not_block_the_reader(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.dcm")
    assert reason_of(tmp_path / "fifo.dcm") == "not_regular_file"


def test_file_no_one_may_read(tmp_path: Path) -> None:
    """Mode 000 is refused even by a daemon running as root, which could read it."""
    path = build(tmp_path / "locked.dcm")
    path.chmod(0)
    assert reason_of(path) == "unreadable"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to drop privileges")
def test_file_the_daemon_user_may_not_read(tmp_path: Path) -> None:
    """A file owned by another user, mode 0600: the open is refused (EACCES).

    As root the test forks and drops to ``nobody`` so the permission check is real.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to create a file another user owns")
    folder = Path(tempfile.mkdtemp(prefix="edge-perm-"))
    try:
        folder.chmod(0o755)
        path = build(folder / "private.dcm")
        path.chmod(0o600)
        reader, writer = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            os.close(reader)
            try:
                os.setgid(65534)
                os.setuid(65534)
                read_header(incoming(path), max_pixels=10**8)
                result = "read"
            except IngestError as error:
                result = error.reason
            except BaseException as error:  # noqa: BLE001 - reported to the parent
                result = f"{type(error).__name__}: {error}"
            os.write(writer, result.encode())
            os._exit(0)
        os.close(writer)
        with os.fdopen(reader) as stream:
            result = stream.read()
        os.waitpid(child, 0)
        assert result == "unreadable"
    finally:
        shutil.rmtree(folder)


# -- property-based: mutated real files ---------------------------------------------------


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Small real files: a real mammogram in five encodings, and pydicom's MR relabelled MG."""
    folder = tmp_path_factory.mktemp("seeds")
    pixels = real_pixels((128, 104))
    files = [
        build(folder / f"{name}.dcm", pixels=pixels, encoding=name).read_bytes()
        for name in ("explicit-le", "rle", "j2k-lossless", "jpeg-ls-lossless", "deflated")
    ]
    mr = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm")
    mr.Modality = "MG"
    mr.ImageLaterality = "R"
    mr.ViewPosition = "MLO"
    mr.save_as(folder / "mr.dcm")
    files.append((folder / "mr.dcm").read_bytes())
    return files


MUTATION = st.tuples(
    st.sampled_from(["flip", "truncate", "insert", "overwrite", "zero"]),
    st.floats(min_value=0, max_value=1),
    st.binary(min_size=1, max_size=16),
)


def mutate(data: bytes, mutations: list[tuple[str, float, bytes]]) -> bytes:
    buffer = bytearray(data)
    for kind, where, payload in mutations:
        at = int(where * max(len(buffer) - 1, 0))
        if kind == "flip" and buffer:
            buffer[at] ^= payload[0] or 0xFF
        elif kind == "truncate":
            del buffer[at:]
        elif kind == "insert":
            buffer[at:at] = payload
        elif kind == "overwrite":
            buffer[at : at + len(payload)] = payload
        elif kind == "zero":
            buffer[at : at + 64 * len(payload)] = bytes(len(buffer[at : at + 64 * len(payload)]))
    return bytes(buffer)


# pydicom warns on broken input, then we refuse it; and Hypothesis warns that a failing
# case's report (the real files among its arguments) is large, which would hide the failure.
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(min_value=0, max_value=5), mutations=st.lists(MUTATION, max_size=4))
def test_mutated_real_files_raise_nothing_but_ingest_errors(
    seeds: list[bytes], seed: int, mutations: list[tuple[str, float, bytes]]
) -> None:
    data = mutate(seeds[seed], mutations)
    with tempfile.TemporaryDirectory(prefix="edge-fuzz-") as folder:
        path = Path(folder) / f"fuzz-{random.random()}.dcm"
        path.write_bytes(data)
        with contextlib.suppress(IngestError, Skip):  # the only ways a file may fail
            ingest(path)
