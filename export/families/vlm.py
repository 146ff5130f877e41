"""What a vision-language family adds to a text adapter: its vision graph and image layout.

The language model is exported by the Llama-shaped machinery unchanged (the VLM's text model and
LM head); `vision_encoder` returns a torch module pixels -> language-space embeddings with one
fixed input shape, which `export/vision_graph.py` traces into `vision.onnx`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from edgekv.export.families.base import LlamaShapedAdapter
from edgekv.export.manifest import DecoderDims
from edgekv.export.vision_spec import ImageLayout, Preprocess
from edgekv.runtime.errors import ModelError


@dataclass(frozen=True)
class VisionSetup:
    """Export-time choices for the vision graph (CLI: --image-size, --frames-per-call, --tiling)."""

    image_size: tuple[int, int] | None = None  # (height, width); None: the processor's own
    frames_per_call: int = 1
    tiling: tuple[int, int] | None = None  # idefics3 (rows, cols); (0, 0) = global view only


@dataclass(frozen=True)
class VisionLanguageAdapter(LlamaShapedAdapter):
    def text_config(self, model: Any) -> Any:
        return model.config.text_config

    def dims(self, model: Any) -> DecoderDims:
        dims = super().dims(model)
        # The tie flag sits in several configs of a VLM; what counts is whether HF shares the
        # tensor (the bundle then stores it once, in embed.bin).
        tied = (model.get_output_embeddings().weight.data_ptr()
                == model.get_input_embeddings().weight.data_ptr())
        return replace(dims, tie_word_embeddings=tied)

    def vision_encoder(self, model: Any, setup: VisionSetup) -> tuple[nn.Module, list[int]]:
        """(module, input shape including frames_per_call) for the vision graph."""
        raise NotImplementedError

    def image_spec(
        self, model: Any, image_processor: Any, tokenizer: Any, setup: VisionSetup
    ) -> tuple[Preprocess, ImageLayout]:
        raise NotImplementedError


def token_id(tokenizer: Any, token: str) -> int:
    """The id of a special token the layout needs, or a ModelError naming it."""
    found = tokenizer.convert_tokens_to_ids(token)
    if found is None or found == tokenizer.unk_token_id:
        raise ModelError(f"the tokenizer has no {token!r} token, which this model's prompts need")
    return int(found)


def mean_std(image_processor: Any) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (processors may give one number for all three)."""
    return _per_channel(image_processor.image_mean), _per_channel(image_processor.image_std)


def _per_channel(value: Any) -> list[float]:
    return [float(x) for x in value] if isinstance(value, (list, tuple)) else [float(value)] * 3


def resample_code(image_processor: Any) -> int:
    return int(getattr(image_processor, "resample", 3))
