"""Image settings of a multimodal export: those a model can take export and match HF (the
export checks an image and a question against it); the others are refused before anything is
traced, and `verify --image` compares any picture."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
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


@pytest.mark.parametrize(("tower", "patch", "scale", "frame"),
                         [(50, 2, 5, 50),  # 25 patches a side, at the tower's own size
                          (80, 2, 2, 40)])  # 20 patches a side in a tower of 40
def test_idefics3_patch_positions_are_hfs_where_the_fraction_rounds(tower, patch, scale, frame):
    # HF buckets index * float32(1 / n); index / n lands on the other side of a boundary here
    from edgekv.export.families.idefics3 import Idefics3Adapter
    from edgekv.export.families.vlm import VisionSetup

    model = vlm_fixtures.idefics3_model(tower, patch, scale)
    encoder, shape = Idefics3Adapter().vision_encoder(model, VisionSetup(image_size=(frame,
                                                                                    frame)))
    pixels = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = encoder(pixels)[0]
        ref = model.model.get_image_features(pixels[None]).pooler_output[0]
    assert ours.shape == ref.shape == ((frame // patch // scale) ** 2, 64)
    assert torch.abs(ours - ref).max() <= 1e-5


def _with_image_processor(source, out, **changes):
    """A copy of the model directory `source` whose image processor has `changes`."""
    shutil.copytree(source, out)
    path = out / "processor_config.json"
    config = json.loads(path.read_text())
    config["image_processor"].update(changes)
    path.write_text(json.dumps(config))
    return out


def test_llava_resizing_to_height_and_width_then_cropping_matches_hf(vlm_dir, tmp_path):
    # CLIP's processor with a fixed size instead of a shortest edge: the crop is then a no-op
    model = _with_image_processor(vlm_dir("llava-clip"), tmp_path / "m",
                                  size={"height": 32, "width": 32})
    manifest = export(str(model), tmp_path / "b", ExportOptions(budget=512, chunk=32),
                      log=lambda _m: None)
    assert manifest.vision.preprocess.kind == "square"
    assert manifest.validation["image_max_abs_logit_diff"] <= 1e-3


@pytest.mark.parametrize(("changes", "message"), [
    ({"do_center_crop": False}, "resizes the shortest edge to 32 without a centre crop"),
    ({"size": {"height": 36, "width": 36}}, r"size \{height: 36, width: 36\} is not supported"),
])
def test_llava_frames_the_runtime_cannot_make_are_refused(vlm_dir, tmp_path, changes, message):
    model = _with_image_processor(vlm_dir("llava-clip"), tmp_path / "m", **changes)
    with pytest.raises(ModelError, match=message):
        export(str(model), tmp_path / "b", ExportOptions(budget=512, chunk=32),
               log=lambda _m: None)


def test_idefics3_frames_its_connector_cannot_shuffle_are_refused_without_blaming_a_flag():
    # 48 / 8 = 6 patches a side, scale_factor 4: HF's pixel shuffle fails on such frames too
    from edgekv.export.families.idefics3 import Idefics3Adapter
    from edgekv.export.families.vlm import VisionSetup

    model = vlm_fixtures.idefics3_model(48, 8, 4)
    with pytest.raises(ModelError, match=r"model's own 48x48 frames are not a multiple of 32 "
                                         r"\(patch 8 x scale_factor 4\)"):
        Idefics3Adapter().image_spec(model, None, None, VisionSetup())


def test_a_vision_tower_narrower_than_the_language_model_is_refused(tmp_path):
    # Qwen2-VL's merger writes vision_config.hidden_size; the text model here is 64 wide
    model = vlm_fixtures.build("qwen2_vl", tmp_path / "m", vision={"hidden_size": 48})
    with pytest.raises(ModelError, match="features 48 wide, the language model's embeddings "
                                         "are 64"):
        export(str(model), tmp_path / "b", ExportOptions(budget=512, chunk=32,
                                                         image_size=(32, 48)),
               log=lambda _m: None)


@pytest.mark.parametrize(("family", "size"), [("llava-clip", None), ("qwen2_vl", (32, 48))])
def test_an_int4_export_checks_its_image_prompt_as_its_text(family, size, tmp_path):
    # int4 weights move logits past any tolerance: the image prompt is checked with the float
    # weights against HF, then the bundle against its dequantized weights (HF's init range
    # here: the fixtures' 0.3 makes int8 activations drift beyond what export accepts)
    model = vlm_fixtures.build(family, tmp_path / "m", text={"initializer_range": 0.02})
    manifest = export(str(model), tmp_path / "b", ExportOptions(budget=512, chunk=32,
                                                                dtype="int4", image_size=size),
                      log=lambda _m: None)
    assert manifest.validation["image_float_weights_vs_hf"] <= 1e-3
    assert manifest.validation["image_max_abs_logit_diff"] <= 1e-3
