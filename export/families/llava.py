"""LLaVA: a CLIP or SigLIP tower, a two-layer projector, and any Llama-shaped text model.

`vision_feature_layer` (one layer or a list, concatenated) and `vision_feature_select_strategy`
("default" drops CLIP's CLS token, "full" keeps every token) are read from the config and baked
into the vision graph.
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
from edgekv.export.vision_spec import CLIP, REPEAT, SQUARE, ImageLayout, Preprocess
from edgekv.runtime.errors import ModelError


class LlavaVision(nn.Module):
    """pixel_values [F, 3, S, S] -> projected image features [F, tokens, H]."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        cfg = model.config
        self.tower = model.model.vision_tower
        self.projector = model.model.multi_modal_projector
        layer = cfg.vision_feature_layer
        self.layers = [layer] if isinstance(layer, int) else list(layer)
        self.drop_cls = cfg.vision_feature_select_strategy == "default"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
        picked = [hidden[i][:, 1:] if self.drop_cls else hidden[i] for i in self.layers]
        return self.projector(torch.cat(picked, dim=-1))


@dataclass(frozen=True)
class LlavaAdapter(VisionLanguageAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("llava",)

    def language_model(self, model: Any) -> Any:
        return model.model.language_model

    def block_flags(self, model: Any) -> tuple[bool, bool]:
        from edgekv.export.families import ADAPTERS  # the registry imports this module

        text_type = model.config.text_config.model_type
        for adapter in ADAPTERS.values():
            if text_type in adapter.model_types and not issubclass(adapter, VisionLanguageAdapter):
                return adapter.qkv_bias, adapter.qk_norm
        raise ModelError(f"LLaVA with a {text_type!r} language model is not supported")

    def vision_encoder(self, model: Any, setup: VisionSetup) -> tuple[nn.Module, list[int]]:
        size = _native_size(model, setup)
        return LlavaVision(model), [setup.frames_per_call, 3, size, size]

    def image_spec(
        self, model: Any, image_processor: Any, tokenizer: Any, setup: VisionSetup
    ) -> tuple[Preprocess, ImageLayout]:
        vc = model.config.vision_config
        size = _native_size(model, setup)
        mean, std = mean_std(image_processor)
        common = dict(height=size, width=size, resample=resample_code(image_processor),
                      do_resize=bool(image_processor.do_resize),
                      rescale_factor=float(image_processor.rescale_factor),
                      do_rescale=bool(image_processor.do_rescale),
                      do_normalize=bool(image_processor.do_normalize),
                      image_mean=mean, image_std=std)
        preprocess = _preprocess(image_processor, size, common)
        patches = (size // vc.patch_size) ** 2
        has_cls = model.config.vision_config.model_type == "clip_vision_model"
        dropped = model.config.vision_feature_select_strategy == "default"
        tokens = patches + int(has_cls) - int(dropped)
        image_token = getattr(tokenizer, "image_token", None) or "<image>"
        layout = ImageLayout(kind=REPEAT, placeholder=image_token, image_token=image_token,
                             image_token_id=int(model.config.image_token_id),
                             tokens_per_frame=tokens)
        token_id(tokenizer, image_token)
        return preprocess, layout


def _preprocess(image_processor: Any, size: int, common: dict[str, Any]) -> Preprocess:
    """The runtime's recipe for the processor's frames: a shortest-edge resize and centre crop
    (CLIP), or a resize to the tower's square (SigLIP; a crop of that size is then a no-op).
    Processors that make frames another way are refused with what they do."""
    if getattr(image_processor, "do_pad", False):
        raise ModelError("LLaVA processors that pad to a square (do_pad) are not supported")
    resize = image_processor.size
    crop = image_processor.crop_size if getattr(image_processor, "do_center_crop", False) else None
    if crop is not None and (crop.get("height"), crop.get("width")) != (size, size):
        raise ModelError(f"processor crop {crop.get('height')}x{crop.get('width')} does not match "
                         f"the tower's {size}x{size}")
    shortest, longest = resize.get("shortest_edge"), resize.get("longest_edge")
    if shortest and not longest:
        if crop is None:  # the frame keeps the picture's aspect; the tower takes one square
            raise ModelError(f"the processor resizes the shortest edge to {shortest} without a "
                             f"centre crop: its frames are not the tower's {size}x{size}")
        return Preprocess(kind=CLIP, shortest_edge=int(shortest), **common)
    fixed = (resize.get("height"), resize.get("width"))
    if not shortest and fixed == (size, size):
        return Preprocess(kind=SQUARE, **common)
    raise ModelError(f"processor size {_described(resize)} is not supported for LLaVA: a "
                     f"shortest edge with a centre crop, or height x width {size}x{size}")


def _described(size: Any) -> str:
    """The keys a processor's size sets (HF's SizeDict lists every key, unset ones None)."""
    keys = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")
    return "{" + ", ".join(f"{k}: {size.get(k)}" for k in keys if size.get(k)) + "}"


def _native_size(model: Any, setup: VisionSetup) -> int:
    """The tower's own square size; an --image-size asking for another is refused."""
    size = int(model.config.vision_config.image_size)
    if setup.image_size is not None and tuple(setup.image_size) != (size, size):
        h, w = setup.image_size
        raise ModelError(f"this LLaVA tower takes {size}x{size} images; --image-size {h}x{w} "
                         "cannot change it (its position embeddings are fixed)")
    return size
