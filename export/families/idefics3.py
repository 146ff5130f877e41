"""Idefics3 / SmolVLM: SigLIP-style encoder, pixel-shuffle connector, Llama text model.

Frames are square (the processor's `max_image_size`) and never padded, so the patch mask is all
ones and the position ids are a constant the graph carries; no bucketize, no mask at run time.
A bundle uses one global view per image, or a tile grid fixed at export plus the global view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from edgekv.export.families.vlm import (
    VisionLanguageAdapter,
    VisionSetup,
    mean_std,
    resample_code,
    token_id,
)
from edgekv.export.vision_spec import IDEFICS3, IDEFICS3_ROWS, ImageLayout, Preprocess
from edgekv.runtime.errors import ModelError


class Idefics3Vision(nn.Module):
    """pixel_values [F, 3, S, S] -> image embeddings [F, (S/patch)^2 / scale^2, H]."""

    def __init__(self, model: Any, frame_size: int) -> None:
        super().__init__()
        vision = model.model.vision_model
        self.embeddings = vision.embeddings
        self.layers = vision.encoder.layers
        self.post_layernorm = vision.post_layernorm
        self.connector = model.model.connector
        self.register_buffer("position_ids", _position_ids(vision.config, frame_size),
                             persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        emb = self.embeddings
        x = emb.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        x = x + emb.position_embedding(self.position_ids)
        for layer in self.layers:
            x = layer(x, None)
        return self.connector(self.post_layernorm(x))


def _position_ids(config: Any, frame_size: int) -> torch.Tensor:
    """Idefics3VisionEmbeddings' bucketed ids for a full (unpadded) frame of `frame_size`."""
    per_side = config.image_size // config.patch_size
    n = frame_size // config.patch_size
    boundaries = torch.arange(1 / per_side, 1.0, 1 / per_side)
    # HF multiplies each index by a float32 step (1 / the frame's patches a side), not divides:
    # i * (1/n) and i / n round to different sides of a bucket boundary for some sizes
    # (25 or 23 patches a side, 20 patches in a tower of 40), moving whole rows of positions.
    step = 1.0 / torch.tensor(n)
    coords = torch.clamp(torch.arange(n, dtype=torch.float32) * step, max=1.0 - 1e-6)
    bucket = torch.bucketize(coords, boundaries, right=True)
    return (bucket[:, None] * per_side + bucket[None, :]).reshape(-1)


@dataclass(frozen=True)
class Idefics3Adapter(VisionLanguageAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("idefics3",)

    def language_model(self, model: Any) -> Any:
        return model.model.text_model

    def vision_encoder(self, model: Any, setup: VisionSetup) -> tuple[nn.Module, list[int]]:
        size = self._frame_size(model, setup)
        return Idefics3Vision(model, size), [setup.frames_per_call, 3, size, size]

    def _frame_size(self, model: Any, setup: VisionSetup) -> int:
        vc = model.config.vision_config
        step = vc.patch_size * model.config.scale_factor
        if setup.image_size is None:
            # the connector pixel-shuffles scale x scale blocks of patches: a frame that is not
            # whole blocks cannot be encoded (HF's own forward fails on it too)
            size = int(vc.image_size)
            if size % step:
                raise ModelError(
                    f"this Idefics3 model's own {size}x{size} frames are not a multiple of "
                    f"{step} (patch {vc.patch_size} x scale_factor {model.config.scale_factor}): "
                    "its connector cannot pixel-shuffle them; pass an --image-size that is")
            return size
        h, w = setup.image_size
        if h != w or h % step:
            raise ModelError(f"--image-size for idefics3 must be square and a multiple of "
                             f"{step}, not {h}x{w}")
        return h

    def image_spec(
        self, model: Any, image_processor: Any, tokenizer: Any, setup: VisionSetup
    ) -> tuple[Preprocess, ImageLayout]:
        size = self._frame_size(model, setup)
        mean, std = mean_std(image_processor)
        rows, cols = setup.tiling if setup.tiling is not None else _default_tiling(
            image_processor, size)
        longest = image_processor.size["longest_edge"]
        if rows or cols:
            longest = max(rows, cols) * size  # the grid fixes the first resize (see preprocess)
        preprocess = Preprocess(
            kind=IDEFICS3, height=size, width=size, resample=resample_code(image_processor),
            do_resize=bool(image_processor.do_resize), longest_edge=int(longest),
            rescale_factor=float(image_processor.rescale_factor),
            do_rescale=bool(image_processor.do_rescale),
            do_normalize=bool(image_processor.do_normalize), image_mean=mean, image_std=std,
            tile_rows=rows, tile_cols=cols)
        per_frame = (size // model.config.vision_config.patch_size) ** 2
        layout = ImageLayout(
            kind=IDEFICS3_ROWS, placeholder="<image>", image_token="<image>",
            image_token_id=token_id(tokenizer, "<image>"),
            tokens_per_frame=per_frame // model.config.scale_factor**2,
            fake_token="<fake_token_around_image>", global_token="<global-img>")
        token_id(tokenizer, layout.fake_token)
        return preprocess, layout


def _default_tiling(image_processor: Any, size: int) -> tuple[int, int]:
    """The processor's largest grid for a square picture, or a global view if it does not split."""
    if not getattr(image_processor, "do_image_splitting", False):
        return 0, 0
    n = -(-image_processor.size["longest_edge"] // size)
    return (n, n) if n > 1 else (0, 0)
