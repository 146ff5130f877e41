"""Qwen2-VL: a ViT with 2-D rotary positions and a patch merger, a Qwen2 text model with M-RoPE.

The image resolution is fixed at export (`--image-size`), so the patch grid, the vision rotary
table and the merged token grid are constants of the vision graph, and each image costs the
same number of tokens. The decoder graph takes 3 position components (temporal, height, width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from edgekv.export.decoder_step import rotate
from edgekv.export.families.vlm import (
    VisionLanguageAdapter,
    VisionSetup,
    mean_std,
    resample_code,
    token_id,
)
from edgekv.export.manifest import DecoderDims
from edgekv.export.vision_spec import QWEN2_VL, REPEAT, ImageLayout, Preprocess
from edgekv.runtime.errors import ModelError

DEFAULT_SIDE = 448  # a 16 x 16 merged grid: 256 tokens per image


class Qwen2VLVision(nn.Module):
    """patches [F, N, C*T*P*P] (the processor's layout) -> image embeddings [F, N/merge^2, H]."""

    def __init__(self, model: Any, height: int, width: int) -> None:
        super().__init__()
        from transformers.vision_utils import get_vision_position_ids

        self.visual = model.model.visual
        cfg = self.visual.config
        grid = torch.tensor([[1, height // cfg.patch_size, width // cfg.patch_size]])
        ids = get_vision_position_ids(grid, cfg.spatial_merge_size)
        cos, sin = self.visual.rotary_pos_emb(torch.zeros(1), ids)  # [N, head_dim], halves equal
        half = cos.shape[-1] // 2  # `rotate` takes half-width tables
        self.register_buffer("cos", cos[:, :half].float().contiguous(), persistent=False)
        self.register_buffer("sin", sin[:, :half].float().contiguous(), persistent=False)
        self.merged = cfg.spatial_merge_size**2

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        f, n = patches.shape[0], patches.shape[1]
        x = self.visual.patch_embed(patches.reshape(f * n, -1)).view(f, n, -1)
        for block in self.visual.blocks:
            x = x + self._attention(block.attn, block.norm1(x))
            x = x + block.mlp(block.norm2(x))
        return self.visual.merger(x).view(f, n // self.merged, -1)

    def _attention(self, attn: Any, h: torch.Tensor) -> torch.Tensor:
        """Full attention within each frame (HF: one cu_seqlens segment per image)."""
        f, n, e = h.shape
        qkv = attn.qkv(h).reshape(f, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q = rotate(qkv[0].float(), self.cos, self.sin)
        k = rotate(qkv[1].float(), self.cos, self.sin)
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * attn.scaling, dim=-1)
        out = torch.matmul(probs.to(qkv.dtype), qkv[2]).transpose(1, 2).reshape(f, n, e)
        return attn.proj(out)


@dataclass(frozen=True)
class Qwen2VLAdapter(VisionLanguageAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl",)
    qkv_bias: ClassVar[bool] = True

    def language_model(self, model: Any) -> Any:
        return model.model.language_model

    def dims(self, model: Any) -> DecoderDims:
        dims = super().dims(model)
        section = [int(s) for s in self.language_model(model).rotary_emb.mrope_section]
        if sum(section) != dims.head_dim // 2:
            raise ModelError(f"mrope_section {section} must sum to head_dim/2 = "
                             f"{dims.head_dim // 2}")
        return replace(dims, mrope_section=section)

    def _size(self, model: Any, image_processor: Any, setup: VisionSetup) -> tuple[int, int]:
        vc = model.config.vision_config
        factor = vc.patch_size * vc.spatial_merge_size
        if setup.image_size is not None:
            h, w = setup.image_size
            if h % factor or w % factor:
                raise ModelError(f"--image-size {h}x{w}: both sides must be multiples of {factor} "
                                 "(patch size x merge size) for this model")
            return h, w
        max_pixels = image_processor.size["longest_edge"] if image_processor else DEFAULT_SIDE**2
        side = min(DEFAULT_SIDE, math.isqrt(max_pixels) // factor * factor)
        return side, side

    def vision_encoder(self, model: Any, setup: VisionSetup) -> tuple[nn.Module, list[int]]:
        vc = model.config.vision_config
        h, w = self._size(model, None, setup)
        n = (h // vc.patch_size) * (w // vc.patch_size)
        dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
        return Qwen2VLVision(model, h, w), [setup.frames_per_call, n, dim]

    def image_spec(
        self, model: Any, image_processor: Any, tokenizer: Any, setup: VisionSetup
    ) -> tuple[Preprocess, ImageLayout]:
        vc = model.config.vision_config
        width = int(self.text_config(model).hidden_size)
        if vc.hidden_size != width:  # the merger's output replaces token embeddings one for one
            raise ModelError(f"the vision merger gives features {vc.hidden_size} wide, the "
                             f"language model's embeddings are {width}: the model's vision and "
                             "text configs disagree (HF cannot run it either)")
        h, w = self._size(model, image_processor, setup)
        mean, std = mean_std(image_processor)
        preprocess = Preprocess(
            kind=QWEN2_VL, height=h, width=w, resample=resample_code(image_processor),
            do_resize=bool(image_processor.do_resize),
            rescale_factor=float(image_processor.rescale_factor),
            do_rescale=bool(image_processor.do_rescale),
            do_normalize=bool(image_processor.do_normalize), image_mean=mean, image_std=std,
            patch_size=int(vc.patch_size), temporal_patch_size=int(vc.temporal_patch_size),
            merge_size=int(vc.spatial_merge_size))
        rows = h // (vc.patch_size * vc.spatial_merge_size)
        cols = w // (vc.patch_size * vc.spatial_merge_size)
        layout = ImageLayout(kind=REPEAT, placeholder="<|image_pad|>", image_token="<|image_pad|>",
                             image_token_id=int(model.config.image_token_id),
                             tokens_per_frame=rows * cols, grid=[rows, cols])
        token_id(tokenizer, layout.image_token)
        return preprocess, layout
