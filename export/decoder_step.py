"""One decoder invocation under the fixed-shape KV contract (DESIGN.md), as a torch module.

This module is both what `edgekv export` traces into `decoder.onnx` and the PyTorch reference
backend (the oracle in tests). It depends on torch only, never on transformers: its weights come
from a family adapter at export time, or from the bundle's ONNX initializers on the device.

Keys are cached *before* RoPE; the graph rotates every slot to `slot_pos` on each call, so the
runtime may move, evict, merge and re-number slots freely between calls. With `cached_rope`
(manifest `key_rope` "cached") the cache holds keys already rotated: the graph rotates only the
chunk, at `chunk_pos + pos_shift` per (layer, KV head), and the runtime keeps every cached key
at `slot_pos + pos_shift` (runtime/key_rotation.py). Attention depends only on differences of
positions, so a shift common to a head changes nothing, and a rank shift after an eviction
re-rotates only the keys whose rank did not move (the sinks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from edgekv.export import gqa_op, rope_op
from edgekv.export.manifest import EMPTY_SLOT_BIAS, DecoderDims

ChunkRotation = Callable[[torch.Tensor, int], torch.Tensor]  # (queries or keys, layer) -> rotated
_EXP_FLOOR = -80.0  # softmax exponents below this are taken as this (see DecoderStep.forward)


# HF's `hidden_act` names -> the gate's activation (the MLP is act(gate) * up).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": nn.functional.silu,
    "swish": nn.functional.silu,
    "gelu": nn.functional.gelu,
    "gelu_pytorch_tanh": partial(nn.functional.gelu, approximate="tanh"),
    "gelu_new": partial(nn.functional.gelu, approximate="tanh"),
    "relu": nn.functional.relu,
}


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, fused: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 as the HF implementations do, then return to the model dtype.
        xf = x.float()
        if self.fused:
            # The pattern ONNX Runtime fuses into one SimplifiedLayerNormalization kernel (mean,
            # then a division by the root: rsqrt is not matched); 61 norms of 8 nodes each.
            norm = xf / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        else:
            # sum * (1/n) rather than mean(): the exporter gives ReduceMean a computed `axes`
            # input, which TensorRT's ONNX parser rejects (axes must be an initializer).
            mean_square = xf.pow(2).sum(-1, keepdim=True) * (1.0 / xf.shape[-1])
            norm = xf * torch.rsqrt(mean_square + self.eps)
        return self.weight * norm.to(x.dtype)


class DecoderLayer(nn.Module):
    """One block. q/k/v are one projection and gate/up another (weights concatenated at
    export): a decode step reads each weight once, in two Gemms instead of five."""

    def __init__(self, dims: DecoderDims, fused_norm: bool = False) -> None:
        super().__init__()
        h, d = dims.hidden_size, dims.head_dim
        self.input_norm = RMSNorm(h, dims.rms_norm_eps, fused_norm)
        self.q_size, self.kv_size = dims.num_heads * d, dims.num_kv_heads * d
        self.qkv_proj = nn.Linear(h, self.q_size + 2 * self.kv_size, bias=dims.qkv_bias)
        self.o_proj = nn.Linear(dims.num_heads * d, h, bias=dims.o_bias)
        if dims.qk_norm:
            self.q_norm = RMSNorm(d, dims.rms_norm_eps, fused_norm)
            self.k_norm = RMSNorm(d, dims.rms_norm_eps, fused_norm)
        self.post_norm = RMSNorm(h, dims.rms_norm_eps, fused_norm)
        self.gate_up_proj = nn.Linear(h, 2 * dims.intermediate_size, bias=dims.mlp_bias)
        self.down_proj = nn.Linear(dims.intermediate_size, h, bias=dims.mlp_bias)
        self.act = ACTIVATIONS[dims.hidden_act]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in the rotate-half layout used by Llama-family checkpoints in transformers.

    `cos`/`sin` are half-width ([..., D/2]): the two halves share frequencies, so computing
    them once halves the Sin/Cos work, which matters because every cached key is rotated on
    every call.
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class DecoderStep(nn.Module):
    """inputs_embeds [1,c,H], chunk_pos [c], past K/V [L,Hkv,B,D], slot_pos/slot_bias [L,Hkv,B],
    mass_weight [c]  ->  logits [1,c,V], new K/V [L,Hkv,c,D], attn_mass [L,Hkv,B+c].

    Past K/V may also be L tensors [Hkv,B,D] (bundles with `kv_layout` "per_layer").
    `logit_rows` [n] (optional input): logits only for these chunk rows, [1,n,V].
    `cached_rope`: past keys come rotated and `slot_pos` is instead `pos_shift` [L,Hkv]."""

    def __init__(self, dims: DecoderDims, dtype: torch.dtype = torch.float32,
                 rope_table: int = 0, fused_norm: bool = False,
                 cached_rope: bool = False, gqa: bool = False, attn_mass: bool = True) -> None:
        """`rope_table` > 0: positions below it come from a cos/sin table through the fused
        `edgekv::rope` op (ONNX Runtime's RotaryEmbedding); 0: computed in the graph from
        standard ops only (what TensorRT parses). `fused_norm`: RMSNorm in the form ONNX
        Runtime fuses (ReduceMean, which TensorRT 10.3's parser rejects here). `gqa`: each
        layer's attention is one `edgekv::gqa` op (export/gqa_op.py; needs `cached_rope` and
        a `rope_table`); the outputs then end with each layer's present K, then V.
        `attn_mass` false: the attention mass is not computed and the output is zeros (for
        policies that never read it: streaming, window, full)."""
        super().__init__()
        self.dims = dims
        self.rope_table = rope_table
        if cached_rope and dims.mrope_section:
            raise ValueError("cached (pre-rotated) keys need 1-D RoPE; M-RoPE rotates in the graph")
        self.cached_rope = cached_rope
        if gqa and not (cached_rope and rope_table):
            raise ValueError("gqa attention needs keys cached rotated and a RoPE table")
        if gqa:
            gqa_op.check_head_dim(dims.head_dim)
        self.gqa = gqa
        self.attn_mass = attn_mass
        self.layers = nn.ModuleList(DecoderLayer(dims, fused_norm) for _ in range(dims.num_layers))
        self.norm = RMSNorm(dims.hidden_size, dims.rms_norm_eps, fused_norm)
        self.lm_head = nn.Linear(dims.hidden_size, dims.vocab_size, bias=False)
        self.register_buffer(
            "inv_freq", torch.tensor(dims.rope_inv_freq, dtype=torch.float32), persistent=False
        )
        if dims.mrope_section:
            select = _mrope_select(dims.mrope_section)
            self.register_buffer("mrope_select", select, persistent=False)
        self.to(dtype)
        if rope_table:
            cos, sin = rope_op.rope_tables(dims.rope_inv_freq, rope_table,
                                           dims.rope_attention_scaling, dtype)
            self.register_buffer("cos_table", cos, persistent=False)
            self.register_buffer("sin_table", sin, persistent=False)

    def rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = pos.to(torch.float32).unsqueeze(-1) * self.inv_freq  # [..., D/2]
        if self.dims.mrope_section:
            # M-RoPE: `pos` has a leading axis of 3 (temporal, height, width); frequency j takes
            # its angle from the component its section assigns (a one-hot sum: exact, plain ops).
            select = self.mrope_select.view(3, *([1] * (pos.dim() - 1)), -1)
            freqs = (freqs * select).sum(0)
        scale = self.dims.rope_attention_scaling
        dtype = self.lm_head.weight.dtype
        return (freqs.cos() * scale).to(dtype), (freqs.sin() * scale).to(dtype)

    def _chunk_rotation(self, query_pos: torch.Tensor) -> ChunkRotation:
        """Rotation of the chunk's queries [Hq, c, D] (or new keys [Hkv, c, D]) of layer i at
        `query_pos[i]` [Hkv, c]: each KV head's group of query heads at its own positions."""
        n_kv, d = self.dims.num_kv_heads, self.dims.head_dim
        if self.rope_table:
            tables = (self.cos_table, self.sin_table)

            def rotate_chunk(t: torch.Tensor, i: int) -> torch.Tensor:
                c = t.shape[-2]
                grouped = t.reshape(n_kv, -1, c, d)  # [Hkv, heads per KV head, c, D]
                return torch.ops.edgekv.rope(grouped, query_pos[i], *tables).reshape(t.shape)
            return rotate_chunk
        cos, sin = self.rope(query_pos)  # [L, Hkv, c, D/2]

        def rotate_computed(t: torch.Tensor, i: int) -> torch.Tensor:
            c = t.shape[-2]
            grouped = t.reshape(n_kv, -1, c, d)
            return rotate(grouped, cos[i].unsqueeze(1), sin[i].unsqueeze(1)).reshape(t.shape)
        return rotate_computed

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        chunk_pos: torch.Tensor,
        past_keys: torch.Tensor | Sequence[torch.Tensor],
        past_values: torch.Tensor | Sequence[torch.Tensor],
        slot_pos: torch.Tensor,
        slot_bias: torch.Tensor,
        mass_weight: torch.Tensor,
        logit_rows: torch.Tensor | None = None,
        live_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        dims = self.dims
        n_kv, group, d = dims.num_kv_heads, dims.group_size, dims.head_dim
        c = inputs_embeds.shape[1]
        x = inputs_embeds[0]
        if self.gqa:
            # One shift per layer (the runtime keeps a layer's heads at one,
            # KeyRotation.per_layer): the kernel rotates the chunk's q and k at these.
            layer_pos = chunk_pos.unsqueeze(0) + slot_pos[:, :1]  # [L, c]
            # The kernel's lengths: it attends to the first `live` rows (every slot, unless
            # the runtime says fewer hold anything) and writes the chunk after them.
            n_slots = slot_bias.shape[-1]
            live: int | torch.SymInt = n_slots
            if live_rows is not None:
                live = live_rows[0].item()
                torch._check(live >= 0)
                torch._check(live <= n_slots)
            total = (torch.zeros_like(chunk_pos[:1]) + (live + c)).to(torch.int32)
            lengths = (total - 1, total[0])  # seqlens_k [1], total_sequence_length []
            # Each query head adds its KV head's slot bias; the chunk's own keys get none.
            # Expanded per layer, where the kernel reads it while it is in cache: expanded
            # for all layers at once, a 64-token chunk's attention took 6 ms more (and 146 MB
            # of bias) at budget 2048.
            if self.attn_mass:
                padded = torch.cat([slot_bias[..., :live],
                                    slot_bias.new_zeros(*slot_bias.shape[:2], c)], -1)
                padded = padded[:, :, None, None]  # [L, Hkv, 1, 1, live + c]
            else:
                # Without the mass, the bundle serves policies that keep the same slots in
                # every head of every layer (Policy.same_slots): one bias row for all of them,
                # which the kernel broadcasts over the heads. No expansion per layer.
                row = torch.cat([slot_bias[0, 0, :live], slot_bias.new_zeros(c)])
                padded = row.expand(c, -1)[None, None]  # [1, 1, c, live + c]
            kv_rows: list[torch.Tensor] = []
        elif self.cached_rope:  # fused attention rotates its own chunk (_fused_attention)
            past_rotated = past_keys
            # slot_pos is pos_shift [L, Hkv]: each layer's KV heads see the chunk shifted.
            query_pos = chunk_pos.unsqueeze(0).unsqueeze(0) + slot_pos.unsqueeze(-1)
            rotate_chunk = self._chunk_rotation(query_pos)
        elif self.rope_table:
            tables = (self.cos_table, self.sin_table)
            if isinstance(past_keys, torch.Tensor):
                n_layers, _, budget, _ = past_keys.shape
                # Every cached key of every layer in one fused call: [L*Hkv, 1, B, D].
                past_rotated = torch.ops.edgekv.rope(
                    past_keys.reshape(n_layers * n_kv, 1, budget, d),
                    slot_pos.reshape(n_layers * n_kv, budget), *tables,
                ).reshape(n_layers, n_kv, budget, d)
            else:  # one tensor per layer: rotate each where it is, no slicing copy
                # squeeze, not [:, 0]: an index is a Gather in ONNX, which copies every rotated
                # key again (53 us of a layer's ~300 us at budget 2048); a squeeze is a view.
                past_rotated = [torch.ops.edgekv.rope(k.unsqueeze(1), slot_pos[i], *tables)
                                .squeeze(1) for i, k in enumerate(past_keys)]
            chunk_ids = chunk_pos.unsqueeze(0)

            def rotate_chunk(t: torch.Tensor, i: int) -> torch.Tensor:  # [heads, c, D]
                return torch.ops.edgekv.rope(t.unsqueeze(0), chunk_ids, *tables).squeeze(0)
        else:
            cos_c, sin_c = self.rope(chunk_pos)  # [c, D/2]
            cos_s, sin_s = self.rope(slot_pos)  # [L, Hkv, B, D/2]

            def rotate_chunk(t: torch.Tensor, i: int) -> torch.Tensor:
                return rotate(t, cos_c, sin_c)
        idx = torch.arange(c, device=x.device)
        future = (idx.unsqueeze(0) > idx.unsqueeze(1)).to(torch.float32)
        # Queries are laid out [Hkv, G*c, D] (row g*c + t: head g of the group, token t), so
        # each attention product is one plain batched MatMul over the KV heads.
        causal = (future * EMPTY_SLOT_BIAS).repeat(group, 1)  # [G*c, c]
        weight = mass_weight.repeat(group).view(1, 1, group * c)  # [1, 1, G*c]
        scale = d**-0.5
        new_keys, new_values, masses = [], [], []
        presents: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        for i, layer in enumerate(self.layers):
            h = layer.input_norm(x)
            # Slices, not split(): torch exports a split as SplitToSequence, which TensorRT
            # 10.3 does not parse.
            qkv, nq, nkv = layer.qkv_proj(h), layer.q_size, layer.kv_size
            if self.gqa:
                out, kv, present_k, present_v, mass = self._fused_attention(
                    layer, qkv, past_keys[i], past_values[i],
                    padded[i] if self.attn_mass else padded, weight,
                    layer_pos[i:i + 1], lengths)
                kv_rows.append(kv)
                presents[0].append(present_k)
                presents[1].append(present_v)
                if mass is not None:  # the rows not attended to get none: [Hkv, budget + c]
                    masses.append(torch.cat([mass[:, :live], mass.new_zeros(n_kv, n_slots - live),
                                             mass[:, live:]], -1))
                x = self._mlp(layer, x + layer.o_proj(out))
                continue
            q, k, v = qkv[:, :nq], qkv[:, nq:nq + nkv], qkv[:, nq + nkv:]
            q = q.reshape(c, -1, d).transpose(0, 1)  # [Hq, c, D]
            k = k.reshape(c, n_kv, d).transpose(0, 1)  # [Hkv, c, D]
            v = v.reshape(c, n_kv, d).transpose(0, 1)
            if dims.qk_norm:
                q, k = layer.q_norm(q), layer.k_norm(k)
            new_keys.append(k)
            new_values.append(v)
            if self.cached_rope or self.rope_table:
                past = past_rotated[i]
            else:
                past = rotate(past_keys[i], cos_s[i], sin_s[i])
            q = rotate_chunk(q, i).reshape(n_kv, group * c, d)
            # The slots and the chunk are scored apart and never joined: the softmax runs on
            # the two parts with a shared max, and its normalisation is applied to the small
            # outputs. Joining K and V copied all B slots on every call (12 of 107 ms of a
            # decode step at budget 2048, one thread); joining the scores and splitting the
            # probabilities cost a prefill chunk as much (docs/bench.md, "Levers measured").
            on_slots = torch.matmul(q, past.transpose(-1, -2)).float() * scale
            on_slots = on_slots + slot_bias[i].unsqueeze(1)  # [Hkv, G*c, B]
            on_chunk = torch.matmul(q, rotate_chunk(k, i).transpose(-1, -2)).float() * scale
            on_chunk = on_chunk + causal  # [Hkv, G*c, c]
            top = torch.maximum(on_slots.amax(-1, keepdim=True), on_chunk.amax(-1, keepdim=True))
            # Clamped at -80 (exp = 2e-35, still a normal float): empty slots (-30000) sent
            # ONNX Runtime's Exp down its denormal path, 12x slower (a 64-chunk into an empty
            # cache took 490 ms against 290 full); their weight stays negligible.
            e_slots = torch.exp((on_slots - top).clamp(min=_EXP_FLOOR))
            e_chunk = torch.exp((on_chunk - top).clamp(min=_EXP_FLOOR))
            inv = 1.0 / (e_slots.sum(-1, keepdim=True) + e_chunk.sum(-1, keepdim=True))
            # attn_mass: weights x probabilities as a product, normalisation folded into the
            # weights (one read of the scores, nothing written at their size).
            if self.attn_mass:
                w = weight * inv.transpose(-1, -2)  # [Hkv, 1, G*c]
                masses.append(torch.cat([torch.matmul(w, e_slots), torch.matmul(w, e_chunk)],
                                        -1)[:, 0])
            out = (torch.matmul(e_slots.to(v.dtype), past_values[i])
                   + torch.matmul(e_chunk.to(v.dtype), v)) * inv.to(v.dtype)
            out = out.reshape(n_kv * group, c, d).transpose(0, 1).reshape(c, n_kv * group * d)
            x = self._mlp(layer, x + layer.o_proj(out))
        if logit_rows is not None:  # only these chunk rows need logits (prefill: the last)
            x = x.index_select(0, logit_rows)
        logits = self.lm_head(self.norm(x)).float().unsqueeze(0)
        if not self.attn_mass:  # the contract's output, left at zero
            masses = [slot_bias.new_zeros(n_kv, slot_bias.shape[-1] + c)] * dims.num_layers
        if self.gqa:  # every layer's chunk K/V gathered in one transpose, not 2 per layer
            heads = torch.cat(kv_rows).reshape(dims.num_layers, c, -1, d)  # [L, c, Hq+2Hkv, D]
            kv = heads[:, :, -2 * n_kv:].reshape(dims.num_layers, c, 2, n_kv, d)
            new_keys, new_values = kv.permute(2, 0, 3, 1, 4).unbind(0)
        else:
            new_keys, new_values = torch.stack(new_keys), torch.stack(new_values)
        return (logits, new_keys, new_values, torch.stack(masses), *presents[0], *presents[1])

    def _mlp(self, layer: DecoderLayer, x: torch.Tensor) -> torch.Tensor:
        h = layer.post_norm(x)
        gate_up, half = layer.gate_up_proj(h), self.dims.intermediate_size
        gate, up = gate_up[:, :half], gate_up[:, half:]
        return x + layer.down_proj(layer.act(gate) * up)

    def _fused_attention(self, layer: DecoderLayer, qkv: torch.Tensor, past_k: torch.Tensor,
                         past_v: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor,
                         layer_pos: torch.Tensor,
                         lengths: tuple[torch.Tensor, torch.Tensor],
                         ) -> tuple[torch.Tensor, ...]:
        """A layer's attention as one `edgekv::gqa` op. qkv [c, (Hq + 2 Hkv) * D] as projected,
        past K/V [1, Hkv, rows, D] (or [Hkv, rows, D]; rows >= budget), bias [Hkv, 1, 1, T]
        or, shared by every head, [1, 1, c, T] (T = live rows + c: slot_bias, then zeros for
        the chunk), layer_pos [1, c]: the chunk's
        rotary positions (one shift per layer), lengths: (seqlens_k, total). Returns the
        attention output [c, Hq*D], the packed q, k, v it read [c, (Hq + 2 Hkv) D] (keys before
        RoPE), the present K/V and its attn_mass [Hkv, T] (None when the step computes none)."""
        dims = self.dims
        n_kv, group, d = dims.num_kv_heads, dims.group_size, dims.head_dim
        c, width, nq = qkv.shape[0], bias.shape[-1], layer.q_size
        if dims.qk_norm:  # normed per head between the projection and RoPE: packed again
            q = layer.q_norm(qkv[:, :nq].reshape(c, -1, d)).reshape(c, nq)
            k = layer.k_norm(qkv[:, nq:nq + layer.kv_size].reshape(c, n_kv, d))
            qkv = torch.cat([q, k.reshape(c, -1), qkv[:, nq + layer.kv_size:]], -1)
        if self.attn_mass:  # one row per KV head: to each of its query heads
            bias = bias.expand(n_kv, group, c, width).reshape(1, n_kv * group, c, width)
        bias = bias.to(qkv.dtype)  # the kernel takes it in q's type (fp16 bundles)
        if past_k.dim() == 3:  # the eager oracle's cache views; exported graphs take [1, ...]
            past_k, past_v = past_k.unsqueeze(0), past_v.unsqueeze(0)
        out, present_k, present_v, probs = gqa_op.gqa(
            qkv.unsqueeze(0), past_k, past_v, *lengths, self.cos_table, self.sin_table,
            layer_pos, bias, n_kv * group, n_kv, d**-0.5, self.attn_mass)
        # present K/V are the op's own outputs: the runtime aliases them to the past buffers,
        # which an op in between would copy.
        mass = None
        if self.attn_mass:  # the weighted probabilities summed over each KV head's query rows
            mass = torch.matmul(weight, probs.float().reshape(n_kv, group * c, width))[:, 0]
        return out.squeeze(0), qkv, present_k, present_v, mass


def _mrope_select(section: list[int]) -> torch.Tensor:
    """[3, D/2] one-hot: which position component drives each rotary frequency (HF's layout:
    consecutive sections, section i read from component i % 3)."""
    owner = torch.cat([torch.full((n,), i % 3) for i, n in enumerate(section)])
    return nn.functional.one_hot(owner, 3).T.to(torch.float32)
