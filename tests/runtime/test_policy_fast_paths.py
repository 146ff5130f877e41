"""The per-step fast paths of the cache and policies decide exactly what the general ones do."""

import copy

import numpy as np
import pytest

from edgekv.runtime.cache import KVCache
from edgekv.runtime.policies.base import evict_lowest, evict_oldest
from edgekv.runtime.policies.scoring import pool_neighbours


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


@pytest.mark.parametrize("sinks", [0, 4])  # 0: `window`
@pytest.mark.parametrize("n", [25, 30])  # one eviction (decode) or six per head
@pytest.mark.parametrize("protect", [None, 10, 0])  # a protected token at rank sinks + this
def test_oldest_first_fast_path_evicts_what_the_general_path_does(sinks, n, protect):
    cache = _scattered_cache(1)
    head = np.zeros(cache.orig_pos.shape, dtype=bool)  # one head has a free slot more
    head[1, 0, np.flatnonzero(cache.valid[1, 0])[5]] = True
    cache.evict(head)
    if protect is not None:  # in one head: past the oldest, or the oldest itself
        cache.protected[0, 1] = cache.valid[0, 1] & (cache.rank[0, 1] == sinks + protect)
    general = copy.deepcopy(cache)
    evict_oldest(cache, n, sinks)
    priority = general.orig_pos.astype(np.float64)
    priority[(general.rank < sinks) & general.valid] = np.inf
    evict_lowest(general, priority, n - general.free_count())
    assert cache.evictions == general.evictions
    assert np.array_equal(cache.orig_pos, general.orig_pos)
    assert np.array_equal(cache.rank, general.rank)
    assert np.array_equal(cache.n_valid, general.n_valid)
    assert cache.free_count().min() >= n


def test_single_evictions_keep_ranks_dense():
    cache = _scattered_cache(2)
    evict_lowest(cache, cache.score.astype(np.float64), np.ones((2, 2), np.int64))
    for layer in range(2):
        for head in range(2):
            valid = cache.valid[layer, head]
            assert sorted(cache.rank[layer, head, valid]) == list(range(39))


def test_evict_rank_declines_protected_and_refuses_missing_tokens():
    from edgekv.runtime.errors import BudgetError

    cache = _scattered_cache(3)
    every_head = np.ones((2, 2), dtype=bool)
    with pytest.raises(BudgetError, match="no token at rank 50"):
        cache.evict_rank(50, every_head)  # each head holds 40
    oldest = cache.slot_of_rank(0)
    cache.protected[0, 1, oldest[0, 1]] = True
    before = cache.n_valid.copy()
    assert not cache.evict_rank(0, every_head)  # one protected: nothing is freed
    assert np.array_equal(cache.n_valid, before)
    others = every_head.copy()
    others[0, 1] = False  # the protected slot's head not listed
    assert cache.evict_rank(0, others)
    assert np.array_equal(cache.n_valid, before - others)
    assert not cache.valid[others.nonzero() + (oldest[others],)].any()
    assert cache.valid[0, 1, oldest[0, 1]]
