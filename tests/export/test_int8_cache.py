"""`--kv-cache int8`: GroupQueryAttention over an int8 cache with per-layer scales, against the
same bundle with a float cache, through a stream far past the budget."""

import numpy as np
import pytest

from edgekv.export.exporter import ExportOptions
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import EdgeKVError
from edgekv.runtime.kv_codec import KVCodec
from edgekv.runtime.session import Session

BUDGET, CHUNK = 48, 8
GQA = dict(key_rope="cached", attention="gqa", attn_mass=False)


def _pair(tiny_bundle, family: str = "llama") -> tuple[Bundle, Bundle]:
    return (Bundle.open(tiny_bundle(family, budget=BUDGET, chunk=CHUNK, **GQA)),
            Bundle.open(tiny_bundle(family, budget=BUDGET, chunk=CHUNK, kv_cache="int8", **GQA)))


def _stream(bundle: Bundle, tokens: int = 130,
            decode_from: int = 40) -> tuple[list[np.ndarray], Session]:
    """Chunks up to `decode_from`, then one token per step."""
    session = Session.open(bundle, policy="streaming")
    ids = (np.arange(tokens) * 7 + 3) % 500
    out = [session.step(bundle.embed(ids[i:i + CHUNK])).copy()
           for i in range(0, decode_from, CHUNK)]
    out += [session.step(bundle.embed(ids[i:i + 1])).copy() for i in range(decode_from, tokens)]
    return out, session


@pytest.mark.parametrize("family", ["llama", "qwen3"])  # qwen3: q/k norms before the kernel
def test_an_int8_cache_follows_the_float_cache(tiny_bundle, family):
    floats, int8 = _pair(tiny_bundle, family)
    m = int8.manifest
    assert m.kv_quant == "int8" and len(m.kv_scales) == m.dims.num_layers
    assert all(k > 0 and v > 0 for k, v in m.kv_scales)
    # the export's drift check ran one-token steps over the int8 cache, not only a chunk
    assert m.validation["kv_int8_vs_hf"] > 10 * floats.manifest.validation["vs_hf"]
    want, _ = _stream(floats)
    got, session = _stream(int8)
    assert session.cache.keys.dtype == np.int8 and session.cache.evictions > 50
    scale = max(np.abs(w).max() for w in want)
    worst = max(np.abs(w - g).max() for w, g in zip(want, got, strict=True))
    assert 0 < worst < 0.05 * scale  # quantized, so not equal; near
    agree = np.mean([np.argmax(w[-1]) == np.argmax(g[-1]) for w, g in zip(want, got, strict=True)])
    assert agree >= 0.9


@pytest.mark.parametrize("decode_from", [40, 400])  # then decode steps; chunks only
def test_every_cached_token_is_rounded_once(tiny_bundle, decode_from):
    """Layer 0's K/V depend on the token alone, so both caches hold the same ones there: the
    int8 cache, decoded, is the float cache rounded (and saturated) once: half a step at most.
    The sinks are turned at every eviction (~90 decode steps, or ~45 chunks); their float copy
    is taken from the int8 key at the first turn, so they are rounded twice (under 1.25
    steps), never more: rounded again at each turn, they would drift."""
    floats, int8 = _pair(tiny_bundle)
    tokens = max(130, decode_from)
    _, want = _stream(floats, tokens, decode_from)
    _, got = _stream(int8, tokens, decode_from)
    cache, codec = got.cache, got.cache.codec
    valid = cache.valid[0]
    assert np.array_equal(valid, want.cache.valid[0]) and cache.rotation.rotated > 200
    key_pos = cache.rotation.key_pos[0]
    assert np.array_equal(key_pos[valid], want.cache.rotation.key_pos[0][valid])
    sinks = valid & (cache.rank[0] < 4)  # streaming's sinks, turned at every step
    for stored, wanted, scale, values in ((cache.keys, want.cache.keys, codec.k_scale, False),
                                          (cache.values, want.cache.values, codec.v_scale, True)):
        # tokens the calibration text never had may lie past the range: saturated
        wanted = np.clip(wanted[0], -128 * scale[0], 127 * scale[0])
        steps = np.abs(codec.decode(stored[0], 0, values) - wanted).max(-1) / scale[0]
        assert steps[valid & ~sinks].max() <= 0.5 * 1.01
        assert steps[sinks].max() <= 1.25


@pytest.mark.parametrize("c", [1, 3])  # the int8 kernel; a chunk: the float kernel
def test_the_kernel_rounds_as_the_runtime_does(tiny_bundle, c):
    _, int8 = _pair(tiny_bundle)
    session = Session.open(int8, policy="streaming")
    session.feed(np.arange(BUDGET) % 500)
    out = session.backend.run(int8.embed(np.arange(c)), *_inputs(session, c))
    codec = session.cache.codec
    assert out.stored_values.dtype == np.int8
    layer = np.arange(int8.manifest.dims.num_layers)[:, None, None]
    assert np.array_equal(out.stored_values, codec.encode(out.new_values, layer, values=True))


def test_a_chunk_attends_over_the_dequantized_cache(tiny_bundle):
    """A chunk runs the float kernel over the int8 cache decoded: the float bundle's graph
    over that same cache gives the same logits. One token runs the int8 kernel, which
    also rounds the token's own K/V, so there the two differ."""
    floats, int8 = _pair(tiny_bundle)
    ids = (np.arange(BUDGET - 8) * 5 + 1) % 500
    a, b = Session.open(floats, policy="full"), Session.open(int8, policy="full")
    a.feed(ids)
    b.feed(ids)
    layer = np.arange(int8.manifest.dims.num_layers)[:, None, None]
    for float_rows, int8_rows, values in zip(a.cache.buffers, b.cache.buffers, (False, True),
                                             strict=True):
        float_rows[:] = b.cache.codec.decode(int8_rows, layer, values)
    diffs = {}
    for c in (3, 1):
        want = a.backend.run(floats.embed(ids[:c]), *_inputs(a, c)).logits.copy()
        got = b.backend.run(int8.embed(ids[:c]), *_inputs(b, c)).logits
        diffs[c] = float(np.abs(want - got).max() / np.abs(want).max())
    assert diffs[3] < 1e-5 < diffs[1]


def test_the_int8_graph_keeps_nodes_in_order(tiny_bundle):
    """ONNX wants every node after what it reads (ONNX Runtime sorts for itself; other tools
    do not); the If nodes read values from before them, their branches read outer ones."""
    import onnx

    _, int8 = _pair(tiny_bundle)
    graph = onnx.load(int8.path / int8.manifest.graphs["decoder"]).graph
    known = {v.name for v in (*graph.input, *graph.initializer)} | {""}
    branches = 0
    for node in graph.node:
        reads = list(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                branches += 1
                inner = {o for n in attr.g.node for o in n.output}
                reads += [i for n in attr.g.node for i in n.input if i not in inner]
        assert set(reads) <= known, (node.name, set(reads) - known)
        known.update(node.output)
    assert branches == 2 * int8.manifest.dims.num_layers


def _inputs(session: Session, c: int) -> tuple[np.ndarray, ...]:
    shift, slot_bias, chunk_pos = session.cache.graph_inputs(np.arange(c), "cache")
    return chunk_pos, shift, slot_bias, np.zeros(c, np.float32)


def test_codec_rounds_to_nearest_and_saturates():
    codec = KVCodec(np.array([0.5, 2.0], np.float32), np.array([1.0, 1.0], np.float32))
    x = np.array([[0.74, -0.76, 1000.0, -1000.0], [0.74, 3.1, -3.1, 300.0]], np.float32)
    q = codec.encode(x, np.arange(2))
    assert q.tolist() == [[1, -2, 127, -128], [0, 2, -2, 127]]
    assert np.allclose(codec.decode(q, np.arange(2)), q * np.array([[0.5], [2.0]]))


@pytest.mark.parametrize("options", [dict(attention="graph"), dict(attn_mass=True),
                                     dict(dtype="fp16")])
def test_int8_cache_needs_the_kernel_without_the_mass(options):
    settings = dict(key_rope="cached", attention="gqa", attn_mass=False, kv_cache="int8")
    with pytest.raises(EdgeKVError, match="--kv-cache int8"):
        ExportOptions(**{**settings, **options}).check()


def test_other_backends_refuse_an_int8_cache(tiny_bundle):
    _, int8 = _pair(tiny_bundle)
    with pytest.raises(EdgeKVError, match="int8"):
        Session.open(int8, policy="streaming", backend="torch")


def test_the_memory_plan_counts_the_int8_cache(tiny_bundle):
    from edgekv.profiles.planner import bundle_plan

    floats, int8 = _pair(tiny_bundle)
    for bundle in (floats, int8):
        cache = Session.open(bundle, policy="streaming").cache
        assert bundle_plan(bundle.manifest).kv_cache == sum(b.nbytes for b in cache.buffers)
    assert int8.manifest.kv_quant and cache.keys.dtype == np.int8


def test_the_decode_bound_reads_one_byte_per_cached_value(tiny_bundle):
    from edgekv.tools.bench.membw import bundle_decode_bytes

    floats, int8 = _pair(tiny_bundle)
    float_kv, int8_kv = (bundle_decode_bytes(b.path).kv for b in (floats, int8))
    assert float_kv == 4 * int8_kv > 0
