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
    session.feed(head, on_chunk=lambda _offset, logits: parts.append(logits.copy()))
    parts += [session.step(bundle.embed(ids[i:i + 1])).copy() for i in range(len(head), len(ids))]
    return np.concatenate(parts)


def max_diff(bundle_dir: str | Path, ids: list[int], reference: np.ndarray,
             backend: str = "ort", decode_from: int | None = None) -> float:
    """Max |logit difference| of the bundle against `reference` logits [len(ids), V]."""
    return float(np.abs(bundle_logits(bundle_dir, ids, backend, decode_from)
                        - reference).max())


def compare(bundle_dir: str | Path, model: Any, ids: list[int], backend: str = "ort") -> float:
    return max_diff(bundle_dir, ids, hf_logits(model, ids), backend)


def compare_with_step(bundle_dir: str | Path, step: Any, ids: list[int]) -> float:
    """Max |logit diff| between the bundle (ORT) and `step` run eagerly on the same cache path."""
    from edgekv.runtime import key_rotation
    from edgekv.runtime.backends.torch_ref import TorchBackend
    from edgekv.runtime.cache import KVCache
    from edgekv.runtime.policies import make_policy

    bundle = Bundle.open(bundle_dir)
    m = bundle.manifest
    d = m.dims
    cache = KVCache.allocate(d.num_layers, d.num_kv_heads, m.budget, d.head_dim, bundle.kv_dtype)
    key_rotation.attach(cache, m, m.position_mode)
    session = Session(bundle, make_policy("full"), TorchBackend(step, cache), cache,
                      m.position_mode, m.chunk)
    parts: list[np.ndarray] = []
    session.feed(ids, on_chunk=lambda _offset, logits: parts.append(logits.copy()))
    return float(np.abs(bundle_logits(bundle_dir, ids) - np.concatenate(parts)).max())
