"""Helpers shared by the attention-scored policies: recency windows and neighbour pooling."""

from __future__ import annotations

import numpy as np

from edgekv.runtime.cache import KVCache


def recent_mask(cache: KVCache, keep: int) -> np.ndarray:
    """True on the `keep` most recent valid tokens of every (layer, head)."""
    return cache.valid & (cache.rank >= cache.n_valid[..., None] - keep)


def sink_mask(cache: KVCache, sinks: int) -> np.ndarray:
    """True on the `sinks` oldest valid tokens of every (layer, head)."""
    return cache.valid & (cache.rank < sinks)


def pool_neighbours(cache: KVCache, score: np.ndarray, kernel: int) -> np.ndarray:
    """Max of `score` over the `kernel` tokens around each slot, neighbours in stream order.

    A token next to a heavily attended one is likely part of the same phrase or image region
    (SnapKV's pooling; Inf-MLLM's smoothing), so it keeps its neighbour's score.
    """
    if kernel <= 1:
        return score
    by_rank = np.full(score.shape, -np.inf, dtype=np.float32)
    layer, head, slot = np.nonzero(cache.valid)
    by_rank[layer, head, cache.rank[layer, head, slot]] = score[layer, head, slot]
    pooled = by_rank.copy()
    half = kernel // 2
    for shift in range(1, half + 1):
        np.maximum(pooled[..., shift:], by_rank[..., :-shift], out=pooled[..., shift:])
        np.maximum(pooled[..., :-shift], by_rank[..., shift:], out=pooled[..., :-shift])
    out = np.zeros_like(score)
    out[layer, head, slot] = pooled[layer, head, cache.rank[layer, head, slot]]
    return out


def last_queries(c: int, window: int) -> np.ndarray:
    """mass_weight that counts only the last `window` queries of a chunk (all if shorter)."""
    weight = np.zeros(c, dtype=np.float32)
    weight[-window:] = 1.0
    return weight
