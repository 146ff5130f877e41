"""Qwen2 / Qwen2.5 text models: the Llama block with biases on the q, k, v projections."""

from dataclasses import dataclass
from typing import ClassVar

from edgekv.export.families.base import LlamaShapedAdapter


@dataclass(frozen=True)
class Qwen2Adapter(LlamaShapedAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("qwen2",)
    qkv_bias: ClassVar[bool] = True
