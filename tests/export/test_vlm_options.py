"""Image settings of a multimodal export: those a model can take export and match HF (the
export checks an image and a question against it); the others are refused before anything is
traced, and `verify --image` compares any picture."""

from __future__ import annotations

import json

import pytest
import vlm_fixtures

from edgekv.cli import main
from edgekv.export.exporter import ExportOptions, export
from edgekv.runtime.errors import ModelError


def _export(vlm_dir, family, out, **options):
    return export(str(vlm_dir(family)), out, ExportOptions(budget=512, chunk=32, **options),
                  log=lambda _m: None)


def test_idefics3_at_another_frame_size_matches_hf(vlm_dir, tmp_path):
    # the tower's 64x64 frames at 32x32: a quarter of the tokens per tile, and HF is told so
    manifest = _export(vlm_dir, "idefics3", tmp_path / "b", image_size=(32, 32), tiling=(2, 3))
    assert manifest.vision.layout.tokens_per_frame == 4
    assert manifest.validation["image_max_abs_logit_diff"] <= 1e-3


def test_a_size_llava_cannot_take_is_refused_before_tracing(vlm_dir, tmp_path, monkeypatch):
    from edgekv.export import onnx_graph

    def never(*_a, **_k):
        raise AssertionError("traced before the image size was checked")

    monkeypatch.setattr(onnx_graph, "trace", never)
    with pytest.raises(ModelError, match="takes 32x32 images; --image-size 48x48 cannot"):
        _export(vlm_dir, "llava-clip", tmp_path / "b", image_size=(48, 48))


def test_a_budget_too_small_for_the_image_check_says_so(vlm_dir, tmp_path):
    with pytest.raises(ModelError, match="image check .* does not fit --budget 24; .*"
                                         "--no-validate"):
        export(str(vlm_dir("llava-siglip")), tmp_path / "b",
               ExportOptions(budget=24, chunk=8), log=lambda _m: None)


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
def test_verify_takes_a_picture_of_any_aspect(family, capsys, vlm_dir, vlm_bundle, tmp_path):
    # the bundle's frames are fixed; HF would pick another grid for this aspect
    path = tmp_path / "wide.png"
    vlm_fixtures.image(50, 70, seed=5).save(path)
    argv = ["verify", str(vlm_bundle(family)), "--against", str(vlm_dir(family)), "--image",
            str(path), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["max_abs_logit_diff"] <= 1e-3
