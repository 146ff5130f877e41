"""Model configurations beyond the default tiny ones: each exports and matches HF (the export
validates against it and refuses otherwise), or is refused with a message that says why."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from edgekv.export import decoder_step
from edgekv.export.exporter import DEFAULT_TOLERANCE, ExportOptions, export
from edgekv.export.manifest import Manifest
from edgekv.runtime.errors import ModelError


def _export(model_dir: Path, out: Path, budget: int = 96, chunk: int = 16,
            **options) -> Manifest:
    return export(str(model_dir), out, ExportOptions(budget=budget, chunk=chunk, **options),
                  log=lambda _m: None)


def _matches_hf(manifest: Manifest) -> bool:
    return manifest.validation["max_abs_logit_diff"] <= DEFAULT_TOLERANCE[manifest.dtype]


@pytest.mark.parametrize("options", [{}, {"key_rope": "cached", "attention": "gqa"}],
                         ids=["graph", "gqa"])
def test_one_layer_model(tiny_model_dir, tmp_path, options):
    # a per-layer cache with one layer has one input name, and it is layer 0's view
    manifest = _export(tiny_model_dir("llama", num_hidden_layers=1), tmp_path / "b", **options)
    assert manifest.dims.num_layers == 1
    assert _matches_hf(manifest)


@pytest.mark.parametrize("dtype", ["fp32", "int4"])
def test_llama_attention_and_mlp_biases(tiny_model_dir, tmp_path, dtype):
    model = tiny_model_dir("llama", attention_bias=True, mlp_bias=True)
    manifest = _export(model, tmp_path / "b", dtype=dtype)
    dims = manifest.dims
    assert (dims.qkv_bias, dims.o_bias, dims.mlp_bias) == (True, True, True)
    assert _matches_hf(manifest)
    if dtype == "int4":
        assert manifest.validation["float_weights_vs_hf"] <= DEFAULT_TOLERANCE["fp32"]


@pytest.mark.parametrize("act", ["gelu", "gelu_pytorch_tanh", "relu"])
def test_hidden_activation(tiny_model_dir, tmp_path, act):
    manifest = _export(tiny_model_dir("llama", hidden_act=act), tmp_path / "b")
    assert manifest.dims.hidden_act == act
    assert _matches_hf(manifest)


def test_unsupported_activation_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ModelError, match="hidden_act 'sigmoid' is not supported"):
        _export(tiny_model_dir("llama", hidden_act="sigmoid"), tmp_path / "b")


def test_int4_export_refuses_a_graph_that_is_not_the_model(tiny_model_dir, tmp_path,
                                                           monkeypatch):
    # The int4 graph matches the weights it computes with; a wrong activation moves logits
    # by less than quantization does, so only the float-weights check can catch it.
    monkeypatch.setitem(decoder_step.ACTIVATIONS, "gelu", nn.functional.silu)
    with pytest.raises(ModelError, match="with float weights, differs from the HF model"):
        _export(tiny_model_dir("llama", hidden_act="gelu"), tmp_path / "b", dtype="int4")
    assert not (tmp_path / "b").exists()


def test_sliding_window_bounds_the_budget(tiny_model_dir, tmp_path):
    model = tiny_model_dir("mistral", sliding_window=48)
    with pytest.raises(ModelError, match="last 48 tokens .* --budget 48 or less"):
        _export(model, tmp_path / "over", budget=96)
    assert not (tmp_path / "over").exists()
    assert _matches_hf(_export(model, tmp_path / "within", budget=48))


def test_sliding_layers_of_qwen2(tiny_model_dir, tmp_path):
    # layer_types: the second of the two layers slides over 32 tokens
    model = tiny_model_dir("qwen2", use_sliding_window=True, sliding_window=32,
                           max_window_layers=1)
    with pytest.raises(ModelError, match="last 32 tokens"):
        _export(model, tmp_path / "b", budget=96)


def test_fp16_fused_attention(tiny_model_dir, tmp_path):
    # the kernel takes the slot bias, and gives the probabilities, in q's type
    manifest = _export(tiny_model_dir("llama"), tmp_path / "b", dtype="fp16", key_rope="cached",
                       attention="gqa")
    assert manifest.dtype == "fp16"
    assert _matches_hf(manifest)


@pytest.mark.parametrize("head_dim", [24, 40])
def test_gqa_refuses_a_head_dim_its_kernel_cannot_run(tiny_model_dir, tmp_path, head_dim):
    # GroupQueryAttention with rotary runs head sizes in multiples of 16 only; the graph
    # attention has no such bound and matches HF
    model = tiny_model_dir("llama", head_dim=head_dim)
    with pytest.raises(ModelError, match=f"head_dim that is a multiple of 16; this model's is "
                                         f"{head_dim}: export with --attention graph"):
        _export(model, tmp_path / "gqa", key_rope="cached", attention="gqa")
    assert not (tmp_path / "gqa").exists()
    manifest = _export(model, tmp_path / "graph", key_rope="cached")
    assert manifest.dims.head_dim == head_dim
    assert _matches_hf(manifest)


@pytest.mark.parametrize("options", [
    {"dtype": "int4"},
    {"key_rope": "cached", "attention": "gqa", "kv_cache": "int8", "attn_mass": False},
], ids=["int4", "int8-cache"])
def test_one_slot_budget(tiny_model_dir, tmp_path, options):
    # budget 1: the validation prompt is one token, and the drift check that decodes its
    # second half decodes all of it (it used to feed an empty first half: "nothing to feed")
    manifest = _export(tiny_model_dir("llama"), tmp_path / "b", budget=1, chunk=1, **options)
    assert manifest.validation["prompt_tokens"] == 1
    assert _matches_hf(manifest)
    drift = manifest.validation.get("compute_vs_hf", manifest.validation.get("kv_int8_vs_hf"))
    assert drift is not None and drift < 1.0
