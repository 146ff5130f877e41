"""The memory plan against what the runtime really allocates, per dtype."""

import numpy as np
import pytest
from smollm2_dims import SMOLLM2

from edgekv.profiles.planner import (
    RUNTIME_OVERHEAD,
    kv_bytes,
    largest_budget,
    plan,
    weight_params,
)
from edgekv.runtime.cache import KVCache
from helpers import load_tiny


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("budget", [96, 512])
def test_plan_kv_equals_the_bytes_of_the_caches_key_and_value_buffers(dtype, budget):
    d = SMOLLM2
    cache = KVCache.allocate(d.num_layers, d.num_kv_heads, budget, d.head_dim,
                             {"fp32": np.float32, "fp16": np.float16}[dtype])
    assert plan(d, budget, 32, dtype).kv_cache == cache.keys.nbytes + cache.values.nbytes


def test_plan_kv_of_a_real_bundle_matches_its_session_cache(tiny_bundle):
    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.session import Session

    session = Session.open(Bundle.open(tiny_bundle("llama")), backend="ort")
    m = session.bundle.manifest
    c = session.cache
    assert kv_bytes(m.dims, m.budget, m.dtype) == c.keys.nbytes + c.values.nbytes


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
def test_weights_are_the_hf_models_parameters_with_tied_embeddings_once(family, tiny_model_dir):
    from edgekv.export.families import adapter_for

    model, _ = load_tiny(tiny_model_dir(family))
    # HF's parameters() yields a tied matrix once, which is what the plan promises.
    params = sum(p.numel() for p in model.parameters())
    assert weight_params(adapter_for(model)[1].dims(model)) == params


def test_fp16_halves_weights_and_kv():
    full, half = plan(SMOLLM2, 512, 32, "fp32"), plan(SMOLLM2, 512, 32, "fp16")
    assert half.weights * 2 == full.weights
    assert half.kv_cache * 2 == full.kv_cache
    with pytest.raises(ValueError, match="unknown dtype"):
        plan(SMOLLM2, 512, 32, "int3")


def test_rows_keep_their_old_shape_and_add_a_workspace_only_when_there_is_one():
    cpu = plan(SMOLLM2, 512, 32, "fp32")
    assert [name for name, _ in cpu.rows()] == [
        "weights", "kv_cache", "activations", "overhead", "total"]
    assert cpu.overhead == RUNTIME_OVERHEAD
    device = plan(SMOLLM2, 512, 32, "fp16", overhead=700 * 2**20, workspace=2**30)
    rows = dict(device.rows())
    assert rows["workspace"] == 2**30
    assert rows["total"] == sum(v for k, v in rows.items() if k != "total")


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("limit_mib", [700, 2000, 6000])
def test_largest_budget_is_the_last_multiple_of_chunk_that_fits(dtype, limit_mib):
    limit, chunk = limit_mib * 2**20, 32
    budget = largest_budget(SMOLLM2, chunk, dtype, limit)
    assert budget % chunk == 0
    assert plan(SMOLLM2, budget, chunk, dtype).total <= limit
    assert plan(SMOLLM2, budget + chunk, chunk, dtype).total > limit


def test_largest_budget_is_zero_when_the_weights_alone_do_not_fit():
    assert largest_budget(SMOLLM2, 32, "fp32", 300 * 2**20) == 0
