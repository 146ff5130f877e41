"""A picture larger than the cache's room is refused before it is fed, with the numbers: the
model would otherwise never see a whole picture, and nothing would say so."""

from __future__ import annotations

import numpy as np
import pytest

from edgekv.cli import main
from edgekv.export.exporter import ExportOptions, export
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import BudgetError
from edgekv.runtime.session import Session


@pytest.fixture(scope="module")
def small_bundle(vlm_dir, tmp_path_factory):
    """llava-siglip (16 tokens a picture) at budget 16: with streaming's 4 sinks, 12 slots."""
    out = tmp_path_factory.mktemp("small") / "b16"
    export(str(vlm_dir("llava-siglip")), out, ExportOptions(budget=16, chunk=8, validate=False),
           log=lambda _m: None)
    return out


def test_a_picture_larger_than_the_room_is_refused_and_changes_nothing(small_bundle):
    session = Session.open(Bundle.open(small_bundle), policy="streaming")
    picture = np.full((32, 32, 3), 128, np.uint8)
    with pytest.raises(BudgetError, match="one picture is 16 tokens and the cache has 12 slots"):
        session.append_image(picture)
    assert session.messages == [] and session.stats.tokens_in == 0
    assert session.cache.occupied() == 0


def test_a_stream_on_such_a_bundle_ends_with_one_clear_line(capsys, small_bundle):
    assert main(["run", str(small_bundle), "--source", "synthetic:frames=2", "--max-frames",
                 "2"]) == 2
    err = capsys.readouterr().err
    assert "edgekv: error: one picture is 16 tokens" in err and "Traceback" not in err
