"""Read a DICOM file without trusting it.

Everything a hostile or broken file can do to a reader is bounded here, before
pydicom sees the bytes:

- a symbolic link is never followed (it could point anywhere on the box), and
  anything but a regular file (a FIFO would block the reader forever) is refused;
- a file nobody may read is refused even when the daemon runs as root;
- the header pass stops at Pixel Data and refuses any single element larger than
  :data:`MAX_ELEMENT_BYTES` on the way;
- a Deflated Explicit VR Little Endian data set (PS3.5 A.5) is inflated in steps
  against a limit, never with one unbounded ``zlib.decompress`` as pydicom does,
  so a few kilobytes that inflate to gigabytes (a deflate bomb) cost nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, NamedTuple, TypeVar

from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_dataset, read_partial, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from edge.common.privacy import without_values
from edge.errors import IngestError

#: the largest element the header pass reads (an icon, a private blob); beyond is hostile
MAX_ELEMENT_BYTES = 16 << 20
#: the most a deflated data set may inflate to before its Pixel Data is reached
MAX_INFLATED_HEADER_BYTES = 64 << 20
#: room for the header and encapsulation beyond the pixels themselves
SLACK_BYTES = 16 << 20
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_INFLATE_FIRST = 256 << 10

StopWhen = Callable[[BaseTag, "str | None", int], bool]
#: what a caller of :func:`read_checked` makes of the header it checks
Checked = TypeVar("Checked")


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading if it is a regular, non-empty file anyone may read.

    Raises
    ------
    IngestError
        ``vanished``, ``symlink``, ``not_regular_file``, ``empty`` or ``unreadable``.
    """
    try:
        info = path.lstat()
    except FileNotFoundError as exc:
        raise IngestError("vanished", "the file disappeared before it was read") from exc
    except OSError as exc:
        raise IngestError("unreadable", f"cannot stat the file: {exc.strerror}") from exc
    _check_kind(info)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError as exc:
        raise IngestError("unreadable", f"permission denied: {exc.strerror}") from exc
    except OSError as exc:
        # ELOOP: it became a symlink between lstat and open.
        raise IngestError("unreadable", f"cannot open the file: {exc.strerror}") from exc
    try:
        _check_kind(os.fstat(fd))
    except IngestError:
        os.close(fd)
        raise
    raw = io.FileIO(fd, "rb")
    # pydicom quotes the name in its messages; the real one may hold a patient's name.
    raw.name = "<watched file>"
    return io.BufferedReader(raw)


def _check_kind(info: os.stat_result) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise IngestError("symlink", "a symbolic link; links are not followed")
    if not stat.S_ISREG(info.st_mode):
        raise IngestError("not_regular_file", "not a regular file (a FIFO, socket or device)")
    if info.st_size == 0:
        raise IngestError("empty", "the file is empty (0 bytes)")
    if info.st_mode & 0o444 == 0:
        # root could read it anyway; a file its writer made unreadable is not ours.
        raise IngestError("unreadable", "the file's mode lets no one read it")


class Header(NamedTuple):
    """A header pass: the data set before Pixel Data, and whether Pixel Data was reached."""

    dataset: FileDataset
    reached_pixels: bool


def read_header(path: Path) -> Header:
    """The data set of ``path`` up to, not including, its Pixel Data."""
    with open_regular(path) as stream:
        reached: list[bool] = []
        dataset = _parse(stream, path, reached, MAX_INFLATED_HEADER_BYTES)
        return Header(dataset, bool(reached))


class Limits(NamedTuple):
    """How large a file, and its inflated data set, may be for the pixels its header claims."""

    max_file_bytes: int
    max_inflated_bytes: int

    @classmethod
    def for_pixels(cls, pixels: int) -> Limits:
        """At most 16 bits a pixel (checked by ingest), twice that for a file that
        compresses badly, and room for the header and encapsulation."""
        raw_bytes = pixels * 2
        return cls(2 * raw_bytes + SLACK_BYTES, raw_bytes + SLACK_BYTES)


def read_full(path: Path, *, max_file_bytes: int, max_inflated_bytes: int) -> FileDataset:
    """The whole data set of ``path``, Pixel Data included, within the given sizes.

    Raises
    ------
    IngestError
        ``too_large`` when the file is larger than ``max_file_bytes``,
        ``deflate_bomb`` when a deflated data set inflates past ``max_inflated_bytes``.
    """
    with open_regular(path) as stream:
        _check_size(stream, max_file_bytes)
        return _parse(stream, path, None, max_inflated_bytes)


def read_checked(
    path: Path, check: Callable[[Header], tuple[Checked, Limits]]
) -> tuple[Checked, FileDataset]:
    """The header pass, ``check`` on it, then the rest of the data set, in one reading.

    ``check`` refuses the file by raising, or gives what it made of the header and
    the sizes that header allows; the Pixel Data is read on from where the header
    pass stopped, so the file is parsed once, and never beyond what its checked
    header allows.
    """
    with open_regular(path) as stream:
        reached: list[bool] = []
        dataset = _parse(stream, path, reached, MAX_INFLATED_HEADER_BYTES)
        checked, limits = check(Header(dataset, bool(reached)))
        _check_size(stream, limits.max_file_bytes)
        if dataset.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            stream.seek(0)  # inflated in steps from its start, within the limit
            return checked, _parse(stream, path, None, limits.max_inflated_bytes)
        implicit, little = dataset.original_encoding
        with _refusing_what_breaks_pydicom():
            rest = read_dataset(stream, bool(implicit), bool(little),
                                stop_when=_refuse_huge_elements)  # fmt: skip
        dataset.update(rest)
        return checked, dataset


def _check_size(stream: BinaryIO, max_file_bytes: int) -> None:
    size = os.fstat(stream.fileno()).st_size
    if size > max_file_bytes:
        raise IngestError(
            "too_large",
            f"the file has {size} bytes, more than the {max_file_bytes} its header allows",
        )


def _parse(stream: BinaryIO, path: Path, reached: list[bool] | None, limit: int) -> FileDataset:
    """Parse with pydicom; with ``reached`` given, stop at Pixel Data and note it there."""
    with _refusing_what_breaks_pydicom():
        preamble = read_preamble(stream, False)
        meta = _read_file_meta_info(stream)
        if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            return _read_deflated(stream, path, preamble, meta, reached, limit)
        stream.seek(0)
        stop = _refuse_huge_elements if reached is None else _header_stop(reached)
        return read_partial(stream, stop_when=stop)


@contextlib.contextmanager
def _refusing_what_breaks_pydicom() -> Iterator[None]:
    """pydicom's failures on a broken or hostile file, as the file's reason."""
    try:
        yield
    except InvalidDicomError as exc:
        raise IngestError("not_dicom", NOT_DICOM) from exc
    except IngestError:
        raise
    except EOFError as exc:
        raise IngestError("truncated", f"the data set ends early: {plain(exc)}") from exc
    except struct.error as exc:  # pydicom unpacking a tag or length the file cuts short
        detail = f"the data set ends inside an element: {plain(exc)}"
        raise IngestError("truncated", detail) from exc
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        # pydicom raises these for malformed elements; its text names the element,
        # and sometimes quotes the value, which plain() takes out.
        raise IngestError("malformed", f"the data set cannot be parsed: {plain(exc)}") from exc
    except (NotImplementedError, OverflowError, RecursionError, zlib.error,
            BytesLengthException) as exc:  # fmt: skip
        reason = f"{type(exc).__name__}: {plain(exc)}"
        raise IngestError("malformed", f"the data set cannot be parsed: {reason}") from exc


#: the reason of a file without the DICOM preamble and prefix (PS3.10 7.1)
NOT_DICOM = (
    "not a DICOM file: it does not start with the 128-byte preamble and 'DICM' prefix "
    "of a DICOM file (PS3.10 7.1); a JPEG, PDF or text file, or a file cut at its start"
)
#: advice a library gives its programmer, which means nothing to a technician
_LIBRARY_ADVICE = re.compile(
    r"\s*[(\[]?\b(?:use|set|pass)\b[^.]*\bforce\s*=\s*True\b[^.]*\.?[)\]]?", re.I
)


def plain(exc: BaseException) -> str:
    """An exception's text without a library's advice to its caller (pydicom's force=True),
    and without the values it quotes (a misfiled element can hold a patient's name)."""
    return without_values(_LIBRARY_ADVICE.sub("", str(exc)).strip()) or type(exc).__name__


def _header_stop(reached: list[bool]) -> StopWhen:
    """A ``stop_when`` that stops at Pixel Data and notes that it got there."""

    def stop(tag: BaseTag, vr: str | None, length: int) -> bool:
        if int(tag) in PIXEL_DATA_TAGS:
            reached.append(True)
            return True
        return _refuse_huge_elements(tag, vr, length)

    return stop


def _refuse_huge_elements(tag: BaseTag, vr: str | None, length: int) -> bool:
    if int(tag) not in PIXEL_DATA_TAGS and MAX_ELEMENT_BYTES < length < 0xFFFFFFFF:
        raise IngestError(
            "oversized_element",
            f"element {tag} claims {length} bytes, more than {MAX_ELEMENT_BYTES} allowed",
        )
    return False


def _read_deflated(
    stream: BinaryIO,
    path: Path,
    preamble: bytes | None,
    meta: FileMetaDataset,
    reached: list[bool] | None,
    limit: int,
) -> FileDataset:
    """Inflate the data set in growing steps until what is needed has been read.

    The header pass needs only the first few kilobytes, so it starts small; a
    step that ends before Pixel Data is retried four times larger, up to ``limit``.
    """
    compressed = stream.read()
    header_only = reached is not None
    want = min(_INFLATE_FIRST, limit) if header_only else limit
    while True:
        body, complete = inflate(compressed, want)
        stop = _refuse_huge_elements if reached is None else _header_stop(reached)
        dataset = read_dataset(BytesIO(body), False, True, stop_when=stop)
        if complete or reached:
            break
        if want >= limit:
            raise IngestError(
                "deflate_bomb",
                f"the deflated data set inflates past {limit} bytes"
                + (" before its Pixel Data" if header_only else ""),
            )
        want = min(want * 4, limit)
    result = FileDataset(str(path), dataset, preamble=preamble, file_meta=meta)
    result.set_original_encoding(False, True, dataset._character_set)
    return result


def inflate(compressed: bytes, limit: int) -> tuple[bytes, bool]:
    """Inflate raw deflate data (no zlib header, PS3.5 A.5) to at most ``limit`` bytes.

    Returns the bytes and whether nothing is left to inflate: the stream ended,
    or the input ran out (a cut file, which the parser then finds short).
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    # zlib stops at max_length and keeps the rest as unconsumed input: bounded.
    body = inflater.decompress(compressed, limit)
    if inflater.eof:
        return body, True
    if inflater.unconsumed_tail:
        return body, False
    rest = inflater.flush()
    return body + rest, len(body) + len(rest) <= limit
