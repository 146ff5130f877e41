"""`h2o`: Heavy-Hitter Oracle. Keep the tokens with the most accumulated attention + recent ones.

Every query's attention is added to each slot's score for as long as the slot lives
(`attn_mass`, per layer and KV head, so heads keep different tokens).
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgekv.runtime.cache import KVCache
from edgekv.runtime.policies.base import Policy, evict_lowest
from edgekv.runtime.policies.scoring import recent_mask


@dataclass
class H2O(Policy):
    name: ClassVar[str] = "h2o"
    summary: ClassVar[str] = "accumulated attention (heavy hitters) + recent window (H2O)"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"recent": (0, 1)}
    recent: float = 0.5  # share of the budget kept for the most recent tokens (H2O's 50/50)

    def min_budget(self, chunk: int) -> int:
        return chunk + 1

    def observe(self, cache: KVCache, slot_mass: np.ndarray) -> None:
        cache.score += slot_mass

    def make_room(self, cache: KVCache, n: int) -> None:
        keep_recent = int(self.recent * (cache.budget - n))
        priority = np.where(recent_mask(cache, keep_recent), np.inf, cache.score)
        evict_lowest(cache, priority, n - cache.free_count())
