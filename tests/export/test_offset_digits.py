"""Block offsets written as 4-bit digits on extra input rows (export/offset_digits.py)."""

import numpy as np
import pytest

from edgekv.export.offset_digits import (
    DIGIT_STEP,
    augmented_rows,
    carried_offsets,
    offset_digits,
)


@pytest.mark.parametrize("digits", [1, 2, 3])
def test_digits_carry_an_offset_to_the_precision_of_the_last_digit(digits):
    rng = np.random.default_rng(digits)
    offset = rng.normal(scale=0.05, size=(40, 48)) * rng.uniform(0.1, 3.0, size=(40, 1))
    codes, scales = offset_digits(offset, digits, block_size=32)
    assert codes.shape == (40, digits * 2, 32) and scales.shape == (40, digits * 2)
    assert codes.min() >= 0 and codes.max() <= 15
    assert np.all(codes.reshape(40, digits, 64)[:, :, 48:] == 8)  # the tail of a run adds 0
    carried = carried_offsets(codes, scales, 48, digits)
    largest = np.abs(offset).max(axis=1, keepdims=True)
    bound = largest / 7.0 / DIGIT_STEP ** (digits - 1) / 2
    assert np.all(np.abs(carried - offset) <= bound * (1 + 1e-5))
    # and not better than that by accident: the last digit does the work
    assert np.abs(carried - offset).max() > bound.min() / 100


def test_a_column_without_offsets_carries_zeros():
    offset = np.zeros((3, 18))
    offset[1] = np.linspace(-1, 1, 18)
    codes, scales = offset_digits(offset, 3, block_size=32)
    carried = carried_offsets(codes, scales, 18, 3)
    assert np.all(carried[[0, 2]] == 0)
    assert np.abs(carried[1] - offset[1]).max() < 1e-3


@pytest.mark.parametrize(("k", "rows"), [(576, 576 + 3 * 32), (1536, 1536 + 3 * 64),
                                         (70, 96 + 3 * 32)])
def test_the_node_reads_x_padded_to_blocks_then_one_run_per_digit(k, rows):
    assert augmented_rows(k, 32, 3) == rows


@pytest.mark.parametrize("k", [96, 70])
def test_a_q4_1_layer_computes_its_original_weights_not_integer_zero_points(k):
    """Through ONNX Runtime at exact compute: the digits carry what integer zero points miss."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgekv.export.quantize import quantize_blocks, quantize_graph

    rng = np.random.default_rng(k)
    n, blocks = 24, -(-k // 32)
    d = rng.uniform(0.01, 0.05, size=(n, blocks, 1))
    m = rng.uniform(-0.4, -0.1, size=(n, blocks, 1))  # not a whole number of steps
    codes = rng.integers(0, 16, size=(n, blocks, 32))
    codes[..., 0], codes[..., 1] = 0, 15
    w = (d * codes + m).reshape(n, -1)[:, :k].astype(np.float32)
    x = rng.normal(1.0, 1.0, size=(4, k)).astype(np.float32)  # a mean: block sums matter
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "proj",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, n])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    quantize_graph(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    want = x @ w.T
    error = np.abs(got - want).max()
    # what the node's integer zero points alone would give
    packed, scales, zero_points = quantize_blocks(w)
    q = np.empty((n, blocks, 32), np.float32)
    q[..., 0::2], q[..., 1::2] = packed & 15, packed >> 4
    rounded = np.clip(np.rint(zero_points), 0, 15)
    coarse = ((q - rounded[..., None]) * scales[..., None]).reshape(n, -1)[:, :k]
    assert error < 2e-3 * np.abs(want).max()
    assert np.abs(x @ coarse.T - want).max() > 20 * error
