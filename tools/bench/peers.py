"""The peers: what each one needs (venv, model files) and how its child is started.

Setting a peer up is done once and cached: its venv (envs.py) and its model files (the HF
directory, onnxruntime-genai's builder output, optimum's export), each finished by a marker
file so an interrupted build is redone rather than trusted. A peer whose setup fails raises
`SetupError` with the reason; the run records it as that peer's error and goes on.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekv.tools.bench.envs import ENV_SPECS, EnvError, ensure_env
from edgekv.tools.bench.runner import run_child, script

DONE = ".edgekv-done"
Log = Callable[[str], None]


class SetupError(RuntimeError):
    """A peer could not be set up; the message is the reason the report shows."""


@dataclass(frozen=True)
class Peer:
    name: str
    script: str  # peer_*.py in this folder
    env: str | None  # a key of ENV_SPECS, or None for edgekv's own interpreter
    model: str  # which prepared model files it runs: "hf_dir", "gguf", or an export's name
    spec: dict[str, Any] = field(default_factory=dict)  # extra keys for its child
    quality: bool = True  # runs the quality workload (optimum's fp32 is HF's weights again)


PEERS: dict[str, Peer] = {p.name: p for p in [
    Peer("hf", "peer_hf", None, "hf_dir"),
    Peer("ort_genai_fp32", "peer_ort_genai", "ort_genai", "ort_genai-fp32"),
    Peer("ort_genai_int4", "peer_ort_genai", "ort_genai", "ort_genai-int4"),
    Peer("llama_cpp", "peer_llama_cpp", "llama_cpp", "gguf"),
    Peer("optimum_ort", "peer_optimum", "optimum", "optimum-onnx", quality=False),
]}

# Exports made from the HF directory, inside the peer's venv: (script, precision).
EXPORTS = {"ort_genai-fp32": ("peer_ort_genai", "fp32"),
           "ort_genai-int4": ("peer_ort_genai", "int4"),
           "optimum-onnx": ("peer_optimum", None)}


@dataclass
class Setup:
    """Where a peer's things live, and the log of what setting them up did."""

    cache_dir: Path
    peer_model: str = "smollm2-135m"
    log: Log = print

    @property
    def models(self) -> Path:
        return self.cache_dir / "models"

    def log_path(self, name: str) -> Path:
        return self.cache_dir / "logs" / f"{name}.log"


def prepare(peer: Peer, setup: Setup) -> tuple[Path, str]:
    """The peer's python and model path, setting up whatever is missing."""
    try:
        python = Path(sys.executable) if peer.env is None else ensure_env(
            setup.cache_dir, ENV_SPECS[peer.env], setup.log)
    except EnvError as exc:
        raise SetupError(str(exc)) from exc
    if peer.model == "gguf":
        return python, gguf_path(setup.peer_model)
    hf_dir = ensure_hf_dir(setup)
    if peer.model == "hf_dir":
        return python, str(hf_dir)
    return python, str(ensure_export(peer.model, python, hf_dir, setup))


def gguf_path(model: str) -> str:
    from edgekv.export.loading import resolve

    source = resolve(model)
    if not source.gguf_file:
        raise SetupError(f"{model} is not a GGUF model; llama.cpp needs one")
    return str(source.directory / source.gguf_file)


def ensure_hf_dir(setup: Setup) -> Path:
    out = setup.models / f"{setup.peer_model}-hf"
    if (out / DONE).is_file():
        return out
    setup.log(f"bench: saving {setup.peer_model} as an HF directory in {out} (once)")
    log_path = setup.log_path("hf_dir")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        code = subprocess.run([sys.executable, "-m", "edgekv.tools.bench.hf_dir",
                               setup.peer_model, str(out)], stdout=log, stderr=log).returncode
    if code != 0 or not (out / DONE).is_file():
        raise SetupError(f"saving the HF directory failed (exit {code}; log: {log_path})")
    return out


def ensure_export(name: str, python: Path, hf_dir: Path, setup: Setup) -> Path:
    out = setup.models / name
    if (out / DONE).is_file():
        return out
    peer_script, precision = EXPORTS[name]
    setup.log(f"bench: exporting {name} into {out} (once)")
    result = run_child(python, script(peer_script),
                       {"workload": "prepare", "hf_dir": str(hf_dir), "out": str(out),
                        "precision": precision}, setup.log_path(f"export-{name}"))
    if "error" in result:
        raise SetupError(f"export {name} failed: {result['error']}")
    (out / DONE).write_text(name + "\n")
    return out
