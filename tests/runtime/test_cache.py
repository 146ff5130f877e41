import numpy as np
import pytest

from edgekv.export.manifest import EMPTY_SLOT_BIAS
from edgekv.runtime.cache import EMPTY, KVCache
from edgekv.runtime.errors import BudgetError


def _cache(capacity=8, budget=None):
    return KVCache.allocate(2, 3, capacity, 4, budget=budget)


def _write(cache, positions):
    c = len(positions)
    slots = cache.free_slots(c)
    kv = np.random.default_rng(0).normal(size=(2, 3, c, 4)).astype(np.float32)
    cache.write(slots, kv, kv, np.asarray(positions))
    return slots, kv


def test_write_places_pre_rope_keys_in_first_free_slots():
    cache = _cache()
    slots, kv = _write(cache, [0, 1, 2])
    assert slots[0, 0].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(cache.keys[:, :, :3], kv)
    assert cache.occupied() == 3


def test_ranks_follow_stream_order_not_slot_order():
    cache = _cache()
    _write(cache, [10, 11, 12, 13])
    cache.evict(np.broadcast_to(np.arange(8) == 1, cache.orig_pos.shape).copy())
    _write(cache, [14])  # lands in slot 1, the hole
    slot_pos, bias, chunk_pos = cache.graph_inputs(np.array([15, 16]), "cache")
    assert slot_pos[0, 0, :5].tolist() == [0, 3, 1, 2, 0]  # slots hold 10, 14, 12, 13, empty
    assert chunk_pos.tolist() == [4, 5]
    assert bias[0, 0, 4] == EMPTY_SLOT_BIAS and bias[0, 0, 0] == 0.0
    slot_pos, _, chunk_pos = cache.graph_inputs(np.array([15, 16]), "absolute")
    assert slot_pos[0, 0, :4].tolist() == [10, 14, 12, 13]
    assert chunk_pos.tolist() == [15, 16]


def test_merging_averages_kv_and_sets_bias_to_log_count():
    cache = _cache()
    _, kv = _write(cache, [0, 1])
    rng = np.random.default_rng(1)
    members = [kv[:, :, 0]]
    target = np.zeros((2, 3), dtype=np.int64)
    for _ in range(4):
        new = rng.normal(size=(2, 3, 4)).astype(np.float32)
        members.append(new)
        cache.merge_into(target, new, new)
    assert (cache.count[:, :, 0] == 5).all()
    np.testing.assert_allclose(cache.keys[:, :, 0], np.mean(members, axis=0), rtol=1e-5)
    _, bias, _ = cache.graph_inputs(np.array([2]), "cache")
    assert np.allclose(bias[:, :, 0], np.log(5)) and (bias[:, :, 1] == 0).all()


def test_lowered_budget_leaves_upper_slots_empty():
    cache = _cache(capacity=8, budget=4)
    _write(cache, [0, 1, 2, 3])
    with pytest.raises(BudgetError, match="do not fit"):
        cache.free_slots(1)
    assert not cache.valid[..., 4:].any()


def test_budget_cannot_exceed_capacity():
    with pytest.raises(BudgetError, match="lowered at run time"):
        _cache(capacity=8, budget=9)


def test_protected_slots_refuse_eviction():
    cache = _cache()
    _write(cache, [0])
    cache.protected[:, :, 0] = True
    with pytest.raises(BudgetError, match="protected"):
        cache.evict(cache.valid.copy())


@pytest.mark.parametrize("seed", range(5))
def test_incremental_ranks_equal_a_full_rerank(seed):
    """Random per-head evictions (few and many at once) then in-order writes."""
    rng = np.random.default_rng(seed)
    cache = KVCache.allocate(2, 3, 64, 4)
    pos = 0
    for _ in range(30):
        room = cache.free_count().min()
        c = int(rng.integers(1, 6))
        if room < c:
            drop = int(rng.choice([1, 3, 12]))
            mask = np.zeros(cache.orig_pos.shape, dtype=bool)
            for layer in range(2):
                for head in range(3):
                    valid = np.flatnonzero(cache.valid[layer, head])
                    mask[layer, head, rng.choice(valid, size=drop, replace=False)] = True
            cache.evict(mask)
            c = min(c, int(cache.free_count().min()))
        kv = np.zeros((2, 3, c, 4), np.float32)
        cache.write(cache.free_slots(c), kv, kv, np.arange(pos, pos + c))
        pos += c
        incremental = cache.rank.copy()
        cache.rerank()
        np.testing.assert_array_equal(incremental, cache.rank)


def test_one_eviction_in_some_heads_only_resets_those_slots_and_closes_rank_gaps():
    rng = np.random.default_rng(3)
    cache = KVCache.allocate(2, 3, 32, 4)
    kv = np.ones((2, 3, 20, 4), np.float32)
    cache.write(cache.free_slots(20), kv, kv, np.arange(20))
    mask = np.zeros(cache.orig_pos.shape, dtype=bool)
    chosen = {(0, 1): 7, (1, 0): 0, (1, 2): 19}  # slot per head; the other heads keep all
    for (layer, head), slot in chosen.items():
        mask[layer, head, slot] = True
    mask[0, 0, 25] = True  # an empty slot: ignored
    cache.score[:] = rng.random(cache.score.shape)
    cache.evict(mask)
    assert cache.evictions == 1
    for (layer, head), slot in chosen.items():
        assert cache.orig_pos[layer, head, slot] == EMPTY and cache.score[layer, head, slot] == 0
    assert cache.n_valid.tolist() == [[20, 19, 20], [19, 20, 19]]
    incremental = cache.rank.copy()
    cache.rerank()
    np.testing.assert_array_equal(incremental, cache.rank)
