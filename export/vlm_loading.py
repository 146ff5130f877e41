"""Load a vision-language model directory: model, tokenizer, PIL image processor, chat template.

`AutoProcessor` is avoided on purpose: for Qwen2-VL it insists on a video processor, which needs
torchvision (not installable beside the CPU torch here, and useless to edgekv). The pieces are
read one by one; `hf_processor` assembles an HF processor for validation only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekv.export.loading import ModelSource
from edgekv.runtime.errors import ModelError

VLM_MODEL_TYPES = ("idefics3", "llava", "qwen2_vl")


@dataclass
class VisionLanguageModel:
    model: Any
    tokenizer: Any
    image_processor: Any
    chat_template: str | None
    directory: Path


def is_vision_language(source: ModelSource) -> bool:
    if source.gguf_file:
        return False
    try:
        config = json.loads((source.directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return config.get("model_type") in VLM_MODEL_TYPES


def load_vision_language(source: ModelSource) -> VisionLanguageModel:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    directory = source.directory
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        image_processor = AutoImageProcessor.from_pretrained(directory, backend="pil")
        model = AutoModelForImageTextToText.from_pretrained(directory, dtype="float32")
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise ModelError(f"cannot load {source.label}: {exc}".splitlines()[0]) from exc
    return VisionLanguageModel(model.eval(), tokenizer, image_processor,
                               chat_template(directory, tokenizer), directory)


def chat_template(directory: Path, tokenizer: Any) -> str | None:
    """The processor's template (chat_template.jinja / .json), else the tokenizer's."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    as_json = directory / "chat_template.json"
    if as_json.is_file():
        return json.loads(as_json.read_text()).get("chat_template")
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) else None


def hf_processor(vlm: VisionLanguageModel) -> Any:
    """The HF processor of the model (for comparing with HF), without any video processor."""
    import transformers as tf

    model_type = vlm.model.config.model_type
    if model_type == "qwen2_vl":
        from transformers.processing_utils import ProcessorMixin

        check = ProcessorMixin.check_argument_for_proper_class
        ProcessorMixin.check_argument_for_proper_class = lambda *_a, **_k: None
        try:
            return tf.Qwen2VLProcessor(vlm.image_processor, vlm.tokenizer, None,
                                       chat_template=vlm.chat_template)
        finally:
            ProcessorMixin.check_argument_for_proper_class = check
    return tf.AutoProcessor.from_pretrained(vlm.directory, backend="pil")
