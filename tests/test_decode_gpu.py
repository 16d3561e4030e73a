"""JPEG 2000 on the GPU (nvImageCodec) behind the decoder chain, and its fallback to the CPU.

On a box without nvImageCodec or without a GPU (this one), ``decode.gpu: auto``
must change nothing; a GPU failure on a frame must hand it to openjpeg and say
so, for health to count. The ``gpu``-marked tests compare nvJPEG2000 with
openjpeg on real mammograms where a GPU and the wheels are present
(``scripts/gpu-check``).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from mammo_files import build, header
from pydicom.pixels.utils import pixel_array

from edge.bundle.manifest import Preprocessing
from edge.pipeline import codecs, gpudecode
from edge.pipeline.decode import decode, load_model_input
from edge.pipeline.options import DecodeOptions
from edge.pipeline.pool import ThreadDecoder
from edge.tools.decode_bench import encoders_missing
from edge.tools.samples import SamplesMissing

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
SPEC = Preprocessing(height=256, width=208, orientation="chest_wall_left", intensity="minmax")


def _built(folder: Path, encoding: str) -> Path:
    if encoders_missing([encoding]):
        pytest.skip(f"{', '.join(encoders_missing([encoding]))} not installed (scripts/bootstrap)")
    try:
        return build(folder / f"{encoding}.dcm", encoding=encoding)
    except SamplesMissing as exc:  # a GPU box given only the carried wheels
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def j2k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _built(tmp_path_factory.mktemp("gpu"), "j2k-lossless")


@pytest.fixture(scope="module")
def htj2k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _built(tmp_path_factory.mktemp("gpu"), "htj2k-lossless")


def _gpu_skip_reason() -> str | None:
    ok, why = gpudecode.is_available()
    return None if ok else why


def test_without_nvimagecodec_auto_decodes_exactly_as_the_cpu_does(j2k: Path) -> None:
    ok, why = gpudecode.is_available()
    if ok:
        pytest.skip("nvImageCodec and a GPU are present here")
    assert why
    image = header(j2k)
    with_gpu = decode(image, target=(256, 208), threads=1, gpu=True)
    without = decode(image, target=(256, 208), threads=1, gpu=False)
    assert with_gpu.decoder == without.decoder == "glymur"
    assert with_gpu.gpu_fallback == ""
    np.testing.assert_array_equal(with_gpu.pixels, without.pixels)


def test_a_gpu_failure_hands_the_frame_to_openjpeg_and_names_itself(
    j2k: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU decoder is let through its availability check; its real failure here
    (nvImageCodec cannot be imported, or finds no GPU) must cost nothing but a count."""
    if gpudecode.is_available()[0]:
        pytest.skip("the GPU decodes here: no failure to fall back from")
    forced = dataclasses.replace(codecs.J2K_GPU, available=lambda: True)
    monkeypatch.setattr(codecs, "J2K_GPU", forced)
    pool = ThreadDecoder(threads=1, options=DecodeOptions(gpu=True))
    prepared = pool.run(header(j2k), SPEC)
    assert "nvimgcodec" in prepared.gpu_fallback
    assert "GPU decoding failed" in prepared.gpu_fallback
    cpu = load_model_input(header(j2k), SPEC, threads=1)
    np.testing.assert_array_equal(prepared.tensor, cpu.tensor)
    assert cpu.gpu_fallback == ""


def _wheel_site(tmp: Path) -> Path | None:
    wheels = sorted(WHEELS.glob("nvidia_nvimgcodec_cu*.whl"))
    if not wheels:
        return None
    for wheel in [*wheels, *WHEELS.glob("nvidia_nvjpeg2k_cu*.whl")]:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(tmp)
    return tmp


def test_the_real_wheel_on_a_box_without_a_gpu_is_unavailable_with_its_reason(
    tmp_path: Path, j2k: Path
) -> None:
    site = _wheel_site(tmp_path / "site")
    if site is None:
        pytest.skip("no nvImageCodec wheel in .whl/ (scripts/gpu-check --fetch puts it there)")
    program = (
        "import sys\n"
        "from edge.pipeline import gpudecode\n"
        "from edge.pipeline.decode import decode\n"
        "from mammo_files import header\n"
        "ok, why = gpudecode.is_available()\n"
        "print('AVAILABLE' if ok else 'UNAVAILABLE', why)\n"
        f"print('DECODER', decode(header(__import__('pathlib').Path({str(j2k)!r})),"
        " threads=1, gpu=True).decoder)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "tests")])}
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    if "AVAILABLE " in done.stdout.split("UNAVAILABLE")[0]:
        pytest.skip("this box has a GPU: the gpu-marked tests cover it")
    assert "UNAVAILABLE nvImageCodec" in done.stdout
    assert "cannot decode on a GPU here" in done.stdout
    assert "DECODER glymur" in done.stdout


def _real_files() -> list[Path]:
    """Full-size real JPEG 2000 / HTJ2K mammograms that scripts/gpu-check carries, if any."""
    folder = os.environ.get("EDGE_GPU_CHECK_STUDIES", "")
    return sorted(Path(folder).glob("*.dcm")) if folder else []


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_skip_reason() is not None, reason=_gpu_skip_reason() or "")
@pytest.mark.parametrize("source", ["j2k", "htj2k", "real"])
def test_gpu_decode_agrees_with_openjpeg(source: str, request: pytest.FixtureRequest) -> None:
    if source == "real":
        paths = _real_files()
        if not paths:
            pytest.skip("EDGE_GPU_CHECK_STUDIES names no folder of real files")
    else:
        paths = [request.getfixturevalue(source)]
    for path in paths:
        image = header(path)
        decoded = decode(image, threads=1, gpu=True)
        assert decoded.decoder == "nvimgcodec"
        assert decoded.gpu_fallback == ""
        # openjpeg through pylibjpeg, at full size; lossless on both sides: bit for bit
        reference = pixel_array(decoded.dataset, index=0, decoding_plugin="pylibjpeg")
        np.testing.assert_array_equal(decoded.pixels, reference)
        gpu = load_model_input(image, SPEC, threads=1, gpu=True).tensor
        cpu = load_model_input(image, SPEC, threads=1, tolerance=0.0).tensor
        np.testing.assert_allclose(gpu, cpu, atol=1e-6)
