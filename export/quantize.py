"""Block-wise 4-bit weights for the ONNX Runtime backend (`--dtype int4`).

Every projection of the decoder layers (`Gemm(x, W, transB=1)` on a weight initializer)
becomes ONNX Runtime's `com.microsoft.MatMulNBits` with uint4 blocks of `block_size` along
the input axis. The lm_head becomes an 8-bit MatMulNBits (symmetric blocks of 32, int8
activations: `quantize_lm_head`), or stays fp32 sharing `embed.bin` with the token lookup.
The nodes are written exact (fp32 compute) for export validation, then `set_compute` gives
them the compute the bundle ships with (int8 activations by default). KV and attention stay
fp32. Measured on SmolLM2 (whose weights are Q4_1), perplexity over 4,096 tokens at budget
512, fp32 compute: fp32 19.5602; int4 with the float offset of each block exact 19.5602 (the
Q4_1 grid kept); with integer zero points alone (ONNX Runtime's own quantizer) 23.42; with the
lm_head quantized too 25.20. What ships: integer zero points plus the rest of each offset in
two 4-bit digits (export/offset_digits.py): off Q4_1's grid by at most 1/392 of the largest
step in the weight's column.

How the float offset is carried (w = scale * q + offset per block, Q4_1's form): MatMulNBits
takes float zero points, but then ONNX Runtime cannot prepack the weights and dequantizes all
of them to fp32 on every call (slower than fp32 itself: 196 ms against 41 ms of fp32 Gemm per
decode step, one thread). So the node gets uint4 zero points (its fast packed kernels take
them) and what they miss rides in the same node, on extra input rows that carry the block
sums of x (export/offset_digits.py). It replaced an exact fp32 Gemm over the block sums beside
every node, which cost SmolLM2's int4 decode step ~1.7 ms of 16.3 (docs/bench.md).

This is an ONNX Runtime contrib op; TensorRT parses blocked DequantizeLinear (opset 21)
instead, so the manifest records `quant_format` and `edgekv check` refuses contrib ops.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekv.export.manifest import LM_HEAD
from edgekv.export.offset_digits import (
    DIGITS,
    append_augmented_input,
    augmented_rows,
    carried_offsets,
    offset_digits,
)

QUANT_FORMAT = "ort-matmulnbits-uint4-offsetrows"
BLOCK_SIZE = 32
# MatMulNBits' accuracy_level per `--int4-compute`: "int8" rounds each block of activations to
# int8 and uses integer dot products (ONNX Runtime's level 4; llama.cpp's Q4_1 x Q8_1 does the
# same), "fp32" computes with the exact weights. SmolLM2, budget 2048, 2 threads: decode graph
# 14.4 -> 13.2 ms, peak RSS -52 MiB (level 0 dequantizes blocks to fp32 for a prefill chunk),
# streaming perplexity 19.560 -> 19.656 (+0.5%; fp32 bundle 19.549). docs/bench.md.
COMPUTE_LEVELS = {"int8": 4, "fp32": 0}
# The 8-bit lm_head computes with int8 activations whatever the layers do: at level 0 ONNX
# Runtime has no packed 8-bit kernel and decode ran 4.5x slower. On SmolLM2 (whose embedding
# is GGUF Q8_0, so the weights are kept exactly) level 4 moved logits by at most 0.44 (mean
# 0.045) and perplexity by +0.06% (19.549 -> 19.560), for +14% decode and -47 MiB peak.
LM_HEAD_ACCURACY_LEVEL = 4
# Level 0 computes with the dequantized weights exactly: what export validation runs, so a
# wrong layout shows as a difference of 1e-2, not hidden in int8 rounding.
EXACT_LEVEL = 0


def quantize_blocks(weight_nk: np.ndarray, block_size: int = BLOCK_SIZE):
    """W [N, K] (Gemm transB layout) -> (packed [N, blocks, block/2] uint8, scales [N, blocks],
    zero_points [N, blocks] float32).

    Each block maps its min..max onto 0..15 with a *float* zero point (MatMulNBits takes
    zero points of the scales' type). A block already on a 4-bit grid whose ends are codes 0
    and 15 (GGUF Q4_1, as SmolLM2 ships) is then represented exactly, not quantized twice.
    """
    n, k = weight_nk.shape
    blocks = -(-k // block_size)
    padded = np.zeros((n, blocks * block_size), dtype=np.float32)
    padded[:, :k] = weight_nk
    padded[:, k:] = weight_nk[:, -1:]  # pad with a value already in the block's range
    grouped = padded.reshape(n, blocks, block_size)
    lo, hi = grouped.min(-1), grouped.max(-1)
    scales = np.where(hi > lo, (hi - lo) / 15.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint((grouped - lo[..., None]) / scales[..., None]), 0, 15).astype(np.uint8)
    packed = _pack(codes)  # low nibble first
    zero_points = (-lo / scales).astype(np.float32)
    return packed, scales, zero_points


def dequantize_blocks(packed: np.ndarray, scales: np.ndarray, zero_points: np.ndarray,
                      k: int) -> np.ndarray:
    """The fp32 weights [N, K] that `quantize_blocks`' codes, scales and float zero points
    stand for."""
    n = packed.shape[0]
    w = (_unpack(packed).astype(np.float32) - zero_points[..., None]) * scales[..., None]
    return w.reshape(n, -1)[:, :k]


def int8_blocks(weight_nk: np.ndarray, block_size: int = BLOCK_SIZE
                ) -> tuple[np.ndarray, np.ndarray]:
    """W [N, K] -> (codes [N, blocks, block] uint8, scales [N, blocks]): symmetric blocks,
    w = scale * (code - 128), MatMulNBits' implicit 8-bit zero point. GGUF Q8_0 blocks
    (int8 codes and one scale per 32) come out exactly."""
    n, k = weight_nk.shape
    blocks = -(-k // block_size)
    padded = np.zeros((n, blocks * block_size), dtype=np.float32)
    padded[:, :k] = weight_nk
    grouped = padded.reshape(n, blocks, block_size)
    scales = (np.abs(grouped).max(-1) / 127.0).astype(np.float32)
    scales[scales == 0] = 1.0
    codes = np.clip(np.rint(grouped / scales[..., None]), -127, 127) + 128
    return codes.astype(np.uint8), scales


def quantize_lm_head(model: onnx.ModelProto, weight_nk: np.ndarray,
                     block_size: int = BLOCK_SIZE,
                     accuracy_level: int = EXACT_LEVEL) -> np.ndarray:
    """Replace the Gemm on `lm_head.weight` (an initializer, or a graph input too) by an 8-bit
    MatMulNBits; returns the dequantized W the node computes with."""
    graph = model.graph
    node = next(n for n in graph.node if n.op_type == "Gemm" and n.input[1] == LM_HEAD)
    n, k = weight_nk.shape
    codes, scales = int8_blocks(weight_nk, block_size)
    names = [f"{LM_HEAD}.q8", f"{LM_HEAD}.scales"]
    graph.initializer.extend(numpy_helper.from_array(a, name)
                             for name, a in zip(names, (codes, scales), strict=True))
    at = list(graph.node).index(node)
    graph.node.remove(node)
    graph.node.insert(at, helper.make_node(
        "MatMulNBits", [node.input[0], *names], list(node.output), name=node.name + ".q8",
        domain="com.microsoft", K=k, N=n, bits=8, block_size=block_size,
        accuracy_level=accuracy_level))
    for listed in (graph.initializer, graph.input):
        for item in [i for i in listed if i.name == LM_HEAD]:
            listed.remove(item)
    dequantized = (codes.astype(np.float32) - 128.0) * scales[..., None]
    return dequantized.reshape(n, -1)[:, :k]


def quantize_graph(model: onnx.ModelProto, block_size: int = BLOCK_SIZE,
                   keep: tuple[str, ...] = (LM_HEAD,),
                   accuracy_level: int = EXACT_LEVEL) -> dict[str, np.ndarray]:
    """Rewrite every weight Gemm of `model` in place, but those on `keep`; returns
    {weight name: dequantized W}."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    dequantized: dict[str, np.ndarray] = {}
    augmented: dict[str, str] = {}  # input name -> [x, its block sums] (one per input)
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = inits.get(node.input[1]) if node.op_type == "Gemm" else None
        if (weight is None or weight.name in keep or attrs.get("transB") != 1
                or attrs.get("transA", 0) != 0):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight).astype(np.float32)
        n, k = w.shape
        packed, scales, zero_points = quantize_blocks(w, block_size)
        # The node computes scale * (q - zp) with an integer zp; the block offset (Q4_1's float
        # one) is scale * (8 - zp_float): the nearest integer zp carries all of it but a
        # residual of at most half a step, which rides on extra rows (export/offset_digits.py).
        offset = scales * (8.0 - zero_points)  # [N, blocks]
        zp = np.clip(np.rint(zero_points), 0, 15).astype(np.uint8)
        coarse = scales.astype(np.float64) * (8.0 - zp)
        codes, digit_scales = offset_digits(offset - coarse, DIGITS, block_size)
        carried = coarse + carried_offsets(codes, digit_scales, zp.shape[1], DIGITS)
        dequantized[weight.name] = _dequantize(packed, scales, carried, k)
        zp_all = np.concatenate([zp, np.full(codes.shape[:2], 8, np.uint8)], axis=1)
        names = [f"{weight.name}.q4", f"{weight.name}.scales", f"{weight.name}.zero_points"]
        arrays = (np.concatenate([packed, _pack(codes)], axis=1),
                  np.concatenate([scales, digit_scales], axis=1),
                  _pack(zp_all).reshape(-1))
        for name, array in zip(names, arrays, strict=True):
            graph.initializer.append(numpy_helper.from_array(array, name))
        x = node.input[0]
        if x not in augmented:
            augmented[x] = append_augmented_input(graph, nodes, x, k, block_size, DIGITS)
        has_bias = len(node.input) > 2 and node.input[2] and attrs.get("beta", 1.0) != 0
        # inputs: A, B, scales, zero_points, g_idx, bias
        bias = ["", node.input[2]] if has_bias else []
        nodes.append(helper.make_node("MatMulNBits", [augmented[x], *names, *bias],
                                      [node.output[0]], name=node.name + ".q4",
                                      domain="com.microsoft",
                                      K=augmented_rows(k, block_size, DIGITS), N=n, bits=4,
                                      block_size=block_size, accuracy_level=accuracy_level))
        graph.initializer.remove(weight)
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return dequantized


def set_compute(model: onnx.ModelProto, compute: str | None) -> None:
    """Set every MatMulNBits' accuracy_level: the 4-bit layers per `compute` ("int8" / "fp32",
    COMPUTE_LEVELS), the 8-bit lm_head to LM_HEAD_ACCURACY_LEVEL; None: all exact (level 0)."""
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        bits = next(a.i for a in node.attribute if a.name == "bits")
        level = (EXACT_LEVEL if compute is None
                 else LM_HEAD_ACCURACY_LEVEL if bits == 8 else COMPUTE_LEVELS[compute])
        for attr in node.attribute:
            if attr.name == "accuracy_level":
                attr.i = level


def _pack(codes: np.ndarray) -> np.ndarray:
    """4-bit codes [..., 2m] (0..15) -> bytes [..., m], the first code in the low nibble; an odd
    count gets a zero nibble."""
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros((*codes.shape[:-1], 1), np.uint8)], axis=-1)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def _dequantize(packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray, k: int
                ) -> np.ndarray:
    """The fp32 weights [N, K] a node computes with: scale * (q - 8) + the carried offset."""
    n = packed.shape[0]
    w = (_unpack(packed) - 8.0) * scales[..., None] + offsets[..., None]
    return w.reshape(n, -1)[:, :k].astype(np.float32)


def _unpack(packed: np.ndarray) -> np.ndarray:
    """Bytes [..., m] -> 4-bit codes [..., 2m] as float64, the low nibble first."""
    codes = np.empty((*packed.shape[:-1], 2 * packed.shape[-1]), dtype=np.float64)
    codes[..., 0::2] = packed & 0x0F
    codes[..., 1::2] = packed >> 4
    return codes
