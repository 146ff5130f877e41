"""The needle benchmark on a tiny random Idefics3 bundle: the stream carries exactly one
triangle, every cell gets one answer per trial, `full` that does not fit says so, and the
table has a row per policy and budget. (Random towers answer at random: accuracy itself is
measured with smolvlm-synthetic, see tests/real.)"""

from __future__ import annotations

import numpy as np
import pytest

from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import EdgeKVError
from edgekv.runtime.session import Session
from edgekv.runtime.sources.scene import COLOURS
from edgekv.runtime.sources.synthetic import SyntheticOptions, SyntheticSource
from edgekv.tools import needle


@pytest.fixture(scope="module")
def global_view_bundle(vlm_dir, tmp_path_factory):
    from edgekv.export.exporter import ExportOptions, export

    out = tmp_path_factory.mktemp("needle") / "idefics3"
    export(str(vlm_dir("idefics3")), out, ExportOptions(budget=192, chunk=32, validate=False),
           log=lambda _m: None)
    return Bundle.open(out)


def test_needle_frame_is_the_only_one_with_the_triangle():
    options = needle.NeedleOptions(gaps=(2,), lead=3, size=(80, 60), seed=4)
    frames, colour = needle.needle_stream(options, trial=1)
    frames = list(frames)
    plain = SyntheticSource(SyntheticOptions(seed=4001, width=80, height=60, shapes=3,
                                             kinds=("square", "circle")))
    changed = [i for i, f in enumerate(frames) if not np.array_equal(f, plain.render(i))]
    assert changed == [options.lead] and len(frames) == options.frames
    rgb = np.array(COLOURS[colour], dtype=np.uint8)
    assert (frames[options.lead] == rgb).all(-1).sum() > 10


def test_colour_in_reads_the_first_colour_word():
    assert needle.colour_in("The triangle was Red.") == "red"
    assert needle.colour_in("blue, then green") == "blue"
    assert needle.colour_in("I do not know") is None


def test_run_fills_every_cell(global_view_bundle):
    options = needle.NeedleOptions(gaps=(1, 3), lead=1, trials=2, policies=("streaming",
                                   "inf-mllm"), budgets=(96, 160), size=(48, 36),
                                   max_new_tokens=3)

    def opener(policy, budget):
        return Session.open(global_view_bundle, policy, backend="ort", budget=budget)

    cells = needle.run(opener, options, full_session=opener, full_budget=64)
    assert len(cells) == (1 + 2 * 2) * 2 * 2  # (full + policies x budgets) x modes x gaps
    full = [c for c in cells if c.policy == "full"]
    assert all(c.error for c in full)  # 64 slots hold neither the stream nor the instruction
    for c in cells:
        if c.policy != "full":
            assert c.error is None and len(c.answers) == 2 and len(c.truth) == 2
    lines = needle.table(cells, options)
    assert lines[0].count("gap") == 4 and len(lines) == 2 + 5
    assert "does not fit" in lines[2]


def test_options_are_checked():
    with pytest.raises(EdgeKVError, match="at most 2000"):
        needle.NeedleOptions(gaps=(2000,)).check()
    with pytest.raises(EdgeKVError, match="positive"):
        needle.NeedleOptions(gaps=(0,)).check()
