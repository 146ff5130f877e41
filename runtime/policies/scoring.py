"""Helpers shared by the attention-scored policies: recency windows and neighbour pooling."""

from __future__ import annotations

import numpy as np

from edgekv.runtime.cache import KVCache


def recent_mask(cache: KVCache, keep: int) -> np.ndarray:
    """True on the `keep` most recent valid tokens of every (layer, head)."""
    keep = min(keep, cache.capacity)  # any window is allowed: past int64 numpy overflows
    return cache.valid & (cache.rank >= cache.n_valid[..., None] - keep)


def sink_mask(cache: KVCache, sinks: int) -> np.ndarray:
    """True on the `sinks` oldest valid tokens of every (layer, head)."""
    return cache.valid & (cache.rank < min(sinks, cache.capacity))


def pool_neighbours(cache: KVCache, score: np.ndarray, kernel: int) -> np.ndarray:
    """Max of `score` over the `kernel` tokens around each slot, neighbours in stream order.

    A token next to a heavily attended one is likely part of the same phrase or image region
    (SnapKV's pooling; Inf-MLLM's smoothing), so it keeps its neighbour's score.
    """
    if kernel <= 1:
        return score
    # Ranks are 0..n-1 in every head, so a scatter by rank lines each head up in stream order.
    # Empty slots all go to one extra column (rank = capacity) holding -inf, out of the way.
    capacity = score.shape[-1]
    valid = cache.valid
    at = np.where(valid, cache.rank, capacity)
    by_rank = np.full(score.shape[:-1] + (capacity + 1,), -np.inf, dtype=np.float32)
    np.put_along_axis(by_rank, at, np.where(valid, score, -np.inf), axis=-1)
    by_rank[..., capacity] = -np.inf
    pooled = by_rank.copy()
    half = min(kernel // 2, capacity)  # wider reaches no further: a loop per neighbour
    for shift in range(1, half + 1):
        np.maximum(pooled[..., shift:], by_rank[..., :-shift], out=pooled[..., shift:])
        np.maximum(pooled[..., :-shift], by_rank[..., shift:], out=pooled[..., :-shift])
    return np.where(valid, np.take_along_axis(pooled, at, axis=-1), 0.0).astype(np.float32)


def last_queries(c: int, window: int) -> np.ndarray:
    """mass_weight that counts only the last `window` queries of a chunk (all if shorter)."""
    weight = np.zeros(c, dtype=np.float32)
    weight[-min(window, c):] = 1.0
    return weight
