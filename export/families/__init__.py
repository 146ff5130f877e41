"""Family adapters: one file per model family, one line per family in `ADAPTERS`."""

from __future__ import annotations

from typing import Any

from edgekv.export.families.base import LlamaShapedAdapter
from edgekv.export.families.idefics3 import Idefics3Adapter
from edgekv.export.families.llama import LlamaAdapter
from edgekv.export.families.llava import LlavaAdapter
from edgekv.export.families.mistral import MistralAdapter
from edgekv.export.families.qwen2 import Qwen2Adapter
from edgekv.export.families.qwen2_vl import Qwen2VLAdapter
from edgekv.export.families.qwen3 import Qwen3Adapter
from edgekv.runtime.errors import ModelError

ADAPTERS: dict[str, type[LlamaShapedAdapter]] = {
    "llama": LlamaAdapter,
    "mistral": MistralAdapter,
    "qwen2": Qwen2Adapter,
    "qwen3": Qwen3Adapter,
    "idefics3": Idefics3Adapter,
    "llava": LlavaAdapter,
    "qwen2_vl": Qwen2VLAdapter,
}


def family_of(model_type: str | None) -> tuple[str, type[LlamaShapedAdapter]]:
    """The (family name, adapter class) for a config's `model_type`, or a ModelError listing
    the supported families (asked before the weights load, so a refusal costs nothing)."""
    for family, adapter in ADAPTERS.items():
        if model_type in adapter.model_types:
            return family, adapter
    raise ModelError(
        f"model type {model_type!r} is not supported; supported families: {', '.join(ADAPTERS)}"
    )


def adapter_for(model: Any) -> tuple[str, LlamaShapedAdapter]:
    """The (family name, adapter) that exports `model`, or a ModelError listing the supported."""
    family, adapter = family_of(getattr(model.config, "model_type", None))
    return family, adapter()
