"""Streaming evictions are counted in the rank order, not applied: every read still sees the
ranks a full sort of the stream positions gives."""

import numpy as np
import pytest

from edgekv.runtime.cache import KVCache
from edgekv.runtime.policies.base import evict_oldest
from edgekv.runtime.rank_order import RankOrder


def _sorted_ranks(cache: KVCache) -> np.ndarray:
    key = np.where(cache.valid, cache.orig_pos, np.iinfo(np.int64).max)
    ranks = np.argsort(np.argsort(key, axis=-1, kind="stable"), axis=-1)
    return np.where(cache.valid, ranks, 0)


@pytest.mark.parametrize("seed", range(4))
def test_counted_drops_read_as_a_full_sort(seed):
    """Decode steps (streaming: one eviction after the sinks in every head, counted), chunks
    (several evictions), and now and then one eviction per head elsewhere: at a random rank,
    the same in every head (counted only if it is where the others were) or a random slot
    in each. Read without settling after every operation."""
    rng = np.random.default_rng(seed)
    sinks = int(rng.integers(0, 5))
    cache = KVCache.allocate(2, 3, 48, 4)
    pos, most_lag = 0, 0
    for _ in range(160):
        c = 1 if rng.random() < 0.8 else int(rng.integers(2, 6))
        if rng.random() < 0.1 and cache.occupied() > sinks + 2:
            mask = np.zeros(cache.orig_pos.shape, dtype=bool)
            rank = int(rng.integers(0, cache.n_valid.min()))
            for layer in range(2):
                for head in range(3):
                    valid = np.flatnonzero(cache.valid[layer, head])
                    mask[layer, head, rng.choice(valid)] = True
            cache.evict(mask if rng.random() < 0.5 else _sorted_ranks(cache) == rank)
        evict_oldest(cache, c, sinks)
        kv = np.zeros((2, 3, c, 4), np.float32)
        cache.write(cache.free_slots(c), kv, kv, np.arange(pos, pos + c))
        pos += c
        most_lag = max(most_lag, cache.ranks.lag)
        valid = np.nonzero(cache.valid)
        assert np.array_equal(cache.ranks.at(valid), _sorted_ranks(cache)[valid])
        if cache.n_valid.min() > sinks:  # the oldest after the sinks, found without a sort
            oldest = cache.slot_of_rank(sinks)
            assert np.all(_sorted_ranks(cache)[(*cache.heads, oldest)] == sinks)
    assert most_lag >= 5  # the counted path ran, steps in a row
    assert np.array_equal(cache.rank, _sorted_ranks(cache)) and cache.ranks.lag == 0


def test_a_count_that_would_overflow_is_applied():
    """int16 ranks: stored = rank + lag must fit, so a full cache applies every drop."""
    ranks = RankOrder(np.zeros((1, 1, np.iinfo(np.int16).max), dtype=np.int16))
    ranks.stored[0, 0] = np.arange(ranks.stored.shape[-1])
    ranks.drop(np.array([[4]]))
    assert ranks.lag == 0 and ranks.stored[0, 0, 5] == 4
    small = RankOrder(np.arange(10, dtype=np.int16)[None, None])
    small.drop(np.array([[4]]))
    assert small.lag == 1 and small.stored[0, 0, 5] == 5  # counted
    assert small.at((np.array([0]), np.array([0]), np.array([5])))[0] == 4
    assert small.settled()[0, 0, 5] == 4 and small.lag == 0
