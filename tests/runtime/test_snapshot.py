"""Snapshot.take / restore: asking a question and restoring leaves the stream as if it had not
been asked (same cache bytes, same next logits), on the ORT backend that binds the cache."""

from __future__ import annotations

import numpy as np
import pytest

from edgekv.runtime.bundle import Bundle
from edgekv.runtime.sampler import Sampler
from edgekv.runtime.session import Session
from edgekv.runtime.snapshot import Snapshot


@pytest.mark.parametrize("policy", ["streaming", "h2o", "inf-mllm"])
def test_restore_continues_as_if_nothing_was_asked(tiny_bundle, policy):
    bundle = Bundle.open(tiny_bundle("llama", budget=48, chunk=8))
    rng = np.random.default_rng(0)
    first, second = rng.integers(5, 300, 70), rng.integers(5, 300, 20)
    plain = Session.open(bundle, policy, backend="ort")
    asked = Session.open(bundle, policy, backend="ort")
    for s in (plain, asked):
        s.feed(first)
    saved = Snapshot.take(asked)
    answer = "".join(asked.ask("a question that changes the cache", 6, Sampler()))
    assert asked.pos > plain.pos and answer is not None
    assert not np.array_equal(asked.cache.orig_pos, plain.cache.orig_pos)
    saved.restore(asked)
    assert np.array_equal(asked.cache.keys, plain.cache.keys)
    assert np.array_equal(asked.cache.orig_pos, plain.cache.orig_pos)
    assert asked.pos == plain.pos and asked.messages == plain.messages
    np.testing.assert_array_equal(asked.feed(second), plain.feed(second))
