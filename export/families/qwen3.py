"""Qwen3 text models: the Llama block with per-head RMSNorm on queries and keys before RoPE."""

from dataclasses import dataclass
from typing import ClassVar

from edgekv.export.families.base import LlamaShapedAdapter


@dataclass(frozen=True)
class Qwen3Adapter(LlamaShapedAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("qwen3",)
    qk_norm: ClassVar[bool] = True
