"""The memory plan of DESIGN.md: weights once + KV at budget + one chunk's activations + overhead.

Pure arithmetic over the manifest's numbers, so it runs before anything is loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgekv.export.manifest import DecoderDims

# Bytes per KV / activation element per bundle dtype (int4 bundles quantize weights only).
BYTES = {"fp32": 4, "fp16": 2, "int4": 4}
# Python, numpy, ONNX Runtime and the tokenizer once imported, measured as RSS of an idle
# `edgekv run` process on the CPU here; a device profile may override it.
RUNTIME_OVERHEAD = 120 * 2**20


@dataclass(frozen=True)
class MemoryPlan:
    weights: int
    kv_cache: int
    activations: int
    overhead: int
    workspace: int = 0  # TensorRT tactic scratch (a device profile's workspace); 0 on the CPU
    vision: int = 0  # vision graph weights (multimodal bundles)

    @property
    def total(self) -> int:
        return (self.weights + self.kv_cache + self.activations + self.overhead + self.workspace
                + self.vision)

    def rows(self) -> list[tuple[str, int]]:
        """(name, bytes) of every part, then the total. A zero workspace or vision is left out."""
        parts = [(k, v) for k, v in asdict(self).items() if k not in ("workspace", "vision") or v]
        return [*parts, ("total", self.total)]


@dataclass(frozen=True)
class BundleParts:
    """What a bundle plans beyond its decoder's dims, budget, chunk and dtype (manifest)."""
    vision: int = 0  # vision graph weights, bytes
    kv_quant: str = ""  # "int8": one byte per cached value
    scratch_rows: int = 0  # cache rows after the budget (fused-attention bundles)

    @classmethod
    def of(cls, manifest: Any) -> BundleParts:
        vision = manifest.vision.weights_bytes if manifest.vision is not None else 0
        return cls(vision, manifest.kv_quant or "", manifest.scratch_rows)


TEXT_ONLY = BundleParts()


def weight_params(d: DecoderDims) -> int:
    attn = d.hidden_size * d.head_dim * (2 * d.num_heads + 2 * d.num_kv_heads)
    if d.qkv_bias:
        attn += d.head_dim * (d.num_heads + 2 * d.num_kv_heads)
    attn += d.hidden_size if d.o_bias else 0
    mlp = 3 * d.hidden_size * d.intermediate_size
    mlp += 2 * d.intermediate_size + d.hidden_size if d.mlp_bias else 0
    norms = 2 * d.hidden_size + (2 * d.head_dim if d.qk_norm else 0)
    embed = d.vocab_size * d.hidden_size
    lm_head = 0 if d.tie_word_embeddings else embed  # tied: stored and mapped once
    return d.num_layers * (attn + mlp + norms) + d.hidden_size + embed + lm_head


def weight_bytes(d: DecoderDims, dtype: str) -> int:
    """Weights once. int4: the layers in 4-bit blocks of 32 with an fp32 scale and a 4-bit
    zero point each, the lm_head in 8-bit blocks of 32 with an fp32 scale (its own copy even
    when tied: `--lm-head int8`, the default), the embedding table fp32."""
    if dtype != "int4":
        return weight_params(d) * BYTES[dtype]
    embed = d.vocab_size * d.hidden_size
    layers = weight_params(d) - embed - (0 if d.tie_word_embeddings else embed)
    return int(layers * (0.5 + 4.5 / 32)) + embed * 4 + int(embed * (1 + 4 / 32))


def kv_bytes(d: DecoderDims, budget: int, dtype: str, kv_quant: str = "") -> int:
    """K and V of every slot; `kv_quant` "int8" (manifest): one byte each."""
    per_value = 1 if kv_quant == "int8" else BYTES[dtype]
    return 2 * d.num_layers * d.num_kv_heads * budget * d.head_dim * per_value


def activation_bytes(d: DecoderDims, budget: int, chunk: int, dtype: str) -> int:
    """Peak live tensors of one chunk, one layer at a time (the graph frees layer by layer)."""
    width = budget + chunk
    scores = 3 * d.num_heads * chunk * width * 4  # scores, probs, weighted probs (fp32)
    rotated = 2 * d.num_kv_heads * width * d.head_dim * BYTES[dtype]  # rotated K + concat V
    mlp = 3 * chunk * d.intermediate_size * BYTES[dtype]
    logits = chunk * d.vocab_size * 4
    new_kv = 2 * d.num_layers * d.num_kv_heads * chunk * d.head_dim * BYTES[dtype]
    slot_meta = 3 * d.num_layers * d.num_kv_heads * budget * 8  # slot_pos, slot_bias, mass
    return scores + rotated + mlp + logits + new_kv + slot_meta


def plan(d: DecoderDims, budget: int, chunk: int, dtype: str,
         overhead: int = RUNTIME_OVERHEAD, workspace: int = 0,
         parts: BundleParts = TEXT_ONLY) -> MemoryPlan:
    """`parts`: the bundle's vision weights, int8 cache and scratch rows (`BundleParts.of`)."""
    if dtype not in BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; the planner knows {', '.join(BYTES)}")
    return MemoryPlan(
        weights=weight_bytes(d, dtype),
        kv_cache=kv_bytes(d, budget + parts.scratch_rows, dtype, parts.kv_quant),
        activations=activation_bytes(d, budget, chunk, dtype),
        overhead=overhead,
        workspace=workspace,
        vision=parts.vision,
    )


def bundle_plan(manifest: Any, overhead: int = RUNTIME_OVERHEAD) -> MemoryPlan:
    """The plan of an exported bundle at its own budget and chunk."""
    m = manifest
    return plan(m.dims, m.budget, m.chunk, m.dtype, overhead, parts=BundleParts.of(m))


def largest_budget(d: DecoderDims, chunk: int, dtype: str, limit: int,
                   overhead: int = RUNTIME_OVERHEAD, workspace: int = 0,
                   parts: BundleParts = TEXT_ONLY) -> int:
    """The largest budget (a multiple of `chunk`) whose planned total fits in `limit` bytes.

    0 when not even an empty cache fits (the weights and overhead alone are too large).
    """
    lo, hi = 0, 1 << 22
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if plan(d, mid * chunk, chunk, dtype, overhead, workspace, parts).total <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo * chunk
