"""Preprocessing from the manifest's numbers (Pillow + numpy) gives HF's `pixel_values`."""

import numpy as np
import pytest
import vlm_fixtures
from vlm_fixtures import FAMILIES

from edgekv.export.loading import resolve
from edgekv.export.validate_vlm import processor_kwargs
from edgekv.export.vlm_loading import hf_processor, load_vision_language
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import ImageError
from edgekv.runtime.preprocess import load_image, preprocess

# (height, width): landscape, portrait, square, odd sizes, up- and downscaling.
SIZES = [(48, 64), (100, 37), (32, 32), (301, 200), (17, 90)]
# Idefics3's 2x3 grid and Qwen2-VL's 32x48 come from 2:3 pictures in HF; sizes with that aspect.
ASPECT_2_3 = [(64, 96), (20, 30), (200, 300), (100, 150)]


def sizes_for(family: str) -> list[tuple[int, int]]:
    return ASPECT_2_3 if family in ("idefics3", "qwen2_vl") else SIZES


@pytest.mark.parametrize("family", FAMILIES)
def test_pixel_values_match_hf_processor(family, vlm_dir, vlm_bundle):
    spec = Bundle.open(vlm_bundle(family)).manifest.vision
    vlm = load_vision_language(resolve(str(vlm_dir(family))))
    image_processor = hf_processor(vlm).image_processor
    for i, (h, w) in enumerate(sizes_for(family)):
        picture = vlm_fixtures.image(h, w, seed=i)
        ours = preprocess(picture, spec.preprocess)
        ref = image_processor(picture, return_tensors="np",
                              **processor_kwargs(spec)).pixel_values
        assert ours.shape[1:] == tuple(spec.input_shape[1:])
        assert ref.size == ours.size, (h, w)
        assert np.abs(ref.reshape(ours.shape) - ours).max() <= 1e-5, (h, w)


@pytest.mark.parametrize("family", ["idefics3", "llava-siglip"])
def test_global_view_of_any_aspect_matches_hf(family, vlm_dir, vlm_bundle):
    """Without tiles, Idefics3 squashes any picture into one frame, as HF does."""
    from dataclasses import replace

    spec = Bundle.open(vlm_bundle(family)).manifest.vision
    pre = replace(spec.preprocess, tile_rows=0, tile_cols=0, longest_edge=128)
    spec = replace(spec, preprocess=pre)
    image_processor = hf_processor(load_vision_language(resolve(str(vlm_dir(family))))
                                   ).image_processor
    for i, (h, w) in enumerate(SIZES):
        picture = vlm_fixtures.image(h, w, seed=i)
        ref = image_processor(picture, return_tensors="np",
                              **processor_kwargs(spec)).pixel_values
        ours = preprocess(picture, pre)
        assert np.abs(ref.reshape(ours.shape) - ours).max() <= 1e-5, (h, w)


def test_numpy_and_pil_inputs_agree(vlm_bundle):
    pre = Bundle.open(vlm_bundle("llava-clip")).manifest.vision.preprocess
    picture = vlm_fixtures.image(40, 50)
    as_array = np.asarray(picture)
    assert np.array_equal(preprocess(picture, pre), preprocess(as_array, pre))
    gray = as_array[..., 0]
    assert np.array_equal(np.asarray(load_image(gray))[..., 2], gray)


def test_corrupt_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "frame.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageError, match="not a valid image file"):
        load_image(bad)
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("shape", [(8, 8, 4), (8, 8, 2), (3, 8, 8, 3)])
def test_wrong_channel_count_is_a_clear_error(shape):
    with pytest.raises(ImageError, match="HxWx3"):
        load_image(np.zeros(shape, dtype=np.uint8))


def test_float_pixels_are_refused():
    with pytest.raises(ImageError, match="uint8"):
        load_image(np.zeros((8, 8, 3), dtype=np.float32))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pictures_match_hf_processor(mode, vlm_dir, vlm_bundle, tmp_path):
    """Transparency is composited onto white, as HF's processors do, for a file and for a
    picture in a folder stream alike."""
    from PIL import Image

    from edgekv.runtime.sources.image_folder import decode_image

    spec = Bundle.open(vlm_bundle("llava-clip")).manifest.vision
    image_processor = hf_processor(load_vision_language(resolve(str(vlm_dir("llava-clip"))))
                                   ).image_processor
    rgb = np.asarray(vlm_fixtures.image(40, 52, seed=3))
    alpha = np.tile(np.linspace(0, 255, 52, dtype=np.uint8), (40, 1))
    picture = Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")
    if mode == "LA":
        picture = picture.convert("LA")
    elif mode == "P":  # a palette picture with one transparent index
        picture = picture.convert("RGB").quantize(16)
        picture.info["transparency"] = 0
    path = tmp_path / "clear.png"
    picture.save(path)
    with Image.open(path) as reread:
        ref = image_processor(reread, return_tensors="np", **processor_kwargs(spec)).pixel_values
    ours = preprocess(str(path), spec.preprocess)
    assert np.abs(ref.reshape(ours.shape) - ours).max() <= 1e-5
    from_folder = preprocess(decode_image(path.read_bytes()), spec.preprocess)
    assert np.array_equal(from_folder, ours)
    dropped = preprocess(np.asarray(picture.convert("RGB")), spec.preprocess)
    assert np.abs(dropped - ours).max() > 0.1  # the alpha mattered
