"""`A+B`: a prefill compressor and a generation evictor in one cache (policies/composed.py)."""

import numpy as np
import pytest

from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import BudgetError, PolicyError
from edgekv.runtime.policies import make_policy
from edgekv.runtime.session import Session
from helpers import filled_cache, kept_positions


def test_a_chunk_goes_to_the_first_policy_a_single_token_to_the_second():
    cache = filled_cache(8, 8)
    policy = make_policy("full+window")
    with pytest.raises(BudgetError, match="full"):  # a 3-token chunk: full refuses to evict
        policy.make_room(cache, 3)
    policy.make_room(cache, 1)  # a generated token: window drops the oldest
    assert kept_positions(cache) == list(range(1, 8))


def test_the_attention_weights_and_scores_follow_the_same_call():
    policy = make_policy("snapkv:window=2+h2o")
    cache = filled_cache(8, 4)
    mass = np.full(cache.orig_pos.shape, 2.0, np.float32)
    policy.make_room(cache, 4)
    assert policy.mass_weight(4).tolist() == [0, 0, 1, 1]  # snapkv's observation window
    policy.observe(cache, mass)
    policy.observe(cache, mass)
    assert cache.score[0, 0, 0] == 2.0  # snapkv: the latest window's view, overwritten
    policy.make_room(cache, 1)
    assert policy.mass_weight(1).tolist() == [1]
    policy.observe(cache, mass)
    assert cache.score[0, 0, 0] == 4.0  # h2o: added on


def test_flags_and_fixed_parts_are_those_of_both():
    policy = make_policy("structured:sinks=6+streaming:sinks=2")
    assert policy.name == "structured+streaming"
    assert policy.min_budget(32) == 38 and not policy.oldest_first and policy.reads_mass
    assert policy.params()["structured.sinks"] == 6 and policy.params()["streaming.sinks"] == 2
    both_oldest = make_policy("streaming+window")
    assert both_oldest.oldest_first and both_oldest.same_slots and not both_oldest.reads_mass


def test_the_same_policy_on_both_sides_keeps_both_parameter_sets():
    policy = make_policy("h2o:recent=0.1+h2o:recent=0.9")
    assert policy.params() == {"prefill.h2o.recent": 0.1, "decode.h2o.recent": 0.9}


@pytest.mark.parametrize("spec", ["streaming+h2o+window", "+h2o", "h2o+", "h2o+nope"])
def test_a_bad_composition_is_refused(spec):
    with pytest.raises(PolicyError):
        make_policy(spec)


def test_a_session_compresses_the_prompt_like_the_first_and_evicts_like_the_second(tiny_bundle):
    bundle = Bundle.open(tiny_bundle())  # budget 96, chunk 16
    prompt = np.arange(3, 163) % 200 + 5  # 160 tokens: more than the budget
    composed = Session.open(bundle, policy="snapkv+streaming:sinks=4", backend="ort")
    alone = Session.open(bundle, policy="snapkv", backend="ort")
    token = int(np.argmax(composed.feed(prompt)))
    alone.feed(prompt)
    # the prompt went through snapkv alone: the same slots kept, the same tokens in them
    assert np.array_equal(composed.cache.valid, alone.cache.valid)
    assert np.array_equal(composed.cache.orig_pos, alone.cache.orig_pos)
    before = composed.cache.orig_pos.copy(), composed.cache.valid.copy()
    for _ in range(6):
        token = int(np.argmax(composed.step(bundle.embed(np.array([token])))[-1]))
    # answers went through streaming: each step evicted the oldest token after the 4 sinks
    kept_before = sorted(before[0][0, 0][before[1][0, 0]].tolist())
    generated = list(range(160, 166))
    assert kept_positions(composed.cache) == kept_before[:4] + kept_before[10:] + generated
    assert composed.cache.valid.sum(-1).max() <= composed.cache.budget


def test_the_cli_runs_a_composed_policy_and_names_both(tiny_bundle, capsys):
    from edgekv.cli import main

    assert main(["run", str(tiny_bundle()), "--prompt", "hello there", "--max-new-tokens", "4",
                 "--policy", "snapkv:window=4+streaming:sinks=2"]) == 0
    assert main(["run", str(tiny_bundle()), "--prompt", "hi", "--policy", "h2o+nope"]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err
