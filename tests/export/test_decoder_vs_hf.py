"""Every exported decoder matches the HF model it came from, chunk by chunk, fp32."""

import numpy as np
import pytest

from edgekv.export.manifest import load_manifest
from edgekv.export.validate import bundle_logits, hf_logits
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import BudgetError
from edgekv.runtime.session import Session
from helpers import FAMILIES, load_tiny, text_ids

TOL = 1e-3


@pytest.mark.parametrize("backend", ["ort", "torch"])
@pytest.mark.parametrize("family", FAMILIES)
def test_300_tokens_in_chunks_match_hf(family, backend, tiny_model_dir, tiny_bundle):
    model, tokenizer = load_tiny(tiny_model_dir(family))
    ids = text_ids(tokenizer, 300)
    ours = bundle_logits(tiny_bundle(family, budget=320, chunk=32), ids, backend=backend)
    ref = hf_logits(model, ids)
    assert ours.shape == ref.shape == (300, model.config.vocab_size)
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_scrambled_slots_with_gaps_match_hf(family, tiny_model_dir, tiny_bundle):
    """The graph must not care where a token sits: random free slots, empty slots between."""
    model, tokenizer = load_tiny(tiny_model_dir(family))
    ids = text_ids(tokenizer, 300, offset=5000)
    session = Session.open(Bundle.open(tiny_bundle(family, budget=320, chunk=32)), policy="full")
    rng = np.random.default_rng(7)
    cache = session.cache

    def random_free_slots(n):
        free = np.flatnonzero(~cache.valid[0, 0])
        chosen = rng.choice(free, size=n, replace=False)
        return np.broadcast_to(chosen, cache.orig_pos.shape[:2] + (n,)).copy()

    cache.free_slots = random_free_slots
    parts = []
    session.feed(ids, on_chunk=lambda _o, logits: parts.append(logits.copy()))
    occupied = np.flatnonzero(cache.valid[0, 0])
    assert occupied.max() > len(ids) - 1, "slots were not scattered"
    assert np.abs(np.concatenate(parts) - hf_logits(model, ids)).max() <= TOL


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_tensorrt_target_computes_rope_in_graph_and_matches_hf(backend, tiny_model_dir,
                                                                 tiny_bundle):
    model, tokenizer = load_tiny(tiny_model_dir("llama"))
    ids = text_ids(tokenizer, 300)
    bundle = tiny_bundle("llama", budget=320, chunk=32, target="tensorrt")
    assert load_manifest(bundle).rope_table == 0
    assert np.abs(bundle_logits(bundle, ids, backend=backend) - hf_logits(model, ids)).max() <= TOL


def test_absolute_positions_beyond_the_rope_table_are_refused(tiny_bundle):
    bundle = Bundle.open(tiny_bundle("llama", budget=32, chunk=8))
    assert bundle.manifest.rope_table == 40
    session = Session.open(bundle, policy="streaming", position_mode="absolute")
    with pytest.raises(BudgetError, match="beyond this bundle's RoPE table"):
        session.feed(np.arange(48) % 100)


def test_absolute_and_cache_positions_agree_without_eviction(tiny_model_dir, tiny_bundle):
    _, tokenizer = load_tiny(tiny_model_dir("llama"))
    ids = text_ids(tokenizer, 100)
    bundle = Bundle.open(tiny_bundle("llama", budget=320, chunk=32))
    outs = []
    for mode in ("cache", "absolute"):
        s = Session.open(bundle, policy="full", position_mode=mode)
        outs.append(s.feed(ids))
    assert np.abs(outs[0] - outs[1]).max() <= 1e-5


def test_torch_backend_reads_a_bundle_exported_before_the_stacked_projections(
        tiny_model_dir, tiny_bundle, tmp_path):
    import shutil

    import onnx
    from onnx import numpy_helper

    bundle = tiny_bundle("qwen2", budget=320, chunk=32)  # qwen2: q/k/v biases too
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    model = onnx.load(str(old / "decoder.onnx"))
    dims = load_manifest(bundle).dims
    sizes = {"qkv_proj": [dims.num_heads * dims.head_dim] + [dims.num_kv_heads * dims.head_dim] * 2,
             "gate_up_proj": [dims.intermediate_size] * 2}
    parts = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
    for init in list(model.graph.initializer):
        prefix, module, kind = (["", "", ""] + init.name.rsplit(".", 2))[-3:]
        if module in parts:
            pieces = np.split(numpy_helper.to_array(init), np.cumsum(sizes[module])[:-1])
            for part, piece in zip(parts[module], pieces, strict=True):
                model.graph.initializer.append(
                    numpy_helper.from_array(piece, f"{prefix}.{part}.{kind}"))
            model.graph.initializer.remove(init)
    (old / "decoder.onnx.data").unlink()
    onnx.save(model, str(old / "decoder.onnx"), save_as_external_data=True,
              location="decoder.onnx.data")
    assert not any("qkv_proj" in init.name for init in model.graph.initializer)
    load_manifest(old, verify=False).with_files(old).save(old)  # as the old exporter did
    _, tokenizer = load_tiny(tiny_model_dir("qwen2"))
    ids = text_ids(tokenizer, 40)
    assert np.array_equal(bundle_logits(old, ids, backend="torch"),
                          bundle_logits(bundle, ids, backend="torch"))
