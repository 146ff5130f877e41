"""Compare a bundle with the HF model it came from: same tokens in, max |logit difference| out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekv.runtime.bundle import Bundle
from edgekv.runtime.session import Session


def hf_logits(model: Any, ids: list[int]) -> np.ndarray:
    """HF forward over the whole sequence at once: [n, V] float32."""
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def bundle_logits(bundle_dir: str | Path, ids: list[int], backend: str = "ort",
                  decode_from: int | None = None) -> np.ndarray:
    """The bundle's logits for `ids`, fed chunk by chunk with the `full` policy: [n, V]. From
    `decode_from` on, one token per step: a bundle may attend differently there (an int8
    cache's one-token steps run the int8 kernel, its chunks the float one)."""
    bundle = Bundle.open(bundle_dir)
    session = Session.open(bundle, policy="full", backend=backend)
    parts: list[np.ndarray] = []
    head = ids if decode_from is None else ids[:decode_from]
    if head:  # a one-token prompt (budget 1) is all decoded: feed refuses an empty one
        session.feed(head, on_chunk=lambda _offset, logits: parts.append(logits.copy()))
    parts += [session.step(bundle.embed(ids[i:i + 1])).copy() for i in range(len(head), len(ids))]
    return np.concatenate(parts)


def max_diff(bundle_dir: str | Path, ids: list[int], reference: np.ndarray,
             backend: str = "ort", decode_from: int | None = None) -> float:
    """Max |logit difference| of the bundle against `reference` logits [len(ids), V]."""
    return float(np.abs(bundle_logits(bundle_dir, ids, backend, decode_from)
                        - reference).max())


def hf_limit(manifest: Any, reference: np.ndarray) -> float:
    """The largest |logit difference| from HF's `reference` logits a bundle may show and still
    be the model it came from: the dtype's tolerance, or, where int4 weights or an int8 cache
    move logits by design, the drift export refuses above (a share of the largest logit)."""
    from edgekv.export.exporter import DEFAULT_TOLERANCE, INT8_COMPUTE_DRIFT

    if manifest.dtype == "int4" or manifest.kv_quant == "int8":
        return INT8_COMPUTE_DRIFT * float(np.abs(reference).max())
    return float(manifest.validation.get("tolerance") or DEFAULT_TOLERANCE[manifest.dtype])


def compare(bundle_dir: str | Path, model: Any, ids: list[int], backend: str = "ort") -> float:
    return max_diff(bundle_dir, ids, hf_logits(model, ids), backend)


def step_session(bundle: Bundle, step: Any) -> Session:
    """A `full`-policy session running `step` (a DecoderStep) eagerly on the bundle's cache
    path (M-RoPE positions too, for a Qwen2-VL bundle)."""
    from edgekv.runtime import key_rotation
    from edgekv.runtime.backends.torch_ref import TorchBackend
    from edgekv.runtime.cache import KVCache
    from edgekv.runtime.policies import make_policy

    m = bundle.manifest
    d = m.dims
    cache = KVCache.allocate(d.num_layers, d.num_kv_heads, m.budget, d.head_dim, bundle.kv_dtype,
                             mrope=m.position_scheme == "mrope")
    key_rotation.attach(cache, m, m.position_mode)
    return Session(bundle, make_policy("full"), TorchBackend(step, cache), cache,
                   m.position_mode, m.chunk)


def step_logits(bundle_dir: str | Path, step: Any, ids: list[int]) -> np.ndarray:
    """`step` (a DecoderStep) run eagerly on `ids` through the bundle's cache path, chunk by
    chunk with the `full` policy: [n, V]."""
    session = step_session(Bundle.open(bundle_dir), step)
    parts: list[np.ndarray] = []
    session.feed(ids, on_chunk=lambda _offset, logits: parts.append(logits.copy()))
    return np.concatenate(parts)


def compare_with_step(bundle_dir: str | Path, step: Any, ids: list[int]) -> float:
    """Max |logit diff| between the bundle (ORT) and `step` run eagerly on the same cache path."""
    return float(np.abs(bundle_logits(bundle_dir, ids) - step_logits(bundle_dir, step, ids)).max())
