"""Mistral: the Llama block. Its sliding window is the budget's upper bound (export refuses a
larger budget, `sliding_window`): the cache then never holds a token the model would not see,
except that a chunk's later tokens see up to chunk - 1 more than the window."""

from dataclasses import dataclass
from typing import ClassVar

from edgekv.export.families.base import LlamaShapedAdapter


@dataclass(frozen=True)
class MistralAdapter(LlamaShapedAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("mistral",)
