"""int4 bundles: block-wise 4-bit weights through ONNX Runtime's MatMulNBits."""

import numpy as np
import onnx
import pytest

from edgekv.export import exporter
from edgekv.export.manifest import LM_HEAD, load_manifest
from edgekv.export.quantize import (
    BLOCK_SIZE,
    dequantize_blocks,
    int8_blocks,
    quantize_blocks,
    quantize_graph,
    quantize_lm_head,
    set_compute,
)
from edgekv.export.trt_check import check_bundle
from edgekv.export.validate import bundle_logits, hf_logits
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import BundleError
from edgekv.runtime.session import Session


def test_block_quantization_error_is_bounded_by_half_a_step():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(48, 70)).astype(np.float32)  # K not a multiple of the block
    packed, scales, zero_points = quantize_blocks(w)
    back = dequantize_blocks(packed, scales, zero_points, 70)
    assert back.shape == w.shape
    step = np.repeat(scales, BLOCK_SIZE, axis=1)[:, :70]
    assert np.all(np.abs(back - w) <= step / 2 + 1e-6)


def test_weights_already_on_a_q4_1_grid_are_represented_exactly():
    """GGUF Q4_1 blocks (w = d * q + m, codes 0..15 with both ends used) survive unchanged."""
    rng = np.random.default_rng(1)
    d = rng.uniform(0.01, 0.05, size=(16, 4, 1))
    m = rng.uniform(-0.3, 0.0, size=(16, 4, 1))
    codes = rng.integers(0, 16, size=(16, 4, BLOCK_SIZE))
    codes[..., 0], codes[..., 1] = 0, 15
    w = (d * codes + m).reshape(16, 4 * BLOCK_SIZE).astype(np.float32)
    back = dequantize_blocks(*quantize_blocks(w), w.shape[1])
    assert np.abs(back - w).max() <= 1e-6


@pytest.fixture(scope="module")
def int4_bundle(tiny_bundle):
    return tiny_bundle("qwen2", budget=320, chunk=32, dtype="int4")  # qwen2: q/k/v biases too


@pytest.fixture(scope="module")
def int4_fp32_head_bundle(tiny_bundle):
    return tiny_bundle("qwen2", budget=320, chunk=32, dtype="int4", lm_head="fp32",
                       int4_compute="fp32")


def _levels(bundle) -> dict[int, set[int]]:
    """bits -> the accuracy levels of the bundle's MatMulNBits nodes of that width."""
    graph = onnx.load(str(bundle / "decoder.onnx"), load_external_data=False)
    levels: dict[int, set[int]] = {}
    for node in (n for n in graph.graph.node if n.op_type == "MatMulNBits"):
        attrs = {a.name: a.i for a in node.attribute}
        levels.setdefault(attrs["bits"], set()).add(attrs["accuracy_level"])
    return levels


def test_int4_ships_the_compute_asked_for_after_validating_exact(int4_bundle,
                                                                 int4_fp32_head_bundle):
    m = load_manifest(int4_bundle)  # the default: int8 activations, the lm_head's too
    assert m.quant_compute == "int8" and _levels(int4_bundle) == {4: {4}, 8: {4}}
    assert m.validation["compute_vs_hf"] > m.validation["vs_hf"]  # int8 rounding took effect
    m = load_manifest(int4_fp32_head_bundle)
    assert m.quant_compute == "fp32" and _levels(int4_fp32_head_bundle) == {4: {0}}
    # exact compute: what validation measured is what ships
    assert m.validation["compute_vs_hf"] <= 1e-2 + m.validation["vs_hf"]


def test_a_gross_int8_compute_drift_refuses_the_bundle(tiny_model_dir, tmp_path, monkeypatch):
    from edgekv.export.exporter import ExportOptions, export
    from edgekv.runtime.errors import ModelError

    monkeypatch.setattr(exporter, "INT8_COMPUTE_DRIFT", 0.0)  # any rounding is too much
    out = tmp_path / "b"
    with pytest.raises(ModelError, match="int8 compute differs"):
        export(str(tiny_model_dir("llama")), out,
               ExportOptions(budget=64, chunk=16, dtype="int4"), log=lambda _m: None)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_int4_graph_matches_its_dequantized_weights(int4_bundle, int4_fp32_head_bundle):
    for bundle, head_bits in ((int4_bundle, 8), (int4_fp32_head_bundle, None)):
        m = load_manifest(bundle)
        assert m.quant_format == "ort-matmulnbits-uint4-offsetrows"
        graph = onnx.load(str(bundle / "decoder.onnx"), load_external_data=False)
        bits = [next(a.i for a in n.attribute if a.name == "bits")
                for n in graph.graph.node if n.op_type == "MatMulNBits"]
        # every layer projection (qkv, o, gate_up, down) in 4 bits, and the lm_head in 8
        assert sorted(bits) == [4] * (2 * 4) + ([head_bits] if head_bits else [])
        weight_gemms = [n for n in graph.graph.node if n.op_type == "Gemm"]
        # integer zero points, and the offsets' residuals on [x, block sums]: one per input
        four_bit = [n for n in graph.graph.node if n.name.endswith(".q4")]
        assert len(four_bit) == 2 * 4 and all(
            n.input[0].endswith(".augmented") and n.input[3].endswith(".zero_points")
            for n in four_bit)
        assert sum(n.name.endswith(".augment") for n in graph.graph.node) == 2 * 4
        if head_bits:
            assert weight_gemms == [] and not m.embedding.shared_with_lm_head
            assert m.validation["max_abs_logit_diff"] <= 1e-2  # validated with exact compute
        else:  # the lm_head fp32, still sharing embed.bin
            assert len(weight_gemms) == 1 and m.embedding.shared_with_lm_head
            assert m.validation["max_abs_logit_diff"] <= 1e-2


def test_int8_blocks_keep_a_q8_0_grid_exactly():
    rng = np.random.default_rng(2)
    d = rng.uniform(0.001, 0.01, size=(8, 3, 1))
    codes = rng.integers(-127, 128, size=(8, 3, BLOCK_SIZE))
    codes[..., 0] = 127  # Q8_0 scales a block by its largest magnitude
    w = (d * codes).reshape(8, 3 * BLOCK_SIZE).astype(np.float32)
    q, scales = int8_blocks(w)
    back = ((q.astype(np.float32) - 128) * scales[..., None]).reshape(w.shape)
    assert np.abs(back - w).max() <= 1e-6  # float rounding of the scale only


@pytest.mark.parametrize("compute", [None, "int8"])
def test_int4_node_with_bias_and_a_partial_block_computes_its_weights(compute):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    n, k = 48, 70  # k not a multiple of the block: the last block has 6 columns
    w = rng.normal(size=(n, k)).astype(np.float32)
    bias = rng.normal(size=n).astype(np.float32)
    x = rng.normal(size=(5, k)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "proj",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, n])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    dequantized = quantize_graph(model)["w"]
    set_compute(model, compute)
    assert [nd.op_type for nd in model.graph.node] == ["MatMul", "Concat", "MatMulNBits"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    want = x @ dequantized.T + bias
    # exact compute: the dequantized weights and the bias; int8 rounds x to blocks as well
    scale = 1e-4 if compute is None else 0.05
    assert np.abs(got - want).max() <= scale * np.abs(want).max()


@pytest.mark.parametrize("level", [0, 4])
def test_int8_lm_head_node_computes_with_the_dequantized_weights(level):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    n, k = 200, 70  # k not a multiple of the block
    w = rng.normal(size=(n, k)).astype(np.float32)
    x = rng.normal(size=(5, k)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", LM_HEAD], ["logits"], transB=1)], "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, k])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [5, n])],
        [numpy_helper.from_array(w, LM_HEAD)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("com.microsoft", 1)])
    dequantized = quantize_lm_head(model, w, accuracy_level=level)
    assert np.abs(dequantized - w).max() <= np.abs(w).max() / 127  # within one step
    assert [i.name for i in model.graph.initializer] == [f"{LM_HEAD}.q8", f"{LM_HEAD}.scales"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    want = x @ dequantized.T
    # level 0 computes in fp32: the weights exactly; level 4 rounds x to int8 blocks too
    assert np.abs(got - want).max() <= (1e-4 if level == 0 else 0.05 * np.abs(want).max())


def test_int4_stays_close_to_the_original(int4_bundle, tiny_model_dir):
    from helpers import load_tiny, text_ids

    model, tokenizer = load_tiny(tiny_model_dir("qwen2"))
    ids = text_ids(tokenizer, 200)
    ours, ref = bundle_logits(int4_bundle, ids), hf_logits(model, ids)
    agree = (ours.argmax(-1) == ref.argmax(-1)).mean()
    assert agree >= 0.8, f"int4 top-1 agrees with fp32 on only {agree:.0%} of tokens"


def test_int4_bundle_is_refused_by_the_torch_backend_and_the_tensorrt_check(int4_bundle):
    with pytest.raises(BundleError, match="use --backend ort"):
        Session.open(Bundle.open(int4_bundle), policy="full", backend="torch")
    assert not check_bundle(int4_bundle, "tensorrt-10.3").ok
