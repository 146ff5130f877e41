"""Tiny seeded vision-language models of the real HF classes, saved with their processors.

Each builder writes a directory that `edgekv export` can read: config + weights, a BPE tokenizer
with the family's special tokens, the PIL image processor config and a chat template shaped
like the real checkpoint's. Sizes are tiny so that export and HF generate take seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from helpers import TEXT_FILE

FAMILIES = ["idefics3", "llava-clip", "llava-siglip", "qwen2_vl"]
# Export choices of the test bundles, and a picture size whose aspect ratio makes HF's processor
# produce exactly the bundle's frames (Idefics3's 2x3 grid, Qwen2-VL's 32x48).
EXPORT_OPTIONS = {"idefics3": {"tiling": (2, 3)}, "qwen2_vl": {"image_size": (32, 48)}}
PICTURE = {"idefics3": (100, 150), "llava-clip": (45, 60), "llava-siglip": (60, 45),
           "qwen2_vl": (64, 96)}

SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# llava-1.5's template without its `{% generation %}` markers (a transformers-only extension).
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

BASE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SPECIALS = {
    "idefics3": ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)],
    "llava": ["<image>"],
    "qwen2_vl": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
}


def tokenizer(family: str, vocab: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = BASE_SPECIALS + SPECIALS[family]
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = TEXT_FILE.read_text(encoding="utf-8")[:100_000]
    tok.train_from_iterator([text[i : i + 2000] for i in range(0, len(text), 2000)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   extra_special_tokens={}), len(tok.get_vocab())


def _text_config(kind: str, vocab: int, tok, **extra):
    import transformers as tf

    # initializer_range 0.3: at HF's 0.02 a tiny random model repeats one token forever, and
    # "20 greedy tokens agree" would prove little.
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  tie_word_embeddings=True, initializer_range=0.3, eos_token_id=tok.eos_token_id,
                  bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id, **extra)
    return {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config}[kind](**common).to_dict()


def _randomize_norms(model) -> None:
    # Random norms (not all ones) so a mix-up of norm weights cannot go unnoticed.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.dim() == 1:
                p.uniform_(0.5, 1.5)


def build(family: str, directory: Path, vision: dict | None = None,
          text: dict | None = None) -> Path:
    """Write a tiny seeded model of `family` (one of FAMILIES) with its processor into
    `directory`; `vision` and `text` override fields of its vision and text configs (the
    processor stays)."""
    import transformers as tf

    torch.manual_seed(0)
    base = "llava" if family.startswith("llava") else family
    tok, vocab = tokenizer(base)
    text_overrides = text or {}
    if family == "idefics3":
        config = tf.Idefics3Config(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, image_size=64, patch_size=8) | (vision or {}),
            text_config=_text_config("llama", vocab, tok) | text_overrides, scale_factor=2,
            image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True)
        model = tf.Idefics3ForConditionalGeneration(config)
        image_processor = tf.Idefics3ImageProcessorPil(
            size={"longest_edge": 128}, max_image_size={"longest_edge": 64},
            do_image_splitting=False)
        processor = tf.Idefics3Processor(image_processor, tok, image_seq_len=16,
                                         chat_template=SMOLVLM_TEMPLATE)
    elif base == "llava":
        if family == "llava-clip":
            tower = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                         num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8,
                         projection_dim=32)
            extra = dict(vision_feature_layer=-2, vision_feature_select_strategy="default")
            image_processor = tf.LlavaImageProcessorPil(size={"shortest_edge": 32},
                                                        crop_size={"height": 32, "width": 32})
            text_kind, additional = "llama", 1
        else:
            tower = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                         num_hidden_layers=3, num_attention_heads=4, image_size=32,
                         patch_size=8)
            extra = dict(vision_feature_layer=[-3, -1], vision_feature_select_strategy="full")
            image_processor = tf.SiglipImageProcessorPil(size={"height": 32, "width": 32})
            text_kind, additional = "qwen2", 0
        text = _text_config(text_kind, vocab, tok) | text_overrides
        config = tf.LlavaConfig(vision_config=tower | (vision or {}), text_config=text,
                                image_token_index=tok.convert_tokens_to_ids("<image>"),
                                image_seq_length=16, tie_word_embeddings=True, **extra)
        model = tf.LlavaForConditionalGeneration(config)
        processor = tf.LlavaProcessor(image_processor, tok, patch_size=8,
                                      vision_feature_select_strategy=extra[
                                          "vision_feature_select_strategy"],
                                      chat_template=LLAVA_TEMPLATE,
                                      num_additional_image_tokens=additional)
    elif family == "qwen2_vl":
        text = _text_config("qwen2", vocab, tok,
                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                             "mrope_section": [2, 3, 3]}) | text_overrides
        text["model_type"] = "qwen2_vl_text"
        config = tf.Qwen2VLConfig(
            text_config=text,
            vision_config=dict(depth=2, embed_dim=32, num_heads=4, hidden_size=64, patch_size=4,
                               spatial_merge_size=2, temporal_patch_size=2, mlp_ratio=2)
            | (vision or {}),
            image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
            video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
            vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
            vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
            tie_word_embeddings=True)
        model = tf.Qwen2VLForConditionalGeneration(config)
        image_processor = tf.Qwen2VLImageProcessorPil(
            patch_size=4, merge_size=2, temporal_patch_size=2,
            size={"shortest_edge": 32 * 48, "longest_edge": 32 * 48})
        processor = qwen2_vl_processor(image_processor, tok, QWEN2_VL_TEMPLATE)
    else:
        raise ValueError(family)
    _randomize_norms(model)
    model.eval().save_pretrained(directory)
    if family == "qwen2_vl":
        # Saved piecewise: ProcessorMixin.save_pretrained wants the (absent) video processor.
        image_processor.save_pretrained(directory)
        tok.chat_template = QWEN2_VL_TEMPLATE
        tok.save_pretrained(directory)
    else:
        processor.save_pretrained(directory)
    return directory


def qwen2_vl_processor(image_processor, tok, chat_template: str | None = None):
    """Qwen2VLProcessor without its video processor (which needs torchvision, absent here)."""
    import transformers as tf
    from transformers.processing_utils import ProcessorMixin

    check = ProcessorMixin.check_argument_for_proper_class
    ProcessorMixin.check_argument_for_proper_class = lambda *_a, **_k: None
    try:
        return tf.Qwen2VLProcessor(image_processor, tok, None, chat_template=chat_template)
    finally:
        ProcessorMixin.check_argument_for_proper_class = check


def image(height: int, width: int, seed: int = 0):
    """A smooth RGB test picture (PIL) with some structure, so resampling errors show."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / (3 + seed)), np.cos(y / 5), np.sin((x + y) / 7)], -1)
    noisy = 127.5 * (1 + base) + rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def idefics3_model(image_size: int, patch_size: int, scale_factor: int):
    """A tiny seeded Idefics3 model in memory (no tokenizer or processor), for checks of the
    vision graph's module against HF's image features at tower geometries the saved fixture
    does not have. Position embeddings are drawn at scale 1 (HF's init is 0.02), so a wrong
    position id moves the features well beyond float rounding."""
    import transformers as tf

    torch.manual_seed(0)
    text = dict(model_type="llama", vocab_size=64, hidden_size=64, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
    config = tf.Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4, image_size=image_size, patch_size=patch_size),
        text_config=text, scale_factor=scale_factor)
    model = tf.Idefics3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.vision_model.embeddings.position_embedding.weight.normal_(0, 1)
    return model
