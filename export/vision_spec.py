"""The multimodal part of the manifest: what the vision graph takes and gives, how the device
turns a picture into its input, and how image tokens sit in the prompt.

Standard library only (the device reads it). Every field has a default so that a manifest
written by another edgekv version of the same schema still loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# Preprocessing kinds, one per HF image processor the runtime reproduces (runtime/preprocess.py).
CLIP = "clip"  # resize the shortest edge, centre crop (CLIPImageProcessor, LlavaImageProcessor)
SQUARE = "square"  # resize to height x width (SiglipImageProcessor)
IDEFICS3 = "idefics3"  # longest edge, then square frames: a global view, or tiles + global
QWEN2_VL = "qwen2_vl"  # resize to the export size, patchify into merge windows

# Image-token layouts of the prompt (runtime/image_prompt.py).
REPEAT = "repeat"  # the placeholder becomes tokens_per_image copies of the image token
IDEFICS3_ROWS = "idefics3"  # <fake_token_around_image>[<row_r_col_c>|<global-img>]<image>*n ...


@dataclass(frozen=True)
class Preprocess:
    """The HF image processor's numbers: enough to reproduce its `pixel_values` exactly."""

    kind: str = SQUARE
    height: int = 0  # size of one frame fed to the vision graph
    width: int = 0
    resample: int = 3  # PIL resampling filter code (3 = bicubic, 1 = lanczos)
    do_resize: bool = True
    shortest_edge: int = 0  # clip: resize target of the shortest edge
    longest_edge: int = 0  # idefics3: the first resize, longest edge to this
    rescale_factor: float = 1 / 255
    do_rescale: bool = True
    do_normalize: bool = True
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    tile_rows: int = 0  # idefics3 tiling fixed at export; 0 x 0 = one global view only
    tile_cols: int = 0
    patch_size: int = 0  # qwen2_vl patchify
    temporal_patch_size: int = 1
    merge_size: int = 1


@dataclass(frozen=True)
class ImageLayout:
    """How one image appears in the token stream, and what the chat template writes for it."""

    kind: str = REPEAT
    placeholder: str = "<image>"  # what the chat template renders per image
    image_token: str = "<image>"  # the token whose embeddings the image replaces
    image_token_id: int = -1
    tokens_per_frame: int = 0  # image tokens per vision-graph frame (tile or view)
    fake_token: str = ""  # idefics3 wrappers
    global_token: str = ""
    grid: list[int] = field(default_factory=list)  # qwen2_vl: merged [rows, cols] per frame


@dataclass(frozen=True)
class VisionSpec:
    graph: str = "vision.onnx"
    input: str = "pixel_values"
    output: str = "image_embeds"
    input_shape: list[int] = field(default_factory=list)  # [frames_per_call, ...] fixed
    output_shape: list[int] = field(default_factory=list)  # [frames_per_call, tokens, hidden]
    frames_per_call: int = 1
    weights_bytes: int = 0
    preprocess: Preprocess = field(default_factory=Preprocess)
    layout: ImageLayout = field(default_factory=ImageLayout)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VisionSpec:
        raw = dict(raw)
        raw["preprocess"] = _known(Preprocess, raw.get("preprocess", {}))
        raw["layout"] = _known(ImageLayout, raw.get("layout", {}))
        return _known(cls, raw)


def _known(cls: type, raw: dict[str, Any]) -> Any:
    """Build `cls` from `raw`, rejecting unknown keys with a TypeError (the manifest's check)."""
    names = {f.name for f in fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise TypeError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return cls(**raw)
