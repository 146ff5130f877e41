"""Attention over the cache and the chunk as one operator: `edgekv::gqa`.

ONNX Runtime bundles (`--attention gqa`) map it to the contrib `GroupQueryAttention` kernel
(export/gqa_onnx.py); the torch implementation below is the same math, what the reference
backend and tracing run. Spelled out in standard ops the attention of one layer is ~40 nodes
(scores of slots and chunk, a split softmax, the mass products); as one kernel it is one node,
which is what a decode step, made of small tensors, pays for (docs/bench.md).

The kernel's cache contract is ONNX Runtime's shared buffer: `past_k`/`past_v` [1, Hkv, R, D]
hold the `budget` slots in rows [0, budget) and scratch rows after them; the chunk's keys and
values are written at rows [budget, budget + c) of `present_k`/`present_v` (the same memory,
when the runtime binds both to one buffer), and the chunk attends to every slot plus itself
causally. Keys come rotated (the bundle caches keys rotated: manifest `key_rope` "cached").

q [1, c, Hq*D], k/v [1, c, Hkv*D], seqlens_k [1] int32 (total - 1), total [] int32
(budget + c: the kernel's own inputs), bias [1, Hq, c, budget + c] (added to the scaled
scores: slot_bias for the slots, 0 for the chunk) -> out [1, c, Hq*D], present_k, present_v,
probs [1, Hq, c, budget + c] (the softmax, which attn_mass is made of; empty when
`with_probs` is false: writing it and the mass product cost a decode step 0.15-0.45 ms
at budget 2048).
"""

from __future__ import annotations

import torch


@torch.library.custom_op("edgekv::gqa", mutates_args=())
def gqa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past_k: torch.Tensor,
        past_v: torch.Tensor, seqlens_k: torch.Tensor, total: torch.Tensor, bias: torch.Tensor,
        num_heads: int, kv_heads: int, scale: float,
        with_probs: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor]:
    c = q.shape[1]
    budget = int(total) - c
    d = q.shape[2] // num_heads
    group = num_heads // kv_heads
    heads_q = q[0].reshape(c, num_heads, d).transpose(0, 1)  # [Hq, c, D]
    new_k = k[0].reshape(c, kv_heads, d).transpose(0, 1)  # [Hkv, c, D]
    new_v = v[0].reshape(c, kv_heads, d).transpose(0, 1)
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
    return out, present_k, present_v, probs.unsqueeze(0) if with_probs else bias.new_empty(0)


@gqa.register_fake
def _gqa_shape(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past_k: torch.Tensor,
               past_v: torch.Tensor, seqlens_k: torch.Tensor, total: torch.Tensor,
               bias: torch.Tensor, num_heads: int, kv_heads: int, scale: float,
               with_probs: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                 torch.Tensor]:
    probs = torch.empty_like(bias, dtype=torch.float32) if with_probs else bias.new_empty(0)
    return torch.empty_like(q), torch.empty_like(past_k), torch.empty_like(past_v), probs
