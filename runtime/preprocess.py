"""Pictures -> the vision graph's input, from the manifest's numbers: Pillow and numpy only.

Resizing uses Pillow because the HF image processors resize with Pillow on uint8 pictures: the
same filter on the same bytes gives the same bytes, so `pixel_values` match HF's to float
rounding. Rescale and normalize follow HF's order and dtypes (float64 rescale, float32 result).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekv.export.vision_spec import CLIP, IDEFICS3, QWEN2_VL, SQUARE, Preprocess
from edgekv.runtime.errors import ImageError

MAX_IMAGE_SIDE = 4096  # HF's Idefics3 upper bound after the longest-edge resize


def to_rgb(img: Any) -> Any:
    """A PIL image in RGB as HF's processors make it (`convert_to_rgb`): transparency is
    composited onto white, not dropped (a dropped alpha shows what the transparent pixels
    happened to hold: pixel values moved by up to 3.8 against HF's)."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


# What Pillow raises for bytes that are not a picture it can decode
DECODE_ERRORS = (OSError, SyntaxError, ValueError)  # UnidentifiedImageError is an OSError


def read_rgb(file: Any) -> Any:
    """An encoded picture (a path or a binary file object) decoded to RGB as HF does: no EXIF
    turn, transparency onto white; Pillow's own errors (DECODE_ERRORS) pass through."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            img.load()
            return to_rgb(img)
    except Image.DecompressionBombError as exc:  # not an OSError: it would end a stream
        raise ValueError(str(exc)) from exc


def load_image(source: Any) -> Any:
    """A picture as an RGB PIL image: a file path, a PIL image, or an HxWx3 / HxW uint8 array
    (RGB order; convert OpenCV's BGR frames first). Files are not turned by their EXIF
    orientation, as HF's processors do not turn them."""
    from PIL import Image

    if isinstance(source, (str, Path)):
        try:
            return read_rgb(source)
        except FileNotFoundError as exc:
            raise ImageError(f"image file not found: {source}") from exc
        except DECODE_ERRORS as exc:
            raise ImageError(f"cannot read image {source}: not a valid image file ({exc})") from exc
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        if source.ndim == 2:
            source = np.repeat(source[..., None], 3, axis=-1)
        if source.ndim != 3 or source.shape[-1] != 3:
            raise ImageError(
                f"expected an HxWx3 RGB image (or HxW grayscale), got an array of shape "
                f"{source.shape}; {source.shape[-1] if source.ndim == 3 else '?'} channels")
        if source.dtype != np.uint8:
            raise ImageError(f"expected uint8 pixels (0..255), got {source.dtype}")
        if min(source.shape[:2]) < 1:
            raise ImageError(f"empty image of shape {source.shape}")
        return Image.fromarray(np.ascontiguousarray(source), mode="RGB")
    raise ImageError(f"cannot use a {type(source).__name__} as an image (path, PIL image or "
                     "numpy array)")


def preprocess(image: Any, spec: Preprocess) -> np.ndarray:
    """One picture -> the frames the vision graph encodes: [frames, ...] float32.

    Frames are [3, H, W] for CLIP / SigLIP / Idefics3 (several for an Idefics3 tile grid:
    tiles row by row, then the global view) and [N, C*T*P*P] patches for Qwen2-VL.
    """
    img = load_image(image)
    if spec.kind == CLIP:
        img = _resize(img, _shortest_edge_size(img, spec.shortest_edge), spec)
        frames = [_center_crop(img, spec.height, spec.width)]
    elif spec.kind == SQUARE:
        frames = [_resize(img, (spec.height, spec.width), spec)]
    elif spec.kind == IDEFICS3:
        frames = _idefics3_frames(img, spec)
    elif spec.kind == QWEN2_VL:
        img = _resize(img, (spec.height, spec.width), spec)
        return _patchify(_normalize(img, spec), spec)[None]
    else:
        raise ImageError(f"unknown preprocessing kind {spec.kind!r} in the manifest")
    return np.stack([_normalize(f, spec) for f in frames])


def _resize(img: Any, size: tuple[int, int], spec: Preprocess) -> Any:
    if not spec.do_resize or img.size == (size[1], size[0]):
        return img
    return img.resize((size[1], size[0]), resample=spec.resample)


def _normalize(img: Any, spec: Preprocess) -> np.ndarray:
    """uint8 HWC picture -> float32 CHW, rescaled and normalized as HF does."""
    pixels = np.asarray(img)
    if spec.do_rescale:
        pixels = (pixels.astype(np.float64) * spec.rescale_factor).astype(np.float32)
    else:
        pixels = pixels.astype(np.float32)
    if spec.do_normalize:
        mean = np.asarray(spec.image_mean, dtype=np.float32)
        std = np.asarray(spec.image_std, dtype=np.float32)
        pixels = (pixels - mean) / std
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _shortest_edge_size(img: Any, edge: int) -> tuple[int, int]:
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(edge * long / short)
    return (new_long, edge) if width <= height else (edge, new_long)


def _center_crop(img: Any, height: int, width: int) -> Any:
    w, h = img.size
    top, left = (h - height) // 2, (w - width) // 2
    return img.crop((left, top, left + width, top + height))


def _idefics3_frames(img: Any, spec: Preprocess) -> list[Any]:
    """HF's Idefics3 path: longest edge to `longest_edge`, then either one square global view,
    or the picture resized to the export grid (rows x cols frames), cut into tiles, plus the
    global view. HF picks its grid from the aspect ratio; the bundle's grid is fixed, and the
    two agree whenever HF's grid is the bundle's."""
    width, height = img.size
    img = _resize(img, _longest_edge_size(height, width, spec.longest_edge), spec)
    side = spec.height
    if not (spec.tile_rows or spec.tile_cols):
        return [_resize(img, (side, side), spec)]
    img = _resize(img, (spec.tile_rows * side, spec.tile_cols * side), spec)
    tiles = [img.crop((c * side, r * side, (c + 1) * side, (r + 1) * side))
             for r in range(spec.tile_rows) for c in range(spec.tile_cols)]
    return [*tiles, _resize(img, (side, side), spec)]


def _longest_edge_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """HF's Idefics3 `get_resize_output_image_size` (even short side, 4096 cap)."""
    aspect = width / height
    if width >= height:
        width = longest
        height = int(width / aspect)
        height += height % 2
    else:
        height = longest
        width = int(height * aspect)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    if max(height, width) > MAX_IMAGE_SIDE:
        aspect = width / height
        if width >= height:
            height, width = max(int(MAX_IMAGE_SIDE / aspect), 1), MAX_IMAGE_SIDE
        else:
            height, width = MAX_IMAGE_SIDE, max(int(MAX_IMAGE_SIDE * aspect), 1)
    return height, width


def _patchify(chw: np.ndarray, spec: Preprocess) -> np.ndarray:
    """Qwen2-VL's patch layout: merge windows contiguous, each patch repeated over time."""
    c, h, w = chw.shape
    p, m, t = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    gh, gw = h // p, w // p
    x = chw.reshape(c, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
    x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], t, *x.shape[5:]))
    return np.ascontiguousarray(x.reshape(gh * gw, c * t * p * p))
