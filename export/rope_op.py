"""RoPE from a position table as one operator: `edgekv::rope(x, pos, cos_table, sin_table)`.

Every decoder call rotates every cached key to its slot position, so this is the graph's
hottest elementwise work. As separate ONNX ops (Cos, Sin, Split, Mul, Concat) it cost ~8x
more than ONNX Runtime's fused `com.microsoft.RotaryEmbedding` kernel at budget 2048 (measured
here, one thread), which reads `cos`/`sin` from a table instead of computing them. The torch
implementation below is the same math, run by the PyTorch reference backend; export maps the
op to the contrib kernel (bundles made with `--target ort`).

x: [N, H, S, D] (rotate-half layout), pos: [N, S] int64 < table rows, tables: [rows, D/2].
"""

from __future__ import annotations

import torch


@torch.library.custom_op("edgekv::rope", mutates_args=())
def rope(x: torch.Tensor, pos: torch.Tensor, cos_table: torch.Tensor,
         sin_table: torch.Tensor) -> torch.Tensor:
    cos = cos_table[pos].unsqueeze(1)
    sin = sin_table[pos].unsqueeze(1)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


@torch.library.custom_op("edgekv::rope_packed", mutates_args=())
def rope_packed(x: torch.Tensor, pos: torch.Tensor, cos_table: torch.Tensor,
                sin_table: torch.Tensor) -> torch.Tensor:
    """`rope` on heads packed in the last axis, as a projection gives them: x [N, S, H*D],
    pos [N, S]; every head of a row at the same position. No transposes around it."""
    n, s, packed = x.shape
    heads = x.reshape(n, s, -1, 2 * cos_table.shape[-1]).transpose(1, 2)
    return rope(heads, pos, cos_table, sin_table).transpose(1, 2).reshape(n, s, packed)


@rope_packed.register_fake
def _rope_packed_shape(x: torch.Tensor, pos: torch.Tensor, cos_table: torch.Tensor,
                       sin_table: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


@rope.register_fake
def _rope_shape(x: torch.Tensor, pos: torch.Tensor, cos_table: torch.Tensor,
                sin_table: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def rope_tables(inv_freq: list[float], rows: int, scale: float,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [rows, D/2] for positions 0..rows-1, computed in float64 (exact angles)."""
    angles = torch.arange(rows, dtype=torch.float64)[:, None] * torch.tensor(
        inv_freq, dtype=torch.float64)[None]
    return (angles.cos() * scale).to(dtype), (angles.sin() * scale).to(dtype)
