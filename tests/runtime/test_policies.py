import re

import numpy as np
import pytest

from edgekv.runtime.cache import KVCache
from edgekv.runtime.errors import BudgetError, PolicyError
from edgekv.runtime.policies import POLICIES, make_policy
from helpers import filled_cache, kept_positions


def test_full_refuses_to_overflow_and_explains_the_fix():
    cache = filled_cache(8, 6)
    make_policy("full").make_room(cache, 2)  # fits exactly
    with pytest.raises(BudgetError, match="--policy streaming.*larger --budget"):
        make_policy("full").make_room(cache, 3)


def test_window_keeps_most_recent():
    cache = filled_cache(8, 8)
    make_policy("window").make_room(cache, 3)
    assert kept_positions(cache) == [3, 4, 5, 6, 7]


@pytest.mark.parametrize("c", [1, 3, 6])
def test_streaming_keeps_sinks_and_recent_until_chunk_fits(c):
    cache = filled_cache(10, 10)
    make_policy("streaming").make_room(cache, c)
    assert kept_positions(cache) == [0, 1, 2, 3] + list(range(4 + c, 10))
    assert cache.occupied() + c <= cache.budget
    assert (cache.valid[0] == cache.valid[1]).all()  # same tokens in every layer and head


def test_streaming_repeated_steps_keep_the_same_sinks():
    cache = KVCache.allocate(1, 1, 8, 2)
    policy = make_policy("streaming:sinks=2")
    for pos in range(0, 30, 3):
        policy.make_room(cache, 3)
        kv = np.zeros((1, 1, 3, 2), np.float32)
        cache.write(cache.free_slots(3), kv, kv, np.arange(pos, pos + 3))
        assert cache.occupied() <= 8
    assert kept_positions(cache)[:2] == [0, 1]
    assert kept_positions(cache)[2:] == list(range(24, 30))


def test_streaming_budget_must_hold_sinks_and_a_chunk():
    with pytest.raises(BudgetError, match="at least 36"):
        make_policy("streaming").check_budget(35, 32)
    make_policy("streaming").check_budget(36, 32)


def test_policy_spec_parsing():
    assert make_policy("streaming:sinks=8").sinks == 8
    with pytest.raises(PolicyError, match="unknown policy 'nope'; known policies: full"):
        make_policy("nope")
    with pytest.raises(PolicyError, match="its parameters: sinks"):
        make_policy("streaming:sink=3")
    with pytest.raises(PolicyError, match="not a valid int"):
        make_policy("streaming:sinks=many")


def test_every_registered_policy_has_a_name_and_summary():
    for name, cls in POLICIES.items():
        assert cls.name == name and cls.summary


@pytest.mark.parametrize("spec, message", [
    ("streaming:sinks=-1", "sinks=-1 is outside 0..inf"),
    ("h2o:recent=1.5", "recent=1.5 is outside 0..1"),
    ("snapkv:window=0", "window=0 is outside 1..inf"),
    ("inf-mllm:decay=2", "decay=2 is outside 0..1"),
    # an infinite tilt made the oldest token's priority inf * 0 = NaN: it could never go
    ("inf-mllm:bias=inf", "bias=inf is outside 0..1e+06"),
    ("structured:similarity=nan", "similarity=nan is outside 0..1"),
    ("streaming:sinks=4,sinks=8", "sinks is given twice"),
    # an even width pooled as wide as the next odd one, without a word
    ("snapkv:kernel=4", "kernel=4 must be odd (a window centred on each token): 3 or 5"),
    ("inf-mllm:smooth=2", "smooth=2 must be odd (a window centred on each token): 1 or 3"),
])
def test_parameters_outside_their_range_are_refused(spec, message):
    with pytest.raises(PolicyError, match=re.escape(message)):
        make_policy(spec)
    name = spec.partition(":")[0]
    assert make_policy(name) == POLICIES[name]()  # the defaults are inside their ranges
