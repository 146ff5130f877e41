import numpy as np
import pytest

from edgekv.export.manifest import EMPTY_SLOT_BIAS
from edgekv.runtime.cache import KVCache
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


def test_merged_slot_bias_is_log_count():
    cache = _cache()
    _write(cache, [0, 1])
    cache.count[:, :, 0] = 5
    _, bias, _ = cache.graph_inputs(np.array([2]), "cache")
    assert np.allclose(bias[:, :, 0], np.log(5))


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
