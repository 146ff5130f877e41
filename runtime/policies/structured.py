"""`structured`: our version of the first seed. Compress *while* prefilling, chunk by chunk,
using the structure of vision input, so occupancy never exceeds the budget at any point.

- An image token whose pre-RoPE key repeats the key of the same grid place in the previous
  frame (cosine similarity >= `similarity`, decided per layer and KV head) is merged into that
  slot (K/V averaged by count, `slot_bias = log n`) or, with `merge=false`, dropped.
- No frame may hold more than `frame_quota` of the budget in a head; beyond it the frame's
  least-attended tokens go first.
- Eviction for what comes after is streaming-like: sinks stay, text outlives images, and among
  the rest the oldest go first.
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgekv.runtime.cache import IMAGE, NO_PLACE, TEXT, KVCache
from edgekv.runtime.policies.base import Chunk, Policy, evict_lowest
from edgekv.runtime.policies.scoring import sink_mask

_TEXT_BONUS = float(2**52)  # text outranks any image token in eviction order
# Keys equal up to float32 rounding are repeats even at similarity=1 (a cosine of 1 - 1e-7).
_ROUNDING = 1e-6


@dataclass
class Structured(Policy):
    name: ClassVar[str] = "structured"
    summary: ClassVar[str] = "merge repeated frame regions while prefilling; per-frame quotas"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "sinks": (0, float("inf")), "similarity": (0, 1), "frame_quota": (0, 1)}
    sinks: int = 4
    similarity: float = 0.9
    merge: bool = True
    frame_quota: float = 0.5

    def min_budget(self, chunk: int) -> int:
        return self.sinks + chunk

    def make_room(self, cache: KVCache, n: int) -> None:
        priority = cache.orig_pos + np.where(cache.modality == TEXT, _TEXT_BONUS, 0.0)
        priority = np.where(sink_mask(cache, self.sinks), np.inf, priority)
        evict_lowest(cache, priority, n - cache.free_count())

    def admit(self, cache: KVCache, chunk: Chunk) -> None:
        if chunk.modality != IMAGE or chunk.place is None:
            super().admit(cache, chunk)
            return
        # Find, before writing, the slot that holds each place of the previous frame.
        previous = (cache.group == chunk.group - 1) & (cache.modality == IMAGE) & cache.valid
        targets = [_slot_of(cache, previous, int(p)) for p in chunk.place]
        slots = cache.free_slots(len(chunk))
        super().admit(cache, chunk)
        duplicate = np.zeros(slots.shape, dtype=bool)
        for t, target in enumerate(targets):
            if target is None:
                continue
            found, slot = target
            sim = _cosine(chunk.new_keys[:, :, t], cache.prerope_keys((*_lh(cache), slot)))
            repeat = found & (sim >= self.similarity - _ROUNDING)
            if self.merge:
                cache.merge_into(slot, chunk.new_keys[:, :, t], chunk.new_values[:, :, t], repeat)
            # The older slot now stands for this frame's token too: the next frame compares
            # against it. It keeps its position; the new copy goes.
            layer, head = np.nonzero(repeat)
            cache.group[layer, head, slot[layer, head]] = chunk.group
            duplicate[..., t] = repeat
        drop = np.zeros(cache.orig_pos.shape, dtype=bool)
        np.put_along_axis(drop, slots, duplicate, axis=-1)
        cache.evict(drop, repeats=True)
        self._enforce_quota(cache, chunk.group)

    def _enforce_quota(self, cache: KVCache, group: int) -> None:
        quota = max(1, int(self.frame_quota * cache.budget))
        # A stream that opens with a frame has its sinks in it: they stay, as in make_room.
        in_frame = cache.valid & (cache.group == group) & (cache.modality == IMAGE)
        in_frame &= ~sink_mask(cache, self.sinks)
        excess = in_frame.sum(-1) - quota
        if excess.max() > 0:
            priority = np.where(in_frame, cache.score, np.inf)
            evict_lowest(cache, priority, excess)


def _lh(cache: KVCache) -> tuple[np.ndarray, np.ndarray]:
    layers, heads = cache.orig_pos.shape[:2]
    return np.arange(layers)[:, None], np.arange(heads)[None, :]


def _slot_of(cache: KVCache, candidates: np.ndarray, place: int):
    """Per (layer, head): whether a slot with grid `place` exists among candidates, and which."""
    if place == NO_PLACE:
        return None
    match = candidates & (cache.place == place)
    return match.any(-1), np.argmax(match, axis=-1)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity over the last axis; 0 where either vector is zero. No epsilon in the
    denominator: it would pull small keys' cosine (|k|^2 ~ 1e-6) far below any threshold."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.divide((a * b).sum(-1), den, out=np.zeros_like(den), where=den > 0)
