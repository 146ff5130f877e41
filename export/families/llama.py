"""Llama, and models that reuse its code in transformers (SmolLM2, TinyLlama, ...)."""

from dataclasses import dataclass
from typing import ClassVar

from edgekv.export.families.base import LlamaShapedAdapter


@dataclass(frozen=True)
class LlamaAdapter(LlamaShapedAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("llama",)
