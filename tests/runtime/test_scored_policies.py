"""The attention-scored and structured policies on hand-built caches."""

import signal

import numpy as np
import pytest

from edgekv.runtime.cache import IMAGE, KVCache
from edgekv.runtime.policies import POLICIES, make_policy
from edgekv.runtime.policies.base import Chunk

L, H, D = 2, 2, 8


def _chunk(positions, keys=None, **meta):
    c = len(positions)
    keys = np.random.default_rng(positions[0]).normal(size=(L, H, c, D)) if keys is None else keys
    keys = keys.astype(np.float32)
    return Chunk(keys, keys.copy(), np.asarray(positions), np.zeros((L, H, c), np.float32), **meta)


def _step(policy, cache, chunk, slot_mass=None):
    """What the session does around a decoder call, minus the graph."""
    policy.make_room(cache, len(chunk))
    policy.mass_weight(len(chunk))
    policy.observe(cache, np.zeros(cache.orig_pos.shape, np.float32) if slot_mass is None
                   else slot_mass)
    policy.admit(cache, chunk)


def _kept(cache, layer=0, head=0):
    return sorted(cache.orig_pos[layer, head][cache.valid[layer, head]].tolist())


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_budget_holds_and_protected_tokens_survive_under_random_attention(name):
    policy = make_policy(name)
    rng = np.random.default_rng(0)
    cache = KVCache.allocate(L, H, 48, D)
    _step(policy, cache, _chunk(np.arange(4), protected=True))
    pos = 4
    for _ in range(60):
        c = int(rng.integers(1, 9))
        mass = rng.random(cache.orig_pos.shape).astype(np.float32)
        if name == "full" and cache.free_count().min() < c:
            break
        _step(policy, cache, _chunk(np.arange(pos, pos + c)), mass)
        pos += c
        assert cache.valid.sum(-1).max() <= cache.budget
        assert _kept(cache)[:4] == [0, 1, 2, 3]
    assert pos > 48 or name == "full"


def test_h2o_keeps_heavy_hitters_and_the_recent_window():
    policy = make_policy("h2o:recent=0.5")
    cache = KVCache.allocate(L, H, 16, D)
    _step(policy, cache, _chunk(np.arange(16)))
    mass = np.zeros(cache.orig_pos.shape, np.float32)
    mass[..., 5] = 10.0  # slot 5 holds position 5: a heavy hitter
    policy.observe(cache, mass)
    policy.make_room(cache, 4)
    kept = _kept(cache)
    assert 5 in kept
    assert kept[-6:] == list(range(10, 16))  # half of the remaining budget is recent
    assert len(kept) == 12


def test_h2o_heads_choose_independently():
    policy = make_policy("h2o:recent=0.0")
    cache = KVCache.allocate(L, H, 8, D)
    _step(policy, cache, _chunk(np.arange(8)))
    mass = np.zeros(cache.orig_pos.shape, np.float32)
    mass[0, 0, :] = np.arange(8)  # head (0,0) values newer tokens
    mass[0, 1, :] = np.arange(8)[::-1]  # head (0,1) values older tokens
    policy.observe(cache, mass)
    policy.make_room(cache, 2)
    assert _kept(cache, 0, 0) == [2, 3, 4, 5, 6, 7]
    assert _kept(cache, 0, 1) == [0, 1, 2, 3, 4, 5]


def test_snapkv_keeps_pooled_neighbours_of_an_attended_token():
    policy = make_policy("snapkv:window=2,kernel=3")
    assert policy.mass_weight(6).tolist() == [0, 0, 0, 0, 1, 1]
    cache = KVCache.allocate(L, H, 20, D)
    _step(policy, cache, _chunk(np.arange(20)))
    mass = np.zeros(cache.orig_pos.shape, np.float32)
    mass[..., 8] = 5.0
    policy.observe(cache, mass)
    policy.make_room(cache, 15)
    assert _kept(cache) == [7, 8, 9, 18, 19]


def test_inf_mllm_keeps_a_saddle_then_lets_it_go_when_attention_moves_on():
    policy = make_policy("inf-mllm:sinks=2,recent=0.25,retrieval=4,decay=0.5,smooth=1")
    cache = KVCache.allocate(L, H, 24, D)
    _step(policy, cache, _chunk(np.arange(16)))
    saddle = np.zeros(cache.orig_pos.shape, np.float32)
    saddle[..., 6] = 3.0
    pos = 16
    for _ in range(6):  # position 6 keeps receiving attention: it stays
        _step(policy, cache, _chunk(np.arange(pos, pos + 4)), saddle)
        pos += 4
        assert 6 in _kept(cache)
    assert _kept(cache)[:2] == [0, 1]
    for _ in range(20):  # attention moves on; the old saddle fades and goes
        _step(policy, cache, _chunk(np.arange(pos, pos + 4)))
        pos += 4
    assert 6 not in _kept(cache)
    assert _kept(cache)[:2] == [0, 1]
    assert _kept(cache)[-6:] == list(range(pos - 6, pos))


def _frames(policy, cache, frames, tokens=8):
    """Feed frames of `tokens` image tokens; keys per frame given by `frames` [n, tokens, D]."""
    pos = 0
    occupancy = []
    for g, keys in enumerate(frames):
        k = np.broadcast_to(keys, (L, H, tokens, D)).copy()
        chunk = _chunk(np.arange(pos, pos + tokens), k, modality=IMAGE, group=g,
                       place=np.arange(tokens))
        _step(policy, cache, chunk)
        pos += tokens
        occupancy.append(cache.valid.sum(-1).max())
        assert occupancy[-1] <= cache.budget
    return occupancy


def test_structured_collapses_identical_frames_and_keeps_changing_ones():
    rng = np.random.default_rng(3)
    frame = rng.normal(size=(8, D))
    policy = make_policy("structured:sinks=0")
    same = KVCache.allocate(L, H, 64, D)
    occupancy = _frames(policy, same, [frame] * 20)
    assert occupancy[-1] == 8  # one frame's worth of slots
    assert (same.count[same.valid] == 20).all()  # every slot stands for 20 tokens
    _, bias, _ = same.graph_inputs(np.array([160]), "cache")
    assert np.allclose(bias[same.valid], np.log(20))
    # 19 repeats of 8 tokens were folded in, none pushed out by the budget
    assert (same.merged, same.evictions) == (19 * 8, 0)
    changing = KVCache.allocate(L, H, 64, D)
    occupancy = _frames(policy, changing, [rng.normal(size=(8, D)) for _ in range(20)])
    assert occupancy[-1] == 64  # nothing repeats: the budget fills and old frames go
    assert changing.count[0, 0][changing.valid[0, 0]].sum() == 64
    assert (changing.merged, changing.evictions) == (0, 20 * 8 - 64)


def test_structured_half_changing_frames_merge_only_the_static_half():
    rng = np.random.default_rng(4)
    static = rng.normal(size=(4, D))
    frames = [np.concatenate([static, rng.normal(size=(4, D))]) for _ in range(5)]
    cache = KVCache.allocate(L, H, 64, D)
    _frames(make_policy("structured:sinks=0"), cache, frames)
    assert cache.valid[0, 0].sum() == 4 + 5 * 4
    assert cache.count[0, 0][cache.valid[0, 0]].sum() == 40  # merged counts add up to tokens seen


def test_structured_drop_mode_keeps_counts_at_one():
    frame = np.random.default_rng(5).normal(size=(8, D))
    cache = KVCache.allocate(L, H, 64, D)
    _frames(make_policy("structured:sinks=0,merge=false"), cache, [frame] * 5)
    assert cache.valid[0, 0].sum() == 8 and (cache.count[cache.valid] == 1).all()
    assert (cache.merged, cache.evictions) == (4 * 8, 0)  # repeats dropped, not evicted


@pytest.mark.parametrize("spec, scale", [("structured:sinks=0,similarity=1", 1.0),
                                         ("structured:sinks=0,similarity=1", 3.0),
                                         ("structured:sinks=0", 1e-3)])
def test_structured_merges_identical_frames_at_similarity_one_and_with_small_keys(spec, scale):
    # An epsilon added to the norms' product pulled the cosine of identical keys below 1, and
    # that of small keys (|k| ~ 3e-3) to ~0.9: nothing merged.
    frame = np.random.default_rng(6).normal(size=(8, D)) * scale
    cache = KVCache.allocate(L, H, 64, D)
    assert _frames(make_policy(spec), cache, [frame] * 4)[-1] == 8


def test_structured_frame_quota_never_takes_the_sinks():
    rng = np.random.default_rng(7)
    cache = KVCache.allocate(L, H, 64, D)
    policy = make_policy("structured:sinks=4,frame_quota=0.05")  # 3 slots a frame
    for g in range(4):  # frames only: the first frame's first tokens are the sinks
        keys = rng.normal(size=(L, H, 8, D))
        chunk = _chunk(np.arange(8 * g, 8 * g + 8), keys, modality=IMAGE, group=g,
                       place=np.arange(8))
        _step(policy, cache, chunk, rng.random(cache.orig_pos.shape).astype(np.float32))
    for layer in range(L):
        for head in range(H):
            assert _kept(cache, layer, head)[:4] == [0, 1, 2, 3]


def _within(seconds: float, run) -> None:
    """Run `run()`, failing (not hanging) if it takes more than `seconds`."""
    def stop(*_):
        raise TimeoutError(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        run()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("spec", ["snapkv:window=100000000000000000000",
                                  "snapkv:kernel=100000000000000000001",
                                  "inf-mllm:smooth=100000000000000000001",
                                  "inf-mllm:retrieval=100000000000000000000",
                                  "h2o+snapkv:window=100000000000000000000"])
def test_windows_and_kernels_beyond_the_cache_act_as_the_whole_cache(spec):
    # The ranges allow any size: a window past int64 overflowed numpy (a traceback), a kernel
    # of 1e20 looped once per neighbour, forever.
    def run():
        policy = make_policy(spec)
        cache = KVCache.allocate(L, H, 24, D)
        for pos in range(0, 40, 8):
            _step(policy, cache, _chunk(np.arange(pos, pos + 8)),
                  np.ones(cache.orig_pos.shape, np.float32))
            _step(policy, cache, _chunk(np.arange(pos + 8, pos + 9)))
        assert cache.valid.sum(-1).max() <= cache.budget
    _within(5.0, run)
