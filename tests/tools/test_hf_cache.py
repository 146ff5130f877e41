"""The HF baselines hand their cache to transformers under the name its forward declares:
`cache` now, `past_key_values` in earlier 5.x releases (deprecated in 5.25, dropped in 5.40)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from edgekv.tools.hf_cache import cache_kwargs


class _OlderForward:
    def forward(self, input_ids=None, past_key_values=None, use_cache=None):  # noqa: ANN001, ANN201
        return None


def test_the_older_name_where_forward_declares_it():
    assert cache_kwargs(_OlderForward(), "c") == {"past_key_values": "c"}


def test_the_hf_baseline_feeds_its_cache_without_a_deprecation(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from edgekv.tools.hf_stream import full_cache_nll

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama")).eval()
    ids = np.random.default_rng(0).integers(3, 500, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        nll, _ = full_cache_nll(model, ids, chunk=16, window=40)
    with torch.inference_mode():  # the same text in one call: the cache carried each chunk
        logits = model(input_ids=torch.from_numpy(ids)[None]).logits[0].float().numpy()
    expected = -torch.log_softmax(torch.from_numpy(logits[:-1]), -1).numpy()[
        np.arange(len(ids) - 1), ids[1:]]
    assert np.allclose(nll[1:], expected, atol=1e-4)
