"""The part of Q4_1's float block offsets that integer zero points miss, on extra K rows.

A weight block of Q4_1 is w = scale * q + m with a float m. MatMulNBits takes float zero points
only on a slow unpacked path, so export/quantize.py gives the node integer (uint4) zero points:
the nearest integer carries the offset but a residual of at most half a step per block, and
dropping that residual costs +20% perplexity on SmolLM2. The residual rides in the same node,
as weights of extra input rows whose activations are the block sums of x:

    x . w = MatMulNBits_zp(x) + sum_b blocksum_b(x) * residual_b      (per output column)
          = MatMulNBits_zp([x, blocksum(x), blocksum(x)])             (one node)

A residual needs more than 4 bits, so it is written in `digits` 4-bit digits, each its own run
of blocks with its own scale per column (the previous one / 14, zero point 8): residual ~
sum_t s_t * d_t, d_t in -8..7. Two digits carry it to 1/196 of the column's largest residual,
itself at most half a step. Measured on SmolLM2 (4,096 tokens, fp32 compute, torch;
docs/bench.md): integer zero points alone +20.5% perplexity, with one digit -0.05%, with two
+0.01%. The block sums are one MatMul by a 0/1 matrix and one Concat per distinct x, shared by
the projections reading it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

DIGITS = 2
# Each digit's scale is the previous one / DIGIT_STEP: the residual of a digit rounded at scale
# s is at most s / 2, and at scale s / 14 that is 7, the largest positive 4-bit digit.
DIGIT_STEP = 14.0


def offset_digits(offset: np.ndarray, digits: int = DIGITS, block_size: int = 32
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Offsets [N, blocks] -> (codes [N, digits * runs, block_size] uint8 in 0..15 for zero
    point 8, scales [N, digits * runs]); `runs` blocks hold one digit of every block's offset,
    the tail of the last run is code 8 (zero)."""
    n, blocks = offset.shape
    runs = -(-blocks // block_size)
    rest = offset.astype(np.float64)
    scale = np.abs(rest).max(axis=1, keepdims=True) / 7.0
    scale[scale == 0] = 1.0
    codes = np.full((n, digits, runs * block_size), 8, dtype=np.uint8)
    scales = np.empty((n, digits), dtype=np.float32)
    for t in range(digits):
        digit = np.clip(np.rint(rest / scale), -8, 7)
        codes[:, t, :blocks] = (digit + 8).astype(np.uint8)
        scales[:, t] = scale[:, 0]
        # what this digit carries at the fp32 scale the node multiplies by
        rest = rest - digit * scale.astype(np.float32).astype(np.float64)
        scale = scale / DIGIT_STEP
    return (codes.reshape(n, digits * runs, block_size),
            np.repeat(scales, runs, axis=1))


def carried_offsets(codes: np.ndarray, scales: np.ndarray, blocks: int, digits: int = DIGITS
                    ) -> np.ndarray:
    """The offsets [N, blocks] that `offset_digits`' codes and scales add up to."""
    n = codes.shape[0]
    per_digit = codes.reshape(n, digits, -1)[:, :, :blocks].astype(np.float64) - 8.0
    digit_scales = scales.reshape(n, digits, -1)[:, :, 0].astype(np.float64)
    return (per_digit * digit_scales[..., None]).sum(axis=1)


def augmented_rows(k: int, block_size: int = 32, digits: int = DIGITS) -> int:
    """K of the node: x padded to whole blocks, then `digits` runs of block sums."""
    blocks = -(-k // block_size)
    return blocks * block_size + digits * -(-blocks // block_size) * block_size


def append_augmented_input(graph: onnx.GraphProto, nodes: list, x: str, k: int,
                           block_size: int = 32, digits: int = DIGITS) -> str:
    """Append the nodes making [x, 0 pad, blocksum(x) per digit run] from x [..., K]; returns
    the name of the result (K = augmented_rows)."""
    blocks = -(-k // block_size)
    pad = blocks * block_size - k
    run = -(-blocks // block_size) * block_size
    name = f"offset_rows.{k}.{block_size}.{digits}"
    if not any(t.name == name for t in graph.initializer):
        member = np.zeros((k, pad + digits * run), dtype=np.float32)
        for t in range(digits):
            member[np.arange(k), pad + t * run + np.arange(k) // block_size] = 1.0
        graph.initializer.append(numpy_helper.from_array(member, name))
    sums = f"{x}.offset_rows"
    nodes.append(helper.make_node("MatMul", [x, name], [sums], name=f"{x}.blocksum"))
    nodes.append(helper.make_node("Concat", [x, sums], [f"{x}.augmented"], axis=-1,
                                  name=f"{x}.augment"))
    return f"{x}.augmented"
