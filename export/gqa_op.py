"""Attention over the cache and the chunk as one operator: `edgekv::gqa`.

ONNX Runtime bundles (`--attention gqa`) map it to the contrib `GroupQueryAttention` kernel
(export/gqa_onnx.py); the torch implementation below is the same math, what the reference
backend and tracing run. Spelled out in standard ops the attention of one layer is ~40 nodes
(scores of slots and chunk, a split softmax, the mass products); as one kernel it is one node,
which is what a decode step, made of small tensors, pays for (docs/bench.md).

The kernel takes the projection as it comes, q, k and v packed in one row per token, and
rotates q and k itself at `pos` from the RoPE tables: no split, no rotary or reshape nodes
around it (an fp32 decode step's graph went from 879 to 564 nodes).

The kernel's cache contract is ONNX Runtime's shared buffer: `past_k`/`past_v` [1, Hkv, R, D]
hold the `budget` slots in rows [0, budget) and scratch rows after them. The kernel attends to
the first n = total - c rows (n = budget, or fewer while the cache fills: the graph's
`live_rows`), writes the chunk's keys (rotated) and values at rows [n, n + c) of
`present_k`/`present_v` (the same memory, when the runtime binds both to one buffer), and the
chunk attends to those rows plus itself causally. Cached keys come rotated (the bundle's
manifest `key_rope` "cached").

qkv [1, c, (Hq + 2 Hkv) * D], seqlens_k [1] int32 (total - 1), total [] int32 (n + c: the
kernel's own inputs), cos/sin [rows, D/2], pos [1, c] int64 (the chunk's rotary positions),
bias [1, Hq or 1, c, n + c] (added to the scaled scores: slot_bias for the slots, 0 for the
chunk; one row broadcast over the heads when they share it) -> out [1, c, Hq*D], present_k,
present_v, probs [1, Hq, c, n + c] (the softmax, which attn_mass is made of; empty when
`with_probs` is false: writing it and the mass product cost a decode step 0.15-0.45 ms at
budget 2048).
"""

from __future__ import annotations

import torch

from edgekv.export import rope_op
from edgekv.runtime.errors import ModelError

# ONNX Runtime's GroupQueryAttention (CPU, 1.32) refuses to run a head size that is not a
# multiple of 16 when it rotates q and k itself (do_rotary), and of 8 otherwise; the kernel
# would fail on the first call, at export validation, with a traceback.
HEAD_DIM_MULTIPLE = 16


def check_head_dim(head_dim: int) -> None:
    """Refuse, as one line, a head size the kernel cannot run."""
    if head_dim % HEAD_DIM_MULTIPLE:
        raise ModelError(
            f"--attention gqa: ONNX Runtime's GroupQueryAttention with rotary needs a head_dim "
            f"that is a multiple of {HEAD_DIM_MULTIPLE}; this model's is {head_dim}: export "
            "with --attention graph")


@torch.library.custom_op("edgekv::gqa", mutates_args=())
def gqa(qkv: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor,
        seqlens_k: torch.Tensor, total: torch.Tensor, cos_table: torch.Tensor,
        sin_table: torch.Tensor, pos: torch.Tensor, bias: torch.Tensor,
        num_heads: int, kv_heads: int, scale: float,
        with_probs: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor]:
    c = qkv.shape[1]
    budget = int(total) - c
    d = 2 * cos_table.shape[-1]
    group = num_heads // kv_heads
    nq, nkv = num_heads * d, kv_heads * d
    q = rope_op.rope_packed(qkv[..., :nq], pos, cos_table, sin_table)
    k = rope_op.rope_packed(qkv[..., nq:nq + nkv], pos, cos_table, sin_table)
    heads_q = q[0].reshape(c, num_heads, d).transpose(0, 1)  # [Hq, c, D]
    new_k = k[0].reshape(c, kv_heads, d).transpose(0, 1)  # [Hkv, c, D]
    new_v = qkv[0, :, nq + nkv:].reshape(c, kv_heads, d).transpose(0, 1)
    keys = torch.cat([past_k[0, :, :budget], new_k], 1).repeat_interleave(group, 0)
    values = torch.cat([past_v[0, :, :budget], new_v], 1).repeat_interleave(group, 0)
    scores = torch.matmul(heads_q, keys.transpose(-1, -2)).float() * scale + bias[0]
    future = torch.arange(budget + c) > budget + torch.arange(c).unsqueeze(1)  # [c, B+c]
    probs = torch.softmax(scores.masked_fill(future, float("-inf")), -1)
    out = torch.matmul(probs.to(values.dtype), values).transpose(0, 1).reshape(1, c, -1)
    present_k, present_v = past_k.clone(), past_v.clone()
    if past_k.shape[2] >= budget + c:  # scratch rows to write to (the eager oracle has none)
        present_k[0, :, budget:budget + c] = new_k
        present_v[0, :, budget:budget + c] = new_v
    # the kernel gives the probabilities in q's type
    return (out, present_k, present_v,
            probs.to(qkv.dtype).unsqueeze(0) if with_probs else bias.new_empty(0))


@gqa.register_fake
def _gqa_shape(qkv: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor,
               seqlens_k: torch.Tensor, total: torch.Tensor, cos_table: torch.Tensor,
               sin_table: torch.Tensor, pos: torch.Tensor, bias: torch.Tensor,
               num_heads: int, kv_heads: int, scale: float,
               with_probs: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                 torch.Tensor]:
    c, d = qkv.shape[1], 2 * cos_table.shape[-1]
    out = qkv.new_empty(1, c, num_heads * d)
    probs = torch.empty_like(bias, dtype=qkv.dtype) if with_probs else bias.new_empty(0)
    return out, torch.empty_like(past_k), torch.empty_like(past_v), probs
