"""The device-resident KV path, run here on CPU torch tensors: the same index operations and
the same routing the TensorRT and ORT-GPU backends use on CUDA."""

import numpy as np
import torch

from edgekv.runtime.bundle import Bundle
from edgekv.runtime.cache import KVCache
from edgekv.runtime.device_kv import DeviceKV
from edgekv.runtime.session import Session
from helpers import load_tiny, text_ids

L, H, B, D = 2, 3, 10, 4


def test_write_and_read_match_the_numpy_cache():
    rng = np.random.default_rng(0)
    host = KVCache.allocate(L, H, B, D)
    dev = DeviceKV.allocate(L, H, B, D, torch.float32, "cpu")
    for _ in range(3):
        slots = np.stack([np.stack([rng.choice(B, 2, replace=False) for _ in range(H)])
                          for _ in range(L)])
        k, v = rng.standard_normal((2, L, H, 2, D)).astype(np.float32)
        host.write(slots, k, v, np.zeros((L, H, 2), dtype=np.int64))
        dev.write(torch.from_numpy(slots), torch.from_numpy(k), torch.from_numpy(v))
    assert np.array_equal(dev.keys.numpy(), host.keys)
    assert np.array_equal(dev.values.numpy(), host.values)
    got_k, _ = dev.read(torch.from_numpy(slots))
    assert np.array_equal(got_k.numpy(), k)


def test_merge_is_count_weighted():
    dev = DeviceKV.allocate(1, 1, 4, 2, torch.float32, "cpu")
    dev.keys[0, 0, 1], dev.keys[0, 0, 3] = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 6.0])
    dst, src = torch.tensor([[[1]]]), torch.tensor([[[3]]])
    dev.merge(dst, src, torch.tensor([[[2]]]), torch.tensor([[[1]]]))
    assert torch.allclose(dev.keys[0, 0, 1], torch.tensor([2.0, 2.0]))  # (2*[3,0] + [0,6]) / 3


def test_session_with_device_kv_matches_ort_through_evictions(tiny_model_dir, tiny_bundle):
    """Streaming policy at budget 64 over 300 tokens: evictions, re-ranked positions, K/V
    written on the (CPU) device; logits must match ORT's host-cache run chunk by chunk."""
    _, tokenizer = load_tiny(tiny_model_dir("llama"))
    ids = text_ids(tokenizer, 300, offset=900)
    bundle = Bundle.open(tiny_bundle("llama", budget=320, chunk=32))
    runs = {}
    for backend in ("ort", "torch-device"):
        session = Session.open(bundle, policy="streaming", backend=backend, budget=64)
        parts = []
        session.feed(ids, on_chunk=lambda _o, logits, parts=parts: parts.append(logits.copy()))
        runs[backend] = (np.concatenate(parts), session)
    device_session = runs["torch-device"][1]
    assert device_session.cache.evictions > 0
    assert device_session.cache.keys.size == 0  # no host copy of the K/V
    assert device_session.backend.kv.keys.abs().sum() > 0
    assert np.abs(runs["ort"][0] - runs["torch-device"][0]).max() <= 1e-4
