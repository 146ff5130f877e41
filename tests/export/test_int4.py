"""int4 bundles: block-wise 4-bit weights through ONNX Runtime's MatMulNBits."""

import numpy as np
import onnx
import pytest

from edgekv.export.manifest import load_manifest
from edgekv.export.quantize import BLOCK_SIZE, dequantize_blocks, quantize_blocks
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


def test_int4_graph_matches_its_dequantized_weights(int4_bundle):
    m = load_manifest(int4_bundle)
    assert m.quant_format == "ort-matmulnbits-uint4-blockoffset"
    assert m.validation["max_abs_logit_diff"] <= 1e-2
    graph = onnx.load(str(int4_bundle / "decoder.onnx"), load_external_data=False)
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("MatMulNBits") == 2 * 4  # every layer projection: qkv, o, gate_up, down
    weight_gemms = [n for n in graph.graph.node
                    if n.op_type == "Gemm" and not n.name.endswith(".offset")]
    assert len(weight_gemms) == 1  # the lm_head, fp32, still sharing embed.bin
    assert ops.count("Gemm") == 1 + 2 * 4  # + the block-offset term of every projection
    assert m.embedding.shared_with_lm_head


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
