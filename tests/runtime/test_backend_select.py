"""`--backend auto` picks the best backend available and says which."""

import dataclasses

import pytest

from edgekv.runtime.backends import make_backend, select
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.cache import KVCache
from edgekv.runtime.errors import EdgeKVError


@pytest.fixture
def bundle(tiny_bundle):
    return Bundle.open(tiny_bundle("llama", budget=320, chunk=32))


def _cache(bundle):
    d = bundle.manifest.dims
    return KVCache.allocate(d.num_layers, d.num_kv_heads, bundle.manifest.budget, d.head_dim)


def test_auto_here_is_ort_and_says_why(bundle):
    said = []
    backend = make_backend("auto", bundle, _cache(bundle), say=said.append)
    assert backend.name == "ort"
    assert len(said) == 1 and said[0].startswith("backend auto -> ort on the CPU")
    assert "trt:" in said[0] and "ort-gpu:" in said[0]


def test_auto_prefers_trt_when_engine_tensorrt_and_cuda_exist(bundle, monkeypatch):
    monkeypatch.setattr(select, "tensorrt_available", lambda: True)
    monkeypatch.setattr(select, "cuda_available", lambda: True)
    monkeypatch.setattr(select, "ort_cuda_provider", lambda: True)
    built = dataclasses.replace(bundle.manifest, engines={"graphs": {"decoder": {"file": "x"}}})
    assert select.choose_backend(built).name == "trt"
    # Without an engine, ONNX Runtime on the GPU is next.
    assert select.choose_backend(bundle.manifest).name == "ort-gpu"


def test_auto_without_cuda_falls_back_to_cpu(bundle, monkeypatch):
    monkeypatch.setattr(select, "tensorrt_available", lambda: True)
    monkeypatch.setattr(select, "cuda_available", lambda: False)
    monkeypatch.setattr(select, "ort_cuda_provider", lambda: True)
    choice = select.choose_backend(bundle.manifest)
    assert choice.name == "ort" and "no CUDA device" in choice.reason


def test_unknown_backend_is_refused(bundle):
    with pytest.raises(EdgeKVError, match="unknown backend 'tpu'"):
        make_backend("tpu", bundle, _cache(bundle))
