"""The peers' common input: the model as a plain HF directory (config.json + safetensors).

onnxruntime-genai's builder and optimum's exporter take an HF directory, and optimum's pinned
transformers (< 4.58) misreads SmolLM2's GGUF; so edgekv's loader dequantizes the GGUF once
and saves it here. Run as `python -m edgekv.tools.bench.hf_dir MODEL OUT` (a child process,
so the benchmark's own process never holds the model).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DONE_MARKER = ".edgekv-done"


def is_saved(out: Path) -> bool:
    return (out / DONE_MARKER).is_file()


def save_hf_dir(model_name: str, out: Path) -> None:
    from edgekv.export.loading import load, resolve

    model, tokenizer = load(resolve(model_name))
    out.mkdir(parents=True, exist_ok=True)
    # The weights are already dequantized to fp32; only the GGUF marker forbids saving them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _add_legacy_config_keys(out / "config.json")
    _name_legacy_tokenizer_class(out / "tokenizer_config.json")
    (out / DONE_MARKER).write_text(model_name + "\n")


def _add_legacy_config_keys(path: Path) -> None:
    """transformers 5 writes `rope_parameters` and `dtype`; 4.x reads `rope_theta` and
    `torch_dtype` and would silently fall back to rope_theta 10000 (SmolLM2 uses 100000)."""
    raw = json.loads(path.read_text())
    rope = raw.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in raw:
        raw["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") == "default":
        raw.setdefault("rope_scaling", None)
    raw.setdefault("torch_dtype", raw.get("dtype", "float32"))
    path.write_text(json.dumps(raw, indent=2) + "\n")


def _name_legacy_tokenizer_class(path: Path) -> None:
    """transformers 5 names its tokenizer class `TokenizersBackend`, unknown to 4.x and to
    onnxruntime-genai; SmolLM2's own hub files say GPT2Tokenizer (tokenizer.json is the same)."""
    raw = json.loads(path.read_text())
    if raw.get("tokenizer_class") == "TokenizersBackend":
        raw["tokenizer_class"] = "GPT2Tokenizer"
    path.write_text(json.dumps(raw, indent=2) + "\n")


if __name__ == "__main__":
    save_hf_dir(sys.argv[1], Path(sys.argv[2]))
