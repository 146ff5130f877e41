"""`snapkv`: score the cache by the attention of an observation window (the last `window`
queries of the latest chunk), pool over neighbours, keep the top per head.

Built for the end of a long prefill; run on every chunk it is a prefill compressor that keeps
the cache within budget while a long input streams in.
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgekv.runtime.cache import KVCache
from edgekv.runtime.policies.base import Policy, evict_lowest
from edgekv.runtime.policies.scoring import last_queries, pool_neighbours, recent_mask


@dataclass
class SnapKV(Policy):
    name: ClassVar[str] = "snapkv"
    summary: ClassVar[str] = "observation-window attention, pooled, per-head top-k (SnapKV)"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"window": (1, float("inf")),
                                                        "kernel": (1, float("inf"))}
    odd: ClassVar[tuple[str, ...]] = ("kernel",)
    window: int = 16  # observation window: the last queries whose attention scores the cache
    kernel: int = 7  # neighbour pooling width (SnapKV's default)

    def min_budget(self, chunk: int) -> int:
        return chunk + 1

    def mass_weight(self, c: int) -> np.ndarray:
        return last_queries(c, self.window)

    def observe(self, cache: KVCache, slot_mass: np.ndarray) -> None:
        cache.score[...] = slot_mass  # the latest window's view, not a history

    def make_room(self, cache: KVCache, n: int) -> None:
        priority = pool_neighbours(cache, cache.score, self.kernel)
        # The window's own tokens are the newest: SnapKV always keeps them.
        priority = np.where(recent_mask(cache, self.window), np.inf, priority)
        evict_lowest(cache, priority, n - cache.free_count())
