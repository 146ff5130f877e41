"""An independent StreamingLLM reference: a plain PyTorch loop over the HF model.

It shares no code with edgekv's graph or runtime. It keeps sinks + recent keys *before* RoPE
(un-rotating what HF's attention cached), and before each chunk re-rotates the kept keys to
positions 0..n-1 inside the cache, then lets the HF model attend to them through a DynamicCache
with the chunk at positions n..n+c-1 (the pos-shift of mit-han-lab/streaming-llm).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import DynamicCache

from edgekv.tools.hf_cache import cache_kwargs


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


@torch.inference_mode()
def streaming_nll(model, ids: list[int], budget: int, chunk: int, sinks: int = 4) -> np.ndarray:
    """-log p(ids[i]) for i >= 1 under StreamingLLM with positions inside the cache."""
    cfg = model.config
    rotary = model.model.rotary_emb
    n_layers = cfg.num_hidden_layers
    keys = [None] * n_layers  # per layer [1, Hkv, n, D], pre-RoPE
    values = [None] * n_layers
    nll = []
    prev_last = None
    for start in range(0, len(ids), chunk):
        part = torch.tensor([ids[start : start + chunk]])
        c = part.shape[1]
        n = 0 if keys[0] is None else keys[0].shape[2]
        excess = n + c - budget
        if excess > 0:  # evict the oldest non-sink tokens
            keep = torch.cat([torch.arange(sinks), torch.arange(sinks + excess, n)])
            keys = [k[:, :, keep] for k in keys]
            values = [v[:, :, keep] for v in values]
            n = keys[0].shape[2]
        cache = DynamicCache(config=cfg)
        if n:
            probe = keys[0]
            cos, sin = rotary(probe, torch.arange(n)[None])
            cos, sin = cos[:, None], sin[:, None]
            for layer in range(n_layers):
                rotated = keys[layer] * cos + _rotate_half(keys[layer]) * sin
                cache.update(rotated, values[layer], layer)
        out = model(input_ids=part, position_ids=torch.arange(n, n + c)[None],
                    **cache_kwargs(model, cache), use_cache=True)
        cos, sin = rotary(out.logits, torch.arange(n, n + c)[None])
        cos, sin = cos[:, None], sin[:, None]
        for layer in range(n_layers):
            k_new = cache.layers[layer].keys[:, :, n:]
            v_new = cache.layers[layer].values[:, :, n:]
            k_pre = k_new * cos - _rotate_half(k_new) * sin  # inverse rotation
            keys[layer] = k_pre if n == 0 else torch.cat([keys[layer], k_pre], dim=2)
            values[layer] = v_new if n == 0 else torch.cat([values[layer], v_new], dim=2)
        logp = torch.log_softmax(out.logits[0].double(), dim=-1)
        if prev_last is not None:
            nll.append(-prev_last[part[0, 0]].item())
        targets = part[0, 1:]
        nll.extend((-logp[torch.arange(c - 1), targets]).tolist())
        prev_last = logp[c - 1]
    return np.asarray(nll)
