"""The built-in smolvlm-synthetic (real SmolLM2 + the trained vision tower shipped in the
package): it assembles, exports with both graphs matching HF (the export's validation), and
answers colour and shape questions about held-out scenes (one frame, full cache) better than
chance; the 90% target of issue 9 is not reached yet and is kept as a strict xfail."""

from __future__ import annotations

import pytest

from edgekv.runtime.bundle import Bundle
from edgekv.runtime.session import Session
from edgekv.tools.scene_eval import evaluate

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def smolvlm_bundle(tmp_path_factory):
    from edgekv.export.exporter import ExportOptions, export

    out = tmp_path_factory.mktemp("real") / "smolvlm-synthetic"
    logged: list[str] = []
    export("smolvlm-synthetic", out, ExportOptions(budget=512, chunk=32), log=logged.append)
    print("\n".join(line for line in logged if "diff" in line))
    return Bundle.open(out)


def test_vision_bundle_is_built_from_the_builtin(smolvlm_bundle):
    m = smolvlm_bundle.manifest
    assert m.vision is not None and m.vision.layout.tokens_per_frame == 16
    assert m.dims.hidden_size == 576 and m.dims.num_layers == 30  # SmolLM2-135M's text model


@pytest.fixture(scope="module")
def colour_shape_score(smolvlm_bundle):
    session = Session.open(smolvlm_bundle, "full", backend="ort")
    score = evaluate(session, 60, categories=("colour", "shape"))
    print("\n".join(score.lines()))
    return score


def test_it_sees_colours_and_shapes_better_than_chance(colour_shape_score):
    # Chance is 1/6 for a colour and 1/3 for a shape (about 0.25 over this mix); twice that
    # cannot come from answer priors alone (the shipped weights: 43/60 here, 64% on 600).
    assert colour_shape_score.accuracy() >= 0.5, colour_shape_score.mistakes[:5]


@pytest.mark.xfail(strict=True, reason="issue 9's target (>= 90% on colour/shape questions) is "
                   "not reached by the shipped weights: 64% measured on 600 scenes (README)")
def test_colour_and_shape_accuracy_meets_the_target(colour_shape_score):
    assert colour_shape_score.accuracy() >= 0.9
