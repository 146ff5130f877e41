"""The per-step fast paths of the cache and policies decide exactly what the general ones do."""

import copy

import numpy as np

from edgekv.runtime.cache import KVCache
from edgekv.runtime.policies.base import evict_lowest
from edgekv.runtime.policies.scoring import pool_neighbours
from edgekv.runtime.policies.streaming import Streaming


def _scattered_cache(seed: int = 0) -> KVCache:
    """Two layers, two heads, 64 slots, 40 tokens written at random slots with gaps."""
    rng = np.random.default_rng(seed)
    cache = KVCache.allocate(2, 2, 64, 4)
    slots = np.stack([np.stack([rng.choice(64, 40, replace=False) for _ in range(2)])
                      for _ in range(2)])
    kv = np.zeros((2, 2, 40, 4), np.float32)
    cache.write(slots, kv, kv, np.arange(40))
    cache.score[:] = rng.random(cache.score.shape).astype(np.float32)
    return cache


def _pool_by_loops(cache: KVCache, kernel: int) -> np.ndarray:
    out = np.zeros_like(cache.score)
    for layer in range(cache.score.shape[0]):
        for head in range(cache.score.shape[1]):
            slots = np.flatnonzero(cache.valid[layer, head])
            order = slots[np.argsort(cache.orig_pos[layer, head, slots])]
            scores = cache.score[layer, head, order]
            for i, slot in enumerate(order):
                lo, hi = max(0, i - kernel // 2), i + kernel // 2 + 1
                out[layer, head, slot] = scores[lo:hi].max()
    return out


def test_pooling_by_rank_matches_stream_order_neighbours():
    cache = _scattered_cache()
    for kernel in (3, 7):
        assert np.array_equal(pool_neighbours(cache, cache.score, kernel),
                              _pool_by_loops(cache, kernel))


def test_streaming_fast_path_evicts_what_the_general_path_does():
    cache = _scattered_cache(1)
    general = copy.deepcopy(cache)
    Streaming(sinks=4).make_room(cache, 30)  # 24 free: 6 to evict in every head
    priority = general.orig_pos.astype(np.float64)
    priority[(general.rank < 4) & general.valid] = np.inf
    evict_lowest(general, priority, 30 - general.free_count())
    assert np.array_equal(cache.orig_pos, general.orig_pos)
    assert np.array_equal(cache.rank, general.rank)


def test_single_evictions_keep_ranks_dense():
    cache = _scattered_cache(2)
    evict_lowest(cache, cache.score.astype(np.float64), np.ones((2, 2), np.int64))
    for layer in range(2):
        for head in range(2):
            valid = cache.valid[layer, head]
            assert sorted(cache.rank[layer, head, valid]) == list(range(39))
