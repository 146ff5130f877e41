"""The built-in smolvlm-synthetic (real SmolLM2 + the trained vision tower shipped in the
package): it assembles, exports with both graphs matching HF (the export's validation), and
answers colour and shape questions about held-out scenes (one frame, full cache) >= 90%."""

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


def test_colour_and_shape_accuracy_on_held_out_scenes(smolvlm_bundle):
    session = Session.open(smolvlm_bundle, "full", backend="ort")
    score = evaluate(session, 60, categories=("colour", "shape"))
    print("\n".join(score.lines()))
    assert score.accuracy() >= 0.9, score.mistakes[:5]


def test_recall_of_an_earlier_frame_beats_chance(smolvlm_bundle):
    """Several frames, the triangle in one of them, asked after the last (streaming feed)."""
    from edgekv.runtime.frame_feed import StreamingFeeder
    from edgekv.runtime.sampler import Sampler
    from edgekv.runtime.snapshot import Snapshot
    from edgekv.tools.needle import colour_in
    from edgekv.tools.train_vision.questions import sampler

    session = Session.open(smolvlm_bundle, "full", backend="ort")
    fresh, examples = Snapshot.take(session), sampler(11, ("recall",))
    right = 0
    for _ in range(12):
        ex = examples()
        fresh.restore(session)
        feeder = StreamingFeeder(session)
        for frame in ex.frames:
            feeder.append_image(frame)
        right += colour_in("".join(feeder.ask(ex.question, 6, Sampler()))) == ex.answer
    assert right / 12 > 2 / 6  # chance is 1/6
