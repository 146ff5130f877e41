"""Mistral: the Llama block. Its sliding window is not applied: the KV budget bounds attention."""

from dataclasses import dataclass
from typing import ClassVar

from edgekv.export.families.base import LlamaShapedAdapter


@dataclass(frozen=True)
class MistralAdapter(LlamaShapedAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("mistral",)
