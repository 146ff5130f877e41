"""Session.add_system: the system message is fed first, as protected tokens that no policy
evicts, however long the stream."""

from __future__ import annotations

import numpy as np
import pytest

from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import BudgetError
from edgekv.runtime.session import Session


@pytest.mark.parametrize("policy", ["window", "streaming", "inf-mllm"])
def test_system_tokens_survive_a_long_stream(tiny_bundle, policy):
    session = Session.open(Bundle.open(tiny_bundle("llama", budget=48, chunk=8)), policy,
                           backend="ort")
    session.add_system("Remember the colour.")
    n = session.pos
    assert n > 0 and session.cache.protected.sum() == n * session.cache.protected.shape[0] * \
        session.cache.protected.shape[1]
    session.feed(np.random.default_rng(1).integers(5, 300, 400))
    kept = session.cache.orig_pos[session.cache.protected]
    assert sorted(set(kept.tolist())) == list(range(n))  # every head still holds all of them
    assert session.cache.evictions > 0


def test_system_message_must_come_first_and_fit(tiny_bundle):
    session = Session.open(Bundle.open(tiny_bundle("llama", budget=48, chunk=8)), "streaming",
                           backend="ort")
    with pytest.raises(BudgetError, match="does not fit"):
        session.add_system("word " * 60)
    assert session.messages == [] and session.pos == 0  # nothing half-done
    session.feed([5, 6, 7])
    with pytest.raises(ValueError, match="before anything"):
        session.add_system("late")


@pytest.mark.parametrize("policy", ["streaming", "h2o", "snapkv", "inf-mllm", "structured"])
def test_a_large_protected_share_is_never_evicted(tiny_bundle, policy):
    # Protected tokens + what the policy keeps (sinks, recent share) exceed the budget: the
    # policy's keep set gives way, protected slots never do.
    session = Session.open(Bundle.open(tiny_bundle("llama", budget=48, chunk=8)), policy,
                           backend="ort")
    session.add_system("colour " * 5)
    assert session.pos > 20
    session.feed(np.random.default_rng(2).integers(5, 300, 200))
    assert session.cache.protected.sum(-1).min() == session.cache.protected.sum(-1).max() > 20
