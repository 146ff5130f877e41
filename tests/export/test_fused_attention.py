"""`--attention gqa`: one GroupQueryAttention per layer gives the logits of the attention spelled
out in standard ops, through prefill, evictions and every policy; the kernel writes the chunk
into the cache's scratch rows in place, or right after the rows a filling cache holds."""

import warnings

import numpy as np
import pytest

from edgekv.export.exporter import ExportOptions
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import EdgeKVError
from edgekv.runtime.session import Session

BUDGET, CHUNK = 48, 8


def _stream(bundle: Bundle, policy: str, backend: str = "ort",
            tokens: int = 120) -> tuple[list[np.ndarray], Session]:
    """Prefill in chunks, then one token at a time past the budget: every step's logits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scored policies over rotated keys: the cost warning
        session = Session.open(bundle, policy=policy, backend=backend)
    ids = (np.arange(tokens) * 7 + 3) % 500
    out = [session.step(bundle.embed(ids[i:i + CHUNK])).copy() for i in range(0, 40, CHUNK)]
    out += [session.step(bundle.embed(ids[i:i + 1])).copy() for i in range(40, tokens)]
    return out, session


def _pair(tiny_bundle, family: str = "llama", **kw) -> tuple[Bundle, Bundle]:
    return (Bundle.open(tiny_bundle(family, budget=BUDGET, chunk=CHUNK, **kw)),
            Bundle.open(tiny_bundle(family, budget=BUDGET, chunk=CHUNK, key_rope="cached",
                                    attention="gqa", **kw)))


@pytest.mark.parametrize("policy", ["streaming", "window", "h2o", "snapkv", "inf-mllm"])
def test_fused_attention_matches_the_graph(tiny_bundle, policy):
    graph, fused = _pair(tiny_bundle)
    assert fused.manifest.attention == "gqa" and fused.manifest.scratch_rows == CHUNK
    want, _ = _stream(graph, policy)
    got, session = _stream(fused, policy)
    assert session.cache.evictions > 50  # the stream ran far past the budget
    for w, g in zip(want, got, strict=True):
        assert np.abs(w - g).max() < 2e-4


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])  # a q/k/v bias; q/k norms
def test_fused_attention_in_other_families(tiny_bundle, family):
    graph, fused = _pair(tiny_bundle, family)
    assert fused.manifest.validation["max_abs_logit_diff"] <= 1e-3  # against HF, at export
    want, _ = _stream(graph, "streaming", tokens=70)
    got, _ = _stream(fused, "streaming", tokens=70)
    for w, g in zip(want, got, strict=True):
        assert np.abs(w - g).max() < 2e-4


def test_the_chunk_lands_in_the_scratch_rows_in_place(tiny_bundle):
    _, fused = _pair(tiny_bundle)
    session = Session.open(fused, policy="streaming")
    keys_rows, value_rows = session.cache.buffers
    assert keys_rows.shape[2] == BUDGET + CHUNK
    assert np.shares_memory(session.cache.values, value_rows)
    session.feed(np.arange(BUDGET) % 500)
    assert session.cache.live_rows == BUDGET
    session.step(fused.embed(np.arange(5)))
    # the kernel wrote the chunk's values after the budget, into the buffer the runtime owns:
    # the same values the session then stored in the slots it evicted for them
    layer, head, slot = np.nonzero(session.cache.orig_pos >= BUDGET)
    written = session.cache.values[layer, head, slot].reshape(*keys_rows.shape[:2], 5, -1)
    assert np.abs(written).max() > 0
    assert np.array_equal(value_rows[:, :, BUDGET:BUDGET + 5], written)


def test_a_filling_cache_is_attended_to_where_it_is_filled(tiny_bundle):
    graph, fused = _pair(tiny_bundle)
    session = Session.open(fused, policy="streaming")
    want = Session.open(graph, policy="streaming")
    session.cache.values[:, :, 13:] = np.nan  # rows never written: the kernel must not read them
    for ids in (np.arange(8), np.arange(8, 13)):
        logits, expected = (s.step(b.embed(ids)) for s, b in ((session, fused), (want, graph)))
        assert np.abs(logits - expected).max() < 2e-4
    assert session.cache.live_rows == 13
    # the kernel put the chunk where the session then wrote it: right after the filled rows
    assert np.isfinite(session.cache.values[:, :, :13]).all()
    assert np.isnan(session.cache.values[:, :, 13:]).all()


def test_a_layer_keeps_one_shift(tiny_bundle):
    _, fused = _pair(tiny_bundle)
    _, session = _stream(fused, "h2o")  # heads evict different tokens
    shift = session.cache.rotation.shift
    assert np.all(shift == shift[:, :1])
    assert shift.max() > 0


def test_torch_backend_reads_a_fused_bundle(tiny_bundle):
    _, fused = _pair(tiny_bundle)
    ort_logits, _ = _stream(fused, "h2o", tokens=70)
    torch_logits, _ = _stream(fused, "h2o", backend="torch", tokens=70)
    for a, b in zip(ort_logits, torch_logits, strict=True):
        assert np.abs(a - b).max() < 2e-4


def test_int4_fused_matches_int4_graph(tiny_bundle):
    # Exact compute: with int8 activations (the default) the two attentions' last-bit
    # differences can move an activation across a rounding step, and how far that moves the
    # logits depends on the CPU's integer kernels (1.8e-4 with AVX-512 VNNI, 4.8e-3 on an
    # AVX2-only CPU, from the first chunk on). What is compared here is the attention.
    exact = {"dtype": "int4", "int4_compute": "fp32", "lm_head": "fp32"}
    graph, fused = _pair(tiny_bundle, **exact)
    want, _ = _stream(graph, "streaming", tokens=80)
    got, _ = _stream(fused, "streaming", tokens=80)
    for w, g in zip(want, got, strict=True):
        assert np.abs(w - g).max() < 1e-5  # 2.4e-7 measured


def test_snapshot_of_a_fused_bundle(tiny_bundle):
    from edgekv.runtime.snapshot import Snapshot

    _, fused = _pair(tiny_bundle)
    _, session = _stream(fused, "streaming", tokens=70)
    saved = Snapshot.take(session)
    before = session.step(fused.embed(np.array([9]))).copy()
    for token in range(12):
        session.step(fused.embed(np.array([token])))
    saved.restore(session)
    assert np.array_equal(session.step(fused.embed(np.array([9]))), before)


def test_fused_attention_needs_rotated_keys_and_ort():
    with pytest.raises(EdgeKVError, match="--key-rope cached"):
        ExportOptions(attention="gqa").check()
    with pytest.raises(EdgeKVError, match="--target ort"):
        ExportOptions(attention="gqa", key_rope="cached", target="tensorrt").check()
    with pytest.raises(EdgeKVError, match="--attention"):
        ExportOptions(attention="flash").check()


@pytest.mark.parametrize("attention", ["graph", "gqa"])
def test_a_bundle_without_attention_mass(tiny_bundle, attention):
    """--no-attn-mass: the same logits for the policies that never read the mass, a zero
    attn_mass output, and a clear refusal for those that do."""
    rope = {"key_rope": "cached", "attention": "gqa"} if attention == "gqa" else {}
    with_mass = Bundle.open(tiny_bundle("llama", budget=BUDGET, chunk=CHUNK, **rope))
    without = Bundle.open(tiny_bundle("llama", budget=BUDGET, chunk=CHUNK, attn_mass=False,
                                      **rope))
    assert without.manifest.attn_mass is False
    for policy in ("streaming", "window"):
        want, _ = _stream(with_mass, policy, tokens=70)
        got, session = _stream(without, policy, tokens=70)
        for w, g in zip(want, got, strict=True):
            assert np.abs(w - g).max() < 1e-5
    slot_pos = session.cache.rank if attention == "graph" else session.cache.rotation.shift
    out = session.backend.run(without.embed(np.array([3])), np.array([0]),
                              np.zeros(slot_pos.shape, dtype=np.int64),
                              session.cache.bias, np.ones(1, np.float32))
    assert out.attn_mass.shape[-1] == BUDGET + 1 and not out.attn_mass.any()
    with pytest.raises(EdgeKVError, match="--no-attn-mass"):
        Session.open(without, policy="h2o")
    # eval quality refuses it before its first cell runs, not when the h2o cell opens
    from edgekv.tools.quality import check_cells

    with pytest.raises(EdgeKVError, match="'h2o' scores slots by attention"):
        check_cells(without.manifest, [BUDGET], ["streaming", "h2o"])
    check_cells(without.manifest, [BUDGET], ["streaming", "window"])


def test_the_memory_plan_counts_the_scratch_rows(tiny_bundle):
    from edgekv.profiles.planner import bundle_plan, kv_bytes

    _, fused = _pair(tiny_bundle)
    m = fused.manifest
    with_rows = bundle_plan(m)
    assert with_rows.kv_cache == kv_bytes(m.dims, BUDGET + CHUNK, m.dtype)
    session = Session.open(fused, policy="streaming")
    assert sum(b.nbytes for b in session.cache.buffers) == with_rows.kv_cache


def test_one_slot_bias_serves_every_head_without_the_mass(tiny_bundle):
    """A gqa bundle without the mass reads one bias row for all heads: the policies it runs
    keep the same slots everywhere (a protected prompt too); any other policy is refused."""
    from dataclasses import dataclass

    from edgekv.runtime.policies.base import Policy

    kw = {"budget": BUDGET, "chunk": CHUNK, "key_rope": "cached", "attention": "gqa"}
    with_mass = Bundle.open(tiny_bundle("llama", **kw))
    without = Bundle.open(tiny_bundle("llama", attn_mass=False, **kw))
    ids = (np.arange(90) * 11 + 5) % 500
    runs = []
    for bundle in (with_mass, without):
        session = Session.open(bundle, policy="streaming")
        session.feed(ids[:6], protected=True)  # held in every head: the same slots still
        runs.append([session.step(bundle.embed(ids[i:i + 1])).copy() for i in range(6, 90)])
        assert session.cache.evictions > 30
    for w, g in zip(*runs, strict=True):
        assert np.abs(w - g).max() < 1e-5

    @dataclass
    class PerHead(Policy):  # never reads the mass, but could choose per head
        name = "per-head"
        reads_mass = False

    with pytest.raises(EdgeKVError, match="different slots in different heads"):
        Session.open(without, policy=PerHead())
    # graph attention keeps a bias per head, with or without the mass
    graph = Bundle.open(tiny_bundle("llama", budget=BUDGET, chunk=CHUNK, attn_mass=False))
    assert Session.open(graph, policy=PerHead()).policy.name == "per-head"


def _without_kernel_keys(session: Session) -> None:
    """The session's backend as if its graph left no rotated keys: the runtime rotates."""
    run = session.backend.run

    def run_without(*args, **kwargs):
        out = run(*args, **kwargs)
        out.rotated_keys = out.rotated_pos = None
        return out

    session.backend.run = run_without


def test_the_cache_keeps_the_keys_the_kernel_rotated(tiny_bundle, monkeypatch):
    """The kernel's own rotation of the chunk is what the cache stores (no second rotation in
    numpy), and it is the rotation the runtime would have made: same keys, same logits."""
    from edgekv.runtime.key_rotation import KeyRotation

    _, fused = _pair(tiny_bundle)
    rotations = []
    place = KeyRotation.place
    monkeypatch.setattr(KeyRotation, "place",
                        lambda self, keys, pos: rotations.append(1) or place(self, keys, pos))
    kernel_logits, kernel = _stream(fused, "streaming")
    assert not rotations  # every chunk, prefill and decode, kept the kernel's keys
    session = Session.open(fused, policy="streaming")
    _without_kernel_keys(session)
    ids = (np.arange(120) * 7 + 3) % 500
    numpy_logits = [session.step(fused.embed(ids[i:i + CHUNK])).copy() for i in range(0, 40, CHUNK)]
    numpy_logits += [session.step(fused.embed(ids[i:i + 1])).copy() for i in range(40, 120)]
    assert len(rotations) == 5 + 80
    np.testing.assert_allclose(kernel.cache.keys, session.cache.keys, atol=2e-6)
    for a, b in zip(kernel_logits, numpy_logits, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_kernel_keys_at_other_positions_are_rotated_again(tiny_bundle):
    """Keys the graph rotated to positions other than the cache's are not stored as they are."""
    _, fused = _pair(tiny_bundle)
    ids = (np.arange(60) * 7 + 3) % 500
    sessions = [Session.open(fused, policy="streaming") for _ in range(2)]
    _without_kernel_keys(sessions[0])
    run = sessions[1].backend.run

    def run_off_by_one(*args, **kwargs):
        out = run(*args, **kwargs)
        out.rotated_keys = out.rotated_keys + 1.0  # wrong keys, said to be elsewhere
        out.rotated_pos = out.rotated_pos + 1
        return out

    sessions[1].backend.run = run_off_by_one
    for s in sessions:
        s.feed(ids)
    assert np.array_equal(sessions[0].cache.keys, sessions[1].cache.keys)
