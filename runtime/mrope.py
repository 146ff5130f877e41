"""M-RoPE (Qwen2-VL) positions: what the cache stores per slot and what the graph is given.

Every token has 3 position components (temporal, height, width). A text token at stream step p
has (p, p, p); an image starting at p has (p, p + row, p + col) for its merged grid, and the
next token after it starts at p + max(rows, cols) (HF's `get_rope_index`). So a token belongs
to a *segment* (one text token, or one image) with a base (component 0) and an extent (how far
the segment advances the position counter: 1, or max(rows, cols)).

The cache keeps, per (layer, head, slot), the absolute 3 components and the extent
(`MRopeSlots`). The two position modes:

- `absolute`: slots and chunk use the stored absolute components, as HF would.
- `cache` (ranks): the 1-D scheme numbers kept tokens 0..n-1; here each (layer, head) walks
  its kept segments in stream order and re-bases them contiguously, keeping each image's
  (row, col) offsets, so evicting a segment closes its gap and positions stay within what the
  cache holds. The chunk is shifted down by the units evicted from the head that evicted least
  (as the 1-D scheme starts the chunk after the fullest head). Without eviction both modes give
  exactly HF's positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgekv.runtime.cache import KVCache


@dataclass
class MRopeSlots:
    pos: np.ndarray  # [3, L, Hkv, capacity] int64: absolute (temporal, height, width)
    extent: np.ndarray  # [L, Hkv, capacity] int64: position units the token's segment spans

    @classmethod
    def allocate(cls, meta: tuple[int, int, int]) -> MRopeSlots:
        return cls(np.zeros((3, *meta), dtype=np.int64), np.ones(meta, dtype=np.int64))

    def write(self, slots: np.ndarray, pos: np.ndarray, extent: np.ndarray) -> None:
        """Store a chunk's components ([3, c]) and extents ([c]) at `slots` ([L, Hkv, c])."""
        layer = np.arange(slots.shape[0])[:, None, None]
        head = np.arange(slots.shape[1])[None, :, None]
        for axis in range(3):
            self.pos[axis][layer, head, slots] = pos[axis]
        self.extent[layer, head, slots] = extent


    def record(self, orig_pos: np.ndarray, positions: np.ndarray, pos: np.ndarray,
               extent: np.ndarray) -> None:
        """Store a chunk's components ([3, c]) and extents ([c]) wherever the policy wrote its
        tokens (found by stream position; tokens merged into older slots leave those alone)."""
        offset = orig_pos - positions[0]
        new = (offset >= 0) & (offset < len(positions))
        index = offset[new]
        self.pos[:, new] = pos[:, index]
        self.extent[new] = extent[index]


def text_positions(start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(pos [3, n], extent [n]) for n text tokens from position `start`."""
    p = np.arange(start, start + n, dtype=np.int64)
    return np.stack([p, p, p]), np.ones(n, dtype=np.int64)


def image_positions(start: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(pos [3, rows*cols], extent) for one image's merged grid, row-major, from `start`."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    pos = np.stack([np.zeros(rows * cols, dtype=np.int64), r.ravel(), c.ravel()]) + start
    return pos, np.full(rows * cols, max(rows, cols), dtype=np.int64)


def graph_inputs(
    cache: KVCache, chunk_pos: np.ndarray, units_before: int, position_mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slot_pos [3, L, Hkv, B], slot_bias [L, Hkv, B], chunk_pos [3, c]) for an M-RoPE cache."""
    _, slot_bias, _ = cache.graph_inputs(chunk_pos[0], position_mode)
    valid = cache.valid
    key = np.where(valid, cache.orig_pos, np.iinfo(np.int64).max)
    order = np.argsort(key, axis=-1, kind="stable")
    slot_pos, chunk_pos = graph_positions(cache.mrope, valid, order, chunk_pos, units_before,
                                          position_mode)
    return slot_pos, slot_bias, chunk_pos


def graph_positions(
    slots: MRopeSlots, valid: np.ndarray, order: np.ndarray, chunk_pos: np.ndarray,
    units_before: int, position_mode: str,
) -> tuple[np.ndarray, np.ndarray]:
    """(slot_pos [3, L, Hkv, B], chunk_pos [3, c]) for the graph.

    `order` sorts each (layer, head)'s slots by stream position (valid first); `units_before`
    is the absolute position counter before the chunk's own new segments.
    """
    if position_mode == "absolute":
        return np.where(valid, slots.pos, 0), chunk_pos
    if position_mode != "cache":
        raise ValueError(f"unknown position mode {position_mode!r} (cache or absolute)")
    base = slots.pos[0]
    sorted_valid = np.take_along_axis(valid, order, -1)
    sorted_base = np.take_along_axis(base, order, -1)
    sorted_extent = np.take_along_axis(slots.extent, order, -1)
    previous = np.concatenate([np.full_like(sorted_base[..., :1], -1), sorted_base[..., :-1]], -1)
    starts = sorted_valid & (sorted_base != previous)
    kept_units = np.cumsum(np.where(starts, sorted_extent, 0), axis=-1)
    new_base_sorted = kept_units - sorted_extent
    new_base = np.empty_like(new_base_sorted)
    np.put_along_axis(new_base, order, new_base_sorted, axis=-1)
    slot_pos = np.where(valid, slots.pos - base + new_base, 0)
    evicted = units_before - kept_units[..., -1]
    return slot_pos, chunk_pos - int(evicted.min())
